"""Planning ground truth from a sequence's poses (REFERENCE §3, the UniV2X protocol).

Pure functions over a sequence's timestamps and poses, so that the rules are in one place
and testable on analytic motion:

- ``future_waypoints``: waypoint k (k = 1..10) is the LiDAR origin of the frame taken
  nearest to t0 + 0.5·k s, within ``tolerance_s``, expressed in the current LiDAR frame
  (x forward, y left). No such frame (the sequence has ended, or a gap) masks the step.
- ``ego_motion``: speed, heading and yaw rate from the past only: the reference frame is
  the earlier frame whose stamp is nearest to t0 − 0.5 s (so the oldest frame when the
  sequence has less history); speed = planar distance / elapsed time, zero at a
  sequence's first frame.
- ``navigation_command``: UniV2X's rule on the last valid waypoint: y ≥ 2 m LEFT,
  y ≤ −2 m RIGHT, else FORWARD (FORWARD when no waypoint is valid).
"""

from __future__ import annotations

import math

import numpy as np

from v2x_vlm_ros.data.records import NUM_WAYPOINTS, WAYPOINT_DT_S, Command, EgoMotion
from v2x_vlm_ros.geometry import invert_pose, wrap_angle, yaw_of

#: Half a 10 Hz frame period: a frame farther than this from the wanted time is not used.
DEFAULT_TOLERANCE_S = 0.05
#: Look-back for the ego's speed (matches the constant-velocity baseline's definition).
MOTION_WINDOW_S = 0.5
COMMAND_LATERAL_THRESHOLD_M = 2.0


def nearest_frame(stamps_us: np.ndarray, target_us: float, tolerance_s: float) -> int:
    """Index of the stamp nearest to ``target_us`` if within tolerance, else -1.
    ``stamps_us`` must be strictly increasing."""
    pos = int(np.searchsorted(stamps_us, target_us))
    best, best_err = -1, tolerance_s * 1e6
    for j in (pos - 1, pos):
        if 0 <= j < len(stamps_us):
            err = abs(float(stamps_us[j]) - target_us)
            if err <= best_err:
                best, best_err = j, err
    return best


def future_waypoints(stamps_us: np.ndarray, world_from_lidar: np.ndarray, index: int,
                     num: int = NUM_WAYPOINTS, dt_s: float = WAYPOINT_DT_S,
                     tolerance_s: float = DEFAULT_TOLERANCE_S):
    """Waypoints of frame ``index`` in its own LiDAR frame.

    Returns ``(xy (num, 2), mask (num,), frames (num,))`` where ``frames`` holds the
    sequence index each waypoint came from (-1 where masked; masked xy are 0).
    """
    stamps = np.asarray(stamps_us, dtype=np.float64)
    current_from_world = invert_pose(world_from_lidar[index])
    xy = np.zeros((num, 2))
    mask = np.zeros(num, dtype=bool)
    frames = np.full(num, -1, dtype=np.int64)
    t0 = stamps[index]
    for k in range(1, num + 1):
        j = nearest_frame(stamps, t0 + k * dt_s * 1e6, tolerance_s)
        if j <= index:  # never the current frame or the past, whatever the tolerance
            continue
        p = current_from_world @ world_from_lidar[j][:, 3]
        xy[k - 1] = p[:2]
        mask[k - 1] = True
        frames[k - 1] = j
    return xy, mask, frames


def ego_motion(stamps_us: np.ndarray, world_from_lidar: np.ndarray, index: int,
               window_s: float = MOTION_WINDOW_S) -> EgoMotion:
    """The ego's recent motion at frame ``index`` from earlier frames only."""
    heading = yaw_of(world_from_lidar[index])
    if index == 0:
        return EgoMotion(0.0, heading, 0.0, 0.0)
    stamps = np.asarray(stamps_us[: index + 1], dtype=np.float64)
    target = stamps[index] - window_s * 1e6
    ref = int(np.argmin(np.abs(stamps[:index] - target)))
    dt = (stamps[index] - stamps[ref]) * 1e-6
    delta = world_from_lidar[index][:2, 3] - world_from_lidar[ref][:2, 3]
    speed = float(math.hypot(delta[0], delta[1]) / dt)
    yaw_rate = float(wrap_angle(heading - yaw_of(world_from_lidar[ref])) / dt)
    return EgoMotion(speed, heading, yaw_rate, float(dt))


def navigation_command(xy: np.ndarray, mask: np.ndarray,
                       threshold_m: float = COMMAND_LATERAL_THRESHOLD_M) -> Command:
    valid = np.flatnonzero(mask)
    if valid.size == 0:
        return Command.FORWARD
    lateral = float(xy[valid[-1], 1])
    if lateral <= -threshold_m:
        return Command.RIGHT
    if lateral >= threshold_m:
        return Command.LEFT
    return Command.FORWARD
