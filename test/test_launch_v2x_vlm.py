"""launch_testing: the installed v2x_vlm.launch.py (colcon) with a parameter file and
remappings, the sample's bag played through DDS by `v2x-vlm play --step` on /clock, and
the plans received scored against `v2x-vlm replay` on the same bag and model.

Also checked while it runs: the parameter file's and the launch arguments' values are what
the nodes use (whole numbers for floats included: roadside_rate_hz:=2, roadside_scale:=1),
and `ros2 param get / set / describe` work on the running nodes."""

import json
import os
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

import pytest

from ros_support import ROOT, V2X_VLM, bag_ego_frames, include_v2x_vlm_launch, require, sample_bag

require("launch")

import launch  # noqa: E402
import launch.actions  # noqa: E402
import launch_testing  # noqa: E402
import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402

pytestmark = pytest.mark.ros_launch

PATH_TOPIC = "/launch_test/path"
WORK = Path(tempfile.mkdtemp(prefix="v2x_vlm_launch_test_"))
PLAYED = WORK / "played.json"


def vehicle_params_file() -> Path:
    """The shipped parameter file with base_frame changed (the path's frame shows it was
    read) and statuses 20 times a second."""
    data = yaml.safe_load((ROOT / "config/vehicle_node.param.yaml").read_text())
    data["vehicle_node"]["ros__parameters"]["base_frame"] = "launch_test_base"
    # the player confirms each sample's intake from these statuses: 20 a second, not 1
    data["vehicle_node"]["ros__parameters"]["diagnostics_period_s"] = 0.05
    path = WORK / "vehicle.param.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.launch_test
def generate_test_description():
    bag = sample_bag()
    nodes = include_v2x_vlm_launch(
        use_sim_time="true",
        vehicle_params=str(vehicle_params_file()),
        path_topic=PATH_TOPIC,
        roadside_rate_hz="2",  # whole numbers for float parameters
        roadside_scale="1",
    )
    player = launch.actions.ExecuteProcess(
        cmd=[*V2X_VLM, "play", str(bag), "--step", "--out", str(PLAYED), "--path-topic", PATH_TOPIC,
             "--timeout", "60"],
        name="player", output="screen", cwd=str(ROOT))
    return launch.LaunchDescription([nodes, player, launch_testing.actions.ReadyToTest()]), \
        {"player": player, "bag": bag}


def ros2(*args: str) -> str:
    """A `ros2` CLI command (no daemon: nothing left running), its output."""
    cmd = [str(Path(sys.executable).parent / "ros2"), *args, "--no-daemon", "--spin-time", "5"]
    for _ in range(2):  # discovery can miss a node on the first try
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if "Node not found" not in out.stdout + out.stderr:
            break
    return out.stdout + out.stderr


class TestWhileRunning(unittest.TestCase):

    def test_1_paths_come_out_on_the_remapped_topic_in_the_parameter_files_frame(self):
        import launch_testing_ros
        from nav_msgs.msg import Path as PathMsg

        wait = launch_testing_ros.WaitForTopics([(PATH_TOPIC, PathMsg)], timeout=120.0)
        try:
            self.assertTrue(wait.wait(), f"no Path on {PATH_TOPIC}")
            msg = wait.received_messages(PATH_TOPIC)[0]
        finally:
            wait.shutdown()
        self.assertEqual(msg.header.frame_id, "launch_test_base")
        self.assertEqual(len(msg.poses), 10)

    def test_2_the_played_bag_scores_as_replay_does(self, proc_info, player, bag):
        from v2x_vlm_ros.conversion import messages as conv
        from v2x_vlm_ros.ros.bag_player import score_plans
        from v2x_vlm_ros.tools import bag as bagfile

        proc_info.assertWaitForShutdown(process=player, timeout=1500)
        launch_testing.asserts.assertExitCodes(proc_info, process=player)
        played = json.loads(PLAYED.read_text())
        self.assertEqual(played["missing"], 0)
        self.assertEqual(played["ego_frames"], bag_ego_frames(bag))
        received = {int(k): np.asarray(v) for k, v in played["paths"].items()}
        replay_dir = WORK / "replay"
        subprocess.run([*V2X_VLM, "replay", str(bag), "--model", str(ROOT / "models/synthetic-student"),
                        "--out", str(replay_dir), "--quiet"], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        predictions = bagfile.read_bag(replay_dir / "predictions.mcap", ["/v2x/planning/path"])
        reference = {conv.stamp_to_ns(m.header.stamp): conv.path_to_xy(m)
                     for _, m in predictions["/v2x/planning/path"]}
        # the node's own count: one plan per frame played (as /diagnostics reports it)
        self.assertEqual(played["planner_diagnostics"].get("count.plans_out"), str(played["ego_frames"]))
        self.assertEqual(sorted(received), sorted(reference))  # every frame planned once, on both sides
        differ = {k: float(np.abs(received[k] - reference[k]).max()) for k in reference}
        differ = {k: d for k, d in differ.items() if not d < 1e-6}
        counts = {k: v for k, v in played["planner_diagnostics"].items() if k.startswith(("count.", "drop."))}
        self.assertEqual(differ, {}, f"plans received over DDS differ from replay's (ego stamp: max |d| m, "
                                     f"of {len(reference)}); the planner's counts: {counts}")
        ours = score_plans(bag, received)
        theirs = json.loads((replay_dir / "metrics.json").read_text())
        for horizon in ("2.5", "3.5", "4.5", "avg"):
            self.assertEqual(f"{ours['l2'][horizon]:.2f}", f"{theirs['l2'][horizon]:.2f}", horizon)
        self.assertEqual(ours["num_samples"], theirs["num_samples"])
        (WORK / "scores.json").write_text(json.dumps({"dds": ours["l2"], "replay": theirs["l2"]}))

    def test_3_ros2_param_on_the_running_nodes(self):
        self.assertIn("Double value is: 2.0", ros2("param", "get", "/roadside_node", "rate_hz"))
        self.assertIn("Double value is: 1.0", ros2("param", "get", "/roadside_node", "scale"))
        self.assertIn("Set parameter successful", ros2("param", "set", "/roadside_node", "rate_hz", "5"))
        self.assertIn("Double value is: 5.0", ros2("param", "get", "/roadside_node", "rate_hz"))
        refused = ros2("param", "set", "/vehicle_node", "model", "/elsewhere")
        self.assertIn("Setting parameter failed: model cannot change while the node runs", refused)
        described = ros2("param", "describe", "/vehicle_node", "planning_rate_hz")
        self.assertIn("Type: double", described)
        self.assertIn("Min value: 0.0", described)
        self.assertIn("Max value: 1000.0", described)
        base_frame = ros2("param", "get", "/vehicle_node", "base_frame")
        self.assertIn("String value is: launch_test_base", base_frame)


@launch_testing.post_shutdown_test()
class TestAfterShutdown(unittest.TestCase):

    def test_every_process_exited_cleanly(self, proc_info, proc_output):
        launch_testing.asserts.assertExitCodes(proc_info)  # nodes: SIGINT -> 0; player: 0
        for process in proc_info.process_names():
            text = "".join(o.text.decode(errors="replace") for o in proc_output[process])
            self.assertNotIn("Traceback", text, process)


if os.environ.get("V2X_VLM_KEEP_TEST_OUTPUT") != "1":
    import atexit
    import shutil

    atexit.register(shutil.rmtree, WORK, True)
