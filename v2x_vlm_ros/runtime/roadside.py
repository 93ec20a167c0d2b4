"""Algorithm 1, Task B: the roadside side of the link.

Each infrastructure frame offered is, at most ``rate_hz`` times a second (by stamp, so a
replay at any speed sends the same frames), downsampled by ``scale`` and encoded (JPEG
with ``quality``, PNG, or raw BGR bytes), and the bytes are accounted twice: by the
paper's formula s²·W·H·C·f on the original size, and as actually sent (``BandwidthMeter``).
``rate_hz = 0`` sends every frame.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

import numpy as np

from v2x_vlm_ros.preprocessing.image_codec import CODECS, downsample, encode_image
from v2x_vlm_ros.runtime.transmission import BandwidthMeter, formula_bps


@dataclass
class RoadsideConfig:
    """Roadside node parameters (roadside_node declares the same names)."""

    #: Downsampling factor s in (0, 1] applied to width and height.
    scale: float = 1.0
    #: "jpeg", "png" or "raw".
    codec: str = "jpeg"
    #: JPEG quality 1..100 (ignored by png and raw).
    quality: int = 90
    #: Frames sent per second at most (the paper: 2 Hz); 0 sends every frame.
    rate_hz: float = 2.0

    def __post_init__(self):
        if not 0 < self.scale <= 1:
            raise ValueError(f"scale must be in (0, 1], got {self.scale}")
        if self.codec not in CODECS:
            raise ValueError(f"codec must be one of {CODECS}, got {self.codec!r}")
        if not 1 <= self.quality <= 100:
            raise ValueError(f"quality must be in 1..100, got {self.quality}")
        if self.rate_hz < 0:
            raise ValueError(f"rate_hz must be >= 0, got {self.rate_hz}")


@dataclass
class EncodedFrame:
    stamp_ns: int
    data: bytes
    codec: str
    width: int  # of the sent (downsampled) image
    height: int
    encode_ms: float


#: Gaps between offered frames longer than this are not stream time (a new sequence, a
#: paused camera): the measured rate is bytes sent over the time the camera was streaming.
STREAM_GAP_S = 2.0


class RoadsideService:
    def __init__(self, config: RoadsideConfig | None = None):
        self.config = config or RoadsideConfig()
        # the latest messages only (a node runs for days); totals are running sums
        self.meter = BandwidthMeter(window=256)
        self._bytes_sent = 0
        self.counts: Counter = Counter()
        self._last_sent_ns: int | None = None
        self._next_due_ns: int | None = None
        self._period_ns = int(1e9 / self.config.rate_hz) if self.config.rate_hz else 0
        self._last_offered_ns: int | None = None
        self._stream_ns = 0
        self._formula: float | None = None

    def reconfigure(self, config: RoadsideConfig) -> None:
        """Apply new settings while running: counters, totals and the send grid are kept;
        a new rate takes effect from the next frame sent."""
        self.config = config
        self._period_ns = int(1e9 / config.rate_hz) if config.rate_hz else 0
        if not config.rate_hz:
            self._next_due_ns = None
        self._formula = None  # recomputed with the next frame sent

    def reject(self) -> None:
        """An admitted frame that could not be read (corrupt bytes, wrong encoding): counted
        as ``input_undecodable``; the send grid is not advanced, so the next frame is due."""
        self.counts["input_undecodable"] += 1

    def due(self, stamp_ns: int) -> bool:
        """Whether a frame with this stamp would be sent. Sends follow a grid of period
        1 / rate_hz started by the first frame, and a frame up to a tenth of a period early
        counts as on time, so camera jitter does not let the rate drift down."""
        if self.config.rate_hz == 0 or self._next_due_ns is None:
            return True
        if self._last_sent_ns is not None and stamp_ns < self._last_sent_ns:  # clock went back
            return True
        return stamp_ns >= self._next_due_ns - self._period_ns // 10

    def _schedule(self, stamp_ns: int) -> None:
        if self.config.rate_hz == 0:
            return
        grid = self._next_due_ns
        if grid is None or stamp_ns < (self._last_sent_ns or stamp_ns) or stamp_ns - grid >= self._period_ns:
            grid = stamp_ns  # first frame, a clock reset, or a pause: restart the grid here
        self._next_due_ns = grid + self._period_ns

    def admit(self, stamp_ns: int) -> bool:
        """Count a frame offered at this stamp; True when it is due (then ``encode`` it), so a
        node can skip decoding the frames the rate limit drops."""
        self.counts["offered"] += 1
        if self._last_offered_ns is not None and 0 < stamp_ns - self._last_offered_ns <= STREAM_GAP_S * 1e9:
            self._stream_ns += stamp_ns - self._last_offered_ns
        self._last_offered_ns = int(stamp_ns)
        if not self.due(stamp_ns):
            self.counts["skipped_rate"] += 1
            return False
        return True

    def mark_sent(self, stamp_ns: int) -> None:
        """Advance the send schedule and count the frame as sent (``encode`` calls it; a
        caller that only mirrors a roadside node's schedule calls it without encoding)."""
        self._schedule(int(stamp_ns))
        self._last_sent_ns = int(stamp_ns)
        self.counts["sent"] += 1

    def offer(self, stamp_ns: int, image: np.ndarray) -> EncodedFrame | None:
        """Encode and account the frame if it is due; None when the rate limit skips it."""
        return self.encode(stamp_ns, image) if self.admit(stamp_ns) else None

    def encode(self, stamp_ns: int, image: np.ndarray) -> EncodedFrame:
        """Downsample, encode and account an admitted frame."""
        t0 = time.perf_counter()
        small = downsample(image, self.config.scale)
        data = encode_image(small, self.config.codec, self.config.quality)
        encode_ms = 1000.0 * (time.perf_counter() - t0)
        self.mark_sent(stamp_ns)
        self.meter.record(len(data), stamp_ns * 1e-9)
        self._bytes_sent += len(data)
        h, w = image.shape[:2]
        rate = self.config.rate_hz or None
        if rate is not None:
            self._formula = formula_bps(self.config.scale, w, h, image.shape[2], rate)
        return EncodedFrame(int(stamp_ns), data, self.config.codec, small.shape[1], small.shape[0], encode_ms)

    @property
    def measured_bps(self) -> float | None:
        """Bytes sent per second of streaming (gaps over ``STREAM_GAP_S`` excluded)."""
        if self._stream_ns <= 0:
            return None
        return self._bytes_sent / (self._stream_ns * 1e-9)

    def stats(self) -> dict:
        """Counts and bandwidth. ``formula_bps`` needs a rate; with ``rate_hz = 0`` the
        measured rate is the only meaningful number."""
        return {
            "config": {"scale": self.config.scale, "codec": self.config.codec,
                       "quality": self.config.quality, "rate_hz": self.config.rate_hz},
            "offered": self.counts["offered"], "sent": self.counts["sent"],
            "skipped_rate": self.counts["skipped_rate"],
            "input_undecodable": self.counts["input_undecodable"],
            "formula_bps": self._formula, "measured_bps": self.measured_bps,
            "measured_mean_bytes": self._bytes_sent / self.counts["sent"] if self.counts["sent"] else None,
            "measured_total_bytes": self._bytes_sent,
            "recent_bps": self.meter.bytes_per_second(),
            "stream_seconds": self._stream_ns * 1e-9,
        }
