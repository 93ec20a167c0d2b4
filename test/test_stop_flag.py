"""The nodes' stop request and a signal handled at any moment of the main thread's wait.

Python runs signal handlers in the main thread between bytecodes. The nodes used to wait
with ``threading.Event.wait`` and set that event from the handler: a signal handled while
the main thread held the event's lock inside ``wait`` deadlocked it (a vehicle_node that
never exited after SIGINT, once in a CI run). Here a tracer raises SIGINT at every line the
waiting code runs, in a subprocess with a time limit: the nodes' loop ends, the old one
hangs (the control, showing the test can fail)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from ros_support import require

require("rclpy")

TRACED = textwrap.dedent("""
    import signal, sys, threading
    from v2x_vlm_ros.ros import process
    from v2x_vlm_ros.ros.stop_flag import StopFlag

    raised = [0]

    def tracer(frame, event, arg):  # SIGINT at every line of the wait's own code
        if event == "line" and raised[0] < 200 and frame.f_code.co_filename.endswith(
                ("stop_flag.py", "threading.py", "process.py")):
            raised[0] += 1
            signal.raise_signal(signal.SIGINT)
        return tracer

    if sys.argv[1] == "nodes":
        stop = StopFlag()
        process.install_stop_handlers(stop)
        sys.settrace(tracer)
        process.wait_for_stop(stop, lambda: True, period_s=0.01)
    else:  # the old loop: a threading.Event set by the handler, waited on with Event.wait
        stop = threading.Event()
        signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
        sys.settrace(tracer)
        while not stop.wait(0.01):
            pass
    sys.settrace(None)
    print("stopped after", raised[0], "signals", flush=True)
""")


def _run(which: str):
    return subprocess.run([sys.executable, "-c", TRACED, which], capture_output=True, text=True, timeout=60)


def test_a_signal_at_any_line_of_the_nodes_wait_stops_it():
    done = _run("nodes")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("stopped after ") and int(done.stdout.split()[2]) >= 1


def test_the_old_event_wait_deadlocks_under_the_same_signals():
    with pytest.raises(subprocess.TimeoutExpired):
        subprocess.run([sys.executable, "-c", TRACED, "old"], capture_output=True, text=True, timeout=5)


def test_the_console_entry_points_stop_flag_takes_no_lock():
    from v2x_vlm_ros.ros import entry
    from v2x_vlm_ros.ros.stop_flag import StopFlag

    assert isinstance(entry.STOP, StopFlag)
    flag = StopFlag()
    assert not flag.is_set()
    flag.set()
    flag.set()  # repeated signals change nothing
    assert flag.is_set() and vars(flag) == {"requested": True}  # one attribute, no lock
