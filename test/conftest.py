"""Shared fixtures: a tiny tokenizer, a tiny random Florence-2 planner directory and a small
synthetic world with paired scenes."""

import pytest

from v2x_vlm_ros.model.configuration import PRESETS, ModelSettings
from v2x_vlm_ros.model.modeling import build_model, save_model
from v2x_vlm_ros.model.tokenizer import build_tokenizer

CORPUS = [
    "Clear daylight over a two-lane urban road with a yellow centre line.",
    "A white truck parked at the right roadside, about 20 m away.",
    "Ego state: position (0.0, 0.0) m, speed 8.4 m/s, heading 120 deg, yaw rate +0.05 rad/s.",
    "Command: turn left. Command: turn right. Command: go forward.",
    "Task: plan the ego trajectory for the next 5 seconds as 10 waypoints.",
] * 4


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_tokenizer(CORPUS, vocab_size=400)


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """A small synthetic world with paired scenes: an occluded crossing whose hidden car
    always conflicts, its twin without the car, and a straight drive (3 sequences, 7 s,
    64 x 36), with the visibility sidecar. Read only: copy it to change it."""
    from v2x_vlm_ros.data.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("paired_world")
    config = SynthConfig(num_sequences=3, seed=7, duration_s=7.0, image_size=(64, 36), jpeg_quality=60,
                         conflict_share=1.0, scenarios=("occluded_crossing", "straight"))
    generate(root, config, progress=False)
    return root


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer):
    out = tmp_path_factory.mktemp("tiny_model")
    model = build_model("tiny", tiny_tokenizer, seed=0)
    save_model(out, model, tiny_tokenizer, ModelSettings(image_size=PRESETS["tiny"].image_size))
    return out


# -- ROS 2 runs: isolation, and what was not run --------------------------------------------

from pathlib import Path  # noqa: E402


def pytest_configure(config):
    import os
    import tempfile

    # one DDS domain per test session, traffic kept on this host (scripts/test.sh picks a
    # random domain; a bare pytest run takes one from its process id)
    os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.setdefault("ROS_LOG_DIR", tempfile.mkdtemp(prefix="v2x_vlm_roslog_"))
    config.addinivalue_line("markers", "ros_node: a test that runs nodes under real rclpy")
    config.addinivalue_line("markers", "ros_launch: a test that runs `ros2 launch` / launch_testing")


_ROS_TALLY = {"ros_node": {}, "ros_launch": {}}
_NOT_RUN: list[tuple[str, str]] = []


def pytest_ignore_collect(collection_path, config):
    """test_ros_*.py need rclpy, test_launch_*.py the launch kit and the colcon-installed
    package: without them (and unless V2X_VLM_REQUIRE_ROS=1) they are not collected at all,
    and listed as not run with the reason. Not importing them matters: launch_testing's
    pytest plugin imports every test module while collecting, and a module-level skip there
    would take the whole directory with it."""
    import ros_support

    name = collection_path.name
    kind = {"ros_launch": "launch", "ros_node": "rclpy"}.get(_ros_kind(name))
    if kind is None or ros_support.REQUIRED or not name.endswith(".py"):
        return None
    reason = ros_support.missing(kind)
    if reason is None:
        return None
    asked = [Path(a.split("::")[0]).resolve() for a in config.args] or [Path.cwd()]
    if any(a == collection_path or a in collection_path.parents for a in asked):  # not a sibling
        _NOT_RUN.append((name, f"NOT RUN: {reason}"))
    return True


def _ros_kind(nodeid: str) -> str | None:
    name = nodeid.split("::")[0].rsplit("/", 1)[-1]
    if name.startswith("test_launch_"):
        return "ros_launch"
    return "ros_node" if name.startswith("test_ros_") else None


def pytest_runtest_logreport(report):
    kind = _ros_kind(report.nodeid)
    if kind and (report.when == "call" or (report.when == "setup" and report.outcome != "passed")):
        _ROS_TALLY[kind][report.outcome] = _ROS_TALLY[kind].get(report.outcome, 0) + 1
    if report.skipped and report.when == "setup":
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if "NOT RUN:" in reason:
            _NOT_RUN.append((report.nodeid, reason))


def pytest_collectreport(report):
    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if "NOT RUN:" in reason:
            _NOT_RUN.append((report.nodeid, reason))


def pytest_terminal_summary(terminalreporter):
    write = terminalreporter.write_line
    terminalreporter.section("ROS 2", sep="-")
    for marker, title in (("ros_node", "node tests under rclpy"), ("ros_launch", "launch tests")):
        tally = _ROS_TALLY[marker]
        counts = ", ".join(f"{n} {k}" for k, n in sorted(tally.items())) or "none run"
        write(f"{title}: {counts}")
    for nodeid, reason in _NOT_RUN:
        write(f"NOT RUN {nodeid}: {reason.split('NOT RUN:', 1)[1].strip()}")
