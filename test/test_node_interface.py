"""Static checks of the ROS 2 interface (no ROS 2 runtime here, so the sources are parsed):
the launch files remap exactly the topics the nodes create and set only parameters the
nodes declare; the parameter files are what the dataclasses generate; RViz listens to the
launch file's topics; the QoS defaults of the two ends of the roadside link match."""

import ast
import re
from pathlib import Path

import pytest
import yaml

from v2x_vlm_ros.ros.parameters import (PARAM_FILES, RoadsideNodeConfig, VehicleNodeConfig, build,
                                        field_docs, parameter_specs, render_param_yaml,
                                        roadside_node_parameters, vehicle_node_parameters)
from v2x_vlm_ros.runtime.refine import RefineConfig
from v2x_vlm_ros.runtime.vehicle import VehicleConfig

ROOT = Path(__file__).resolve().parents[1]
NODES = {"vehicle_node": ROOT / "v2x_vlm_ros/ros/vehicle_node.py",
         "roadside_node": ROOT / "v2x_vlm_ros/ros/roadside_node.py"}
DECLARED = {"vehicle_node": vehicle_node_parameters, "roadside_node": roadside_node_parameters}


def node_topics(path: Path) -> set[str]:
    """Private topic names passed to create_subscription / create_publisher."""
    topics = set()
    for call in ast.walk(ast.parse(path.read_text())):
        creates = ("create_subscription", "create_publisher")
        if isinstance(call, ast.Call) and getattr(call.func, "attr", "") in creates:
            for a in call.args:
                if isinstance(a, ast.Constant) and isinstance(a.value, str) and a.value.startswith("~/"):
                    topics.add(a.value)
    return topics


def launch_nodes(path: Path) -> dict[str, dict]:
    """{executable: {"remap": set of remapped names, "params": set of override keys}}."""
    out = {}
    for call in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(call, ast.Call) and getattr(call.func, "id", "") == "Node"):
            continue
        kw = {k.arg: k.value for k in call.keywords}
        exe = kw["executable"].value
        remap = set()
        if "remappings" in kw:
            remap = {elt.elts[0].value for elt in kw["remappings"].elts}
        params = set()
        if "parameters" in kw:
            for item in kw["parameters"].elts:
                if isinstance(item, ast.Dict):
                    params |= {k.value for k in item.keys}
        out[exe] = {"remap": remap, "params": params}
    return out


def launch_defaults(path: Path) -> dict[str, str]:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "ARGUMENTS":
            return {t.elts[0].value: t.elts[1].value for t in node.value.elts
                    if isinstance(t.elts[1], ast.Constant)}
    raise AssertionError("no ARGUMENTS in the launch file")


def test_launch_remaps_exactly_the_topics_the_nodes_create_and_sets_declared_parameters():
    launched = launch_nodes(ROOT / "launch/v2x_vlm.launch.py")
    assert set(launched) == set(NODES)
    for name, source in NODES.items():
        topics = node_topics(source)
        assert topics and launched[name]["remap"] == topics, name
        declared = {s.name for s in DECLARED[name]()} | {"use_sim_time"}
        assert launched[name]["params"] <= declared, launched[name]["params"] - declared


def test_the_node_sources_declare_parameters_from_the_specs_only():
    for name, source in NODES.items():
        text = source.read_text()
        assert re.search(r"declare_parameter\(\s*spec\.name,\s*spec\.default", text)
        assert not re.search(r'declare_parameter\(\s*"', text), f"{name} declares a parameter by hand"


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
        assert f"{node} = v2x_vlm_ros.ros.{node}:main" in setup
