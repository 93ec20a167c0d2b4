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
- **A stuck teardown.** Destroying the node and shutting rclpy down (DDS entities, the
  participant) normally takes well under a second, but once in CI roadside_node never
  left it (Ctrl-C right as vehicle_node's subscriptions were being matched; signals are
  ignored by then, so launch needed SIGKILL 15 s later). By then the node has stopped and
  published what it had, so after ``TEARDOWN_TIMEOUT_S`` the process logs which step hung,
  dumps every thread's stack to stderr (to find out why) and leaves with the exit code it
  had (``leave_if_stuck``).
- **Start-up errors** (a parameter the node cannot run with, a model that does not load)
  are one clear log line and exit code 2, not a traceback. An exception escaping a
  callback stops the node with exit code 1 and the error logged.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
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
#: How long destroying the node and shutting rclpy down may take before the process leaves
#: without them (under launch's 5 s from SIGINT to SIGTERM, after a normal close).
TEARDOWN_TIMEOUT_S = 3.0


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


def leave_if_stuck(stage: list[str], code: int, logger, timeout_s: float) -> threading.Timer:
    """A started timer that, unless cancelled within ``timeout_s``, logs that teardown is
    stuck in ``stage[-1]`` (the caller appends each step as it begins), dumps every thread's
    stack to stderr and ends the process at once with ``code``."""
    def leave():
        try:
            logger.error(f"teardown stuck in {stage[-1]} for {timeout_s:g} s: leaving without it "
                         f"(every thread's stack follows on stderr)")
        finally:
            faulthandler.dump_traceback(all_threads=True)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    timer = threading.Timer(timeout_s, leave)
    timer.daemon = True
    timer.start()
    return timer


def teardown(node, code: int, logger, timeout_s: float = TEARDOWN_TIMEOUT_S) -> None:
    """Destroy ``node`` (None: there is none) and shut rclpy down, or leave the process
    with ``code`` when that hangs for ``timeout_s`` (``leave_if_stuck``)."""
    stage = ["destroy_node"]
    watchdog = leave_if_stuck(stage, code, logger, timeout_s)
    try:
        if node is not None:
            node.destroy_node()
        stage.append("rclpy shutdown")
        rclpy.try_shutdown()
    finally:
        watchdog.cancel()


def run(make_node: Callable[[], object], args=None, threads: int = 4, name: str = "node",
        stop: StopFlag | None = None) -> int:
    """Create the node with ``make_node()``, spin it until SIGINT/SIGTERM, close it; the
    process's exit code. ``stop``: the flag the caller's own early signal handlers set
    (``ros.entry``); a signal that came before the node was up ends it as soon as it is."""
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = stop if stop is not None else StopFlag()
    previous = install_stop_handlers(stop)
    logger = get_logger(name)
    node, code = None, 0
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
        if hasattr(node, "close"):
            node.close(CLOSE_TIMEOUT_S)
        spinner.join(CLOSE_TIMEOUT_S)
        executor.shutdown(timeout_sec=CLOSE_TIMEOUT_S)
        return code
    finally:
        # from here on a signal changes nothing: the process is already finishing
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        teardown(node, code, logger)
