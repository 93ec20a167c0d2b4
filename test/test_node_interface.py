"""Static checks of the ROS 2 interface: the launch file sets only parameters the nodes
declare; the parameter files are what the dataclasses generate; RViz listens to the
launch file's topics; the QoS defaults of the two ends of the roadside link match. (The
running nodes are tested under rclpy in test_ros_*.py and through ros2 launch in
test_launch_*.py.)"""

import ast
from pathlib import Path

import pytest
import yaml

from v2x_vlm_ros.ros.parameters import (PARAM_FILES, RoadsideNodeConfig, VehicleNodeConfig, build,
                                        field_docs, parameter_specs, render_param_yaml,
                                        roadside_node_parameters, vehicle_node_parameters)
from v2x_vlm_ros.runtime.refine import RefineConfig
from v2x_vlm_ros.runtime.vehicle import VehicleConfig

ROOT = Path(__file__).resolve().parents[1]
NODES = ("vehicle_node", "roadside_node")
DECLARED = {"vehicle_node": vehicle_node_parameters, "roadside_node": roadside_node_parameters}


def parameter_dicts(path: Path) -> list[set[str]]:
    """The keys of every dict literal of string keys in a launch file (parameter overrides)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Dict) and node.keys and all(
                isinstance(k, ast.Constant) and isinstance(k.value, str) for k in node.keys):
            out.append({k.value for k in node.keys})
    return out


def launch_defaults(path: Path) -> dict[str, str]:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "ARGUMENTS":
            return {t.elts[0].value: t.elts[1].value for t in node.value.elts
                    if isinstance(t.elts[1], ast.Constant)}
    raise AssertionError("no ARGUMENTS in the launch file")


def test_launch_file_overrides_only_parameters_the_nodes_declare():
    # (that the nodes create exactly the remapped topics is checked on a running node:
    # test_ros_vehicle_node.py, test_ros_roadside_node.py)
    declared = {name: {s.name for s in specs()} | {"use_sim_time"} for name, specs in DECLARED.items()}
    overrides = parameter_dicts(ROOT / "launch/v2x_vlm.launch.py")
    assert len(overrides) == 2
    for keys in overrides:
        assert keys <= declared["vehicle_node"] or keys <= declared["roadside_node"], keys


@pytest.mark.parametrize("node", sorted(PARAM_FILES))
def test_parameter_files_are_generated_from_the_dataclasses(node):
    shipped = (ROOT / "config" / f"{node}.param.yaml").read_text()
    assert shipped == render_param_yaml(node, PARAM_FILES[node]()), \
        "regenerate with: python -m v2x_vlm_ros.ros.parameters"
    values = yaml.safe_load(shipped)[node]["ros__parameters"]
    assert set(values) == {s.name for s in DECLARED[node]()}


def test_parameters_build_the_configs_and_are_described():
    values = {s.name: s.default for s in vehicle_node_parameters()}
    values.update({"qos_depth": 9, "refine.smoothing": 0.2, "sync_slop_s": 0.1})
    assert build(VehicleNodeConfig, values).qos_depth == 9
    assert build(RefineConfig, values, "refine.").smoothing == 0.2
    assert build(VehicleConfig, values).sync_slop_s == 0.1
    for spec in vehicle_node_parameters() + roadside_node_parameters():
        assert spec.description, f"{spec.name} has no description"
    assert field_docs(VehicleConfig)["sync_slop_s"].startswith("A roadside frame may be")
    with pytest.raises(ValueError, match="qos_images"):
        build(VehicleNodeConfig, {"qos_images": "fast"})


def test_qos_defaults_agree_across_the_roadside_link():
    vehicle = {s.name: s.default for s in parameter_specs(VehicleNodeConfig)}
    roadside = {s.name: s.default for s in parameter_specs(RoadsideNodeConfig)}
    # a reliable subscriber never matches a best-effort publisher: no output at all
    assert not (vehicle["qos_images"] == "reliable" and roadside["qos_outputs"] != "reliable")
    assert vehicle["roadside_image_transport"] == "compressed"  # what roadside_node sends for jpeg


def test_rviz_listens_to_the_launch_topics_and_shows_a_raw_image():
    rviz = yaml.safe_load((ROOT / "config/v2x_vlm.rviz").read_text())
    displays = {d["Name"]: d for d in rviz["Visualization Manager"]["Displays"]}
    defaults = launch_defaults(ROOT / "launch/v2x_vlm.launch.py")
    assert displays["Planned path"]["Topic"]["Value"] == defaults["path_topic"]
    assert displays["Plan markers"]["Topic"]["Value"] == defaults["markers_topic"]
    assert displays["Debug image (raw)"]["Class"] == "rviz_default_plugins/Image"
    assert displays["Debug image (raw)"]["Topic"]["Value"] == defaults["debug_image_topic"]
    from v2x_vlm_ros.tools.bag import GROUND_TRUTH_PATH
    assert displays["Ground truth path"]["Topic"]["Value"] == GROUND_TRUTH_PATH


def test_launch_defaults_follow_the_bag_topics():
    from v2x_vlm_ros.tools import bag

    defaults = launch_defaults(ROOT / "launch/v2x_vlm.launch.py")
    assert defaults["ego_image_topic"] == bag.EGO_IMAGE
    assert defaults["roadside_camera_topic"] == bag.ROADSIDE_IMAGE
    assert defaults["odometry_topic"] == bag.ODOMETRY and defaults["command_topic"] == bag.COMMAND


def test_entry_points_name_both_nodes():
    setup = (ROOT / "setup.py").read_text()
    for node in NODES:
        assert f"{node} = v2x_vlm_ros.ros.entry:{node}" in setup
