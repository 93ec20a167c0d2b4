"""The node processes: clean exit (code 0, no traceback) on SIGINT and SIGTERM, repeated
signals, a shutdown while a plan is running, start-up errors; the managed vehicle node."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from ros_support import Collector, NodeProcess, require, ros_env, ros_session, wait_until

require("rclpy")

from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402

from v2x_vlm_ros.conversion import messages as conv  # noqa: E402
from test_ros_vehicle_node import Feeder, now_ns  # noqa: E402

pytestmark = pytest.mark.ros_node

MAIN = {  # the console scripts' entry points
    "vehicle_node": "import sys; from v2x_vlm_ros.ros.entry import vehicle_node; sys.exit(vehicle_node())",
    "roadside_node": "import sys; from v2x_vlm_ros.ros.entry import roadside_node; sys.exit(roadside_node())",
}
READY = {"vehicle_node": "planning at", "roadside_node": "sending s="}
SLOW_PLANS = """
import sys, time
from v2x_vlm_ros.ros import vehicle_node as vn
make_engine = vn.make_engine
def slow_engine(*args, **kwargs):
    engine, note = make_engine(*args, **kwargs)
    plan = engine.plan
    def slowly(inputs):
        print("plan started", file=sys.stderr, flush=True)
        time.sleep(3.0)
        return plan(inputs)
    engine.plan = slowly
    return engine, note
vn.make_engine = slow_engine
sys.exit(vn.main())
"""

STUCK_TEARDOWN = """
import sys, threading
from v2x_vlm_ros.ros import roadside_node as rn
def stuck(self):  # what a DDS teardown that never returns looks like from here
    print("destroying", file=sys.stderr, flush=True)
    threading.Event().wait()
rn.RoadsideNode.destroy_node = stuck
sys.exit(rn.main())
"""


def start(tmp_path, name: str, code: str | None = None, ros_args=(), ignore_sigint=False) -> NodeProcess:
    args = ["--ros-args", "-p", "warmup_frames:=0"] if name == "vehicle_node" else ["--ros-args"]
    for item in ros_args:
        args += ["-p", item]
    proc = NodeProcess([sys.executable, "-c", code or MAIN[name], *args], tmp_path / f"{name}.log",
                       ignore_sigint=ignore_sigint, env=ros_env())
    proc.wait_for_output(READY[name], 60)
    return proc


def assert_clean_exit(proc: NodeProcess, code: int) -> None:
    out = proc.output()
    assert code == 0, out
    assert "Traceback" not in out and "Exception" not in out, out
    assert "shutting down" in out, out
    assert "shutdown stuck" not in out, out  # ended by itself, not by the watchdog


@pytest.mark.parametrize("name", ["vehicle_node", "roadside_node"])
@pytest.mark.parametrize("how", ["SIGINT", "SIGINT, ignored by the parent shell", "SIGTERM"])
def test_a_signal_ends_the_node_cleanly(tmp_path, name, how):
    proc = start(tmp_path, name, ignore_sigint="ignored" in how)
    try:
        proc.signal(signal.SIGTERM if how == "SIGTERM" else signal.SIGINT)
        assert_clean_exit(proc, proc.wait(15))
    finally:
        proc.kill()


def test_a_signal_during_start_up_ends_the_node_cleanly_once_it_is_up(tmp_path):
    """A launch stopped right after it started: the signal comes while vehicle_node is still
    importing torch and loading its model (before: a KeyboardInterrupt traceback from inside
    an import)."""
    name = "vehicle_node"
    args = ["--ros-args", "-p", "warmup_frames:=0"]
    proc = NodeProcess([sys.executable, "-c", MAIN[name], *args], tmp_path / f"{name}.log", env=ros_env())
    try:
        time.sleep(1.0)
        assert READY[name] not in proc.output()  # still starting
        proc.signal(signal.SIGINT)
        proc.signal(signal.SIGTERM)
        assert_clean_exit(proc, proc.wait(60))
    finally:
        proc.kill()


def test_a_shutdown_that_hangs_is_left_after_its_timeout_with_the_exit_code_and_the_stacks(tmp_path):
    """Twice a node never came back from shutting down after SIGINT (signals are
    ignored by then): launch killed it 15 s later. Now the process leaves on its own after
    SHUTDOWN_TIMEOUT_S (10 s), saying where it hung, with every thread's stack on stderr."""
    proc = start(tmp_path, "roadside_node", STUCK_TEARDOWN)
    try:
        proc.signal(signal.SIGINT)
        proc.wait_for_output("destroying", 15)
        code = proc.wait(30)
        out = proc.output()
        assert code == 0, out
        stuck = "[roadside_node] shutdown stuck in destroy_node for 10 s: leaving without it, exit code 0"
        assert stuck in out, out
        assert "in stuck" in out and "Thread 0x" in out, out  # faulthandler's dump names the hung frame
        assert "rclpy shutdown" not in out, out
    finally:
        proc.kill()


def test_the_shutdown_watchdog_leaves_with_the_code_it_was_given_and_not_before_its_time():
    script = """
import threading, time
from v2x_vlm_ros.ros.process import ShutdownWatchdog
watchdog = ShutdownWatchdog("some_node", 3, timeout_s=1.0)
watchdog.stage = "the interpreter's exit"
# what run() leaves behind when a callback never returns: a pool thread that the
# interpreter joins at exit
threading.Thread(target=threading.Event().wait, args=(30,)).start()
print("main done", flush=True)
"""
    began = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env=ros_env())
    waited = time.monotonic() - began
    assert done.returncode == 3, done
    assert done.stdout.strip() == "main done", done  # what was printed before is kept
    assert "[some_node] shutdown stuck in the interpreter's exit for 1 s: leaving without it, exit code 3" \
        in done.stderr, done
    assert 1.0 <= waited < 25, waited  # not before its timeout
    cancelled = subprocess.run(
        [sys.executable, "-c", "import time\nfrom v2x_vlm_ros.ros.process import ShutdownWatchdog\n"
         "w = ShutdownWatchdog('n', 3, timeout_s=0.5)\nw.cancel()\ntime.sleep(1.5)\nprint('done')"],
        capture_output=True, text=True, timeout=60, env=ros_env())
    assert (cancelled.returncode, cancelled.stdout.strip(), cancelled.stderr) == (0, "done", ""), cancelled


def test_repeated_signals_during_shutdown_change_nothing(tmp_path):
    """Ctrl-C on `ros2 launch` reaches a node twice (terminal and launch): the second one used
    to interrupt shutdown with a KeyboardInterrupt traceback."""
    proc = start(tmp_path, "vehicle_node")
    try:
        for sig in (signal.SIGINT, signal.SIGINT, signal.SIGTERM, signal.SIGINT):
            proc.signal(sig)
            time.sleep(0.02)
        assert_clean_exit(proc, proc.wait(15))
    finally:
        proc.kill()


def test_shutdown_while_a_plan_runs_publishes_nothing_and_exits_cleanly(tmp_path):
    """Before: `RCLError: publisher's context is invalid` from the planning timer."""
    proc = start(tmp_path, "vehicle_node", SLOW_PLANS)
    try:
        with ros_session() as session:
            feed = Feeder(session)
            reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
            paths = Collector(session.node("listener"), conv.rclpy_types()("nav_msgs/msg/Path"),
                              "/vehicle_node/output/path", reliable)
            feed.matched()
            fed = []

            def planning():  # a frame a second until the node plans (it may still be warming up)
                if "plan started" in proc.output():
                    return True
                feed.frame(now_ns(), len(fed))
                fed.append(1)
                return False

            wait_until(planning, 60, step_s=1.0, what="'plan started' in the node's output")
            proc.signal(signal.SIGINT)
            proc.signal(signal.SIGINT)
            code = proc.wait(20)
            time.sleep(0.3)
            assert len(paths) == 0  # the plan in progress was not published into a closing node
        assert_clean_exit(proc, code)
    finally:
        proc.kill()


@pytest.mark.parametrize("name, override, message", [
    ("roadside_node", "scale:=1.5",
     "roadside_node: parameter scale := 1.5 refused: Parameter scale out of range"),
    ("vehicle_node", "model:=/no/such/model", "vehicle_node: parameter model='/no/such/model'"),
])
def test_a_node_that_cannot_start_says_why_and_exits_2(tmp_path, name, override, message):
    args = ["--ros-args", "-p", override]
    proc = NodeProcess([sys.executable, "-c", MAIN[name], *args], tmp_path / "node.log", env=ros_env())
    try:
        code = proc.wait(60)
    finally:
        proc.kill()
    out = proc.output()
    assert code == 2 and message in out and "Traceback" not in out, out


def test_lifecycle_vehicle_node_loads_in_configure_and_subscribes_in_activate():
    from rclpy.lifecycle import TransitionCallbackReturn

    from v2x_vlm_ros.ros.vehicle_node import make_lifecycle_node

    SUCCESS = TransitionCallbackReturn.SUCCESS
    t = conv.rclpy_types()
    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    with ros_session() as session:
        node = session.add(make_lifecycle_node(context=session.context,
                                               cli_args=["--ros-args", "-p", "warmup_frames:=0"]))
        feed = Feeder(session)
        paths = Collector(session.node("listener"), t("nav_msgs/msg/Path"), "/vehicle_node/output/path",
                          reliable)

        def subscribed():
            return feed.ego.get_subscription_count() > 0

        time.sleep(0.5)
        assert node.planning.service is None and not subscribed()  # unconfigured: nothing loaded
        assert node.trigger_configure() == SUCCESS
        assert node.planning.service is not None and not subscribed()  # model loaded, not subscribed
        # a change while inactive (no timers yet) is taken, and used when they are made
        assert node.set_parameters([Parameter("diagnostics_period_s", value=0.2)])[0].successful
        assert node.trigger_activate() == SUCCESS
        assert node.planning.diagnostics_timer.timer_period_ns == 200_000_000
        wait_until(subscribed, 10, what="subscriptions in activate")
        feed.matched()
        feed.frame(now_ns(), 0)
        wait_until(lambda: len(paths) == 1, 10, what="a plan while active")
        assert node.trigger_deactivate() == SUCCESS
        wait_until(lambda: not subscribed(), 10, what="no subscriptions after deactivate")
        feed.frame(now_ns(), 1)
        time.sleep(0.5)
        assert len(paths) == 1
        assert node.trigger_cleanup() == SUCCESS
        assert node.planning.service is None
