"""Console entry points of the nodes (``vehicle_node``, ``vehicle_lifecycle_node``,
``roadside_node``): SIGINT / SIGTERM handlers first, the heavy imports (rclpy, torch, the
model) after, so that a signal during start-up (a launch stopped right after it started)
ends the node cleanly once it is up, instead of a KeyboardInterrupt traceback from inside
an import. Nothing but the standard library is imported before the handlers."""

import signal
import sys

from v2x_vlm_ros.ros.stop_flag import StopFlag

#: Set by the first SIGINT / SIGTERM; ``ros.process.run`` stops when it is set (a flag, not
#: a threading.Event: setting an Event from a signal handler can deadlock, ``ros.stop_flag``).
STOP = StopFlag()


def _on_signal(signum, frame):
    STOP.set()


def _handle_signals() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _on_signal)


def vehicle_node() -> int:
    _handle_signals()
    from v2x_vlm_ros.ros import vehicle_node as node

    return node.main(stop=STOP)


def vehicle_lifecycle_node() -> int:
    _handle_signals()
    from v2x_vlm_ros.ros import vehicle_node as node

    return node.main_lifecycle(stop=STOP)


def roadside_node() -> int:
    _handle_signals()
    from v2x_vlm_ros.ros import roadside_node as node

    return node.main(stop=STOP)


if __name__ == "__main__":
    sys.exit({"vehicle_node": vehicle_node, "vehicle_lifecycle_node": vehicle_lifecycle_node,
              "roadside_node": roadside_node}[sys.argv.pop(1)]())
