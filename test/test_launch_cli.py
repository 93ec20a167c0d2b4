"""`ros2 launch` as a user runs it (the installed package, found through AMENT_PREFIX_PATH):
Ctrl-C, SIGTERM of a node, roadside_codec:=raw end to end, the managed vehicle node driven
by `ros2 lifecycle set`, and replay.launch.py without rviz2 / rosbag2. Every launch runs in
its own process group and is stopped by PID."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ros_support import (V2X_VLM, NodeProcess, bag_ego_frames, require, ros_env, ros_session, sample_bag,
                         wait_until)

require("launch")

from v2x_vlm_ros.conversion import messages as conv  # noqa: E402

pytestmark = pytest.mark.ros_launch

BIN = Path(sys.executable).parent
NODES = ("vehicle_node", "roadside_node")


def ros2_launch(tmp_path, name: str, *args: str) -> NodeProcess:
    # NodeProcess: own session and process group, SIGINT at its default (what
    # `setsid env --default-signal=INT ros2 launch ...` gives in a script)
    return NodeProcess([str(BIN / "ros2"), "launch", "v2x_vlm_ros", *args], tmp_path / f"{name}.log",
                       env=ros_env())


def ready(proc: NodeProcess, nodes=NODES) -> None:
    marks = {"vehicle_node": "[vehicle_node]: QoS:", "roadside_node": "[roadside_node]: sending s="}
    for node in nodes:
        proc.wait_for_output(marks[node], 120)


def ros2(*args: str) -> str:
    cmd = [str(BIN / "ros2"), *args]
    if args[0] in ("param", "node", "topic", "lifecycle"):
        cmd += ["--no-daemon", "--spin-time", "5"]
    out = ""
    for _ in range(3):  # discovery may miss a node on the first try
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=ros_env())
        out = done.stdout + done.stderr
        if "not found" not in out.lower() and "Waiting for service" not in out:
            break
    return out


def group_gone(proc: NodeProcess) -> bool:
    try:
        os.killpg(proc.pid, 0)
    except ProcessLookupError:
        return True
    return False


def assert_all_finished_cleanly(proc: NodeProcess, code: int, nodes=NODES) -> None:
    out = proc.output()
    assert code == 0, out
    for node in nodes:
        assert re.search(rf"\[{node}-\d+\]: process has finished cleanly", out), f"{node}:\n{out}"
    for bad in ("Traceback", "KeyboardInterrupt", "Exception", "process has died"):
        assert bad not in out, out
    wait_until(lambda: group_gone(proc), 10, what="every process of the launch to end")


@pytest.mark.parametrize("trial", range(3))
def test_ctrl_c_ends_the_launch_and_both_nodes_cleanly_every_time(tmp_path, trial):
    """A terminal's Ctrl-C reaches every process of the group, and launch forwards its own
    SIGINT: each node gets two. Before: KeyboardInterrupt tracebacks, exit -2, a hung node."""
    proc = ros2_launch(tmp_path, "ctrl_c", "v2x_vlm.launch.py")
    try:
        ready(proc)
        proc.signal(signal.SIGINT, group=True)
        assert_all_finished_cleanly(proc, proc.wait(60))
    finally:
        proc.kill()


@pytest.mark.parametrize("victim", NODES)
def test_sigterm_to_one_node_ends_it_cleanly_and_the_launch_with_it(tmp_path, victim):
    proc = ros2_launch(tmp_path, "term", "v2x_vlm.launch.py")
    try:
        ready(proc)
        pid = int(re.search(rf"\[{victim}-\d+\]: process started with pid \[(\d+)\]", proc.output()).group(1))
        os.kill(pid, signal.SIGTERM)
        assert_all_finished_cleanly(proc, proc.wait(60))
        assert re.search(rf"\[{victim}-\d+\]: process has finished cleanly \[pid {pid}\]", proc.output())
    finally:
        proc.kill()


def diagnostics_of(session, node: str, predicate, timeout_s: float = 20.0) -> dict:
    """The first /diagnostics values of ``node`` that satisfy ``predicate``."""
    t = conv.rclpy_types()
    seen = []
    session.node("diag_listener").create_subscription(
        t("diagnostic_msgs/msg/DiagnosticArray"), "/diagnostics",
        lambda msg: seen.extend(s["values"] for name, s in conv.diagnostic_to_dict(msg).items()
                                if name.endswith(node)), 10)
    wait_until(lambda: any(predicate(v) for v in list(seen)), timeout_s, what=f"{node} diagnostics")
    return next(v for v in list(seen) if predicate(v))


def play_steps(tmp_path, samples: int, *extra: str) -> dict:
    out = tmp_path / "played.json"
    done = subprocess.run([*V2X_VLM, "play", str(sample_bag()), "--step", "--max-samples", str(samples),
                           "--out", str(out), "--timeout", "60", *extra],
                          capture_output=True, text=True, timeout=600, env=ros_env())
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(out.read_text())


def test_roadside_codec_raw_works_end_to_end(tmp_path):
    """Before: roadside_node sent sensor_msgs/Image while vehicle_node subscribed to
    CompressedImage on the same topic, and the link carried nothing."""
    proc = ros2_launch(tmp_path, "raw", "v2x_vlm.launch.py", "use_sim_time:=true", "roadside_codec:=raw")
    try:
        ready(proc)
        assert "String value is: raw" in ros2("param", "get", "/vehicle_node", "roadside_image_transport")
        played = play_steps(tmp_path, 12, "--link-message", "raw")
        assert played["paths_received"] == 12 and played["missing"] == 0
        with ros_session() as session:
            values = diagnostics_of(session, "vehicle_node", lambda v: int(v.get("count.plans_out", 0)) >= 12)
        assert int(values["count.cycles_fused"]) >= 10 and int(values["count.roadside_frames_in"]) >= 2
        assert not any(k.startswith("link.") for k in values), values
        proc.signal(signal.SIGINT, group=True)
        assert_all_finished_cleanly(proc, proc.wait(60))
    finally:
        proc.kill()


def test_managed_vehicle_node_driven_by_ros2_lifecycle(tmp_path):
    proc = ros2_launch(tmp_path, "lifecycle", "v2x_vlm.launch.py", "use_sim_time:=true", "lifecycle:=true")
    try:
        ready(proc, ("roadside_node",))
        wait_until(lambda: "unconfigured" in ros2("lifecycle", "get", "/vehicle_node"), 60, 1.0,
                   what="the lifecycle node")
        assert "[vehicle_node]: QoS:" not in proc.output()  # nothing subscribed yet
        assert "Transitioning successful" in ros2("lifecycle", "set", "/vehicle_node", "configure")
        assert "[vehicle_node]: model " in proc.output()  # loaded in configure
        assert "inactive" in ros2("lifecycle", "get", "/vehicle_node")
        assert "Transitioning successful" in ros2("lifecycle", "set", "/vehicle_node", "activate")
        assert "active [3]" in ros2("lifecycle", "get", "/vehicle_node")
        played = play_steps(tmp_path, 8)
        assert played["paths_received"] == 8 and played["missing"] == 0
        proc.signal(signal.SIGINT, group=True)
        assert_all_finished_cleanly(proc, proc.wait(60), ("vehicle_lifecycle_node", "roadside_node"))
    finally:
        proc.kill()


@pytest.mark.parametrize("args, says", [
    ([], ["rviz2 is not installed", "rviz:=false"]),
    (["rviz:=false", "player:=ros2bag"], ["`ros2 bag` (rosbag2) is not installed", "player:=v2x"]),
])
def test_replay_launch_names_what_is_missing_and_starts_nothing(tmp_path, args, says):
    """Before: launch exited 1 leaving the nodes it had started running (rviz2 missing), or
    the nodes waited forever for a `ros2 bag play` that could not start."""
    proc = ros2_launch(tmp_path, "replay", "replay.launch.py", f"bag:={sample_bag()}", *args)
    try:
        code = proc.wait(60)
        out = proc.output()
        assert code != 0, out
        for text in says:
            assert text in out, out
        assert "process started" not in out, out
        wait_until(lambda: group_gone(proc), 10, what="nothing left running")
    finally:
        proc.kill()


def test_replay_launch_plays_with_its_own_player_and_ends_with_the_bag(tmp_path):
    proc = ros2_launch(tmp_path, "replay_v2x", "replay.launch.py", f"bag:={sample_bag()}", "rviz:=false",
                       "rate:=10")
    try:
        code = proc.wait(300)
        assert_all_finished_cleanly(proc, code, NODES + ("player",))
        assert f'"ego_frames": {bag_ego_frames(sample_bag())}' in proc.output()  # the whole bag
    finally:
        proc.kill()
