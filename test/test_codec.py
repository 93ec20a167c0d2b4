"""Trajectory codecs: loc-token binning, round trips, clamping, boundaries, malformed output,
the text format and config validation."""

import dataclasses
import pickle

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from v2x_vlm_ros.model.codec import (
    CodecConfig,
    EncodedTrajectory,
    LocTokenCodec,
    TextCodec,
    TrajectoryDecodeError,
    build_codec,
    loc_token_name,
)

# Arbitrary fake tokenizer ids: <loc_i> has id 5000 + i.
LOC_IDS = list(range(5000, 6000))
CFG = CodecConfig()
CODEC = LocTokenCodec(CFG, LOC_IDS)
# A tiny codec with easy numbers: 4 bins over x in [0, 4) (1 m each), y in [0, 8) (2 m each).
SMALL_CFG = CodecConfig(num_waypoints=2, x_range=(0.0, 4.0), y_range=(0.0, 8.0), bins=4)
SMALL = LocTokenCodec(SMALL_CFG, LOC_IDS)


def straight(n=10, step=5.0):
    """Waypoints every ``step`` metres straight ahead."""
    return np.stack([np.arange(1, n + 1) * step, np.zeros(n)], axis=1)


# ---------------------------------------------------------------- config


def test_default_config_and_resolution():
    assert (CFG.kind, CFG.num_waypoints, CFG.bins, CFG.text_decimals) == ("loc", 10, 1000, 1)
    assert CFG.x_range == (-20.0, 100.0) and CFG.y_range == (-50.0, 50.0)
    dx, dy = CFG.resolution
    assert dx == pytest.approx(0.12) and dy == pytest.approx(0.1)  # 120 m / 1000, 100 m / 1000
    assert SMALL_CFG.resolution == (1.0, 2.0)


def test_config_ranges_normalised_to_float_tuples():
    cfg = CodecConfig(x_range=[0, 10], y_range=(-1, 1))
    assert cfg.x_range == (0.0, 10.0) and isinstance(cfg.x_range, tuple)
    assert cfg == CodecConfig(x_range=(0.0, 10.0), y_range=(-1.0, 1.0))


@pytest.mark.parametrize("kwargs", [
    {"kind": "bins"},
    {"num_waypoints": 0},
    {"num_waypoints": 1.5},
    {"num_waypoints": True},
    {"x_range": (1.0, 1.0)},
    {"x_range": (2.0, 1.0)},
    {"y_range": (float("nan"), 1.0)},
    {"y_range": (0.0, float("inf"))},
    {"x_range": (0.0, 1.0, 2.0)},
    {"bins": 0},
    {"bins": 1001},
    {"bins": 10.0},
    {"text_decimals": -1},
])
def test_config_validation(kwargs):
    with pytest.raises(ValueError):
        CodecConfig(**kwargs)


def test_config_extremes_accepted():
    assert CodecConfig(bins=1, num_waypoints=1).resolution == (120.0, 100.0)
    assert CodecConfig(bins=1000).bins == 1000


# ---------------------------------------------------------------- loc codec: encode


def test_loc_token_name():
    assert loc_token_name(0) == "<loc_0>" and loc_token_name(999) == "<loc_999>"


def test_encode_origin_hand_computed():
    xy = np.zeros((10, 2))
    enc = CODEC.encode(xy)
    assert isinstance(enc, EncodedTrajectory)
    # x: floor((0 + 20) / 120 * 1000) = floor(166.67) = 166; y: floor(50 / 100 * 1000) = 500
    assert enc.token_ids == [5166, 5500] * 10
    assert enc.clamped.dtype == bool and enc.clamped.shape == (10,) and not enc.clamped.any()
    # centres: x = -20 + 166.5 * 0.12 = -0.02, y = -50 + 500.5 * 0.1 = 0.05
    np.testing.assert_allclose(CODEC.decode(enc.token_ids), [[-0.02, 0.05]] * 10, atol=1e-12)


def test_encode_small_codec_hand_computed():
    enc = SMALL.encode([[2.5, 7.9], [0.99, 2.0]])
    # x 2.5 -> bin 2, y 7.9 -> bin 3; x 0.99 -> bin 0, y 2.0 -> bin 1 (left edge of bin 1)
    assert enc.token_ids == [5002, 5003, 5000, 5001]
    np.testing.assert_array_equal(SMALL.decode(enc.token_ids), [[2.5, 7.0], [0.5, 3.0]])


def test_bin_centres_hand_computed_and_what_decode_writes():
    np.testing.assert_array_equal(SMALL.bin_centres(0), [0.5, 1.5, 2.5, 3.5])
    np.testing.assert_array_equal(SMALL.bin_centres(1), [1.0, 3.0, 5.0, 7.0])
    # x = -20 + (i + 0.5) * 0.12 for the default codec's 1000 bins
    assert CODEC.bin_centres(0)[166] == pytest.approx(-0.02)
    assert CODEC.bin_centres(0)[-1] == pytest.approx(99.94)
    # decode writes exactly these values (no reference here)
    xy = SMALL.decode([5003, 5002, 5000, 5001])
    assert xy[0, 0] == SMALL.bin_centres(0)[3] and xy[0, 1] == SMALL.bin_centres(1)[2]
    with pytest.raises(ValueError) as err:
        SMALL.bin_centres(2)
    assert str(err.value) == "axis must be 0 (x) or 1 (y), got 2"


def test_boundaries():
    # lo -> first bin, hi -> last bin (inside the closed range, so not flagged), just below hi -> last bin
    enc = SMALL.encode([[0.0, 0.0], [4.0, 8.0]])
    assert enc.token_ids == [5000, 5000, 5003, 5003]
    assert not enc.clamped.any()
    enc = SMALL.encode([[4.0 - 1e-9, 8.0 - 1e-9], [1.0 - 1e-12, 1.0]])
    assert enc.token_ids == [5003, 5003, 5000, 5000]
    assert not enc.clamped.any()
    x_lo, x_hi = CFG.x_range
    enc = CODEC.encode(np.array([[x_lo, -50.0], [x_hi, 50.0]] + [[0.0, 0.0]] * 8))
    assert enc.token_ids[:4] == [5000, 5000, 5999, 5999]


def test_out_of_range_clamped_and_flagged():
    xy = straight()
    xy[2] = [150.0, 0.0]      # too far ahead
    xy[5] = [10.0, -60.0]     # too far right
    xy[7] = [-25.0, 55.0]     # both out
    enc = CODEC.encode(xy)
    expected = np.zeros(10, dtype=bool)
    expected[[2, 5, 7]] = True
    np.testing.assert_array_equal(enc.clamped, expected)
    out = CODEC.decode(enc.token_ids)
    # edge bin centres: x 100 - 0.06 = 99.94, -20 + 0.06 = -19.94; y -50 + 0.05, 50 - 0.05
    # (x = 10 is in range: bin floor(30 / 0.12) = 250, centre -20 + 250.5 * 0.12 = 10.06)
    np.testing.assert_allclose(out[2], [99.94, 0.05], atol=1e-9)
    np.testing.assert_allclose(out[5], [10.06, -49.95], atol=1e-9)
    np.testing.assert_allclose(out[7], [-19.94, 49.95], atol=1e-9)
    assert enc.token_ids[4] == 5999 and enc.token_ids[11] == 5000 and enc.token_ids[14:16] == [5000, 5999]


@pytest.mark.parametrize("bad", [
    np.zeros((9, 2)), np.zeros((10, 3)), np.zeros(20), np.zeros((10, 2, 1)), [["a", "b"]] * 10,
])
def test_encode_rejects_wrong_shape_or_type(bad):
    with pytest.raises(ValueError):
        CODEC.encode(bad)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_encode_rejects_non_finite(value):
    xy = straight()
    xy[3, 1] = value
    with pytest.raises(ValueError, match="NaN or inf"):
        CODEC.encode(xy)
    with pytest.raises(ValueError, match="NaN or inf"):
        TextCodec(CFG).encode(xy)


# ---------------------------------------------------------------- loc codec: round trips


def test_every_bin_centre_round_trips_exactly():
    # tokens -> metres -> tokens is the identity for all 1000 bins of x and of y
    for start in range(0, 1000, 10):
        ids = [5000 + b for b in range(start, start + 10) for _ in range(2)]
        centres = CODEC.decode(ids)
        assert CODEC.encode(centres).token_ids == ids
        np.testing.assert_array_equal(CODEC.decode(CODEC.encode(centres).token_ids), centres)


def test_straight_round_trip_within_half_bin():
    xy = straight()
    out = CODEC.decode(CODEC.encode(xy).token_ids)
    err = np.abs(out - xy)
    assert np.all(err[:, 0] <= 0.06 + 1e-9) and np.all(err[:, 1] <= 0.05 + 1e-9)
    assert err.max() > 0  # 5 m is not a bin centre: the test would notice a no-op codec


@settings(max_examples=200, deadline=None)
@given(hnp.arrays(np.float64, (10, 2), elements=st.floats(0.0, 1.0, allow_nan=False)))
def test_hypothesis_round_trip_in_range(unit):
    lo = np.array([CFG.x_range[0], CFG.y_range[0]])
    span = np.array([CFG.x_range[1] - CFG.x_range[0], CFG.y_range[1] - CFG.y_range[0]])
    xy = lo + unit * span
    enc = CODEC.encode(xy)
    assert not enc.clamped.any()
    assert len(enc.token_ids) == 20 and all(5000 <= t < 6000 for t in enc.token_ids)
    err = np.abs(CODEC.decode(enc.token_ids) - xy)
    half = np.array(CFG.resolution) / 2
    assert np.all(err <= half + 1e-9)


@settings(max_examples=100, deadline=None)
@given(hnp.arrays(np.float64, (2, 2), elements=st.floats(-100.0, 100.0, allow_nan=False)))
def test_hypothesis_small_codec_any_value(xy):
    enc = SMALL.encode(xy)
    out = SMALL.decode(enc.token_ids)
    # decoded values are always bin centres inside the range
    assert np.all((out[:, 0] >= 0.5) & (out[:, 0] <= 3.5) & (out[:, 1] >= 1.0) & (out[:, 1] <= 7.0))
    inside = (xy[:, 0] >= 0) & (xy[:, 0] <= 4) & (xy[:, 1] >= 0) & (xy[:, 1] <= 8)
    np.testing.assert_array_equal(enc.clamped, ~inside)
    assert np.all(np.abs(out[inside] - xy[inside]) <= np.array([0.5, 1.0]) + 1e-9)


def test_decode_accepts_numpy_and_torch():
    ids = CODEC.encode(straight()).token_ids
    expected = CODEC.decode(ids)
    np.testing.assert_array_equal(CODEC.decode(np.array(ids, dtype=np.int64)), expected)
    np.testing.assert_array_equal(CODEC.decode(torch.tensor(ids)), expected)
    np.testing.assert_array_equal(CODEC.decode(tuple(ids)), expected)


def test_codec_with_numpy_ids_and_different_id_map():
    ids = np.arange(100, 1100)[::-1]  # <loc_0> has id 1099, <loc_i> has 1099 - i
    codec = LocTokenCodec(SMALL_CFG, ids)
    assert codec.encode([[2.5, 7.9], [0.0, 0.0]]).token_ids == [1097, 1096, 1099, 1099]
    assert codec.allowed_token_ids(0) == [1099, 1098, 1097, 1096]


# ---------------------------------------------------------------- loc codec: malformed output


@pytest.mark.parametrize("ids, reason", [
    ([], "expected 20 tokens, got 0"),
    ([5000] * 19, "expected 20 tokens, got 19"),
    ([5000] * 21, "expected 20 tokens, got 21"),
    ([5000] * 5 + [42] + [5000] * 14, "position 5 (id 42) is not a location token"),
    ([5000] * 19 + [6000], "position 19 (id 6000) is not a location token"),
    ([5000] * 3 + [5000.0] + [5000] * 16, "position 3 is not an integer id"),
    ([True] + [5000] * 19, "position 0 is not an integer id"),
    (["<loc_0>"] + [5000] * 19, "position 0 is not an integer id"),
    ([None] * 20, "position 0 is not an integer id"),
    ([[5000]] * 20, "position 0 is not an integer id"),
])
def test_decode_malformed(ids, reason):
    with pytest.raises(TrajectoryDecodeError) as info:
        CODEC.decode(ids)
    assert reason in info.value.reason


def test_decode_malformed_tensors_and_scalars():
    with pytest.raises(TrajectoryDecodeError, match="not an integer id"):
        CODEC.decode(torch.full((20,), 5000.0))  # float ids
    with pytest.raises(TrajectoryDecodeError, match="expected 20 tokens, got 1"):
        CODEC.decode(torch.full((1, 20), 5000))  # a batch, not one sequence
    with pytest.raises(TrajectoryDecodeError, match="sequence of token ids"):
        CODEC.decode(torch.tensor(5000))
    with pytest.raises(TrajectoryDecodeError):
        CODEC.decode(5000)


def test_decode_loc_beyond_bins_in_use():
    # <loc_4> is a real loc token but the small codec only uses 4 bins
    with pytest.raises(TrajectoryDecodeError, match=r"position 2 is <loc_4>, outside the 4 bins"):
        SMALL.decode([5000, 5001, 5004, 5000])
    with pytest.raises(TrajectoryDecodeError, match="<loc_999>"):
        SMALL.decode([5999, 5001, 5000, 5000])


def test_decode_error_is_value_error_and_pickles():
    with pytest.raises(ValueError) as info:
        CODEC.decode([])
    err = pickle.loads(pickle.dumps(info.value))
    assert isinstance(err, TrajectoryDecodeError) and err.reason == info.value.reason
    assert str(err) == info.value.reason


# ---------------------------------------------------------------- loc codec: construction, constraints


def test_allowed_token_ids_and_num_tokens():
    assert CODEC.num_tokens == 20 and SMALL.num_tokens == 4
    assert CODEC.allowed_token_ids(0) == LOC_IDS
    assert CODEC.allowed_token_ids(19) == LOC_IDS
    assert SMALL.allowed_token_ids(1) == [5000, 5001, 5002, 5003]
    allowed = SMALL.allowed_token_ids(0)
    allowed.append(1)  # callers get a copy
    assert SMALL.allowed_token_ids(0) == [5000, 5001, 5002, 5003]


@pytest.mark.parametrize("step", [-1, 20, 100])
def test_allowed_token_ids_step_out_of_range(step):
    with pytest.raises(ValueError):
        CODEC.allowed_token_ids(step)


def test_loc_codec_rejects_bad_id_maps():
    with pytest.raises(ValueError, match="at least 1000"):
        LocTokenCodec(CFG, LOC_IDS[:999])
    with pytest.raises(ValueError, match="distinct"):
        LocTokenCodec(CFG, LOC_IDS[:999] + [5000])
    with pytest.raises(ValueError, match="ints"):
        LocTokenCodec(SMALL_CFG, [1.0, 2.0, 3.0, 4.0])
    # fewer bins need fewer ids; ids 10, 7, 8, 9 are bins 3, 0, 1, 2 (1 m x bins, 2 m y bins)
    assert LocTokenCodec(SMALL_CFG, [7, 8, 9, 10]).decode([10, 7, 8, 9]).tolist() == [[3.5, 1.0], [1.5, 5.0]]


# ---------------------------------------------------------------- text codec

TEXT = TextCodec(CFG)


def test_text_encode_hand_computed():
    xy = straight()
    xy[1] = [10.0, -0.34]
    xy[2] = [15.04, -0.04]  # rounds to -0.0, written 0.0
    assert TEXT.encode(xy) == ("5.0,0.0;10.0,-0.3;15.0,0.0;20.0,0.0;25.0,0.0;30.0,0.0;35.0,0.0;"
                               "40.0,0.0;45.0,0.0;50.0,0.0")
    two = TextCodec(CodecConfig(kind="text", num_waypoints=2, text_decimals=2))
    assert two.encode([[1.234, -5.678], [-0.001, 120.0]]) == "1.23,-5.68;0.00,120.00"
    zero = TextCodec(CodecConfig(kind="text", num_waypoints=1, text_decimals=0))
    assert zero.encode([[3.7, -2.2]]) == "4,-2"
    assert zero.decode("4,-2").tolist() == [[4.0, -2.0]]


def test_text_decode_whitespace_tolerated():
    text = " 5.0 , 0.0 ;10.0,-0.3; 15 ,+1.5;20.,.5;25.0,0.0;30.0,0.0;35.0,0.0;40.0,0.0;45.0,0.0;50.0,\t0.0\n"
    out = TEXT.decode(text)
    assert out.shape == (10, 2)
    np.testing.assert_array_equal(out[:4], [[5.0, 0.0], [10.0, -0.3], [15.0, 1.5], [20.0, 0.5]])


@settings(max_examples=200, deadline=None)
@given(hnp.arrays(np.float64, (10, 2), elements=st.floats(-200.0, 200.0, allow_nan=False)),
       st.integers(0, 3))
def test_text_hypothesis_round_trip(xy, decimals):
    codec = TextCodec(CodecConfig(kind="text", text_decimals=decimals))
    out = codec.decode(codec.encode(xy))
    assert np.all(np.abs(out - xy) <= 0.5 * 10.0 ** -decimals + 1e-9)


GOOD_PAIRS = ["5.0,0.0"] * 10


@pytest.mark.parametrize("text, reason", [
    ("", "empty"),
    ("  \n", "empty"),
    (";".join(GOOD_PAIRS[:9]), "expected 10 waypoints, got 9"),
    (";".join(GOOD_PAIRS + ["5.0,0.0"]), "expected 10 waypoints, got 11"),
    (";".join(GOOD_PAIRS) + ";", "expected 10 waypoints, got 11"),
    (";".join(GOOD_PAIRS[:9] + ["5.0,0.0,1.0"]), "waypoint 9: expected 'x,y'"),
    (";".join(GOOD_PAIRS[:9] + ["5.0"]), "waypoint 9: expected 'x,y'"),
    (";".join(["5.0;0.0"] + GOOD_PAIRS[:8]), "waypoint 0: expected 'x,y'"),
    (";".join(GOOD_PAIRS[:9] + ["5.0,"]), "waypoint 9: '' is not a number"),
    (";".join(["a,b"] + GOOD_PAIRS[:9]), "waypoint 0: 'a' is not a number"),
    (";".join(["nan,0"] + GOOD_PAIRS[:9]), "not a number"),
    (";".join(["inf,0"] + GOOD_PAIRS[:9]), "not a number"),
    (";".join(["1e3,0"] + GOOD_PAIRS[:9]), "not a number"),
    (";".join(["1_0,0"] + GOOD_PAIRS[:9]), "not a number"),
    (";".join(["--1,0"] + GOOD_PAIRS[:9]), "not a number"),
    (";".join(["1.2.3,0"] + GOOD_PAIRS[:9]), "not a number"),
    (";".join(["5 0,0"] + GOOD_PAIRS[:9]), "not a number"),
    (";".join(["\u0663,0"] + GOOD_PAIRS[:9]), "not a number"),  # Arabic-Indic 3: float() accepts it
    (";".join(["9" * 400 + ",0"] + GOOD_PAIRS[:9]), "not finite"),
    ("<loc_5><loc_7> garbage", "expected 10 waypoints, got 1"),
])
def test_text_decode_malformed(text, reason):
    with pytest.raises(TrajectoryDecodeError) as info:
        TEXT.decode(text)
    assert reason in info.value.reason


@pytest.mark.parametrize("bad", [None, b"5.0,0.0", ["5.0,0.0"] * 10])
def test_text_decode_rejects_non_str(bad):
    with pytest.raises(TrajectoryDecodeError, match="expected text"):
        TEXT.decode(bad)


def test_text_codec_does_not_clamp():
    xy = straight()
    xy[0] = [250.0, -80.0]  # outside the loc ranges: text can say it
    np.testing.assert_array_equal(TEXT.decode(TEXT.encode(xy))[0], [250.0, -80.0])


# ---------------------------------------------------------------- build_codec


def test_build_codec():
    assert isinstance(build_codec(CFG, LOC_IDS), LocTokenCodec)
    text_cfg = CodecConfig(kind="text")
    assert isinstance(build_codec(text_cfg), TextCodec)
    assert isinstance(build_codec(text_cfg, LOC_IDS), TextCodec)
    with pytest.raises(ValueError, match="loc_token_ids"):
        build_codec(CFG)
    codec = build_codec(CFG, LOC_IDS)
    assert codec.config is CFG and codec.num_waypoints == 10


# ---------------------------------------------------------------- reference: constant speed

# 4 bins over x in [-4, 4) (2 m each), y in [0, 8) (2 m each); waypoints at 0.5 s and 1.0 s.
REL_CFG = CodecConfig(num_waypoints=2, x_range=(-4.0, 4.0), y_range=(0.0, 8.0), bins=4,
                      reference="constant_speed", dt_s=0.5)
REL = LocTokenCodec(REL_CFG, LOC_IDS)


def test_reference_xy_hand_computed():
    np.testing.assert_array_equal(REL_CFG.reference_xy(4.0), [[2.0, 0.0], [4.0, 0.0]])
    # an unknown speed (a sequence's first frame) counts as 0 on both sides
    for unknown in (None, float("nan"), float("inf")):
        np.testing.assert_array_equal(REL_CFG.reference_xy(unknown), np.zeros((2, 2)))
    np.testing.assert_array_equal(SMALL_CFG.reference_xy(4.0), np.zeros((2, 2)))  # "none"


def test_constant_speed_reference_encode_decode_hand_computed():
    # at 4 m/s the reference is (2, 0), (4, 0): residuals (0.5, 7.9) and (0.0, 2.0)
    enc = REL.encode([[2.5, 7.9], [4.0, 2.0]], speed_mps=4.0)
    # x: floor((0.5 + 4) / 8 * 4) = 2, y 7.9 -> 3; x: floor(4 / 8 * 4) = 2, y 2.0 -> 1
    assert enc.token_ids == [5002, 5003, 5002, 5001]
    # bin centres (1.0, 7.0), (1.0, 3.0) plus the reference
    np.testing.assert_array_equal(REL.decode(enc.token_ids, speed_mps=4.0), [[3.0, 7.0], [5.0, 3.0]])
    # the same tokens read at another speed are another plan: the speed is part of the code
    np.testing.assert_array_equal(REL.decode(enc.token_ids, speed_mps=0.0), [[1.0, 7.0], [1.0, 3.0]])


def test_cruising_is_the_same_tokens_at_every_speed():
    cfg = dataclasses.replace(CFG, reference="constant_speed")
    rel, tokens = LocTokenCodec(cfg, LOC_IDS), set()
    absolute = set()
    for v in (3.0, 8.5, 11.0, 16.25):
        cruise = straight(step=0.5 * v)
        tokens.add(tuple(rel.encode(cruise, speed_mps=v).token_ids))
        absolute.add(tuple(CODEC.encode(cruise).token_ids))
        np.testing.assert_allclose(rel.decode(rel.encode(cruise, v).token_ids, v), cruise,
                                   atol=max(cfg.resolution) / 2)
    assert len(tokens) == 1 and len(absolute) == 4


def test_constant_speed_reference_clamps_the_residual_not_the_plan():
    # 30 m ahead at 1 s is far outside x_range in absolute terms, in range at 30 m/s
    cfg = CodecConfig(num_waypoints=1, x_range=(-5.0, 5.0), y_range=(-5.0, 5.0), bins=10,
                      reference="constant_speed", dt_s=1.0)
    codec = LocTokenCodec(cfg, LOC_IDS)
    assert not codec.encode([[30.0, 0.0]], speed_mps=30.0).clamped.any()
    assert codec.encode([[30.0, 0.0]], speed_mps=0.0).clamped.all()


def test_text_codec_writes_the_residual():
    cfg = CodecConfig(kind="text", num_waypoints=2, reference="constant_speed", dt_s=0.5)
    codec = TextCodec(cfg)
    assert codec.encode([[3.0, 1.0], [6.5, 0.0]], speed_mps=5.0) == "0.5,1.0;1.5,0.0"
    np.testing.assert_array_equal(codec.decode("0.5,1.0;1.5,0.0", speed_mps=5.0), [[3.0, 1.0], [6.5, 0.0]])


@pytest.mark.parametrize("kwargs, message", [
    (dict(reference="cv"), "reference must be one of ('none', 'constant_speed'), got 'cv'"),
    (dict(dt_s=0.0), "dt_s must be a positive number of seconds, got 0.0"),
    (dict(dt_s=float("nan")), "dt_s must be a positive number of seconds, got nan"),
    (dict(dt_s=True), "dt_s must be a positive number of seconds, got True"),
])
def test_reference_config_validation(kwargs, message):
    with pytest.raises(ValueError) as err:
        CodecConfig(**kwargs)
    assert str(err.value) == message


# ---------------------------------------------------------------- waypoint order

# 3 waypoints, 4 bins over x in [0, 4) (1 m each), y in [0, 8) (2 m each)
ORDER_CFG = CodecConfig(num_waypoints=3, x_range=(0.0, 4.0), y_range=(0.0, 8.0), bins=4,
                        order="endpoint_first")
PLAN3 = [[0.5, 0.5], [1.5, 2.5], [3.5, 7.5]]  # bins (0, 0), (1, 1), (3, 3)


def test_endpoint_first_writes_the_last_waypoint_first_hand_computed():
    assert ORDER_CFG.waypoint_order == (2, 0, 1)
    assert dataclasses.replace(ORDER_CFG, order="time").waypoint_order == (0, 1, 2)
    codec = LocTokenCodec(ORDER_CFG, LOC_IDS)
    enc = codec.encode(PLAN3)
    assert enc.token_ids == [5003, 5003, 5000, 5000, 5001, 5001]
    timed = LocTokenCodec(dataclasses.replace(ORDER_CFG, order="time"), LOC_IDS)
    assert timed.encode(PLAN3).token_ids == [5000, 5000, 5001, 5001, 5003, 5003]
    # decoding puts every waypoint back at its time: bin centres (0.5, 1), (1.5, 3), (3.5, 7)
    np.testing.assert_array_equal(codec.decode(enc.token_ids), [[0.5, 1.0], [1.5, 3.0], [3.5, 7.0]])
    # the same tokens read in time order are another plan
    np.testing.assert_array_equal(timed.decode(enc.token_ids), [[3.5, 7.0], [0.5, 1.0], [1.5, 3.0]])


def test_endpoint_first_flags_clamping_per_waypoint_in_time():
    codec = LocTokenCodec(ORDER_CFG, LOC_IDS)
    assert codec.encode([[0.5, 0.5], [1.5, 2.5], [9.0, 7.5]]).clamped.tolist() == [False, False, True]


def test_endpoint_first_text_codec_hand_computed():
    codec = TextCodec(dataclasses.replace(ORDER_CFG, kind="text"))
    assert codec.encode(PLAN3) == "3.5,7.5;0.5,0.5;1.5,2.5"
    np.testing.assert_array_equal(codec.decode("3.5,7.5;0.5,0.5;1.5,2.5"), PLAN3)
    # an error names the waypoint in time, not the position it was written at
    with pytest.raises(TrajectoryDecodeError) as err:
        codec.decode("3.5,x;0.5,0.5;1.5,2.5")
    assert str(err.value) == "waypoint 2: 'x' is not a number"


@settings(max_examples=50, deadline=None)
@given(hnp.arrays(np.float64, (10, 2), elements=st.floats(-19.9, 49.9)))
def test_endpoint_first_round_trip_matches_time_order(xy):
    first = LocTokenCodec(dataclasses.replace(CFG, order="endpoint_first"), LOC_IDS)
    np.testing.assert_array_equal(first.decode(first.encode(xy).token_ids),
                                  CODEC.decode(CODEC.encode(xy).token_ids))


def test_order_config_validation_and_old_settings():
    with pytest.raises(ValueError) as err:
        CodecConfig(order="reverse")
    assert str(err.value) == "order must be one of ('time', 'endpoint_first'), got 'reverse'"
    assert CodecConfig().order == "time"  # models saved before the option write in time order
