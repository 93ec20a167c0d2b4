"""Which roadside frame goes with an ego frame (the one place that owns the time rule).

A roadside frame with stamp t_r pairs with an ego frame with stamp t_e when

    t_r <= t_e + slop        (not from the future, beyond the clocks' disagreement) and
    t_e - t_r <= max_age     (not stale: an old view of the junction misleads),

and among those the newest one wins. The roadside stream runs slower than the ego camera
(the paper sends 2 Hz against 10 Hz), so the pair is usually the latest roadside frame,
up to one roadside period old; ``slop`` absorbs clock offsets between the two machines.
With no frame passing both tests the vehicle plans in its degraded ego-only mode.

``FrameBuffer`` is the bounded queue every input lives in: it keeps the newest frames,
drops the oldest when full, and counts every drop by cause, including frames whose
stamps repeat or go back in time. A small step back is a late frame and is dropped; a
jump back of more than ``reset_s`` is a clock reset (a bag played again, a restarted
driver, sim time starting over): the buffer empties and follows the new clock, counted,
instead of refusing every frame until time catches up.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, eq=False)  # frames compare by identity: values may be arrays
class Stamped(Generic[T]):
    stamp_ns: int
    value: T


def pick_roadside(ego_stamp_ns: int, candidates, slop_s: float, max_age_s: float):
    """The newest candidate (``Stamped``) that pairs with the ego stamp, or None."""
    best = None
    for frame in candidates:
        if frame.stamp_ns > ego_stamp_ns + slop_s * 1e9:
            continue
        if ego_stamp_ns - frame.stamp_ns > max_age_s * 1e9:
            continue
        if best is None or frame.stamp_ns > best.stamp_ns:
            best = frame
    return best


def pick_earlier(stamp_ns: int, candidates, seconds: float, tolerance_s: float):
    """The candidate (``Stamped``) taken nearest ``seconds`` before ``stamp_ns``, or None when
    none lies within ``tolerance_s`` of that time (a model reading motion from two roadside
    frames, ``ModelSettings.roadside_motion_s``)."""
    target = stamp_ns - seconds * 1e9
    best = min(candidates, key=lambda frame: abs(frame.stamp_ns - target), default=None)
    if best is None or abs(best.stamp_ns - target) > tolerance_s * 1e9:
        return None
    return best


class FrameBuffer(Generic[T]):
    """Bounded, stamp-ordered buffer of one input stream with counted drops."""

    def __init__(self, name: str, depth: int, drops: Counter, reset_s: float = 2.0):
        if depth < 1:
            raise ValueError(f"{name}: queue depth must be >= 1, got {depth}")
        self.name = name
        self.reset_ns = int(reset_s * 1e9)
        self.frames: deque[Stamped[T]] = deque(maxlen=depth)
        self.drops = drops
        self.received = 0

    def push(self, stamp_ns: int, value: Any) -> bool:
        """Add a frame; False (and a counted drop) when its stamp is not newer than the
        newest frame already held."""
        self.received += 1
        newest = self.frames[-1].stamp_ns if self.frames else None
        if newest is not None and stamp_ns == newest:
            self.drops[f"{self.name}_duplicate_stamp"] += 1
            return False
        if newest is not None and stamp_ns < newest - self.reset_ns:
            self.drops[f"{self.name}_clock_reset"] += 1
            self.drops[f"{self.name}_clock_reset_discarded"] += len(self.frames)  # frames, not events
            self.frames.clear()
        elif newest is not None and stamp_ns < newest:
            self.drops[f"{self.name}_out_of_order"] += 1
            return False
        if len(self.frames) == self.frames.maxlen:
            self.drops[f"{self.name}_queue_full"] += 1
        self.frames.append(Stamped(int(stamp_ns), value))
        return True

    def latest(self) -> Stamped[T] | None:
        return self.frames[-1] if self.frames else None

    def take_latest(self) -> Stamped[T] | None:
        """The newest frame, removing it; older ones are superseded (counted)."""
        if not self.frames:
            return None
        newest = self.frames.pop()
        if self.frames:
            self.drops[f"{self.name}_superseded"] += len(self.frames)
            self.frames.clear()
        return newest

    def discard(self, frame: Stamped[T]) -> None:
        """Remove one frame (an unusable one), keeping the others in order."""
        kept = [f for f in self.frames if f is not frame]
        self.frames.clear()
        self.frames.extend(kept)

    def clear(self) -> None:
        self.frames.clear()
