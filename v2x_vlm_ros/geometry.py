"""Rigid transforms and planar boxes shared by the data layer, the synthetic world and the metrics.

Conventions (REP-103, and DAIR-V2X's LiDAR frames):
- A pose is a 4x4 float64 homogeneous matrix ``world_from_x`` that maps points in frame ``x``
  to the world frame. Names say which way a transform goes: ``a_from_b @ p_b = p_a``.
- LiDAR / ego frames: x forward, y left, z up. Yaw is the counter-clockwise angle about z.
- Boxes carry their centre, length along their heading, width across it.

Everything is float64 on purpose: DAIR-V2X world coordinates are kilometres from the
origin, and float32 loses centimetres there.
"""

from __future__ import annotations

import math

import numpy as np


def rotation_z(yaw: float) -> np.ndarray:
    """3x3 rotation by ``yaw`` radians about z."""
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rotation_zyx(yaw: float, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """3x3 rotation R = Rz(yaw) @ Ry(pitch) @ Rx(roll)."""
    cy, sy = math.cos(yaw), math.sin(yaw)
    cp, sp = math.cos(pitch), math.sin(pitch)
    cr, sr = math.cos(roll), math.sin(roll)
    rz = np.array([[cy, -sy, 0.0], [sy, cy, 0.0], [0.0, 0.0, 1.0]])
    ry = np.array([[cp, 0.0, sp], [0.0, 1.0, 0.0], [-sp, 0.0, cp]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cr, -sr], [0.0, sr, cr]])
    return rz @ ry @ rx


def make_pose(rotation: np.ndarray, translation) -> np.ndarray:
    """4x4 pose from a 3x3 rotation and a 3-vector (any shape with 3 elements)."""
    pose = np.eye(4)
    pose[:3, :3] = np.asarray(rotation, dtype=np.float64).reshape(3, 3)
    pose[:3, 3] = np.asarray(translation, dtype=np.float64).reshape(3)
    return pose


def planar_pose(x: float, y: float, yaw: float, z: float = 0.0) -> np.ndarray:
    """4x4 pose of a frame at (x, y, z) rotated by ``yaw`` about z."""
    return make_pose(rotation_z(yaw), (x, y, z))


def invert_pose(pose: np.ndarray) -> np.ndarray:
    """Inverse of a rigid 4x4 transform (exact, no general matrix inverse)."""
    rot = pose[:3, :3]
    inv = np.eye(4)
    inv[:3, :3] = rot.T
    inv[:3, 3] = -rot.T @ pose[:3, 3]
    return inv


def relative_pose(world_from_a: np.ndarray, world_from_b: np.ndarray) -> np.ndarray:
    """``a_from_b``: maps points in frame b into frame a."""
    return invert_pose(world_from_a) @ world_from_b


def yaw_of(pose_or_rotation: np.ndarray) -> float:
    """Heading of a frame's x axis projected on the xy plane."""
    rot = np.asarray(pose_or_rotation)[:3, :3]
    return math.atan2(rot[1, 0], rot[0, 0])


def wrap_angle(angle):
    """Map angles to [-pi, pi)."""
    return (np.asarray(angle) + np.pi) % (2.0 * np.pi) - np.pi


def transform_points(a_from_b: np.ndarray, points_b: np.ndarray) -> np.ndarray:
    """Apply a 4x4 transform to (N, 3) points; (N, 2) points are taken at z = 0 and
    returned as (N, 2)."""
    pts = np.asarray(points_b, dtype=np.float64)
    planar = pts.shape[-1] == 2
    if planar:
        pts = np.concatenate([pts, np.zeros(pts.shape[:-1] + (1,))], axis=-1)
    out = pts @ a_from_b[:3, :3].T + a_from_b[:3, 3]
    return out[..., :2] if planar else out


def box_corners_xy(x: float, y: float, yaw: float, length: float, width: float) -> np.ndarray:
    """(4, 2) corners of an oriented rectangle, counter-clockwise from front-left."""
    c, s = math.cos(yaw), math.sin(yaw)
    hl, hw = length / 2.0, width / 2.0
    local = np.array([[hl, hw], [-hl, hw], [-hl, -hw], [hl, -hw]])
    rot = np.array([[c, -s], [s, c]])
    return local @ rot.T + np.array([x, y])


def box_corners_3d(x, y, z, yaw, length, width, height) -> np.ndarray:
    """(8, 3) corners of an upright box whose centre is (x, y, z): the 4 bottom corners
    (counter-clockwise from front-left) then the 4 top corners in the same order."""
    xy = box_corners_xy(x, y, yaw, length, width)
    bottom = np.column_stack([xy, np.full(4, z - height / 2.0)])
    top = np.column_stack([xy, np.full(4, z + height / 2.0)])
    return np.vstack([bottom, top])


def is_rotation(matrix: np.ndarray, atol: float = 1e-3) -> bool:
    """True when ``matrix`` is a finite 3x3 proper rotation (within ``atol``)."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (3, 3) or not np.all(np.isfinite(m)):
        return False
    return bool(np.allclose(m @ m.T, np.eye(3), atol=atol) and abs(np.linalg.det(m) - 1.0) < atol)
