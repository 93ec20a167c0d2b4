"""Safe image decoding and encoding for dataset files and image messages.

``cv2.imdecode`` alone is not safe enough for data we do not control:
- it silently decodes a truncated JPEG, filling the missing rows with grey, which would
  feed a half-grey roadside image to the planner without any warning;
- it allocates whatever the header declares before looking at the pixels, so a few bytes
  claiming 20000 x 20000 pixels cost 1.2 GB.
So the header is parsed here first (PNG IHDR, JPEG SOFn via a marker scanner), the
dimensions are bounded, the file must be complete (JPEG ends with EOI, PNG with IEND),
and only then does OpenCV decode. Every error is an ``ImageDecodeError`` naming its
source (a file path or a topic), which callers can count as a skip instead of crashing.
"""

from __future__ import annotations

import cv2
import numpy as np

_JPEG_SOI = b"\xff\xd8"
_JPEG_EOI = b"\xff\xd9"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# JPEG markers without a length field: TEM and RST0..RST7 (SOI / EOI are handled apart).
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
# Start-of-frame markers carrying the image size: C0..CF except DHT (C4), JPG (C8), DAC (CC).
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_SOS = 0xDA

DEFAULT_MAX_PIXELS = 64_000_000
CODECS = ("jpeg", "png", "raw")


class ImageDecodeError(ValueError):
    """An image could not be decoded. ``source`` names where it came from (file or topic)."""

    def __init__(self, source: str, reason: str):
        self.source = str(source)
        self.reason = reason
        super().__init__(f"{self.source}: {reason}")

    def __reduce__(self):
        # Default exception pickling re-calls __init__ with the formatted message only;
        # DataLoader workers pickle exceptions, so rebuild from both fields.
        return (type(self), (self.source, self.reason))


def _as_bytes(data) -> bytes:
    """Accept the buffer types messages and files give us (bytes, bytearray, memoryview,
    array.array, uint8 numpy arrays); refuse the rest, e.g. ``bytes(5)`` would be 5 zeros."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, str) or isinstance(data, int):
        raise TypeError(f"image data must be a bytes-like object, got {type(data).__name__}")
    try:
        return memoryview(data).cast("B").tobytes()
    except TypeError:
        raise TypeError(f"image data must be a bytes-like object, got {type(data).__name__}") from None


def _image_format(data: bytes) -> str | None:
    if data.startswith(_PNG_SIGNATURE):
        return "png"
    if data.startswith(_JPEG_SOI):
        return "jpeg"
    return None


# --------------------------------------------------------------------------- JPEG


def _jpeg_segments(data: bytes, source: str):
    """Yield (marker, payload_start, payload_end) for each header segment after SOI, up to
    and including SOS (after which entropy-coded data follows and markers mean something
    else). Raises ImageDecodeError on a truncated or malformed header.

    Segments are skipped by their length field, never by searching for marker bytes: an
    APPn/COM payload (e.g. an EXIF thumbnail) may contain anything, fake SOF bytes included."""
    n = len(data)
    pos = 2
    while True:
        if pos >= n:
            raise ImageDecodeError(source, "truncated JPEG (header ends before the image data)")
        if data[pos] != 0xFF:
            raise ImageDecodeError(source, f"corrupt JPEG (expected a marker at byte {pos})")
        while pos < n and data[pos] == 0xFF:  # any number of 0xFF fill bytes may precede a marker
            pos += 1
        if pos >= n:
            raise ImageDecodeError(source, "truncated JPEG (header ends before the image data)")
        marker = data[pos]
        pos += 1
        if marker in _JPEG_STANDALONE:
            continue
        if marker == 0x00:
            raise ImageDecodeError(source, f"corrupt JPEG (stuffed 0xFF00 in the header at byte {pos - 2})")
        if marker == 0xD8:
            raise ImageDecodeError(source, "corrupt JPEG (second start-of-image marker)")
        if marker == 0xD9:
            raise ImageDecodeError(source, "corrupt JPEG (end-of-image before any image data)")
        if pos + 2 > n:
            raise ImageDecodeError(source, "truncated JPEG (header ends inside a segment)")
        length = int.from_bytes(data[pos : pos + 2], "big")
        if length < 2:
            raise ImageDecodeError(source, f"corrupt JPEG (segment length {length} at byte {pos})")
        if pos + length > n:
            raise ImageDecodeError(source, "truncated JPEG (header ends inside a segment)")
        yield marker, pos + 2, pos + length
        pos += length
        if marker == _JPEG_SOS:
            return


def _jpeg_size(data: bytes, source: str) -> tuple[int, int]:
    for marker, start, end in _jpeg_segments(data, source):
        if marker in _JPEG_SOF:
            if end - start < 6:
                raise ImageDecodeError(source, "corrupt JPEG (start-of-frame segment too short)")
            # Payload: precision (1), height (2), width (2), components (1), ...
            height = int.from_bytes(data[start + 1 : start + 3], "big")
            width = int.from_bytes(data[start + 3 : start + 5], "big")
            return width, height
        if marker == _JPEG_SOS:
            break
    raise ImageDecodeError(source, "corrupt JPEG (no start-of-frame before the image data)")


def _check_jpeg_complete(data: bytes, source: str) -> None:
    for _ in _jpeg_segments(data, source):  # the header must be whole up to SOS
        pass
    # Entropy-coded data cannot contain FF D9 (0xFF is always stuffed or an RSTn there), so
    # a file that does not end with EOI was cut. Some writers pad with zeros: allow that only.
    if not data.rstrip(b"\x00").endswith(_JPEG_EOI):
        raise ImageDecodeError(source, "truncated JPEG (no end-of-image marker at the end)")


# --------------------------------------------------------------------------- PNG


def _png_size(data: bytes, source: str) -> tuple[int, int]:
    # Signature (8), then the IHDR chunk: length (4) = 13, type (4), width (4), height (4).
    if len(data) < 24:
        raise ImageDecodeError(source, "truncated PNG (no complete IHDR header)")
    if data[8:16] != b"\x00\x00\x00\x0dIHDR":
        raise ImageDecodeError(source, "corrupt PNG (first chunk is not a 13-byte IHDR)")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _check_png_complete(data: bytes, source: str) -> None:
    """Walk the chunks (length, type, data, CRC) up to IEND: every chunk must fit in the data
    and IEND must come last (zero padding allowed after it, as for JPEG)."""
    n = len(data)
    pos = 8
    while True:
        if pos + 8 > n:
            raise ImageDecodeError(source, "truncated PNG (no IEND chunk)")
        length = int.from_bytes(data[pos : pos + 4], "big")
        if length > 0x7FFFFFFF:
            raise ImageDecodeError(source, f"corrupt PNG (chunk length {length} at byte {pos})")
        ctype = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > n:
            raise ImageDecodeError(source, "truncated PNG (a chunk runs past the end of the data)")
        pos = end
        if ctype == b"IEND":
            break
    if data[pos:].strip(b"\x00"):
        raise ImageDecodeError(source, "corrupt PNG (data after the IEND chunk)")


# --------------------------------------------------------------------------- public API


def image_size_from_header(data, source: str = "<bytes>") -> tuple[int, int]:
    """(width, height) declared by a JPEG or PNG header, without decoding any pixels."""
    buf = _as_bytes(data)
    if not buf:
        raise ImageDecodeError(source, "empty image data")
    fmt = _image_format(buf)
    if fmt == "png":
        return _png_size(buf, source)
    if fmt == "jpeg":
        return _jpeg_size(buf, source)
    raise ImageDecodeError(source, "unknown image format (only JPEG and PNG are accepted)")


def decode_image(data, source: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a complete JPEG or PNG into a BGR uint8 (H, W, 3) array.

    Raises ImageDecodeError (naming ``source``) for empty data, any other format, a
    truncated file, a header declaring a zero size or more than ``max_pixels`` pixels
    (checked before anything is allocated), or a decode failure. Grayscale, 16-bit and
    alpha images come back as 8-bit 3-channel BGR. EXIF orientation is ignored on purpose:
    a camera's pixels are used as the sensor delivered them, and the decoded size then
    always matches the header."""
    buf = _as_bytes(data)
    if not buf:
        raise ImageDecodeError(source, "empty image data")
    fmt = _image_format(buf)
    if fmt is None:
        raise ImageDecodeError(source, "unknown image format (only JPEG and PNG are accepted)")
    width, height = image_size_from_header(buf, source)
    if width == 0 or height == 0:
        raise ImageDecodeError(source, f"header declares an empty image ({width}x{height})")
    if width * height > max_pixels:
        raise ImageDecodeError(
            source, f"header declares {width}x{height} = {width * height} pixels, more than {max_pixels}"
        )
    if fmt == "jpeg":
        _check_jpeg_complete(buf, source)
    else:
        _check_png_complete(buf, source)
    try:
        flags = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
        image = cv2.imdecode(np.frombuffer(buf, dtype=np.uint8), flags)
    except cv2.error as exc:
        raise ImageDecodeError(source, f"OpenCV failed to decode the {fmt.upper()}: {exc}") from None
    if image is None:
        raise ImageDecodeError(source, f"OpenCV could not decode the {fmt.upper()} data")
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ImageDecodeError(source, f"decoded to an unexpected array {image.dtype} {image.shape}")
    if image.shape[:2] != (height, width):
        raise ImageDecodeError(
            source,
            f"decoded size {image.shape[1]}x{image.shape[0]} differs from the header's {width}x{height}",
        )
    return image


def _check_scale(scale) -> float:
    try:
        s = float(scale)
    except (TypeError, ValueError):
        raise ValueError(f"scale must be a number in (0, 1], got {scale!r}") from None
    if not (0.0 < s <= 1.0):  # also rejects NaN
        raise ValueError(f"scale must be in (0, 1], got {scale!r}")
    return s


def downsampled_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """(width, height) that ``downsample`` produces: round(W*s), round(H*s), at least 1."""
    s = _check_scale(scale)
    return max(1, round(width * s)), max(1, round(height * s))


def downsample(image: np.ndarray, scale: float) -> np.ndarray:
    """Shrink by ``scale`` in (0, 1] with area averaging (the right filter for shrinking: it
    does not alias). Scale 1 returns the same array object, untouched."""
    s = _check_scale(scale)
    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3) or image.size == 0:
        raise ValueError("image must be a non-empty (H, W) or (H, W, C) array")
    if s == 1.0:
        return image
    h, w = image.shape[:2]
    return cv2.resize(image, downsampled_size(w, h, s), interpolation=cv2.INTER_AREA)


def _check_bgr(image) -> None:
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or image.size == 0:
        raise ValueError(
            f"image must be a non-empty (H, W, 3) uint8 BGR array, got {image.dtype} {image.shape}"
        )


def encode_image(image: np.ndarray, codec: str = "jpeg", quality: int = 90) -> bytes:
    """Encode a BGR uint8 image: "jpeg" (lossy, ``quality`` 1..100), "png" (lossless; the
    quality is validated but unused) or "raw" (the H*W*3 BGR bytes, row-major)."""
    _check_bgr(image)
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; allowed: {', '.join(CODECS)}")
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) or not 1 <= quality <= 100:
        raise ValueError(f"quality must be an integer in 1..100, got {quality!r}")
    if codec == "raw":
        return np.ascontiguousarray(image).tobytes()
    if codec == "jpeg":
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    else:
        ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise ValueError(f"OpenCV failed to encode a {image.shape} image as {codec}")
    return buf.tobytes()


__all__ = [
    "CODECS",
    "DEFAULT_MAX_PIXELS",
    "ImageDecodeError",
    "decode_image",
    "downsample",
    "downsampled_size",
    "encode_image",
    "image_size_from_header",
]
