"""Image files of a dataset: a cheap check while indexing, a full decode on demand.

Indexing a real DAIR-V2X split touches tens of thousands of 1920x1080 JPEGs; decoding them
all would take minutes, so the index only checks that each file exists, is not empty and
starts and ends with its format's markers (which catches truncated files). A full decode
(``load_image``) happens when a sample's pixels are needed, or for every file with
``dataset summary --check-images``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from v2x_vlm_ros.data.records import roadside_before
from v2x_vlm_ros.preprocessing.image_codec import ImageDecodeError, decode_image

_JPEG_SOI = b"\xff\xd8"
_JPEG_EOI = b"\xff\xd9"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"IEND\xaeB`\x82"


def quick_check(path: Path) -> str | None:
    """None when the file looks like a complete JPEG or PNG, else the reason it does not."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "file not found"
    except OSError as exc:
        return f"cannot stat: {exc.strerror or exc}"
    if size == 0:
        return "empty file"
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            fh.seek(max(0, size - 64))
            tail = fh.read().rstrip(b"\x00")  # some writers pad JPEGs with zeros
    except OSError as exc:
        return f"cannot read: {exc.strerror or exc}"
    if head.startswith(_JPEG_SOI):
        return None if tail.endswith(_JPEG_EOI) else "truncated JPEG (no end-of-image marker)"
    if head.startswith(_PNG_SIGNATURE):
        return None if tail.endswith(_PNG_IEND) else "truncated PNG (no IEND chunk)"
    return "not a JPEG or PNG file"


def load_image(path: Path) -> np.ndarray:
    """Decode an image file to BGR uint8; raises ``ImageDecodeError`` naming the file."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ImageDecodeError(str(path), f"cannot read: {exc.strerror or exc}") from None
    return decode_image(data, str(path))


def earlier_roadside_image(sample, seconds: float | None) -> np.ndarray | None:
    """A sample's roadside frame taken ``seconds`` before its own (``records.roadside_before``),
    decoded; None when ``seconds`` is None (a model that reads one frame) or the dataset has
    no such frame (a sequence's start, a gap)."""
    if seconds is None:
        return None
    earlier = roadside_before(sample, seconds)
    return None if earlier is None else load_image(earlier[1])
