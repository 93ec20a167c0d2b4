"""Safe decoding: truncation, size limits checked before decoding, the JPEG marker scanner,
grayscale / 16-bit / alpha handling, encoding and downsampling."""

import pickle
import struct
import zlib

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from v2x_vlm_ros.preprocessing import image_codec
from v2x_vlm_ros.preprocessing.image_codec import (
    ImageDecodeError,
    decode_image,
    downsample,
    downsampled_size,
    encode_image,
    image_size_from_header,
)


def gradient(h=48, w=64):
    """Smooth BGR image (JPEG-friendly) of size w x h."""
    yy, xx = np.mgrid[0:h, 0:w]
    channels = [xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), (xx + yy) % 256]
    return np.stack(channels, axis=-1).astype(np.uint8)


IMAGE = gradient()
JPEG = encode_image(IMAGE, "jpeg", 95)
PNG = encode_image(IMAGE, "png")


def png_chunk(ctype: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + ctype + payload + struct.pack(">I", zlib.crc32(ctype + payload))


def crafted_png(width: int, height: int) -> bytes:
    """A complete, well-formed PNG container declaring width x height RGB pixels, with a
    tiny IDAT (the pixels do not matter: it must be rejected before decoding)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + png_chunk(b"IEND", b"")
    )


def jpeg_with_size(width: int, height: int) -> bytes:
    """The test JPEG with its SOF0 dimensions overwritten."""
    sof = JPEG.find(b"\xff\xc0")
    assert 0 < sof < 1000  # in the header
    # FF C0, length (2), precision (1), height (2), width (2)
    return JPEG[: sof + 5] + struct.pack(">HH", height, width) + JPEG[sof + 9 :]


def forbid_decoding(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("cv2.imdecode must not be reached")

    monkeypatch.setattr(image_codec.cv2, "imdecode", fail)


# --------------------------------------------------------------------------- round trips


def test_png_round_trip_is_exact():
    out = decode_image(PNG, "cam.png")
    assert out.dtype == np.uint8 and out.shape == (48, 64, 3)
    np.testing.assert_array_equal(out, IMAGE)


def test_jpeg_round_trip_within_tolerance():
    out = decode_image(JPEG, "cam.jpg")
    assert out.shape == (48, 64, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - IMAGE.astype(int)).mean() < 3.0


def test_accepts_other_buffer_types():
    for data in (bytearray(PNG), memoryview(PNG), np.frombuffer(PNG, dtype=np.uint8)):
        np.testing.assert_array_equal(decode_image(data, "msg"), IMAGE)
    with pytest.raises(TypeError):
        decode_image("not bytes", "msg")


def test_grayscale_is_returned_as_bgr():
    gray = IMAGE[:, :, 1].copy()
    for ext in (".png", ".jpg"):
        ok, buf = cv2.imencode(ext, gray)
        assert ok
        out = decode_image(buf.tobytes(), "gray" + ext)
        assert out.shape == (48, 64, 3)
        np.testing.assert_array_equal(out[:, :, 0], out[:, :, 2])
    ok, buf = cv2.imencode(".png", gray)
    np.testing.assert_array_equal(decode_image(buf.tobytes(), "gray.png")[:, :, 1], gray)


def test_sixteen_bit_and_alpha_png_become_8bit_bgr():
    ok, buf = cv2.imencode(".png", np.full((4, 5), 0x1234, dtype=np.uint16))
    out = decode_image(buf.tobytes(), "depth.png")
    assert out.dtype == np.uint8 and out.shape == (4, 5, 3)
    assert (out == 0x12).all()  # 16 -> 8 bit keeps the high byte
    bgra = np.dstack([IMAGE, np.full((48, 64), 7, np.uint8)])
    ok, buf = cv2.imencode(".png", bgra)
    np.testing.assert_array_equal(decode_image(buf.tobytes(), "alpha.png"), IMAGE)


# --------------------------------------------------------------------------- rejections


def test_error_carries_source_and_reason_and_pickles():
    with pytest.raises(ImageDecodeError) as info:
        decode_image(b"", "/data/x.jpg")
    err = info.value
    assert isinstance(err, ValueError)
    assert err.source == "/data/x.jpg" and err.reason == "empty image data"
    assert str(err) == "/data/x.jpg: empty image data"
    again = pickle.loads(pickle.dumps(err))
    assert (again.source, again.reason, str(again)) == (err.source, err.reason, str(err))


@pytest.mark.parametrize("data", [b"GIF89a\x01\x00\x01\x00", b"BM" + b"\x00" * 60, b"\x00\x01\x02"])
def test_unknown_formats_are_rejected(data):
    with pytest.raises(ImageDecodeError, match="unknown image format"):
        decode_image(data, "topic/roadside")


@pytest.mark.parametrize("cut", [1, 2, 3, 20, 300, len(JPEG) // 2, len(JPEG) - 2, len(JPEG) - 1])
def test_truncated_jpeg_is_rejected(cut):
    with pytest.raises(ImageDecodeError, match="truncated|unknown"):
        decode_image(JPEG[:cut], "cut.jpg")


def test_truncated_jpeg_is_rejected_without_relying_on_opencv(monkeypatch):
    # OpenCV 4.x decodes a truncated JPEG, filling the missing rows with grey (this build
    # happens to return None): the EOI check must catch it before OpenCV is asked.
    forbid_decoding(monkeypatch)
    with pytest.raises(ImageDecodeError, match="end-of-image"):
        decode_image(JPEG[: len(JPEG) * 3 // 4], "cut.jpg")


def test_jpeg_zero_padding_is_allowed_other_trailing_bytes_are_not():
    np.testing.assert_array_equal(decode_image(JPEG + b"\x00" * 5, "pad.jpg"), decode_image(JPEG, "j"))
    with pytest.raises(ImageDecodeError):
        decode_image(JPEG + b"\x01", "junk.jpg")


@pytest.mark.parametrize("cut", [8, 20, 33, len(PNG) // 2, len(PNG) - 12, len(PNG) - 1])
def test_truncated_png_is_rejected(cut):
    with pytest.raises(ImageDecodeError, match="truncated"):
        decode_image(PNG[:cut], "cut.png")


def test_png_with_data_after_iend_is_rejected():
    with pytest.raises(ImageDecodeError, match="after the IEND"):
        decode_image(PNG + b"junk", "x.png")


def test_huge_png_header_is_rejected_before_decoding(monkeypatch):
    data = crafted_png(20000, 20000)
    assert image_size_from_header(data) == (20000, 20000)
    forbid_decoding(monkeypatch)
    with pytest.raises(ImageDecodeError, match="400000000 pixels"):
        decode_image(data, "bomb.png")


def test_huge_jpeg_header_is_rejected_before_decoding(monkeypatch):
    data = jpeg_with_size(30000, 30000)
    assert image_size_from_header(data) == (30000, 30000)
    forbid_decoding(monkeypatch)
    with pytest.raises(ImageDecodeError, match="more than"):
        decode_image(data, "bomb.jpg")


@pytest.mark.parametrize(
    "data", [crafted_png(0, 10), crafted_png(10, 0), jpeg_with_size(0, 48), jpeg_with_size(64, 0)]
)
def test_zero_size_headers_are_rejected(data, monkeypatch):
    forbid_decoding(monkeypatch)
    with pytest.raises(ImageDecodeError, match="empty image"):
        decode_image(data, "zero")


def test_max_pixels_is_inclusive():
    assert decode_image(PNG, "x", max_pixels=64 * 48).shape == (48, 64, 3)
    with pytest.raises(ImageDecodeError, match="more than 3071"):
        decode_image(PNG, "x", max_pixels=64 * 48 - 1)


def test_size_from_header_errors():
    with pytest.raises(ImageDecodeError, match="empty"):
        image_size_from_header(b"")
    with pytest.raises(ImageDecodeError, match="truncated"):
        image_size_from_header(PNG[:20])
    with pytest.raises(ImageDecodeError):
        image_size_from_header(JPEG[:10])


# --------------------------------------------------------------------------- marker scanner


def test_header_sizes_of_baseline_progressive_and_png():
    assert image_size_from_header(JPEG) == (64, 48)
    assert image_size_from_header(PNG) == (64, 48)
    ok, buf = cv2.imencode(".jpg", gradient(30, 70), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    progressive = buf.tobytes()
    assert b"\xff\xc2" in progressive[:1000]  # SOF2
    assert image_size_from_header(progressive) == (70, 30)
    assert decode_image(progressive, "p.jpg").shape == (30, 70, 3)


def test_scanner_skips_segment_payloads_instead_of_searching_them():
    # A comment segment holding bytes that look like an SOF0 declaring 32767 x 32767.
    fake_sof = b"\xff\xc0\x00\x11\x08\x7f\xff\x7f\xff\x03" + b"\x00" * 9
    com = b"\xff\xfe" + struct.pack(">H", len(fake_sof) + 2) + fake_sof
    data = JPEG[:2] + com + JPEG[2:]
    assert image_size_from_header(data) == (64, 48)
    assert decode_image(data, "com.jpg").shape == (48, 64, 3)


def test_scanner_handles_fill_bytes_and_standalone_markers():
    # 0xFF fill bytes before a marker, and a stand-alone TEM marker (no length field).
    data = JPEG[:2] + b"\xff\x01" + b"\xff\xff" + JPEG[2:]
    assert image_size_from_header(data) == (64, 48)
    assert decode_image(data, "fill.jpg").shape == (48, 64, 3)


def test_scanner_rejects_broken_marker_structure():
    with pytest.raises(ImageDecodeError, match="expected a marker"):
        image_size_from_header(JPEG[:2] + b"\x12\x34" + JPEG[2:])
    with pytest.raises(ImageDecodeError, match="end-of-image before"):
        decode_image(b"\xff\xd8\xff\xd9", "eoi.jpg")
    with pytest.raises(ImageDecodeError, match="segment length"):
        image_size_from_header(b"\xff\xd8\xff\xe0\x00\x01" + b"\x00" * 10)


# --------------------------------------------------------------------------- fuzzing


def _decodes_or_raises_decode_error(data: bytes):
    try:
        out = decode_image(data, "fuzz")
    except ImageDecodeError:
        return
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3 and out.size > 0


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512))
def test_random_bytes(data):
    _decodes_or_raises_decode_error(data)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([b"\xff\xd8", b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n"]), st.binary(max_size=512))
def test_random_bytes_after_a_valid_signature(magic, tail):
    _decodes_or_raises_decode_error(magic + tail)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(["jpeg", "png"]), st.data())
def test_every_proper_prefix_is_rejected(fmt, data):
    full = JPEG if fmt == "jpeg" else PNG
    cut = data.draw(st.integers(0, len(full) - 1))
    with pytest.raises(ImageDecodeError):
        decode_image(full[:cut], "prefix")


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(["jpeg", "png"]), st.data())
def test_corrupted_bytes(fmt, data):
    buf = bytearray(JPEG if fmt == "jpeg" else PNG)
    for _ in range(data.draw(st.integers(1, 8))):
        buf[data.draw(st.integers(0, len(buf) - 1))] = data.draw(st.integers(0, 255))
    _decodes_or_raises_decode_error(bytes(buf))


# --------------------------------------------------------------------------- encode / downsample


def test_encode_raw_is_the_bgr_bytes():
    view = IMAGE[::2, ::2]  # not contiguous
    raw = encode_image(view, "raw")
    assert len(raw) == 24 * 32 * 3
    assert raw == view.copy().tobytes()


def test_encode_png_and_jpeg_signatures():
    assert encode_image(IMAGE, "png").startswith(b"\x89PNG")
    assert encode_image(IMAGE, "jpeg").startswith(b"\xff\xd8")
    assert len(encode_image(IMAGE, "jpeg", 10)) < len(encode_image(IMAGE, "jpeg", 100))


@pytest.mark.parametrize(
    "image",
    [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 3), np.float32), np.zeros((0, 4, 3), np.uint8),
     np.zeros((4, 4, 4), np.uint8), [[1, 2, 3]]],
)
def test_encode_rejects_non_bgr_images(image):
    with pytest.raises(ValueError, match="image"):
        encode_image(image)


@pytest.mark.parametrize("quality", [0, 101, 90.5, True])
def test_encode_rejects_bad_quality(quality):
    with pytest.raises(ValueError, match="quality"):
        encode_image(IMAGE, "jpeg", quality)


def test_encode_rejects_unknown_codec():
    with pytest.raises(ValueError, match="jpeg, png, raw"):
        encode_image(IMAGE, "webp")


def test_downsample_sizes():
    full = np.zeros((1080, 1920, 3), np.uint8)
    assert downsample(full, 0.5).shape == (540, 960, 3)
    assert downsample(full, 0.2).shape == (216, 384, 3)
    assert downsample(full, 0.1).shape == (108, 192, 3)
    assert downsample(np.zeros((50, 100, 3), np.uint8), 0.001).shape == (1, 1, 3)
    assert downsampled_size(1920, 1080, 0.25) == (480, 270)
    assert downsample(full, 1.0) is full


def test_downsample_averages_areas():
    # Each output pixel of a 2x shrink is the mean of a 2x2 block.
    img = np.zeros((2, 4, 3), np.uint8)
    img[:, :2] = [[[0, 0, 0], [100, 100, 100]], [[200, 200, 200], [100, 100, 100]]]
    img[:, 2:] = 40
    out = downsample(img, 0.5)
    assert out.shape == (1, 2, 3)
    np.testing.assert_array_equal(out[0, 0], [100, 100, 100])
    np.testing.assert_array_equal(out[0, 1], [40, 40, 40])


@pytest.mark.parametrize("scale", [0.0, -0.5, 1.5, float("nan"), "half"])
def test_downsample_rejects_bad_scale(scale):
    with pytest.raises(ValueError, match="scale"):
        downsample(IMAGE, scale)
