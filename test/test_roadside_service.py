"""The roadside side of the link: rate limit by stamp, downsampling, codecs, bandwidth."""

import numpy as np
import pytest

from v2x_vlm_ros.preprocessing.image_codec import decode_image
from v2x_vlm_ros.runtime.roadside import RoadsideConfig, RoadsideService

MS = 1_000_000
IMAGE = np.random.default_rng(0).integers(0, 255, (108, 192, 3), dtype=np.uint8)


def stream(service, seconds=3.0, hz=10.0):
    return [service.offer(int(k * 1000 / hz) * MS, IMAGE) for k in range(int(seconds * hz))]


def test_two_hertz_of_a_ten_hertz_camera_by_stamp():
    svc = RoadsideService(RoadsideConfig(rate_hz=2.0, codec="raw", scale=0.5))
    sent = [f for f in stream(svc) if f is not None]
    assert [f.stamp_ns // MS for f in sent] == [0, 500, 1000, 1500, 2000, 2500]
    stats = svc.stats()
    assert (stats["offered"], stats["sent"], stats["skipped_rate"]) == (30, 6, 24)
    # raw bytes of a half-size image: the formula and the measured rate agree
    assert (sent[0].width, sent[0].height) == (96, 54) and len(sent[0].data) == 54 * 96 * 3
    assert stats["formula_bps"] == pytest.approx(0.25 * 192 * 108 * 3 * 2.0)
    # 6 frames of 15552 bytes over 2.9 s of streaming (30 stamps 0.1 s apart)
    assert stats["measured_bps"] == pytest.approx(6 * 54 * 96 * 3 / 2.9)


def test_gaps_between_sequences_are_not_stream_time():
    svc = RoadsideService(RoadsideConfig(rate_hz=0.0, codec="raw"))
    for start_s in (0.0, 100.0):  # two 1 s bursts at 10 Hz, 99 s apart
        for k in range(11):
            svc.offer(int((start_s + k / 10) * 1000) * MS, IMAGE)
    assert svc.stats()["stream_seconds"] == pytest.approx(2.0)
    assert svc.measured_bps == pytest.approx(22 * IMAGE.nbytes / 2.0)


def test_jittered_stamps_still_give_the_rate():
    svc = RoadsideService(RoadsideConfig(rate_hz=2.0, codec="raw"))
    stamps = [k * 100 * MS + (-1) ** k * 3 * MS for k in range(20)]
    sent = [svc.offer(t, IMAGE) for t in stamps]
    assert sum(f is not None for f in sent) == 4  # 0, ~0.5, ~1.0, ~1.5 s


def test_every_frame_with_rate_zero_and_codecs():
    svc = RoadsideService(RoadsideConfig(rate_hz=0.0, codec="png", scale=1.0))
    sent = stream(svc, seconds=0.5)
    assert all(f is not None for f in sent)
    assert np.array_equal(decode_image(sent[0].data, "png"), IMAGE)  # lossless
    assert svc.stats()["formula_bps"] is None  # no rate: only the measured one means anything
    jpeg = RoadsideService(RoadsideConfig(rate_hz=0.0, codec="jpeg", quality=50)).offer(0, IMAGE)
    assert jpeg.data[:2] == b"\xff\xd8" and len(jpeg.data) < IMAGE.nbytes


def test_a_clock_going_back_restarts_the_rate_limit():
    svc = RoadsideService(RoadsideConfig(rate_hz=2.0, codec="raw"))
    assert svc.offer(10_000 * MS, IMAGE) is not None
    assert svc.offer(1_000 * MS, IMAGE) is not None


@pytest.mark.parametrize("kwargs,match", [({"scale": 0.0}, "scale"), ({"scale": 1.5}, "scale"),
                                          ({"codec": "gif"}, "codec"), ({"quality": 0}, "quality"),
                                          ({"rate_hz": -1}, "rate_hz")])
def test_config_is_validated(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RoadsideConfig(**kwargs)
