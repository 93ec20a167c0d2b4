"""Trajectory refinement: clean plans pass (nearly) untouched, corrupted ones are pulled back to
the plan they came from, and whatever comes in, what comes out is finite and within limits.

``kinematic_violations`` re-implements the checks of ``runtime.refine`` with plain loops, so
the vectorised version is tested against an independent reading of its own docstring.
"""

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from v2x_vlm_ros.runtime.refine import REASONS, RefineConfig, Refiner, refine

CFG = RefineConfig()


def kinematic_violations(xy, speed, cfg=CFG, eps=1e-6) -> list:
    """(check, segment, value) for every check the trajectory fails; [] when it passes."""
    dt, slack = cfg.dt_s, 1 + cfg.tolerance
    pts = [(0.0, 0.0)] + [(float(x), float(y)) for x, y in xy]
    segs = [(b[0] - a[0], b[1] - a[1]) for a, b in zip(pts, pts[1:])]
    lengths = [math.hypot(*s) for s in segs]
    speeds = [length / dt for length in lengths]
    problems = []
    heading = (1.0, 0.0)  # the ego's x axis until a segment long enough to have a heading
    for j, (seg, length, v) in enumerate(zip(segs, lengths, speeds)):
        if v > cfg.max_speed_mps * slack + eps:
            problems.append(("speed", j, v))
        before, gap = (speeds[j - 1], dt) if j else (speed, dt / 2)
        if before is not None:
            accel = (v - before) / gap
            if not -cfg.max_decel_mps2 * slack - eps <= accel <= cfg.max_accel_mps2 * slack + eps:
                problems.append(("acceleration", j, accel))
        progress = seg[0] * heading[0] + seg[1] * heading[1]
        if progress < cfg.min_progress_m - eps:
            problems.append(("out_of_order", j, progress))
        if length >= cfg.min_heading_step_m and (j == 0 or lengths[j - 1] >= cfg.min_heading_step_m):
            if j == 0:
                prev_dir, joint_speed = (1.0, 0.0), v
            else:
                prev_dir = (segs[j - 1][0] / lengths[j - 1], segs[j - 1][1] / lengths[j - 1])
                joint_speed = (speeds[j - 1] + v) / 2
            u = (seg[0] / length, seg[1] / length)
            turn = math.atan2(abs(prev_dir[0] * u[1] - prev_dir[1] * u[0]),
                              prev_dir[0] * u[0] + prev_dir[1] * u[1])
            if j == 0:  # tangent (the ego's heading) to chord
                curvature = 2 * math.sin(min(turn, math.pi / 2)) / length
            else:  # chord to chord
                curvature = 2 * math.sin(turn / 2) / ((lengths[j - 1] + length) / 2)
            limit = min(cfg.max_curvature_per_m, cfg.max_lateral_accel_mps2 / max(joint_speed, 1e-6) ** 2)
            if curvature > limit * slack + eps:
                problems.append(("curvature", j, curvature))
        if length >= cfg.min_heading_step_m:
            heading = (seg[0] / length, seg[1] / length)
    return problems


def drive(speed, accel=0.0, curvature=lambda s: 0.0 * s, count=10, dt=0.5, step=1e-3):
    """Waypoints of a vehicle leaving the origin along +x at ``speed``, changing speed at
    ``accel`` (stopping at zero) and following ``curvature`` (of arc length), integrated on a
    fine grid."""
    t = np.arange(0.0, count * dt + step / 2, step)
    v = np.maximum(speed + accel * t, 0.0)
    ds = (v[1:] + v[:-1]) / 2 * step
    s_mid = np.concatenate([[0.0], np.cumsum(ds)])[:-1] + ds / 2
    yaw_mid = np.cumsum(curvature(s_mid) * ds) - curvature(s_mid) * ds / 2
    x = np.concatenate([[0.0], np.cumsum(ds * np.cos(yaw_mid))])
    y = np.concatenate([[0.0], np.cumsum(ds * np.sin(yaw_mid))])
    every = int(round(dt / step))
    return np.column_stack([x, y])[every::every][:count]


def _left_turn(s):
    """Straight for 3 m, a 90 degree left turn of radius 4 m (the curvature limit), straight."""
    return np.where((s >= 3.0) & (s < 3.0 + 2 * np.pi), 0.25, 0.0)


# name -> (waypoints, current speed)
CLEAN = {
    "cruise_10mps": (drive(10.0), 10.0),
    "arc_radius_20m": (drive(10.0, curvature=lambda s: np.full_like(s, 0.05)), 10.0),
    "brake_3mps2_to_stop": (drive(10.0, accel=-3.0), 10.0),
    "standstill": (np.zeros((10, 2)), 0.0),
    "left_turn_at_curvature_limit": (drive(3.0, curvature=_left_turn), 3.0),
}

# The smoother moves clean plans by at most ~3 cm (module docstring); 5 cm is the bound that
# still tells "left alone" apart from the repairs below, which move waypoints by metres.
CLEAN_BOUND_M = 0.05


def test_clean_fixtures_are_what_they_claim():
    assert kinematic_violations(*CLEAN["left_turn_at_curvature_limit"]) == []
    turn, _ = CLEAN["left_turn_at_curvature_limit"]
    assert turn[-1, 0] == pytest.approx(7.0, abs=0.05)  # 3 m straight + radius 4 m
    assert turn[-1, 1] == pytest.approx(4.0 + 15.0 - 3.0 - 2 * np.pi, abs=0.05)  # then north
    stop, _ = CLEAN["brake_3mps2_to_stop"]
    assert stop[-1, 0] == pytest.approx(10.0**2 / (2 * 3.0), abs=0.01)


@pytest.mark.parametrize("name", CLEAN)
@pytest.mark.parametrize("known_speed", [True, False])
def test_clean_trajectories_are_left_nearly_unchanged(name, known_speed):
    xy, speed = CLEAN[name]
    out, report = refine(xy, speed if known_speed else None)
    assert report.rejected == {} and not report.fallback and report.iterations == 0
    assert np.abs(out - xy).max() < CLEAN_BOUND_M
    assert report.max_displacement_m == pytest.approx(np.hypot(*(out - xy).T).max())
    assert kinematic_violations(out, speed) == []


def _spike(xy):
    xy[4, 1] += 15.0  # one waypoint 15 m sideways
    return {4: "speed"}


def _nan(xy):
    xy[6] = np.nan
    return {6: "non_finite"}


def _swap(xy):
    xy[[3, 4]] = xy[[4, 3]]
    return {3: "out_of_order", 4: "out_of_order"}


def _too_fast(xy):
    xy[5, 0] += 30.0  # 60 m/s too fast over the segments on both sides
    return {5: "speed"}


def _trailing_garbage(xy):
    xy[9] = (-40.0, 30.0)
    return {9: "speed"}


CORRUPTIONS = [_spike, _nan, _swap, _too_fast, _trailing_garbage]


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda f: f.__name__[1:])
@pytest.mark.parametrize("name", ["cruise_10mps", "arc_radius_20m", "brake_3mps2_to_stop",
                                  "left_turn_at_curvature_limit"])
def test_corrupted_trajectories_are_pulled_back(name, corrupt):
    clean, speed = CLEAN[name]
    bad = clean.copy()
    expected = corrupt(bad)
    corruption = np.nan_to_num(np.abs(bad - clean), nan=np.inf).max()
    assert corruption > 1.0
    assert kinematic_violations(np.nan_to_num(bad), speed) != []  # the checks do see it

    out, report = refine(bad, speed)

    assert report.rejected == expected
    assert not report.fallback
    error = np.abs(out - clean).max()
    # The worst case is the trailing point of the arc: it is filled by continuing the motion
    # (about 0.3 m off the arc); everything else comes back within centimetres.
    assert error < 0.5 and error < 0.1 * corruption
    assert kinematic_violations(out, speed) == []


def test_two_outliers_take_two_rounds_and_max_iterations_bounds_them():
    clean, speed = CLEAN["cruise_10mps"]
    bad = clean.copy()
    bad[2, 1] += 15.0
    bad[7, 1] -= 15.0
    out, report = refine(bad, speed)
    assert report.rejected == {2: "speed", 7: "speed"} and report.iterations == 2
    assert np.abs(out - clean).max() < 0.1

    out, report = refine(bad, speed, RefineConfig(max_iterations=1))
    assert report.fallback and report.iterations == 1
    assert np.all(out[:, 1] == 0.0) and out[-1, 0] == pytest.approx(speed**2 / (2 * CFG.max_decel_mps2))


def test_the_first_waypoint_is_checked_against_the_current_speed():
    clean, _ = CLEAN["cruise_10mps"]
    early = clean.copy()
    early[0, 0] += 0.75  # 11.5 m/s over the first 0.5 s: +6 m/s^2 from 10 m/s, reached at t = 0.25 s
    out, report = refine(early, 10.0)
    assert report.rejected == {0: "acceleration"}
    assert np.abs(out - clean).max() < 0.01
    _, report = refine(early, None)  # speed unknown: 11.5 then 8.5 m/s is a plausible plan
    assert report.rejected == {}


def test_noisy_plans_with_outliers_are_recovered():
    rng = np.random.default_rng(0)
    for name in ["cruise_10mps", "arc_radius_20m", "brake_3mps2_to_stop", "left_turn_at_curvature_limit"]:
        for k in range(12):
            clean = CLEAN[name][0] + rng.normal(0.0, 0.05, (10, 2))  # decoding noise
            bad = clean.copy()
            i = rng.integers(0, 8)
            if k % 3 == 0:
                bad[[i, i + 1]] = bad[[i + 1, i]]
            else:
                bad[i] += rng.uniform(-15.0, 15.0, 2)
                if k % 3 == 2:
                    bad[i + 2] += rng.uniform(-15.0, 15.0, 2)
            out, report = refine(bad, CLEAN[name][1])
            assert not report.fallback
            assert np.abs(out - clean).max() < 0.5, (name, k)


def test_smoothing_is_dropped_when_it_would_break_a_limit():
    # Found by a stress run: the plan repaired without waypoint 3 passes, but smoothing it
    # bends the first segment past the lateral-acceleration limit at 8 m/s.
    xy = np.array([[3.9, 0.8], [7.5, 1.7], [11.4, 1.9], [4.8, -11.3], [19.6, 1.9], [23.8, 2.1],
                   [28.2, 2.1], [32.3, 2.0], [36.3, 2.0], [40.2, 1.7]])
    out, report = refine(xy, None)
    assert report.rejected == {3: "speed"}
    assert kinematic_violations(out, None) == []
    unsmoothed, _ = refine(xy, None, RefineConfig(smoothing=0.0))
    np.testing.assert_array_equal(out, unsmoothed)


def test_all_nan_falls_back_to_braking_to_a_stop():
    bad = np.full((10, 2), np.nan)
    out, report = refine(bad, 10.0)
    assert report.fallback and report.counts["non_finite"] == 10
    assert out.shape == (10, 2) and np.isfinite(out).all()
    assert np.all(out[:, 1] == 0.0)
    steps = np.diff(np.concatenate([[0.0], out[:, 0]]))
    assert np.all(steps >= 0) and np.all(np.diff(steps) <= 1e-12)  # forward, never speeding up
    assert out[-1, 0] == pytest.approx(10.0**2 / (2 * CFG.max_decel_mps2))  # stopped
    assert kinematic_violations(out, 10.0) == []  # braking at max_decel is within the limits

    out, report = refine(bad, None)  # speed unknown: stay where we are
    assert report.fallback and np.array_equal(out, np.zeros((10, 2)))


def test_a_remaining_kink_is_rounded():
    # 5 m/s straight, then a 25 degree turn at one waypoint: within every limit, but a kink.
    heading = np.where(np.arange(10) >= 5, np.radians(25.0), 0.0)
    xy = np.cumsum(2.5 * np.column_stack([np.cos(heading), np.sin(heading)]), axis=0)

    def sharpest_turn(path):
        seg = np.diff(np.vstack([[0.0, 0.0], path]), axis=0)
        return np.abs(np.diff(np.arctan2(seg[:, 1], seg[:, 0]))).max()

    out, report = refine(xy, 5.0)
    assert report.rejected == {}
    assert sharpest_turn(out) < 0.8 * sharpest_turn(xy)
    assert report.max_displacement_m < 0.2
    unsmoothed, _ = refine(xy, 5.0, RefineConfig(smoothing=0.0))
    assert np.array_equal(unsmoothed, xy)


finite_or_not = st.one_of(st.floats(-300.0, 300.0),
                          st.sampled_from([math.nan, math.inf, -math.inf, 1e300, -1e300]))
speeds = st.one_of(st.none(), st.floats(0.0, CFG.max_speed_mps))


@settings(max_examples=150, deadline=None)
@given(xy=st.integers(1, 12).flatmap(lambda n: arrays(np.float64, (n, 2), elements=finite_or_not)),
       speed=speeds)
def test_garbage_in_finite_and_within_limits_out(xy, speed):
    before = xy.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow or invalid-value arithmetic on the way
        out, report = refine(xy, speed)
    np.testing.assert_array_equal(xy, before)  # the input is not modified
    assert out.shape == xy.shape and out.dtype == np.float64 and np.isfinite(out).all()
    assert kinematic_violations(out, speed) == []
    assert set(report.counts) == set(REASONS)


@settings(max_examples=100, deadline=None)
@given(speed=st.floats(0.0, 20.0), noise=arrays(np.float64, (10, 2), elements=st.floats(-0.5, 0.5)),
       outlier=st.integers(0, 9), offset=st.tuples(st.floats(-30, 30), st.floats(-30, 30)))
def test_noisy_plans_with_an_outlier_come_out_within_limits(speed, noise, outlier, offset):
    xy = drive(speed) + noise
    xy[outlier] += offset
    out, _ = refine(xy, speed)
    assert np.isfinite(out).all() and kinematic_violations(out, speed) == []


def test_unreachable_waypoints_are_rejected_before_any_arithmetic():
    clean, speed = CLEAN["cruise_10mps"]
    bad = clean.copy()
    bad[3] = (1e300, -1e300)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out, report = refine(bad, speed)
    assert report.rejected == {3: "speed"} and report.iterations == 0
    assert np.abs(out - clean).max() < 0.01


def test_disabled_returns_an_unchanged_copy():
    xy = np.array([[5.0, 0.0], [np.nan, 1.0], [100.0, 50.0]])
    out, report = Refiner(RefineConfig(enabled=False))(xy, 10.0)
    np.testing.assert_array_equal(out, xy)
    assert out is not xy and report.rejected == {} and not report.fallback


def test_refiner_binds_a_config_and_the_input_is_not_modified():
    clean, speed = CLEAN["cruise_10mps"]
    bad = clean.copy()
    expected = _spike(bad)
    before = bad.copy()
    out, report = Refiner()(bad, speed)
    np.testing.assert_array_equal(bad, before)
    assert report.rejected == expected and report.counts["speed"] == 1
    assert out.dtype == np.float64 and out.shape == (10, 2)


def test_shapes():
    out, report = refine(np.zeros((0, 2)))
    assert out.shape == (0, 2) and report.rejected == {}
    out, _ = refine([[5.0, 0.0]], 10.0)  # lists are fine, a single waypoint too
    assert out.shape == (1, 2) and np.allclose(out, [[5.0, 0.0]])
    with pytest.raises(ValueError, match=r"shape \(T, 2\)"):
        refine(np.zeros((10, 3)))


@pytest.mark.parametrize("field, value", [
    ("dt_s", 0.0), ("max_speed_mps", -1.0), ("max_accel_mps2", math.nan),
    ("max_decel_mps2", math.inf), ("max_curvature_per_m", 0.0), ("max_lateral_accel_mps2", -2.0),
    ("min_progress_m", 0.5), ("tolerance", -0.1), ("min_heading_step_m", 0.0),
    ("smoothing", -1.0), ("repair_straightness", 0.0), ("max_iterations", 0),
    ("max_iterations", 2.5), ("enabled", "yes"), ("dt_s", "0.5"), ("tolerance", True),
])
def test_config_errors_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"RefineConfig.{field} must be"):
        RefineConfig(**{field: value})
