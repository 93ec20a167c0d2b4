"""Both V2X-VLM nodes on a vehicle (or against a bag with use_sim_time:=true).

    ros2 launch v2x_vlm_ros v2x_vlm.launch.py model:=/path/to/model device:=cuda \\
        ego_image_topic:=/camera/front/image/compressed roadside_image_topic:=/rsu/camera/image/compressed

roadside_node runs where the infrastructure camera is (here, for a bag or a bench, on the
same machine) and sends the downsampled, compressed, rate-limited stream that
vehicle_node receives. Every node parameter is in config/*.param.yaml; the arguments
below override the ones a user changes most.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

PACKAGE = "v2x_vlm_ros"

ARGUMENTS = [
    # (name, default, description)
    ("vehicle_params", PathJoinSubstitution([FindPackageShare(PACKAGE), "config", "vehicle_node.param.yaml"]),
     "vehicle_node parameter file"),
    ("roadside_params", PathJoinSubstitution([FindPackageShare(PACKAGE), "config", "roadside_node.param.yaml"]),
     "roadside_node parameter file"),
    ("model", "", "model directory (empty: the demo model installed with the package)"),
    ("device", "cpu", "torch device of the model: cpu, cuda, cuda:1, ..."),
    ("backend", "eager", "inference backend: tensorrt, inductor or eager (falls back, logged)"),
    ("engine_cache_dir", "", "engines from `v2x-vlm build-engine` (empty: ~/.cache/v2x_vlm_ros/engines)"),
    ("engine_precision", "fp16", "engine precision to load: fp16, bf16 or fp32"),
    ("use_sim_time", "false", "use /clock (true when playing a bag with --clock)"),
    ("roadside_scale", "1.0", "roadside downsampling factor s in (0, 1]"),
    ("roadside_rate_hz", "2.0", "roadside frames sent per second (0: every frame)"),
    ("roadside_codec", "jpeg", "roadside encoding: jpeg, png or raw"),
    ("run_roadside", "true", "start roadside_node (false when the roadside unit runs its own)"),
    ("ego_image_topic", "/v2x/ego/image/compressed", "ego camera topic"),
    ("roadside_camera_topic", "/v2x/roadside/image/compressed", "infrastructure camera topic (roadside_node input)"),
    ("roadside_image_topic", "/v2x/roadside/sent", "the transmitted roadside stream (vehicle_node input)"),
    ("odometry_topic", "/v2x/ego/odometry", "ego odometry (nav_msgs/Odometry)"),
    ("command_topic", "/v2x/command", "route command (std_msgs/String LEFT/RIGHT/FORWARD)"),
    ("path_topic", "/v2x/planning/path", "planned path (nav_msgs/Path in base_link)"),
    ("path_map_topic", "/v2x/planning/path_map", "planned path in the map frame"),
    ("markers_topic", "/v2x/planning/markers", "RViz markers of the plan"),
    ("description_topic", "/v2x/planning/scene_description", "the scene description in use"),
    ("debug_image_topic", "/v2x/planning/debug_image", "raw debug image (RViz cannot show compressed)"),
]


def generate_launch_description():
    arg = LaunchConfiguration
    roadside = Node(
        package=PACKAGE, executable="roadside_node", name="roadside_node", output="screen",
        condition=IfCondition(arg("run_roadside")),
        parameters=[arg("roadside_params"), {
            "use_sim_time": arg("use_sim_time"),
            "scale": arg("roadside_scale"),
            "rate_hz": arg("roadside_rate_hz"),
            "codec": arg("roadside_codec"),
        }],
        remappings=[
            ("~/input/image", arg("roadside_camera_topic")),
            ("~/output/image", arg("roadside_image_topic")),
        ],
    )
    vehicle = Node(
        package=PACKAGE, executable="vehicle_node", name="vehicle_node", output="screen",
        parameters=[arg("vehicle_params"), {
            "use_sim_time": arg("use_sim_time"),
            "model": arg("model"),
            "device": arg("device"),
            "backend": arg("backend"),
            "engine_cache_dir": arg("engine_cache_dir"),
            "engine_precision": arg("engine_precision"),
        }],
        remappings=[
            ("~/input/ego_image", arg("ego_image_topic")),
            ("~/input/roadside_image", arg("roadside_image_topic")),
            ("~/input/odometry", arg("odometry_topic")),
            ("~/input/command", arg("command_topic")),
            ("~/output/path", arg("path_topic")),
            ("~/output/path_map", arg("path_map_topic")),
            ("~/output/markers", arg("markers_topic")),
            ("~/output/scene_description", arg("description_topic")),
            ("~/output/debug_image", arg("debug_image_topic")),
        ],
    )
    declared = [DeclareLaunchArgument(name, default_value=default, description=doc)
                for name, default, doc in ARGUMENTS]
    return LaunchDescription([*declared, roadside, vehicle])
