"""Transmission cost: the paper's formula, the bandwidth meter and stream measurement."""

import numpy as np
import pytest

from v2x_vlm_ros.runtime.transmission import BandwidthMeter, formula_bps, measure_stream, measured_bps


def test_formula_matches_the_paper():
    # 1920 * 1080 * 3 bytes at 2 Hz = 12,441,600 B/s (paper: 1.24e7).
    assert formula_bps(1.0, 1920, 1080) == 12_441_600
    # Table 2: s = 0.5 -> 3.11e6, s = 0.2 -> 4.98e5, s = 0.1 -> 1.24e5.
    assert formula_bps(0.5, 1920, 1080) == pytest.approx(3_110_400)
    assert formula_bps(0.2, 1920, 1080) == pytest.approx(497_664)
    assert formula_bps(0.1, 1920, 1080) == pytest.approx(124_416)
    assert formula_bps(1.0, 10, 10, channels=1, rate_hz=10.0) == 1000


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"scale": 0.0}, "scale"),
        ({"scale": 1.01}, "scale"),
        ({"scale": float("nan")}, "scale"),
        ({"width": 0}, "width"),
        ({"height": -5}, "height"),
        ({"width": 19.5}, "width"),
        ({"channels": 0}, "channels"),
        ({"rate_hz": 0.0}, "rate_hz"),
        ({"rate_hz": float("inf")}, "rate_hz"),
    ],
)
def test_formula_validates(kwargs, match):
    args = {"scale": 1.0, "width": 1920, "height": 1080, **kwargs}
    with pytest.raises(ValueError, match=match):
        formula_bps(**args)


def test_measured_bps_is_mean_size_times_rate():
    assert measured_bps([100, 200, 300], 2.0) == 400.0
    with pytest.raises(ValueError):
        measured_bps([], 2.0)
    with pytest.raises(ValueError, match="rate_hz"):
        measured_bps([10], 0.0)


def test_meter_reads_size_times_rate_for_a_regular_stream():
    meter = BandwidthMeter()
    assert meter.bytes_per_second() is None and meter.mean_bytes() is None
    meter.record(100, 0.0)
    assert meter.bytes_per_second() is None  # one message spans no time
    meter.record(100, 0.5)
    meter.record(100, 1.0)
    # 100 B every 0.5 s is 200 B/s: the two intervals carry the 2nd and 3rd message.
    assert meter.bytes_per_second() == pytest.approx(200.0)
    assert meter.summary() == {
        "messages": 3, "total_bytes": 300, "mean_bytes": 100.0, "bytes_per_second": 200.0
    }


def test_meter_window_and_out_of_order_stamps():
    meter = BandwidthMeter(window=2)
    for size, stamp in [(1000, 0.0), (100, 0.5), (100, 1.0), (300, 1.5)]:
        meter.record(size, stamp)
    # Only (100 @ 1.0, 300 @ 1.5) remain: 300 B over 0.5 s.
    assert meter.message_count == 2
    assert meter.bytes_per_second() == pytest.approx(600.0)
    assert meter.mean_bytes() == pytest.approx(200.0)

    meter = BandwidthMeter()
    for size, stamp in [(100, 1.0), (50, 0.0), (100, 0.5)]:
        meter.record(size, stamp)
    # The earliest stamp (50 B at 0 s) opens the span: (100 + 100) B over 1 s.
    assert meter.bytes_per_second() == pytest.approx(200.0)
    meter.reset()
    assert meter.message_count == 0


def test_meter_same_stamps_and_validation():
    meter = BandwidthMeter()
    meter.record(10, 3.0)
    meter.record(10, 3.0)
    assert meter.bytes_per_second() is None
    with pytest.raises(ValueError):
        meter.record(-1, 4.0)
    with pytest.raises(ValueError):
        meter.record(1, float("nan"))
    with pytest.raises(ValueError, match="window"):
        BandwidthMeter(window=1)


def test_measure_stream_raw_matches_the_formula():
    images = [np.zeros((48, 64, 3), np.uint8)] * 2
    out = measure_stream(images, scale=0.5, codec="raw", rate_hz=2.0)
    # Each message is 32 * 24 * 3 = 2304 bytes; at 2 Hz that is 4608 B/s = 0.25 * 64 * 48 * 3 * 2.
    assert out == {
        "scale": 0.5, "codec": "raw", "rate_hz": 2.0, "formula_bps": 4608.0,
        "measured_bps": 4608.0, "mean_bytes": 2304.0, "messages": 2,
    }


def test_measure_stream_formula_uses_original_sizes():
    images = [np.zeros((48, 64, 3), np.uint8), np.zeros((24, 32, 3), np.uint8)]
    out = measure_stream(images, scale=1.0, codec="raw", rate_hz=2.0)
    # formula: mean of 64*48*3*2 = 18432 and 32*24*3*2 = 4608; measured: mean(9216, 2304) * 2.
    assert out["formula_bps"] == 11520.0
    assert out["measured_bps"] == 11520.0


def test_measure_stream_jpeg_is_smaller_than_raw():
    yy, xx = np.mgrid[0:120, 0:160]
    image = np.dstack([xx, yy, xx + yy]).astype(np.uint8)
    out = measure_stream([image], scale=0.5, codec="jpeg", quality=90, rate_hz=2.0)
    assert out["formula_bps"] == pytest.approx(0.25 * 160 * 120 * 3 * 2)
    assert 0 < out["measured_bps"] < out["formula_bps"]
    assert out["measured_bps"] == pytest.approx(out["mean_bytes"] * 2.0)
    with pytest.raises(ValueError):
        measure_stream([], scale=0.5)
    with pytest.raises(ValueError, match="scale"):
        measure_stream([image], scale=2.0)
