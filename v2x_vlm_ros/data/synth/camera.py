"""Pinhole cameras of the synthetic world and the geometry of drawing with them.

Camera frames are optical frames: x right, y down, z forward. A ``Camera`` knows its pose
in the intersection's local frame and its field of view; images of any size share the
same normalised image plane (x / z, y / z), so intrinsics scale with the image size and an
object-id mask at a fixed resolution sees exactly what the image sees.

Polygons are clipped against the near plane z >= ``NEAR`` in camera coordinates before
they are projected (ground polygons and nearby boxes extend behind the camera).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from v2x_vlm_ros.geometry import invert_pose, make_pose, rotation_zyx

NEAR = 0.2  # near plane, metres in front of the camera

#: Optical axes expressed in a body frame with x forward, y left, z up (columns: optical
#: x = right = -y, optical y = down = -z, optical z = forward = +x).
BODY_FROM_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def intrinsics(hfov_deg: float, size: tuple[int, int]) -> np.ndarray:
    """3x3 K of an image ``size`` = (width, height) with square pixels and the principal
    point at the centre; the horizontal field of view is ``hfov_deg`` at any size."""
    w, h = size
    f = 0.5 * w / math.tan(math.radians(hfov_deg) / 2.0)
    return np.array([[f, 0.0, 0.5 * w], [0.0, f, 0.5 * h], [0.0, 0.0, 1.0]])


def optical_pose(position, yaw: float, pitch_down: float, roll: float = 0.0) -> np.ndarray:
    """4x4 ``parent_from_camera`` of a camera at ``position`` (parent frame: x forward or
    east, z up) looking along ``yaw``, tilted down by ``pitch_down`` radians."""
    body = rotation_zyx(yaw, pitch_down, roll)
    return make_pose(body @ BODY_FROM_OPTICAL, position)


@dataclass
class Camera:
    """A pinhole camera placed in the local frame."""

    hfov_deg: float
    size: tuple[int, int]  # (width, height) of the image it renders
    local_from_camera: np.ndarray  # (4, 4)

    def __post_init__(self):
        self.camera_from_local = invert_pose(self.local_from_camera)
        self.K = intrinsics(self.hfov_deg, self.size)
        # normalised half extents of the image plane
        self.half_x = math.tan(math.radians(self.hfov_deg) / 2.0)
        self.half_y = self.half_x * self.size[1] / self.size[0]

    @property
    def position(self) -> np.ndarray:
        return self.local_from_camera[:3, 3]

    def to_camera(self, points_local: np.ndarray) -> np.ndarray:
        """(..., 3) local points -> camera coordinates."""
        r, t = self.camera_from_local[:3, :3], self.camera_from_local[:3, 3]
        return points_local @ r.T + t

    def horizon(self) -> tuple[float, float, float]:
        """Vanishing line of the ground plane: (a, b, c) with a x + b y + c = 0 in
        normalised coordinates; points with a x + b y + c > 0 look below the horizon."""
        up = self.camera_from_local[:3, :3] @ np.array([0.0, 0.0, 1.0])
        return float(-up[0]), float(-up[1]), float(-up[2])


def clip_near(points: np.ndarray, near: float = NEAR) -> np.ndarray | None:
    """Sutherland-Hodgman clip of one polygon (N, 3 camera coordinates) to z >= near."""
    inside = points[:, 2] >= near
    if inside.all():
        return points
    if not inside.any():
        return None
    out = []
    n = len(points)
    for i in range(n):
        a, b = points[i], points[(i + 1) % n]
        if inside[i]:
            out.append(a)
        if inside[i] != inside[(i + 1) % n]:
            t = (near - a[2]) / (b[2] - a[2])
            out.append(a + t * (b - a))
    return np.array(out) if len(out) >= 3 else None


def normalise(points_cam: np.ndarray) -> np.ndarray:
    """(N, 3) camera points in front of the camera -> (N, 2) normalised image points."""
    return points_cam[:, :2] / points_cam[:, 2:3]


def to_pixels(normalised: np.ndarray, size: tuple[int, int], hfov_deg: float,
              shift: int) -> np.ndarray:
    """Normalised points -> int32 pixel coordinates (u = K x, as the written intrinsics
    say) scaled by 2**shift for cv2's sub-pixel drawing."""
    w, h = size
    f = 0.5 * w / math.tan(math.radians(hfov_deg) / 2.0)
    scale = float(1 << shift)
    px = normalised * (f * scale) + np.array([0.5 * w * scale, 0.5 * h * scale])
    np.clip(px, -(2.0**30), 2.0**30, out=px)
    return np.rint(px).astype(np.int32)
