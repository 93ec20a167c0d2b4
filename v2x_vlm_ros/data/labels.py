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
from dataclasses import dataclass
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


def parse_objects(objects, path: Path, keep_degenerate: bool = False) -> list[AgentBox]:
    """Boxes from a parsed label list, in the file's own frame. Zero-size boxes are dropped
    (DAIR-V2X's reader does the same) unless ``keep_degenerate`` (UniV2X keeps them, and
    fillPoly still draws their outline); anything else malformed raises ``DatasetError``."""
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
        if (h <= 0 or w <= 0 or length <= 0) and not keep_degenerate:
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


# -- UniV2X's label preparation (the univ2x protocol) ----------------------------------
#
# AIR-THU/UniV2X @ a6e4f6b, tools/spd_data_converter/: gen_example_data.py ``--update-label``
# (update_label_file) and spd_to_uniad.py (_generate_unvisible_annotations,
# loc_linear_interpolation, rot_linear_interpolation), reproduced rule for rule.


@dataclass(frozen=True)
class LabelUpdate:
    """UniV2X's ``update_label_info.json`` for one side: per frame id, the entries in file
    order, each ``(token, operation)``; an empty operation deletes the object with that
    token, ``[type, track_id]`` relabels it."""

    path: str
    entries: dict[str, list[tuple[str, tuple]]]

    @staticmethod
    def load(path, side: str = "cooperative") -> LabelUpdate:
        from v2x_vlm_ros.data.splits import load_json_any

        data = load_json_any(path)
        if not isinstance(data, dict) or not isinstance(data.get(side), list):
            raise DatasetError(path, side, "expected {side: [{frame, token, operation}, ...]}")
        entries: dict[str, list[tuple[str, tuple]]] = {}
        for i, item in enumerate(data[side]):
            if not (isinstance(item, dict) and isinstance(item.get("frame"), str)
                    and isinstance(item.get("token"), str) and isinstance(item.get("operation"), list)
                    and len(item["operation"]) in (0, 2)):
                raise DatasetError(path, f"{side}[{i}]", "expected {frame, token, operation: [] or "
                                   "[type, track_id]}")
            entries.setdefault(item["frame"], []).append((item["token"], tuple(item["operation"])))
        return LabelUpdate(str(path), entries)

    @property
    def size(self) -> int:
        return sum(len(v) for v in self.entries.values())

    def apply(self, frame_id: str, objects: list) -> tuple[list, int, int]:
        """``objects`` (a parsed label list) after this frame's entries, applied in file order
        to the first object carrying each token, as ``update_label_file`` does. Returns
        (objects, entries applied, entries whose token no object carries)."""
        out = list(objects)
        applied = missing = 0
        for token, operation in self.entries.get(frame_id, ()):
            for i, obj in enumerate(out):
                if isinstance(obj, dict) and obj.get("token") == token:
                    if operation:
                        out[i] = {**obj, "type": operation[0], "track_id": operation[1]}
                    else:
                        del out[i]
                    applied += 1
                    break
            else:
                missing += 1
        return out, applied, missing


def dedupe_by_token(objects: list, boxes: list[AgentBox]) -> list[AgentBox]:
    """UniV2X keys a frame's annotations by ``token`` in a dict: a repeated token keeps the
    first position and the last value. Objects without a token are all kept."""
    keyed: dict = {}
    for i, (obj, box) in enumerate(zip(objects, boxes)):
        token = obj.get("token") if isinstance(obj, dict) else None
        keyed[("token", token) if isinstance(token, str) else ("index", i)] = box
    return list(keyed.values())


def rot_linear_interpolation(rot_0: float, rot_1: float, t_0: float, t_1: float, t: float) -> float:
    """spd_to_uniad.py's rotation interpolation, quirks included: one wrap of the difference
    (by +pi / -3pi around a +pi shift) and a result folded only below -pi or above 2 pi."""
    t_0, t_1, t = float(t_0) / 1e6, float(t_1) / 1e6, float(t) / 1e6
    ratio = (t - t_0) / (t_1 - t_0)
    diff = rot_1 - rot_0 + math.pi
    if diff < 0:
        diff = diff + math.pi
    elif diff > 2 * math.pi:
        diff = diff - 3 * math.pi
    else:
        diff = diff - math.pi
    rot = ratio * diff + rot_0
    if rot < -math.pi:
        rot = rot + 2 * math.pi
    if rot > 2 * math.pi:
        rot = rot - 2 * math.pi
    return rot


def loc_linear_interpolation(loc_0, loc_1, t_0: float, t_1: float, t: float,
                             pose_0, pose_1, pose) -> np.ndarray:
    """spd_to_uniad.py's centre interpolation: both centres to the world (lidar -> novatel
    -> world), linear in time there, then into the LiDAR frame of time ``t``. ``pose_*`` are
    ``(novatel_from_lidar, world_from_novatel)`` 4x4 pairs; stamps in microseconds."""
    t_0, t_1, t = float(t_0) / 1e6, float(t_1) / 1e6, float(t) / 1e6

    def to_world(loc, pose):
        l2e, e2g = pose
        c = np.dot(l2e[:3, :3], np.asarray(loc, dtype=np.float64)) + l2e[:3, 3]
        return np.dot(e2g[:3, :3], c) + e2g[:3, 3]

    c_0, c_1 = to_world(loc_0, pose_0), to_world(loc_1, pose_1)
    cur = (c_1 - c_0) / (t_1 - t_0) * (t - t_0) + c_0
    l2e, e2g = pose
    global2ego_r = np.linalg.inv(e2g[:3, :3])
    global2ego_t = -(e2g[:3, 3].reshape(1, 3) @ global2ego_r.T).reshape(3)
    ego2lidar_r = np.linalg.inv(l2e[:3, :3])
    ego2lidar_t = -(l2e[:3, 3].reshape(1, 3) @ ego2lidar_r.T).reshape(3)
    cur = np.dot(global2ego_r, cur) + global2ego_t
    return np.dot(ego2lidar_r, cur) + ego2lidar_t


@dataclass
class LabelledFrame:
    """One 2 Hz sample of a sequence as the interpolation sees it."""

    frame_id: str
    index: int  # ``frame_idx``: position in its cooperative vehicle sequence
    stamp_us: float  # the vehicle point cloud's stamp (UniV2X's sample timestamp)
    pose: tuple  # (novatel_from_lidar, world_from_novatel)
    boxes: list[AgentBox] | None  # None: no usable label file


def interpolate_hidden_boxes(frames: list[LabelledFrame]) -> tuple[dict[str, list[AgentBox]], dict]:
    """``_generate_unvisible_annotations`` for one scene (frames in UniV2X's order): an
    object seen at samples i and j of a sequence but not between them gets a box at every
    sample between, centre interpolated in the world by time, rotation by
    ``rot_linear_interpolation``, size and type of the earlier sighting, occluded_state 3.

    Returns ({frame id: interpolated boxes}, counts). Where UniV2X's converter would loop
    forever or fail (a track seen twice in one sample, or a sample index with no frame) the
    pair is skipped and counted instead."""
    by_index = {f.index: f for f in frames}
    tracks: dict[str, list[tuple[LabelledFrame, AgentBox]]] = {}
    for frame in frames:
        for box in frame.boxes or ():
            tracks.setdefault(box.track_id, []).append((frame, box))
    added: dict[str, list[AgentBox]] = {}
    counts = {"interpolated_boxes": 0, "interpolation_pairs_skipped": 0}
    for sightings in tracks.values():
        for (f_0, b_0), (f_1, b_1) in zip(sightings, sightings[1:]):
            if f_1.index <= f_0.index or any(i not in by_index for i in range(f_0.index + 1, f_1.index)):
                counts["interpolation_pairs_skipped"] += 1
                continue
            for i in range(f_0.index + 1, f_1.index):
                cur = by_index[i]
                loc = loc_linear_interpolation((b_0.x, b_0.y, b_0.z), (b_1.x, b_1.y, b_1.z), f_0.stamp_us,
                                               f_1.stamp_us, cur.stamp_us, f_0.pose, f_1.pose, cur.pose)
                rot = rot_linear_interpolation(b_0.yaw, b_1.yaw, f_0.stamp_us, f_1.stamp_us, cur.stamp_us)
                added.setdefault(cur.frame_id, []).append(AgentBox(
                    b_0.track_id, b_0.category, float(loc[0]), float(loc[1]), float(loc[2]), b_0.length,
                    b_0.width, b_0.height, float(rot), 3, None))
                counts["interpolated_boxes"] += 1
    return added, counts


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
