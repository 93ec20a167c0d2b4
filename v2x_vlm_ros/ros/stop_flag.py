"""A stop request that a signal handler can set (standard library only: ``ros.entry``
installs its handlers before any heavy import).

``threading.Event`` is not safe there: ``Event.set`` takes the event's lock, which the main
thread holds for a moment inside every ``Event.wait``, and Python runs signal handlers in
the main thread between bytecodes, so a signal handled in that moment waits for a lock its
own thread holds, forever (a vehicle_node that never exited after SIGINT, once in a CI
run). Setting and reading one attribute takes no lock."""


class StopFlag:
    """``set()`` / ``is_set()`` like ``threading.Event``, without the lock and without
    ``wait()``: poll it (the nodes' main thread checks it every 0.1 s)."""

    def __init__(self) -> None:
        self.requested = False

    def set(self) -> None:
        self.requested = True

    def is_set(self) -> bool:
        return self.requested
