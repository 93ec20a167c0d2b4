"""Transmission cost of sending the roadside image to the vehicle.

Two numbers, because they answer different questions:
- ``formula_bps``: the paper's appendix A, BPS = s^2 * W * H * C * f, i.e. the cost of the
  RAW downsampled pixels. This is what the paper's tables report (1.24e7 B/s for a full
  1920x1080x3 image at 2 Hz), so it is the number to compare with them.
- measured bytes/s of what is actually sent (JPEG/PNG compressed), which is what a link
  has to carry and is usually 10-50x smaller.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable

import numpy as np

from v2x_vlm_ros.preprocessing.image_codec import downsample, encode_image


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _positive_rate(rate_hz) -> float:
    rate = float(rate_hz)
    if not (math.isfinite(rate) and rate > 0):
        raise ValueError(f"rate_hz must be a positive finite number, got {rate_hz!r}")
    return rate


def formula_bps(scale: float, width: int, height: int, channels: int = 3, rate_hz: float = 2.0) -> float:
    """Paper appendix A: s^2 * W * H * C * f bytes per second for uint8 images of the
    ORIGINAL size W x H with C channels, downsampled by ``scale`` in (0, 1], sent at f Hz."""
    s = float(scale)
    if not (0.0 < s <= 1.0):  # also rejects NaN
        raise ValueError(f"scale must be in (0, 1], got {scale!r}")
    w = _positive_int("width", width)
    h = _positive_int("height", height)
    c = _positive_int("channels", channels)
    return s * s * w * h * c * _positive_rate(rate_hz)


def measured_bps(message_sizes: Iterable[int], rate_hz: float) -> float:
    """Mean message size (bytes) times the send rate: the bandwidth of a stream sent at a
    fixed rate, without needing timestamps."""
    sizes = [int(n) for n in message_sizes]
    if not sizes:
        raise ValueError("measured_bps needs at least one message size")
    if any(n < 0 for n in sizes):
        raise ValueError("message sizes must be non-negative")
    return sum(sizes) / len(sizes) * _positive_rate(rate_hz)


class BandwidthMeter:
    """Bytes per second of a message stream, from (size, stamp) of each message sent.

    The rate over the recorded span leaves out the earliest message's bytes: N messages
    stamped over a span T are N - 1 intervals, each carrying the message that ends it, so
    a stream of b bytes every 1/f s reads exactly b * f (dividing all N * b by T would read
    b * f * N / (N - 1)). ``window`` keeps only the latest messages, for long-running nodes."""

    def __init__(self, window: int | None = None):
        if window is not None and (isinstance(window, bool) or int(window) != window or window < 2):
            raise ValueError(f"window must be None or an integer >= 2, got {window!r}")
        self._records: deque[tuple[int, float]] = deque(maxlen=window)

    def record(self, num_bytes: int, stamp_s: float) -> None:
        n = int(num_bytes)
        t = float(stamp_s)
        if n < 0:
            raise ValueError(f"num_bytes must be non-negative, got {num_bytes!r}")
        if not math.isfinite(t):
            raise ValueError(f"stamp_s must be finite, got {stamp_s!r}")
        self._records.append((n, t))

    def reset(self) -> None:
        self._records.clear()

    @property
    def message_count(self) -> int:
        return len(self._records)

    @property
    def total_bytes(self) -> int:
        return sum(n for n, _ in self._records)

    def mean_bytes(self) -> float | None:
        """Mean message size, None before the first message."""
        return self.total_bytes / len(self._records) if self._records else None

    def bytes_per_second(self) -> float | None:
        """Bytes/s over the recorded span; None until two messages with distinct stamps."""
        if len(self._records) < 2:
            return None
        first = min(self._records, key=lambda r: r[1])  # stamps may arrive out of order
        span = max(t for _, t in self._records) - first[1]
        if span <= 0:
            return None
        return (self.total_bytes - first[0]) / span

    def summary(self) -> dict:
        return {
            "messages": self.message_count,
            "total_bytes": self.total_bytes,
            "mean_bytes": self.mean_bytes(),
            "bytes_per_second": self.bytes_per_second(),
        }


def measure_stream(
    images: Iterable[np.ndarray],
    scale: float,
    codec: str = "jpeg",
    quality: int = 90,
    rate_hz: float = 2.0,
) -> dict:
    """Downsample and encode each BGR uint8 image as the roadside node would, and report
    both costs. ``formula_bps`` uses each ORIGINAL image's size and channels (averaged when
    sizes differ); ``measured_bps`` = mean encoded size x rate."""
    rate = _positive_rate(rate_hz)
    sizes, formulas = [], []
    for image in images:
        sizes.append(len(encode_image(downsample(image, scale), codec, quality)))
        h, w = image.shape[:2]
        formulas.append(formula_bps(scale, w, h, image.shape[2] if image.ndim == 3 else 1, rate))
    if not sizes:
        raise ValueError("measure_stream needs at least one image")
    return {
        "scale": float(scale),
        "codec": codec,
        "rate_hz": rate,
        "formula_bps": float(sum(formulas) / len(formulas)),
        "measured_bps": float(measured_bps(sizes, rate)),
        "mean_bytes": float(sum(sizes) / len(sizes)),
        "messages": len(sizes),
    }


def stored_stream_cost(paths: Iterable, rate_hz: float = 2.0) -> dict | None:
    """What sending a dataset's roadside images as they are stored (already JPEG, s = 1)
    would cost at ``rate_hz``: the paper's formula from the image size in the first file's
    header, and the measured mean file size x rate. None for no files."""
    from pathlib import Path

    from v2x_vlm_ros.preprocessing.image_codec import image_size_from_header

    paths = [Path(p) for p in paths]
    if not paths:
        return None
    sizes = [p.stat().st_size for p in paths]
    with open(paths[0], "rb") as fh:
        width, height = image_size_from_header(fh.read(1 << 16), str(paths[0]))
    rate = _positive_rate(rate_hz)
    return {
        "scale": 1.0,
        "rate_hz": rate,
        "width": width,
        "height": height,
        "formula_bps": formula_bps(1.0, width, height, 3, rate),
        "measured_bps": float(measured_bps(sizes, rate)),
        "mean_bytes": float(sum(sizes) / len(sizes)),
        "messages": len(sizes),
    }
