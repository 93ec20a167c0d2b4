"""Ground-truth rules on analytic motion, straight on the pose arrays (no files)."""

import math

import numpy as np
import pytest

from builders import arc, braking, line, local_to_world
from v2x_vlm_ros.data import ground_truth as gt
from v2x_vlm_ros.data.records import Command

STAMPS = np.array([1_600_000_000_000_000 + i * 100_000 for i in range(100)], dtype=np.int64)


def poses(motion, stamps=STAMPS):
    return np.stack([local_to_world(*motion((s - stamps[0]) * 1e-6)) for s in stamps])


def test_constant_speed_line_waypoints_are_straight_ahead():
    xy, mask, frames = gt.future_waypoints(STAMPS, poses(line(10.0)), 20)
    assert mask.all()
    np.testing.assert_allclose(xy[:, 0], 10.0 * 0.5 * np.arange(1, 11), atol=1e-6)
    np.testing.assert_allclose(xy[:, 1], 0.0, atol=1e-6)
    assert list(frames) == [20 + 5 * k for k in range(1, 11)]


def test_constant_yaw_rate_arc_matches_circle_geometry():
    v, w = 8.0, 0.2
    xy, mask, _ = gt.future_waypoints(STAMPS, poses(arc(v, w)), 30)
    tau = 0.5 * np.arange(1, 11)
    r = v / w
    np.testing.assert_allclose(xy[:, 0], r * np.sin(w * tau), atol=1e-6)
    np.testing.assert_allclose(xy[:, 1], r * (1 - np.cos(w * tau)), atol=1e-6)
    assert gt.navigation_command(xy, mask) is Command.LEFT
    xy_r, mask_r, _ = gt.future_waypoints(STAMPS, poses(arc(v, -w)), 30)
    np.testing.assert_allclose(xy_r[:, 1], -xy[:, 1], atol=1e-6)
    assert gt.navigation_command(xy_r, mask_r) is Command.RIGHT


def test_braking_waypoints_follow_the_deceleration_and_stop():
    v0, a = 12.0, 2.0  # standstill at 6 s, 36 m
    p = poses(braking(v0, a))
    i = 20  # t0 = 2.0 s, x0 = 24 - 4 = 20
    xy, mask, _ = gt.future_waypoints(STAMPS, p, i)
    t = 2.0 + 0.5 * np.arange(1, 11)
    x = np.where(t < 6.0, v0 * t - 0.5 * a * t * t, 36.0)
    np.testing.assert_allclose(xy[:, 0], x - 20.0, atol=1e-6)
    assert mask.all()
    # speed over the past 0.5 s: (x(2.0) - x(1.5)) / 0.5 = (20 - 15.75) / 0.5
    m = gt.ego_motion(STAMPS, p, i)
    assert m.speed_mps == pytest.approx(8.5, abs=1e-6)
    assert m.history_s == pytest.approx(0.5)


def test_masks_where_the_sequence_ends():
    p = poses(line(5.0))
    n = len(STAMPS)
    _, mask, frames = gt.future_waypoints(STAMPS, p, n - 1)
    assert not mask.any() and (frames == -1).all()
    _, mask, _ = gt.future_waypoints(STAMPS, p, n - 1 - 25)  # 2.5 s of future left
    assert list(mask) == [True] * 5 + [False] * 5


def test_gap_in_the_sequence_masks_only_that_step():
    keep = np.ones(len(STAMPS), bool)
    keep[30] = False  # the frame for waypoint 2 of frame 20 is missing
    stamps = STAMPS[keep]
    xy, mask, _ = gt.future_waypoints(stamps, poses(line(5.0), stamps), 20)
    assert list(mask) == [True, False] + [True] * 8
    assert xy[1].tolist() == [0.0, 0.0]


def test_jittered_stamps_pick_the_nearest_frame_within_tolerance():
    rng = np.random.default_rng(0)
    stamps = STAMPS + rng.integers(-3000, 3000, len(STAMPS))
    xy, mask, frames = gt.future_waypoints(stamps, poses(line(10.0), stamps), 10)
    assert list(frames) == [10 + 5 * k for k in range(1, 11)]
    # the waypoint is where the ego really was at that frame's stamp
    expected = 10.0 * (stamps[frames] - stamps[10]) * 1e-6
    np.testing.assert_allclose(xy[:, 0], expected, atol=1e-6)


def test_ego_motion_speed_heading_yaw_rate():
    p = poses(arc(8.0, 0.2))
    m = gt.ego_motion(STAMPS, p, 40)
    chord = 2 * (8.0 / 0.2) * math.sin(0.2 * 0.5 / 2)  # straight-line distance over 0.5 s
    assert m.speed_mps == pytest.approx(chord / 0.5, abs=1e-6)
    assert m.yaw_rate_rps == pytest.approx(0.2, abs=1e-9)
    assert m.heading_rad == pytest.approx(float(gt.wrap_angle(0.7 + 0.2 * 4.0)), abs=1e-9)


def test_ego_motion_first_frame_and_short_history():
    p = poses(line(6.0))
    first = gt.ego_motion(STAMPS, p, 0)
    assert first.speed_mps == 0.0 and first.history_s == 0.0
    early = gt.ego_motion(STAMPS, p, 2)  # only 0.2 s of history: uses the oldest frame
    assert early.history_s == pytest.approx(0.2)
    assert early.speed_mps == pytest.approx(6.0, abs=1e-6)


@pytest.mark.parametrize("y,expected", [(2.0, Command.LEFT), (1.99, Command.FORWARD),
                                        (-2.0, Command.RIGHT), (-1.99, Command.FORWARD)])
def test_command_thresholds_on_last_valid_waypoint(y, expected):
    xy = np.zeros((10, 2))
    mask = np.zeros(10, bool)
    mask[:4] = True
    xy[3, 1] = y
    xy[9, 1] = 50.0  # masked: must be ignored
    assert gt.navigation_command(xy, mask) is expected


def test_command_without_valid_waypoint_is_forward():
    assert gt.navigation_command(np.zeros((10, 2)), np.zeros(10, bool)) is Command.FORWARD
