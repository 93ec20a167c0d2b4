"""package.xml declares exactly what the nodes, the bag player and the launch files use at
run time: compared with their imports, the message types they build, the programs the
launch files start, and the third-party libraries of the whole package."""

from __future__ import annotations

import ast
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROS_CODE = sorted([*(ROOT / "v2x_vlm_ros/ros").glob("*.py"),
                   *(ROOT / "v2x_vlm_ros/conversion").glob("*.py")])
LAUNCH = sorted((ROOT / "launch").glob("*.py"))

#: Third-party Python libraries with a rosdep key, by import name.
ROSDEP_KEYS = {"numpy": "python3-numpy", "cv2": "python3-opencv", "yaml": "python3-yaml",
               "tqdm": "python3-tqdm", "matplotlib": "python3-matplotlib", "PIL": "python3-pil"}
#: Third-party libraries without one: installed by pip (setup.py install_requires), or optional
#: and guarded (torch_tensorrt / tensorrt, psutil).
PIP_ONLY = {"torch", "transformers", "safetensors", "tokenizers", "rosbags", "mcap", "mcap_ros2",
            "torch_tensorrt", "tensorrt", "psutil"}
#: conversion functions only the bag tools call (with rosbags' classes, not rclpy's)
BAG_ONLY = {"tf_message", "transform_stamped"}


def declared() -> set[str]:
    root = ET.parse(ROOT / "package.xml").getroot()
    return {e.text.strip() for e in root.findall("exec_depend")}


def imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


def message_packages(path: Path) -> set[str]:
    """Packages of the "pkg/msg/Name" strings in ``path``, outside the bag-only functions."""
    out = set()
    tree = ast.parse(path.read_text())
    skip = {id(n) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and f.name in BAG_ONLY
            for n in ast.walk(f)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            parts = node.value.split("/")
            if len(parts) == 3 and parts[1] in ("msg", "srv") and parts[0].isidentifier():
                out.add(parts[0])
    return out


def non_ros(module: str) -> bool:
    return (module in sys.stdlib_module_names or module == "v2x_vlm_ros" or module in ROSDEP_KEYS
            or module in PIP_ONLY or module == "__future__")


def launched_programs(path: Path) -> set[str]:
    """ROS packages whose programs a launch file starts: Node(package=...), `ros2 bag`."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Node":
            for kw in node.keywords:
                if kw.arg == "package" and isinstance(kw.value, ast.Constant):
                    out.add(kw.value.value)
        if isinstance(node, ast.List):
            if [getattr(e, "value", None) for e in node.elts[:2]] == ["ros2", "bag"]:
                out.add("rosbag2")
    return out


def used_ros_packages() -> set[str]:
    used = set()
    for path in ROS_CODE + LAUNCH:
        used |= {m for m in imports(path) if not non_ros(m)}
        used |= message_packages(path)
        text = path.read_text()
        if "rclpy.lifecycle" in text or "LifecycleNode" in text:
            used.add("lifecycle_msgs")  # the managed node's states and transitions
    for path in LAUNCH:
        used |= launched_programs(path)
    used.discard("v2x_vlm_ros")  # the launch files' own package
    return used


def test_ros_dependencies_are_exactly_what_is_used():
    ros_declared = {d for d in declared() if not d.startswith("python3-")}
    used = used_ros_packages()
    assert used == ros_declared, {"used, not declared": used - ros_declared,
                                  "declared, not used": ros_declared - used}


def test_python_dependencies_are_exactly_the_libraries_imported():
    third_party = set()
    for path in (ROOT / "v2x_vlm_ros").rglob("*.py"):
        third_party |= {m for m in imports(path) if m not in sys.stdlib_module_names and m != "v2x_vlm_ros"}
    unknown = {m for m in third_party if m not in ROSDEP_KEYS and m not in PIP_ONLY} - used_ros_packages()
    assert not unknown, f"imports that are neither ROS packages nor listed libraries: {unknown}"
    keys = {d for d in declared() if d.startswith("python3-")}
    assert keys == {ROSDEP_KEYS[m] for m in third_party if m in ROSDEP_KEYS}


def test_the_nodes_never_build_bag_only_messages():
    for path in (ROOT / "v2x_vlm_ros/ros").glob("*.py"):
        for name in BAG_ONLY:
            assert f"{name}(" not in path.read_text(), (path.name, name)


def test_what_was_wrong_before_is_gone():
    deps = declared()
    for unused in ("tf2_ros", "cv_bridge", "message_filters"):
        assert unused not in deps
    assert "rcl_interfaces" in deps  # imported by the nodes' parameter code
