"""Road users of the synthetic world: sizes and looks per DAIR-V2X class, their boxes over
time, and an overlap test used to keep the scripted traffic collision-free.

An ``Agent`` moves along a route (``kinematics.ConstantSpeed``) or any object with
``at(t) -> (x, y, yaw, v)`` giving its box centre in the local frame. Its look is a small
stack of boxes (body, cabin, wheels; legs, torso, head) drawn by ``render``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from v2x_vlm_ros.data.records import DAIR_CLASSES
from v2x_vlm_ros.data.synth.render import Solid, Thing
from v2x_vlm_ros.geometry import box_corners_xy

#: (length, width, height) ranges in metres.
SIZES = {
    "Car": ((4.2, 4.9), (1.75, 1.95), (1.40, 1.60)),
    "Van": ((4.8, 5.4), (1.90, 2.05), (1.90, 2.20)),
    "Truck": ((6.5, 8.5), (2.30, 2.50), (2.80, 3.30)),
    "Bus": ((10.5, 12.0), (2.50, 2.55), (3.00, 3.30)),
    "Pedestrian": ((0.45, 0.60), (0.55, 0.70), (1.55, 1.85)),
    "Cyclist": ((1.65, 1.85), (0.55, 0.70), (1.60, 1.80)),
}
assert set(SIZES) <= set(DAIR_CLASSES)

CAR_COLORS = [(235, 235, 235), (192, 192, 196), (45, 45, 50), (95, 95, 100), (45, 45, 185),
              (150, 85, 40), (95, 50, 30), (150, 190, 210), (70, 110, 65)]
TRUCK_COLORS = [(170, 100, 40), (50, 50, 180), (225, 225, 225), (40, 140, 230)]
BUS_COLORS = [(80, 150, 60), (170, 110, 40), (220, 220, 220), (40, 190, 230)]
SHIRT_COLORS = [(40, 40, 200), (200, 120, 40), (230, 230, 230), (40, 170, 220), (60, 140, 60),
                (150, 60, 150), (30, 30, 30)]
TROUSER_COLORS = [(70, 40, 30), (35, 35, 35), (110, 140, 160), (90, 90, 90)]
WHEELS = (32, 32, 34)
GLASS = (72, 58, 50)
SKIN = (120, 160, 205)


@dataclass
class Agent:
    track_id: str
    category: str
    length: float
    width: float
    height: float
    colors: tuple  # (main, secondary) BGR
    motion: object  # at(t) -> (x, y, yaw, v) of the box centre, local frame
    role: str  # what it does in the scene: lead, crossing, oncoming, parked, ...

    def pose(self, t):
        return self.motion.at(t)

    def corners(self, t) -> np.ndarray:
        """(T, 4, 2) footprints at times ``t``."""
        x, y, yaw, _ = self.pose(np.atleast_1d(t))
        return np.stack([box_corners_xy(a, b, c, self.length, self.width)
                         for a, b, c in zip(x, y, yaw)])

    def thing(self, t: float, ident: int) -> Thing:
        x, y, yaw, _ = (float(v) for v in self.pose(t))
        return Thing(ident, look(self.category, x, y, yaw, self.length, self.width, self.height,
                                 self.colors),
                     box_corners_xy(x, y, yaw, self.length, self.width), self.height,
                     static=False, kind=self.category)


def sample_look(rng: np.random.Generator, category: str):
    """(length, width, height, colors) of a new agent of ``category``."""
    (l0, l1), (w0, w1), (h0, h1) = SIZES[category]
    dims = (float(rng.uniform(l0, l1)), float(rng.uniform(w0, w1)), float(rng.uniform(h0, h1)))
    if category in ("Car", "Van"):
        colors = (CAR_COLORS[rng.integers(len(CAR_COLORS))], GLASS)
    elif category == "Truck":
        colors = (TRUCK_COLORS[rng.integers(len(TRUCK_COLORS))],
                  TRUCK_COLORS[rng.integers(len(TRUCK_COLORS))])
    elif category == "Bus":
        colors = (BUS_COLORS[rng.integers(len(BUS_COLORS))], GLASS)
    else:
        colors = (SHIRT_COLORS[rng.integers(len(SHIRT_COLORS))],
                  TROUSER_COLORS[rng.integers(len(TROUSER_COLORS))])
    return (*dims, colors)


def look(category: str, x: float, y: float, yaw: float, length: float, width: float,
         height: float, colors) -> list:
    """The boxes that draw one road user, bottom to top."""
    c, s = math.cos(yaw), math.sin(yaw)
    main, second = colors

    def part(dx, ln, wd, z0, z1, side, top=None):
        return Solid(x + c * dx, y + s * dx, yaw, ln, wd, z0, z1, side, top)

    L, W, H = length, width, height
    if category in ("Car", "Van"):
        body_top = (0.55 if category == "Car" else 0.5) * H
        cabin = (0.52 if category == "Car" else 0.8) * L
        return [part(0.0, 0.9 * L, 0.98 * W, 0.0, 0.34, WHEELS),
                part(0.0, L, W, 0.3, body_top, main),
                part(-0.04 * L if category == "Car" else -0.08 * L, cabin, 0.88 * W, body_top, H,
                     second, main)]
    if category == "Truck":
        return [part(0.0, 0.92 * L, 0.98 * W, 0.0, 0.45, WHEELS),
                part(0.38 * L, 0.22 * L, W, 0.4, 0.62 * H, main),
                part(0.38 * L, 0.2 * L, 0.96 * W, 0.62 * H, 0.85 * H, GLASS, main),
                part(-0.12 * L, 0.74 * L, W, 0.45, H, second)]
    if category == "Bus":
        return [part(0.0, 0.9 * L, 0.98 * W, 0.0, 0.4, WHEELS),
                part(0.0, L, W, 0.35, 0.5 * H, main),
                part(0.0, L, W, 0.5 * H, 0.82 * H, GLASS),
                part(0.0, L, W, 0.82 * H, H, main)]
    if category == "Pedestrian":
        return [part(0.0, 0.6 * L, 0.6 * W, 0.0, 0.47 * H, second),
                part(0.0, 0.7 * L, 0.85 * W, 0.47 * H, 0.86 * H, main),
                part(0.0, 0.4 * L, 0.35 * W, 0.86 * H, H, SKIN)]
    if category == "Cyclist":
        return [part(0.0, L, 0.15 * W, 0.05, 0.95, WHEELS),
                part(-0.08 * L, 0.28 * L, 0.75 * W, 0.95, 0.8 * H + 0.05, main),
                part(-0.05 * L, 0.14 * L, 0.35 * W, 0.8 * H + 0.05, H, SKIN)]
    return [part(0.0, L, W, 0.0, H, main)]


def boxes_overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(T,) bool: do the footprints a[t] and b[t] (each (T, 4, 2)) intersect?"""
    separated = np.zeros(len(a), bool)
    for poly in (a, b):
        for i in range(4):
            e = poly[:, (i + 1) % 4] - poly[:, i]
            axis = np.stack([-e[:, 1], e[:, 0]], axis=-1)
            pa = np.einsum("tkc,tc->tk", a, axis)
            pb = np.einsum("tkc,tc->tk", b, axis)
            separated |= (pa.max(axis=1) < pb.min(axis=1)) | (pb.max(axis=1) < pa.min(axis=1))
    return ~separated


def inflate(corners: np.ndarray, along: float, across: float) -> np.ndarray:
    """Footprints grown by ``along`` metres at both ends and ``across`` at both sides."""
    centre = corners.mean(axis=1, keepdims=True)
    front = 0.5 * (corners[:, 0] + corners[:, 3]) - centre[:, 0]
    left = 0.5 * (corners[:, 0] + corners[:, 1]) - centre[:, 0]
    fu = front / np.maximum(np.linalg.norm(front, axis=-1, keepdims=True), 1e-9)
    lu = left / np.maximum(np.linalg.norm(left, axis=-1, keepdims=True), 1e-9)
    signs = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], float)
    return corners + (signs[None, :, 0, None] * along * fu[:, None, :]
                      + signs[None, :, 1, None] * across * lu[:, None, :])
