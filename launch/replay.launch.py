"""Replay a bag written by `v2x-vlm bag` through both nodes, and watch the plan in RViz.

    v2x-vlm bag data/sample /tmp/sample_bag --storage mcap        # Jazzy (sqlite3 for Humble)
    ros2 launch v2x_vlm_ros replay.launch.py bag:=/tmp/sample_bag

`ros2 bag play --clock` publishes /clock and the nodes run on it (use_sim_time), so the
ego/roadside pairing and the description ages follow the recorded stamps.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, IncludeLaunchDescription
from launch.conditions import IfCondition
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

PACKAGE = "v2x_vlm_ros"


def generate_launch_description():
    arg = LaunchConfiguration
    share = FindPackageShare(PACKAGE)
    play = ExecuteProcess(cmd=["ros2", "bag", "play", arg("bag"), "--clock", "--rate", arg("rate")],
                          output="screen")
    nodes = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(PathJoinSubstitution([share, "launch", "v2x_vlm.launch.py"])),
        launch_arguments={
            "use_sim_time": "true",
            "model": arg("model"),
            "device": arg("device"),
            "vehicle_params": PathJoinSubstitution([share, "config", "vehicle_node.param.yaml"]),
            "roadside_params": PathJoinSubstitution([share, "config", "roadside_node.param.yaml"]),
        }.items(),
    )
    rviz = Node(package="rviz2", executable="rviz2", name="rviz2", output="screen",
                arguments=["-d", PathJoinSubstitution([share, "config", "v2x_vlm.rviz"])],
                parameters=[{"use_sim_time": True}], condition=IfCondition(arg("rviz")))
    return LaunchDescription([
        DeclareLaunchArgument("bag", description="rosbag2 directory written by `v2x-vlm bag`"),
        DeclareLaunchArgument("rate", default_value="1.0", description="playback rate"),
        DeclareLaunchArgument("model", default_value="", description="model directory (empty: the demo model)"),
        DeclareLaunchArgument("device", default_value="cpu", description="torch device"),
        DeclareLaunchArgument("rviz", default_value="true", description="start RViz"),
        play, nodes, rviz,
    ])
