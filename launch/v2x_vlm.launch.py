"""Both V2X-VLM nodes on a vehicle (or against a bag with use_sim_time:=true).

    ros2 launch v2x_vlm_ros v2x_vlm.launch.py model:=/path/to/model device:=cuda \\
        ego_image_topic:=/camera/front/image/compressed roadside_image_topic:=/rsu/camera/image/compressed

roadside_node runs where the infrastructure camera is (here, for a bag or a bench, on the
same machine) and sends the downsampled, compressed, rate-limited stream that
vehicle_node receives. Every node parameter is in config/*.param.yaml; the arguments
below override the ones a user changes most.

- The vehicle's roadside transport follows the roadside codec (``roadside_codec:=raw``
  sends sensor_msgs/Image, which the vehicle then subscribes to) unless
  ``roadside_transport`` says otherwise (a roadside unit running elsewhere).
- ``lifecycle:=true`` starts the managed vehicle node (``vehicle_lifecycle_node``):
  unconfigured until ``ros2 lifecycle set /vehicle_node configure`` (model loaded, warmed
  up) and ``... activate`` (subscribed, planning).
- A node that exits (a parameter it cannot run with, a model that does not load) ends the
  launch, so nothing is left half-running.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent
from launch.conditions import IfCondition, UnlessCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution, PythonExpression
from launch_ros.actions import LifecycleNode, Node
from launch.events import Shutdown
from launch_ros.substitutions import FindPackageShare

PACKAGE = "v2x_vlm_ros"

ARGUMENTS = [
    # (name, default, description)
    ("vehicle_params",
     PathJoinSubstitution([FindPackageShare(PACKAGE), "config", "vehicle_node.param.yaml"]),
     "vehicle_node parameter file"),
    ("roadside_params",
     PathJoinSubstitution([FindPackageShare(PACKAGE), "config", "roadside_node.param.yaml"]),
     "roadside_node parameter file"),
    ("model", "", "model directory (empty: the demo model installed with the package)"),
    ("device", "cpu", "torch device of the model: cpu, cuda, cuda:1, ..."),
    ("backend", "eager", "inference backend: tensorrt, inductor or eager (falls back, logged)"),
    ("engine_cache_dir", "", "engines from `v2x-vlm build-engine` (empty: ~/.cache/v2x_vlm_ros/engines)"),
    ("engine_precision", "fp16", "engine precision to load: fp16, bf16 or fp32"),
    ("use_sim_time", "false", "use /clock (true when playing a bag with --clock)"),
    ("lifecycle", "false",
     "start the managed (lifecycle) vehicle node; drive it with `ros2 lifecycle set`"),
    ("roadside_scale", "1.0", "roadside downsampling factor s in (0, 1]"),
    ("roadside_rate_hz", "2.0", "roadside frames sent per second (0: every frame)"),
    ("roadside_codec", "jpeg", "roadside encoding: jpeg, png or raw"),
    ("roadside_transport", "auto",
     "what vehicle_node subscribes to on the roadside link: auto (follows roadside_codec), raw, compressed"),
    ("run_roadside", "true", "start roadside_node (false when the roadside unit runs its own)"),
    ("ego_image_topic", "/v2x/ego/image/compressed", "ego camera topic"),
    ("roadside_camera_topic", "/v2x/roadside/image/compressed",
     "infrastructure camera topic (roadside_node input)"),
    ("roadside_image_topic", "/v2x/roadside/sent", "the transmitted roadside stream (vehicle_node input)"),
    ("odometry_topic", "/v2x/ego/odometry", "ego odometry (nav_msgs/Odometry)"),
    ("command_topic", "/v2x/command", "route command (std_msgs/String LEFT/RIGHT/FORWARD)"),
    ("description_input_topic", "/v2x/ego/description",
     "scene description made elsewhere (std_msgs/String; what `v2x-vlm bag` records)"),
    ("path_topic", "/v2x/planning/path", "planned path (nav_msgs/Path in base_link)"),
    ("path_map_topic", "/v2x/planning/path_map", "planned path in the map frame"),
    ("markers_topic", "/v2x/planning/markers", "RViz markers of the plan"),
    ("description_topic", "/v2x/planning/scene_description", "the scene description in use"),
    ("debug_image_topic", "/v2x/planning/debug_image", "raw debug image (RViz cannot show compressed)"),
]

VEHICLE_REMAPS = [  # (private name, launch argument)
    ("~/input/ego_image", "ego_image_topic"),
    ("~/input/roadside_image", "roadside_image_topic"),
    ("~/input/odometry", "odometry_topic"),
    ("~/input/command", "command_topic"),
    ("~/input/scene_description", "description_input_topic"),
    ("~/output/path", "path_topic"),
    ("~/output/path_map", "path_map_topic"),
    ("~/output/markers", "markers_topic"),
    ("~/output/scene_description", "description_topic"),
    ("~/output/debug_image", "debug_image_topic"),
]
ROADSIDE_REMAPS = [("~/input/image", "roadside_camera_topic"), ("~/output/image", "roadside_image_topic")]


def roadside_transport():
    """raw when asked for, or when auto and the roadside codec is raw; else compressed."""
    arg = LaunchConfiguration
    return PythonExpression([
        "'raw' if '", arg("roadside_transport"), "' == 'raw' or ('", arg("roadside_transport"),
        "' == 'auto' and '", arg("roadside_codec"), "' == 'raw') else 'compressed'"])


def end_launch_once():
    """An ``on_exit`` handler: the first node to exit shuts the launch down, once. (A second
    Shutdown event makes launch_ros raise "Cannot shutdown a ROS adapter that is not
    running" when a LifecycleNode is part of the launch, and launch then exits 1.)"""
    fired = []

    def handler(event, context):
        if fired or context.is_shutdown:
            return None
        fired.append(event.process_name)
        return [EmitEvent(event=Shutdown(reason=f"{fired[0]} exited"))]

    return handler


def generate_launch_description():
    arg = LaunchConfiguration
    end_launch = end_launch_once()
    roadside = Node(
        package=PACKAGE, executable="roadside_node", name="roadside_node", output="screen",
        condition=IfCondition(arg("run_roadside")),
        parameters=[arg("roadside_params"), {
            "use_sim_time": arg("use_sim_time"),
            "scale": arg("roadside_scale"),
            "rate_hz": arg("roadside_rate_hz"),
            "codec": arg("roadside_codec"),
        }],
        remappings=[(name, arg(launch_arg)) for name, launch_arg in ROADSIDE_REMAPS],
        on_exit=end_launch,
    )
    vehicle_parameters = [arg("vehicle_params"), {
        "use_sim_time": arg("use_sim_time"),
        "model": arg("model"),
        "device": arg("device"),
        "backend": arg("backend"),
        "engine_cache_dir": arg("engine_cache_dir"),
        "engine_precision": arg("engine_precision"),
        "roadside_image_transport": roadside_transport(),
    }]
    vehicle_remaps = [(name, arg(launch_arg)) for name, launch_arg in VEHICLE_REMAPS]
    vehicle = Node(
        package=PACKAGE, executable="vehicle_node", name="vehicle_node", output="screen",
        condition=UnlessCondition(arg("lifecycle")),
        parameters=vehicle_parameters, remappings=vehicle_remaps,
        on_exit=end_launch,
    )
    managed = LifecycleNode(
        package=PACKAGE, executable="vehicle_lifecycle_node", name="vehicle_node", namespace="",
        output="screen", condition=IfCondition(arg("lifecycle")),
        parameters=vehicle_parameters, remappings=vehicle_remaps,
        on_exit=end_launch,
    )
    declared = [DeclareLaunchArgument(name, default_value=default, description=doc)
                for name, default, doc in ARGUMENTS]
    return LaunchDescription([*declared, roadside, vehicle, managed])
