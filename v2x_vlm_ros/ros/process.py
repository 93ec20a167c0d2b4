"""How a node process starts, spins and ends (shared by both nodes' ``main``).

- **Signals.** SIGINT and SIGTERM both mean "finish cleanly": the first one stops the
  node; repeated ones are ignored. Ctrl-C on ``ros2 launch`` in a terminal reaches every
  node twice (from the terminal's process group, and forwarded by launch), and rclpy's
  own handlers turn the second into a KeyboardInterrupt in the middle of shutdown, or an
  ``ExternalShutdownException`` traceback and exit code 1 for SIGTERM. So rclpy is
  initialised without its signal handlers and this module installs its own, which only
  set a flag that the main thread polls (``StopFlag``: setting a ``threading.Event`` from
  a handler can deadlock the main thread inside its own ``Event.wait``).
- **Threads.** The executor (``NodeExecutor``, a ``MultiThreadedExecutor``: intake, planning and
  housekeeping callbacks run on separate threads, see the nodes' callback groups) spins on
  a thread of its own; the main thread waits for a signal, then asks the node to close
  (``node.close()``: stop timers, let a plan in progress finish without publishing), lets
  the spinning thread end, and tears everything down in order. Exit code 0.
- **A stuck shutdown.** Closing the node and tearing down its executor, the node and rclpy
  (DDS entities, the participant) normally takes well under a second, but twice a node
  never finished it (in CI, roadside_node after a Ctrl-C that came while vehicle_node's
  subscriptions were being matched; in a local launch test run, vehicle_node at the end
  of a replay launch; signals are ignored by then, so launch killed them 15 s later).
  By then the node has stopped and published what it had, so after ``SHUTDOWN_TIMEOUT_S``
  the process writes which step is stuck and every thread's stack to stderr (to find out
  why) and leaves with the exit code it had (``ShutdownWatchdog``; armed until the process
  is gone: the interpreter's exit joins the executor's pool threads, and a callback that
  never returns would hang it there).
- **Start-up errors** (a parameter the node cannot run with, a model that does not load)
  are one clear log line and exit code 2, not a traceback. An exception escaping a
  callback stops the node with exit code 1 and the error logged.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable

import rclpy
from rclpy.logging import get_logger
from rclpy.executors import (ConditionReachedException, ExternalShutdownException, MultiThreadedExecutor,
                             ShutdownException, TimeoutException)
from rclpy.signals import SignalHandlerOptions

from v2x_vlm_ros.ros.node_parameters import ParameterError
from v2x_vlm_ros.ros.stop_flag import StopFlag

#: Exit code of a node that could not start (bad parameter, model not loadable).
EXIT_START_FAILED = 2
#: How long a closing node waits for a plan in progress before tearing down anyway.
CLOSE_TIMEOUT_S = 4.0
#: How long shutting down (closing the node, its executor, the node itself, rclpy) may
#: take before the process leaves without it: past a close's own waits (a plan in progress:
#: CLOSE_TIMEOUT_S), under the 15 s after which launch kills a node (SIGINT, SIGTERM at 5 s,
#: SIGKILL 10 s later; the signals are ignored by then).
SHUTDOWN_TIMEOUT_S = 10.0


class StartError(RuntimeError):
    """A node could not start for a reason the user can fix (the message says which)."""


class NodeExecutor(MultiThreadedExecutor):
    """rclpy's ``MultiThreadedExecutor`` without its resubmissions (Jazzy, rclpy 7.1).

    Each turn of rclpy's executor loop yields again every task that has not started yet
    and hands it to the thread pool once more (11 times in 1 s for one task waiting behind
    busy workers: test/test_node_executor.py); the copies are no-ops when their turn comes,
    but they fill the pool's queue. In vehicle_node under the launch latency test (2 CPU
    cores) the executor thread then spun at 94 % CPU, in that bookkeeping and in building
    wait sets, holding the GIL that the planning thread needs between torch calls: plans
    took 3 s (p50) where ``v2x-vlm replay`` takes 33 ms, and 16 of 540 frames got one. With
    this executor the same test planned 485 of 540 frames, 47 ms p50.

    Here a task whose previous hand-over to the pool has not run yet is not handed over
    again; the thread sleeps a millisecond instead (releasing the GIL), so a worker can
    start it. A task that did run and is suspended (a coroutine awaiting a future) is
    handed over again, as rclpy does."""

    def __init__(self, num_threads: int | None = None, *, context=None):
        super().__init__(num_threads, context=context)
        self._in_pool: dict = {}  # task -> the pool's future of its last hand-over

    def _spin_once_impl(self, timeout_sec=None, wait_condition=lambda: False) -> None:
        try:
            handler, entity, node = self.wait_for_ready_callbacks(timeout_sec, None, wait_condition)
        except (ExternalShutdownException, ShutdownException, TimeoutException, ConditionReachedException):
            return
        queued = self._in_pool.get(handler)
        if queued is not None and not queued.done():
            time.sleep(0.001)
        else:
            self._in_pool[handler] = self._executor.submit(handler)
            self._futures.append(handler)
        for task in self._futures[:]:  # as rclpy: forget finished tasks, raise their errors
            if task.done():
                self._futures.remove(task)
                self._in_pool.pop(task, None)
                task.result()


def _spin(executor, stop: StopFlag, failure: list) -> None:
    # spin_once with a timeout rather than spin(): the loop ends by itself once ``stop`` is
    # set, before the executor is shut down (shutting it down under a thread that is
    # waiting in it races with the destruction of its guard condition)
    try:
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
    except (ExternalShutdownException, KeyboardInterrupt):
        pass
    except Exception as exc:  # a callback raised: report it and end the process
        failure.append(f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
    finally:
        stop.set()


def install_stop_handlers(stop: StopFlag) -> dict:
    """SIGINT and SIGTERM set ``stop`` (in the main thread, taking no lock; repeats are
    harmless); the handlers they replace, by signal."""
    def on_signal(signum, frame):
        stop.set()

    return {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}


def wait_for_stop(stop: StopFlag, alive: Callable[[], bool], period_s: float = 0.1) -> None:
    """Return once ``stop`` is set or ``alive()`` is false, polling: a sleep keeps the main
    thread answering signals, and nothing here holds a lock a handler could want."""
    while not stop.is_set():
        time.sleep(period_s)
        if not alive():
            return


class ShutdownWatchdog:
    """Ends the process with ``code`` if shutting down is not done within ``timeout_s``
    (from its creation): writes which step it is stuck in (``stage``, set by the caller as
    each begins) and every thread's stack to stderr, then ``os._exit``. It writes with
    ``os.write`` and ``faulthandler`` only: no lock that a stuck thread could hold (the
    rclpy logger's, Python's stdout buffer)."""

    def __init__(self, name: str, code: int, timeout_s: float = SHUTDOWN_TIMEOUT_S):
        self.name, self.code, self.timeout_s = name, code, timeout_s
        self.stage = "start"
        self._timer = threading.Timer(timeout_s, self._leave)
        self._timer.daemon = True
        self._timer.start()

    def _leave(self) -> None:
        os.write(2, (f"[{self.name}] shutdown stuck in {self.stage} for {self.timeout_s:g} s: leaving "
                     f"without it, exit code {self.code} (every thread's stack follows)\n").encode())
        faulthandler.dump_traceback(all_threads=True)
        os._exit(self.code)

    def cancel(self) -> None:
        self._timer.cancel()


def run(make_node: Callable[[], object], args=None, threads: int = 4, name: str = "node",
        stop: StopFlag | None = None) -> int:
    """Create the node with ``make_node()``, spin it until SIGINT/SIGTERM, close it; the
    process's exit code. A process's main: from "shutting down" on, a ``ShutdownWatchdog``
    ends the process if it has not ended ``SHUTDOWN_TIMEOUT_S`` later. ``stop``: the flag
    the caller's own early signal handlers set (``ros.entry``); a signal that came before the
    node was up ends it as soon as it is."""
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = stop if stop is not None else StopFlag()
    previous = install_stop_handlers(stop)
    logger = get_logger(name)
    node, code, watchdog = None, 0, None
    try:
        try:
            node = make_node()
        except (ParameterError, StartError) as exc:
            logger.fatal(str(exc))
            code = EXIT_START_FAILED
            return code
        executor = NodeExecutor(num_threads=threads)
        executor.add_node(node)
        failure: list[str] = []
        spinner = threading.Thread(target=_spin, args=(executor, stop, failure), name="executor", daemon=True)
        spinner.start()
        wait_for_stop(stop, rclpy.ok)
        if failure:
            logger.error(f"a callback failed, stopping: {failure[0]}")
            code = 1
        node.get_logger().info("shutting down")
        watchdog = ShutdownWatchdog(name, code)
        if hasattr(node, "close"):
            watchdog.stage = "node.close"
            node.close(CLOSE_TIMEOUT_S)
        watchdog.stage = "the executor thread's end"
        spinner.join(CLOSE_TIMEOUT_S)
        watchdog.stage = "executor.shutdown"
        executor.shutdown(timeout_sec=CLOSE_TIMEOUT_S)
        return code
    finally:
        # from here on a signal changes nothing: the process is already finishing
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        watchdog = watchdog or ShutdownWatchdog(name, code)
        if node is not None:
            watchdog.stage = "destroy_node"
            node.destroy_node()
        watchdog.stage = "rclpy shutdown"
        rclpy.try_shutdown()
        # left armed (a daemon thread) through the interpreter's exit, which joins the
        # executor's pool threads: a callback that never returns would hang it there
        watchdog.stage = "the interpreter's exit (joining threads)"
