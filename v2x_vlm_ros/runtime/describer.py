"""Algorithm 1, Task A: the scene description, produced beside planning, never inside it.

A describer (a Florence-2 caption of the ego view, ``model.describer.SceneDescriber``) is
far slower than a planning cycle, so it runs on its own: it takes the newest ego image
when it is free, at most ``rate_hz`` times a second, and leaves its text in a
``DescriptionCache``. Planning reads the cache and never waits:

- **fresh**: the text describes an ego image at most ``max_age_s`` older than now; used;
- **stale**: older than that; not used, the prompt goes without a description;
- **none**: nothing described yet (start-up); same behaviour as stale.

Both cases are counted by the vehicle service. A describer that raises is counted and
tried again on the next image; one that takes longer than ``deadline_s`` is reported as
late (its text, when it comes, still goes into the cache and ages like any other).

``ThreadedDescriber`` runs on a thread in real time (the vehicle node, replay --realtime);
``ClockedDescriber`` runs in the caller's thread on a logical clock, so that replay at
maximum speed is deterministic.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass

from v2x_vlm_ros.preprocessing.image_codec import decode_image


def _pixels(image):
    """Describers get decoded pixels; encoded frames are decoded here, off the planning path."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        return decode_image(bytes(image), "describer input")
    return image


@dataclass(frozen=True)
class Description:
    text: str
    image_stamp_ns: int  # stamp of the ego image it describes


class DescriptionCache:
    def __init__(self, max_age_s: float, reset_s: float = 2.0):
        if not max_age_s > 0:
            raise ValueError(f"description max_age_s must be > 0, got {max_age_s}")
        self.max_age_ns = int(max_age_s * 1e9)
        self.reset_ns = int(reset_s * 1e9)  # a jump back this large is a clock reset (as in FrameBuffer)
        self._latest: Description | None = None
        self._lock = threading.Lock()

    def put(self, description: Description) -> None:
        with self._lock:
            latest = self._latest
            if (latest is None or description.image_stamp_ns >= latest.image_stamp_ns
                    or description.image_stamp_ns < latest.image_stamp_ns - self.reset_ns):
                self._latest = description

    def get(self, now_ns: int) -> tuple[str | None, str, float | None]:
        """(text or None, "fresh" | "stale" | "none", age in seconds or None)."""
        with self._lock:
            latest = self._latest
        if latest is None:
            return None, "none", None
        age_ns = now_ns - latest.image_stamp_ns
        if abs(age_ns) > self.max_age_ns:  # too old, or of an image stamped far ahead of now
            return None, "stale", age_ns * 1e-9
        return latest.text, "fresh", max(age_ns, 0) * 1e-9


class ClockedDescriber:
    """Describes synchronously when due on the caller's clock (deterministic)."""

    def __init__(self, describe_fn, cache: DescriptionCache, rate_hz: float):
        if not rate_hz > 0:
            raise ValueError(f"describer rate_hz must be > 0, got {rate_hz}")
        self.describe_fn = describe_fn
        self.cache = cache
        self.period_ns = int(1e9 / rate_hz)
        self.counts: Counter = Counter()
        self._next_ns: int | None = None

    def submit(self, stamp_ns: int, image) -> None:
        if self._next_ns is not None and self._next_ns - self.period_ns <= stamp_ns < self._next_ns:
            self.counts["skipped_rate"] += 1
            return
        self._next_ns = stamp_ns + self.period_ns
        try:
            text = self.describe_fn(_pixels(image))
        except Exception as exc:  # a describer failure must never reach planning
            self.counts["errors"] += 1
            self.counts[f"error_{type(exc).__name__}"] += 1
            return
        self.counts["described"] += 1
        self.cache.put(Description(str(text), int(stamp_ns)))

    def stats(self) -> dict:
        return dict(self.counts)

    def close(self) -> None:
        pass


class ThreadedDescriber:
    """Describes the newest submitted image on a worker thread, at most ``rate_hz``."""

    def __init__(self, describe_fn, cache: DescriptionCache, rate_hz: float, deadline_s: float = 10.0):
        if not rate_hz > 0 or not deadline_s > 0:
            raise ValueError("describer rate_hz and deadline_s must be > 0")
        self.describe_fn = describe_fn
        self.cache = cache
        self.period_s = 1.0 / rate_hz
        self.deadline_s = deadline_s
        self.counts: Counter = Counter()
        self._slot = None
        self._busy_since: float | None = None
        self._reported_late = False
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="describer", daemon=True)
        self._thread.start()

    def submit(self, stamp_ns: int, image) -> None:
        with self._cond:
            if self._slot is not None:
                self.counts["superseded"] += 1
            self._slot = (int(stamp_ns), image)
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._slot is None and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                stamp_ns, image = self._slot
                self._slot = None
                self._busy_since = time.monotonic()
                self._reported_late = False
            began = time.monotonic()
            try:
                text = self.describe_fn(_pixels(image))
                self.cache.put(Description(str(text), stamp_ns))
                self.counts["described"] += 1
            except Exception as exc:  # a describer failure must never reach planning
                self.counts["errors"] += 1
                self.counts[f"error_{type(exc).__name__}"] += 1
            took = time.monotonic() - began
            with self._cond:
                self._busy_since = None
            if took > self.deadline_s:
                self.counts["late"] += 1
            wait = self.period_s - took
            if wait > 0:
                with self._cond:
                    self._cond.wait_for(lambda: self._stop, timeout=wait)

    def status(self) -> str:
        """"idle", "busy" or "hung" (busy past the deadline; counted once per call)."""
        with self._cond:
            busy = self._busy_since
            if busy is None:
                return "idle"
            if time.monotonic() - busy > self.deadline_s:
                if not self._reported_late:
                    self.counts["hung"] += 1
                    self._reported_late = True
                return "hung"
        return "busy"

    def stats(self) -> dict:
        return {**self.counts, "status": self.status()}

    def close(self, timeout_s: float = 1.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout=timeout_s)  # a hung describer is a daemon: left behind
