"""ros.process.NodeExecutor: the nodes' executor hands each ready callback to its thread
pool once, however long it waits there behind busy workers; rclpy's MultiThreadedExecutor
(Jazzy) hands it over again on each turn of its loop. In vehicle_node that went with its
executor thread spinning at 94 % CPU and plans 60 times slower (launch latency test)."""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from ros_support import require, wait_until

require("rclpy")

import rclpy  # noqa: E402
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup  # noqa: E402
from rclpy.context import Context  # noqa: E402
from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.signals import SignalHandlerOptions  # noqa: E402

from ros_support import domain_id  # noqa: E402
from v2x_vlm_ros.ros.process import NodeExecutor  # noqa: E402

pytestmark = pytest.mark.ros_node


def backlog(executor_class) -> tuple[Counter, int, list[str]]:
    """Two workers, both held 1 s by slow timers in groups of their own; meanwhile a third
    timer comes due and waits for a worker. Returns how many times each task was handed to
    the pool, how many loop turns the spinning thread made, and the callbacks that ran."""
    context = Context()
    rclpy.init(context=context, domain_id=domain_id(), signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("executor_backlog", context=context)
    executor = executor_class(num_threads=2, context=context)
    handed, ran, turns = Counter(), [], [0]
    release = threading.Event()
    submit = executor._executor.submit

    def counted_submit(task, *args):
        handed[task] += 1  # the task itself as key: kept alive, its id never reused
        return submit(task, *args)

    executor._executor.submit = counted_submit

    def slow(name):
        def callback():
            if name not in ran:
                ran.append(name)
                release.wait(1.0)
        return callback

    timers = [node.create_timer(0.01, slow(name), callback_group=MutuallyExclusiveCallbackGroup())
              for name in ("slow_a", "slow_b")]
    waiting = node.create_timer(0.05, slow("queued"), callback_group=MutuallyExclusiveCallbackGroup())
    executor.add_node(node)
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.1)
            turns[0] += 1

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    try:
        wait_until(lambda: "queued" in ran, 10, what="the queued callback")
    finally:
        release.set()
        stop.set()
        spinner.join(5.0)
        for timer in [*timers, waiting]:
            timer.cancel()
        executor.shutdown(timeout_sec=2.0)
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    return handed, turns[0], ran


def test_a_task_waiting_for_a_worker_is_handed_to_the_pool_once():
    handed, turns, ran = backlog(NodeExecutor)
    assert ran[:2] == ["slow_a", "slow_b"] or ran[:2] == ["slow_b", "slow_a"]
    assert ran[2] == "queued"  # it ran once a worker was free
    assert handed and max(handed.values()) == 1, handed  # no task handed over twice
    # about 1 s of waiting: the spinning thread slept a millisecond per turn, not spun
    assert turns < 2000, turns


def test_rclpy_own_executor_hands_a_waiting_task_over_again_and_again():
    """The reason for NodeExecutor, checked on the rclpy installed: when this fails,
    rclpy no longer resubmits and NodeExecutor can go."""
    handed, turns, ran = backlog(MultiThreadedExecutor)
    assert "queued" in ran
    assert max(handed.values()) > 2, handed  # 11 times in 1 s when measured
