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

These are the ``time`` protocol's rules. The ``univ2x`` protocol's (UniV2X's own: 2 Hz
samples, waypoint k = the k-th next sample, float32 box transforms) are at the end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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


# -- the univ2x protocol -----------------------------------------------------------------
#
# UniV2X's ground truth (AIR-THU/UniV2X @ a6e4f6b), reproduced rule for rule:
# tools/spd_data_converter/gen_example_data.py (2 Hz samples), spd_trajectory_api.py
# ``get_sdc_planning_label`` (waypoints, mask, command), spd_vehicle_e2e_dataset.py
# ``occ_get_temporal_indices`` (the future frames of the occupancy labels) and the box
# transforms of mmdetection3d v0.17.1 (``LiDARInstance3DBoxes.rotate / translate``), which
# run in float32: their rounding is reproduced operation by operation, world coordinates
# (kilometres) included.

#: gen_example_data.py ``--freq 2`` on V2X-Seq-SPD's 10 Hz frame ids.
RESAMPLE_HZ = 2
SOURCE_HZ = 10
#: spd_trajectory_api.py ``generate_sdc_info``: the ego box (w, l, h) at the LiDAR origin,
#: given by its gravity centre; mmdet3d moves it to the bottom centre first.
SDC_BOX_HEIGHT_M = 1.56


def resample_frames(frame_ids, freq_hz: int = RESAMPLE_HZ) -> list[str]:
    """The frame ids ``gen_sequence_data_info`` keeps of one cooperative vehicle sequence:
    frame ids sorted as strings, buckets of ``10 // freq`` ids from the first one, and the
    first frame of each non-empty bucket (the loop below is UniV2X's, line for line)."""
    seq_frames = sorted(frame_ids)
    if not seq_frames:
        return []
    interval = SOURCE_HZ // freq_hz
    list_interval = list(range(int(seq_frames[0]), int(seq_frames[-1]) + 1, interval))
    list_interval.append(list_interval[-1] + interval)
    c = 0
    kept = []
    for veh_frame in seq_frames:
        for j in range(c, len(list_interval) - 2):
            if int(veh_frame) >= list_interval[j + 1]:
                c += 1
        if list_interval[c] <= int(veh_frame) < list_interval[c + 1]:
            kept.append(veh_frame)
            c += 1
    return kept


@dataclass(frozen=True)
class FrameCalib:
    """A vehicle frame's two calibration transforms, float64 as read: ``lidar2ego`` is
    ``lidar_to_novatel`` (novatel <- LiDAR), ``ego2global`` is ``novatel_to_world``."""

    lidar2ego: np.ndarray  # (4, 4)
    ego2global: np.ndarray  # (4, 4)


def _rotate_f32(points: np.ndarray, yaw: np.ndarray, rot_mat_t: np.ndarray):
    """``LiDARInstance3DBoxes.rotate(rot_mat_T)``: points @ rot_mat_T and yaw += atan2(
    rot_mat_T[1, 0], rot_mat_T[0, 0]), in float32 (each product rounded, summed left to
    right; atan2 taken in float64 and rounded)."""
    m = np.asarray(rot_mat_t, dtype=np.float32)
    out = (points[:, 0:1] * m[0][None, :] + points[:, 1:2] * m[1][None, :]) + points[:, 2:3] * m[2][None, :]
    angle = np.float32(math.atan2(float(m[1, 0]), float(m[0, 0])))
    return out.astype(np.float32), (yaw + angle).astype(np.float32)


def reframe_f32(points: np.ndarray, yaw: np.ndarray, curr: FrameCalib, ref: FrameCalib,
                inverse_in_float32: bool):
    """Boxes (bottom centres (N, 3) and mmdet3d yaws (N,), float32) from frame ``curr``'s
    LiDAR frame to frame ``ref``'s, as UniV2X chains mmdet3d's float32 operations:
    rotate by lidar2ego, translate, rotate by ego2global, translate, translate back,
    rotate by the inverse ego2global, translate back, rotate by the inverse lidar2ego.

    ``inverse_in_float32``: the occupancy labels (occflow_label.py ``reframe_boxes``) hold
    the transforms as float32 tensors and invert them with ``np.linalg.inv`` in float32;
    the planning label (``get_sdc_planning_label``) inverts the float64 matrices, then
    rounds."""
    pts = np.asarray(points, dtype=np.float32)
    ang = np.asarray(yaw, dtype=np.float32)

    def f32(a):
        return np.asarray(a, dtype=np.float32)

    def inverse(rot):
        return np.linalg.inv(f32(rot)) if inverse_in_float32 else f32(np.linalg.inv(rot))

    pts, ang = _rotate_f32(pts, ang, f32(curr.lidar2ego[:3, :3]).T)
    pts = pts + f32(curr.lidar2ego[:3, 3])
    pts, ang = _rotate_f32(pts, ang, f32(curr.ego2global[:3, :3]).T)
    pts = pts + f32(curr.ego2global[:3, 3])
    pts = pts + (-f32(ref.ego2global[:3, 3]))
    pts, ang = _rotate_f32(pts, ang, inverse(ref.ego2global[:3, :3]).T)
    pts = pts + (-f32(ref.lidar2ego[:3, 3]))
    pts, ang = _rotate_f32(pts, ang, inverse(ref.lidar2ego[:3, :3]).T)
    return pts, ang


def univ2x_waypoints(chain: list[FrameCalib], index: int, fixed_lidar2ego: np.ndarray,
                     num: int = NUM_WAYPOINTS):
    """``get_sdc_planning_label`` at position ``index`` of a cooperative vehicle sequence's
    2 Hz samples (``chain``): waypoint k is the ego box at the k-th next sample, whatever
    time passed, in the current LiDAR frame; only the sequence's end masks a step.

    The ego box starts at the LiDAR origin lowered to its bottom centre (-0.78 m) and goes
    through the float32 chain of ``reframe_f32``. UniV2X's converter gives every sample
    the LiDAR->novatel calibration of the first sample it converted (``fixed_lidar2ego``).
    Returns ``(xy (num, 2) float32 values as float64, mask (num,), chain positions)``."""
    start = np.array([[0.0, 0.0, 0.0]], dtype=np.float32)
    start[0, 2] = np.float32(SDC_BOX_HEIGHT_M) * np.float32(-0.5)
    ref = FrameCalib(fixed_lidar2ego, chain[index].ego2global)
    xy = np.zeros((num, 2))
    mask = np.zeros(num, dtype=bool)
    frames = np.full(num, -1, dtype=np.int64)
    for k in range(1, num + 1):
        j = index + k
        if j >= len(chain):
            break
        curr = FrameCalib(fixed_lidar2ego, chain[j].ego2global)
        pts, _ = reframe_f32(start, np.zeros(1, np.float32), curr, ref, inverse_in_float32=False)
        xy[k - 1] = pts[0, :2].astype(np.float64)
        mask[k - 1] = True
        frames[k - 1] = j
    return xy, mask, frames


def occupancy_future_positions(stamps_us, scenes, num: int = NUM_WAYPOINTS) -> np.ndarray:
    """(n, num) positions of the future frames of each sample's occupancy labels
    (``occ_get_temporal_indices``): the evaluated samples sorted by point-cloud stamp
    (stable), and the k-th next one if it belongs to the same scene (vehicle-side sequence),
    else -1. Rows are in the given order; positions index that same order."""
    stamps = [float(s) for s in stamps_us]
    order = sorted(range(len(stamps)), key=lambda i: stamps[i])
    out = np.full((len(stamps), num), -1, dtype=np.int64)
    for rank, i in enumerate(order):
        for k in range(1, num + 1):
            if rank + k < len(order) and scenes[order[rank + k]] == scenes[i]:
                out[i, k - 1] = order[rank + k]
    return out
