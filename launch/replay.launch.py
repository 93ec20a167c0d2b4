"""Replay a bag written by `v2x-vlm bag` through both nodes, and watch the plan in RViz.

    v2x-vlm bag data/sample /tmp/sample_bag --storage mcap        # Jazzy (sqlite3 for Humble)
    ros2 launch v2x_vlm_ros replay.launch.py bag:=/tmp/sample_bag
    # without rviz2 and rosbag2:
    ros2 launch v2x_vlm_ros replay.launch.py bag:=/tmp/sample_bag rviz:=false player:=v2x

The player publishes /clock and the nodes run on it (use_sim_time), so the ego/roadside
pairing and the description ages follow the recorded stamps. ``player``: ``ros2bag``
(``ros2 bag play --clock``), ``v2x`` (``v2x-vlm play``: rosbags + rclpy, needs no
rosbag2) or ``auto`` (ros2bag when installed, else v2x). Before anything starts, a
missing rviz2 or rosbag2 stops the launch with a message saying which and how to run
without it. When the bag ends or any process exits, the launch shuts everything down.
"""

import shutil

from launch import LaunchDescription
from launch.actions import (DeclareLaunchArgument, ExecuteProcess, IncludeLaunchDescription, OpaqueFunction,
                            Shutdown)
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

PACKAGE = "v2x_vlm_ros"
PLAYERS = ("auto", "ros2bag", "v2x")


class MissingTool(RuntimeError):
    """A program the launch was asked to start is not installed (the message says how to do without)."""


def _installed(package: str) -> bool:
    from ament_index_python.packages import PackageNotFoundError, get_package_prefix

    try:
        get_package_prefix(package)
        return True
    except (PackageNotFoundError, ValueError, KeyError, OSError):
        return False


def ros2_bag_available() -> bool:
    return shutil.which("ros2") is not None and _installed("ros2bag") and _installed("rosbag2_py")


def rviz2_available() -> bool:
    return _installed("rviz2")


def choose(context):
    """The processes to start, after checking that each is installed."""
    value = {name: LaunchConfiguration(name).perform(context) for name in ("bag", "rate", "rviz", "player")}
    share = FindPackageShare(PACKAGE)
    want_rviz = value["rviz"].lower() in ("true", "1", "yes")
    if want_rviz and not rviz2_available():
        raise MissingTool("rviz2 is not installed here (no package 'rviz2' in AMENT_PREFIX_PATH); "
                          "run without it: rviz:=false (and watch the plan with `ros2 topic echo "
                          "/v2x/planning/path`), or run RViz on a machine that has it")
    player = value["player"]
    if player not in PLAYERS:
        raise MissingTool(f"player:={player} is not one of {', '.join(PLAYERS)}")
    if player == "ros2bag" and not ros2_bag_available():
        raise MissingTool("`ros2 bag` (rosbag2) is not installed here; play the bag with the package's own "
                          "player instead: player:=v2x (or `v2x-vlm play BAG` beside v2x_vlm.launch.py "
                          "use_sim_time:=true)")
    if player == "auto":
        player = "ros2bag" if ros2_bag_available() else "v2x"
    cmd = (["ros2", "bag", "play", value["bag"], "--clock", "--rate", value["rate"]] if player == "ros2bag"
           else ["v2x-vlm", "play", value["bag"], "--rate", value["rate"]])
    actions = [
        ExecuteProcess(cmd=cmd, output="screen", name="player",
                       on_exit=Shutdown(reason="the bag has been played")),
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(PathJoinSubstitution([share, "launch", "v2x_vlm.launch.py"])),
            launch_arguments={
                "use_sim_time": "true",
                "model": LaunchConfiguration("model"),
                "device": LaunchConfiguration("device"),
            }.items(),
        ),
    ]
    if want_rviz:
        actions.append(Node(package="rviz2", executable="rviz2", name="rviz2", output="screen",
                            arguments=["-d", PathJoinSubstitution([share, "config", "v2x_vlm.rviz"])],
                            parameters=[{"use_sim_time": True}], on_exit=Shutdown(reason="rviz2 exited")))
    return actions


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument("bag", description="rosbag2 directory written by `v2x-vlm bag`"),
        DeclareLaunchArgument("rate", default_value="1.0", description="playback rate"),
        DeclareLaunchArgument("model", default_value="",
                              description="model directory (empty: the demo model)"),
        DeclareLaunchArgument("device", default_value="cpu", description="torch device"),
        DeclareLaunchArgument("rviz", default_value="true", description="start RViz (needs rviz2)"),
        DeclareLaunchArgument("player", default_value="auto",
                              description="auto, ros2bag (`ros2 bag play`) or v2x "
                                          "(`v2x-vlm play`, no rosbag2)"),
        OpaqueFunction(function=choose),
    ])
