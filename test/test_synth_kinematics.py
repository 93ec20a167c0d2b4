"""Routes, the kinematic bicycle and the speed control of the synthetic world."""

import math

import numpy as np
import pytest

from v2x_vlm_ros.data.synth.kinematics import (Limits, Route, curve_speed_profile, drive,
                                               follow_accel, stop_accel, track_profile)


def test_route_arc_ends_where_geometry_says():
    r = 10.0
    route = Route(0.0, 0.0, 0.0, [(5.0, 0.0), (0.5 * math.pi * r, 1.0 / r), (20.0, 0.0)])
    x, y, h, k = route.sample(np.array([5.0, 5.0 + 0.5 * math.pi * r, route.length + 10.0]))
    assert (x[0], y[0], h[0]) == pytest.approx((5.0, 0.0, 0.0))
    assert (x[1], y[1], h[1]) == pytest.approx((15.0, 10.0, math.pi / 2))  # left turn: +y
    assert (x[2], y[2]) == pytest.approx((15.0, 10.0 + 30.0))  # extrapolated straight
    assert route.sample(np.array([6.0]))[3][0] == pytest.approx(1.0 / r)
    right = Route(0.0, 0.0, 0.0, [(0.5 * math.pi * r, -1.0 / r)])
    xe, ye, he, _ = right.sample(np.array([right.length]))
    assert (xe[0], ye[0], he[0]) == pytest.approx((10.0, -10.0, -math.pi / 2))


def _bounds(traj):
    jerk = np.diff(traj.accel) / traj.dt
    lat = traj.v * traj.yaw_rate
    return np.abs(traj.accel).max(), np.abs(jerk).max(), np.abs(lat).max()


def test_bicycle_turns_left_within_limits():
    r = 10.0
    route = Route(-60.0, 0.0, 0.0, [(50.0, 0.0), (0.5 * math.pi * r, 1.0 / r), (200.0, 0.0)])
    limits = Limits()
    profile = curve_speed_profile(route, 2.5, 1.2, 6.0, 30.0)
    traj = drive(route, 11.0, 0.0, 14.0, lambda t, s, v: min(0.5 * (11.0 - v), 1.5,
                                                             track_profile(profile, s, v, 1.0)),
                 limits)
    acc, jerk, lat = _bounds(traj)
    assert acc <= limits.accel + 1e-9 and jerk <= limits.jerk + 1e-6
    assert lat <= 3.0
    assert math.degrees(traj.yaw[-1]) == pytest.approx(90.0, abs=4.0)
    # the path stays near the route (pure pursuit cuts corners a little)
    curvature = np.abs(traj.yaw_rate) / np.maximum(traj.v, 1e-6)
    assert curvature.max() <= math.tan(limits.max_steer) / limits.wheelbase + 1e-9
    assert traj.x[-1] == pytest.approx(0.0, abs=0.6)  # ends on the exit line x = 0


def test_stop_control_stops_at_the_target_smoothly():
    route = Route(0.0, 0.0, 0.0, [(200.0, 0.0)])
    limits = Limits()
    traj = drive(route, 10.0, 0.0, 14.0,
                 lambda t, s, v: min(0.5 * (10.0 - v), stop_accel(45.0 - s, v, 1.5)), limits)
    assert traj.v[-1] == 0.0
    assert traj.s[-1] == pytest.approx(45.0, abs=0.8)
    acc, jerk, _ = _bounds(traj)
    assert acc <= limits.accel + 1e-9 and jerk <= limits.jerk + 0.5
    assert np.all(np.diff(traj.s) >= -1e-9)  # never rolls backwards


def test_following_keeps_a_gap_to_a_slower_lead():
    route = Route(0.0, 0.0, 0.0, [(400.0, 0.0)])
    lead0, v_lead = 40.0, 5.0

    def policy(t, s, v):
        return min(0.5 * (10.0 - v), follow_accel(lead0 + v_lead * t - s, v, v_lead))

    traj = drive(route, 10.0, 0.0, 20.0, policy, Limits())
    gaps = lead0 + v_lead * traj.t - traj.s
    assert gaps.min() > 4.0
    assert traj.v[-1] == pytest.approx(v_lead, abs=0.3)


def test_trajectory_interpolation_matches_its_grid_and_velocity():
    route = Route(0.0, 0.0, 0.3, [(20.0, 0.0), (15.0, 0.08), (50.0, 0.0)])
    traj = drive(route, 8.0, 0.0, 6.0, lambda t, s, v: 0.0, Limits())
    x, y, yaw, v = traj.at(traj.t[:50])
    assert np.allclose(x, traj.x[:50]) and np.allclose(yaw, traj.yaw[:50])
    tq = np.array([2.0031, 2.0032])
    xq, yq, _, vq = traj.at(tq)
    speed = math.hypot(xq[1] - xq[0], yq[1] - yq[0]) / (tq[1] - tq[0])
    assert speed == pytest.approx(vq[0], rel=1e-3)
