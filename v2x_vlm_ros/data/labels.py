"""DAIR-V2X 3D box labels, both ways (REFERENCE §2).

A label file is a JSON list of objects with ``type``, ``3d_dimensions{h, w, l}``,
``3d_location{x, y, z}`` (box centre) and ``rotation`` (yaw about z, length along the
heading), plus ``track_id``, ``occluded_state``, ``from_side`` and others. V2X-Seq-SPD's
cooperative labels are in the vehicle LiDAR frame of their frame; DAIR-V2X-C's
``cooperative/label_world`` files are in world coordinates and carry ``world_8_points``,
which (as DAIR-V2X's own reader does) take precedence over location/rotation; a heading
read from 8 points is known up to a half turn, which no footprint test cares about.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from v2x_vlm_ros.data.calib import load_json
from v2x_vlm_ros.data.errors import DatasetError
from v2x_vlm_ros.data.records import AgentBox
from v2x_vlm_ros.geometry import box_corners_3d, transform_points, wrap_angle, yaw_of


def _num(obj: dict, key: str, path, field: str) -> float:
    if not isinstance(obj, dict) or key not in obj:
        raise DatasetError(path, field, "missing key")
    try:
        value = float(obj[key])
    except (TypeError, ValueError):
        raise DatasetError(path, field, f"not a number: {obj[key]!r:.40}") from None
    if not math.isfinite(value):
        raise DatasetError(path, field, "NaN or infinity")
    return value


def _box_from_8_points(points, path, field: str) -> tuple[float, ...]:
    """(x, y, z, length, width, height, yaw) of the upright box through 8 corners."""
    try:
        pts = np.asarray(points, dtype=np.float64).reshape(8, 3)
    except (TypeError, ValueError):
        raise DatasetError(path, field, "expected 8 points of 3 numbers") from None
    if not np.all(np.isfinite(pts)):
        raise DatasetError(path, field, "NaN or infinity")
    centre = pts.mean(axis=0)
    # minAreaRect is exact for the 4 distinct footprint corners; it needs float32, so the
    # centre is subtracted first to keep kilometre-scale world coordinates precise.
    (cx, cy), (a, b), angle = cv2.minAreaRect((pts[:, :2] - centre[:2]).astype(np.float32))
    theta = math.radians(angle)
    length, width, yaw = (a, b, theta) if a >= b else (b, a, theta + math.pi / 2.0)
    height = float(pts[:, 2].max() - pts[:, 2].min())
    return (centre[0] + cx, centre[1] + cy, centre[2], float(length), float(width), height,
            float(wrap_angle(yaw)))


def parse_objects(objects, path: Path) -> list[AgentBox]:
    """Boxes from a parsed label list, in the file's own frame. Zero-size boxes are dropped
    (DAIR-V2X's reader does the same); anything else malformed raises ``DatasetError``."""
    if not isinstance(objects, list):
        raise DatasetError(path, None, "expected a list of objects")
    boxes = []
    for i, obj in enumerate(objects):
        where = f"[{i}]"
        if not isinstance(obj, dict):
            raise DatasetError(path, where, "expected an object")
        category = obj.get("type")
        if not isinstance(category, str) or not category:
            raise DatasetError(path, f"{where}.type", "missing or not a string")
        dims = obj.get("3d_dimensions")
        h = _num(dims, "h", path, f"{where}.3d_dimensions.h")
        w = _num(dims, "w", path, f"{where}.3d_dimensions.w")
        length = _num(dims, "l", path, f"{where}.3d_dimensions.l")
        if h <= 0 or w <= 0 or length <= 0:
            continue
        if "world_8_points" in obj:
            x, y, z, _, _, _, yaw = _box_from_8_points(obj["world_8_points"], path,
                                                       f"{where}.world_8_points")
        else:
            loc = obj.get("3d_location")
            x = _num(loc, "x", path, f"{where}.3d_location.x")
            y = _num(loc, "y", path, f"{where}.3d_location.y")
            z = _num(loc, "z", path, f"{where}.3d_location.z")
            yaw = _num(obj, "rotation", path, f"{where}.rotation")
        occluded = obj.get("occluded_state")
        try:
            occluded = None if occluded is None else int(occluded)
        except (TypeError, ValueError):
            occluded = None
        boxes.append(AgentBox(
            track_id=str(obj.get("track_id", i)), category=category.strip(),
            x=x, y=y, z=z, length=length, width=w, height=h, yaw=float(yaw),
            occluded_state=occluded, from_side=obj.get("from_side"),
        ))
    return boxes


def read_label_file(path: Path) -> list[AgentBox]:
    return parse_objects(load_json(path), Path(path))


def transform_boxes(boxes: list[AgentBox], a_from_b: np.ndarray) -> list[AgentBox]:
    """Re-express boxes given in frame b in frame a (rigid transform, yaw about z)."""
    if not boxes:
        return []
    centres = transform_points(a_from_b, np.array([[b.x, b.y, b.z] for b in boxes]))
    dyaw = yaw_of(a_from_b)
    return [
        AgentBox(b.track_id, b.category, float(c[0]), float(c[1]), float(c[2]), b.length,
                 b.width, b.height, float(wrap_angle(b.yaw + dyaw)), b.occluded_state,
                 b.from_side)
        for b, c in zip(boxes, centres)
    ]


# -- writing ----------------------------------------------------------------------------


def label_object_json(box: AgentBox, world_points: bool = False, digits: int = 3) -> dict:
    """One label object as DAIR-V2X writes it; ``world_points`` adds DAIR-V2X-C's
    ``world_8_points``."""
    obj = {
        "type": box.category,
        "track_id": box.track_id,
        "truncated_state": 0,
        "occluded_state": int(box.occluded_state or 0),
        "alpha": 0.0,
        "3d_dimensions": {"h": round(box.height, digits), "w": round(box.width, digits),
                          "l": round(box.length, digits)},
        "3d_location": {"x": round(box.x, digits), "y": round(box.y, digits),
                        "z": round(box.z, digits)},
        "rotation": round(box.yaw, 6),
    }
    if box.from_side is not None:
        obj["from_side"] = box.from_side
    if world_points:
        corners = box_corners_3d(box.x, box.y, box.z, box.yaw, box.length, box.width, box.height)
        obj["world_8_points"] = [[round(float(v), digits) for v in p] for p in corners]
    return obj
