"""Watching the inputs of a node: frames lost before they reached it, and silent inputs.

No rclpy here (tested on its own); the nodes feed these from their subscriptions.

- ``TransportLosses``: every DDS sample carries its publisher's sequence number
  (``MessageInfo['publication_sequence_number']``, 1, 2, 3, ...). A jump from 7 to 10
  means samples 8 and 9 were published and never reached the subscription (a best-effort
  queue overflowed while the node was busy, the network dropped them): counted as lost.
  Exact for one publisher per topic (a camera driver, roadside_node); a number going back
  is a new or restarted publisher and starts a new count, so several publishers on one
  topic cannot make losses up, only hide some. Samples before the first one received are
  not counted (the node may simply have started later than the camera); the first
  sequence number received is kept (``first``) so that a caller who knows when the
  publisher started can account for them too.
- ``SilenceMonitor``: an input is silent when nothing came for ``threshold_s``, counted
  from the last message or, before the first one, from when watching started (never at
  start-up: the first warning comes ``threshold_s`` after the node is up). Each silent
  input is named on its own, and warned about again at most every ``repeat_s``.
"""

from __future__ import annotations

from collections import Counter


class TransportLosses:
    def __init__(self):
        self.lost: Counter = Counter()
        self.first: dict[str, int] = {}
        self._last: dict[str, int] = {}

    def observe(self, name: str, sequence_number) -> int:
        """Record a received sample of input ``name``; the number of samples lost just
        before it (0 when the publisher gives no sequence numbers)."""
        if not isinstance(sequence_number, int) or sequence_number <= 0:
            return 0
        last = self._last.get(name)
        self._last[name] = sequence_number
        self.first.setdefault(name, sequence_number)
        if last is None or sequence_number <= last:
            return 0
        gap = sequence_number - last - 1
        if gap:
            self.lost[name] += gap
        return gap


class SilenceMonitor:
    def __init__(self, names, threshold_s: float, now_s: float, repeat_s: float = 10.0):
        if not threshold_s > 0:
            raise ValueError(f"silence threshold must be > 0 s, got {threshold_s}")
        self.threshold_s = threshold_s
        self.repeat_s = repeat_s
        self.started_s = now_s
        self.last_seen: dict[str, float | None] = {name: None for name in names}
        self._warned: dict[str, float] = {}

    def seen(self, name: str, now_s: float) -> None:
        self.last_seen[name] = now_s
        self._warned.pop(name, None)

    def silent_for(self, now_s: float) -> dict[str, float]:
        """``{input: seconds silent}`` for every input silent longer than the threshold."""
        out = {}
        for name, seen in self.last_seen.items():
            quiet = now_s - (self.started_s if seen is None else seen)
            if quiet > self.threshold_s:
                out[name] = quiet
        return out

    def due_warnings(self, now_s: float) -> dict[str, float]:
        """The silent inputs to warn about now (each at most once per ``repeat_s``)."""
        out = {}
        for name, quiet in self.silent_for(now_s).items():
            last = self._warned.get(name)
            if last is None or now_s - last >= self.repeat_s:
                self._warned[name] = now_s
                out[name] = quiet
        return out
