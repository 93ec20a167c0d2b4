"""Ground-truth boxes of the univ2x protocol (``dair`` module docstring, REFERENCE §3).

UniV2X does not read a frame's label file as it is: ``gen_example_data.py --update-label``
first applies ``update_label_info.json`` (deletions and relabels by token),
``spd_to_uniad.py`` then interpolates objects hidden between two sightings within a scene
(vehicle-side sequence), and ``occflow_label.py`` moves each future frame's boxes into the
current LiDAR frame with mmdetection3d's float32 box transforms. ``Univ2xLabels`` does
those three steps for the 2 Hz rows ``DairV2XDataset`` selected; it shares the dataset's
skip log and its univ2x counts, so what it drops is reported with the rest.
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from v2x_vlm_ros.data import ground_truth as gt
from v2x_vlm_ros.data.calib import load_json
from v2x_vlm_ros.data.errors import DatasetError, SkipLog, relpath
from v2x_vlm_ros.data.labels import (LabelledFrame, LabelUpdate, dedupe_by_token, interpolate_hidden_boxes,
                                     parse_objects)
from v2x_vlm_ros.data.records import AgentBox

if TYPE_CHECKING:  # the dataset's own records; only named in annotations
    from v2x_vlm_ros.data.dair import _Sequence, _VehicleFrame

#: Scenes whose interpolated boxes are kept in memory (a sample's future stays in its scene).
SCENE_CACHE_SIZE = 8


@dataclass
class Univ2xRow:
    """A 2 Hz sample of the univ2x protocol (a cooperative row UniV2X's converter keeps)."""

    sequence: _Sequence  # its vehicle-side sequence (the scene UniV2X splits and tracks by)
    position: int  # in that sequence's frames
    coop_sequence: str  # the cooperative vehicle_sequence it was resampled in
    frame_index: int  # position among that cooperative sequence's 2 Hz samples
    row: tuple  # (where, roadside frame id, roadside (stamp, path), offset) of the cooperative row

    @property
    def frame(self) -> _VehicleFrame:
        return self.sequence.frames[self.position]

    @property
    def calib(self) -> gt.FrameCalib:
        return self.sequence.calibs[self.position]


class Univ2xLabels:
    """The boxes of the univ2x protocol's occupancy frames, as UniV2X prepares them.

    ``set_rows`` gives every converted 2 Hz row (UniV2X's order: hidden objects are
    interpolated over them) and the evaluated ones (the occupancy frames ``future`` indexes).
    Problems are counted once per scene in ``counts`` and, for unreadable files, in ``skips``
    (``bad_labels`` is the dataset's set of files already reported).
    """

    def __init__(self, root: Path, label_update: LabelUpdate | None, counts: Counter, skips: SkipLog,
                 bad_labels: set[Path]):
        self.root = root
        self.label_update = label_update
        self.counts = counts
        self.skips = skips
        self._bad_labels = bad_labels
        self._converted: list[Univ2xRow] = []
        self._evaluated: list[Univ2xRow] = []
        self._scene_cache: OrderedDict[str, dict[str, list[AgentBox] | None]] = OrderedDict()
        self._scenes_counted: set[str] = set()

    def set_rows(self, converted: list[Univ2xRow], evaluated: list[Univ2xRow]) -> None:
        self._converted, self._evaluated = converted, evaluated
        self._scene_cache.clear()

    def info(self) -> dict:
        """The label update used and what the preparation did (counts grow as labels are read)."""
        return {
            "label_update_file": None if self.label_update is None else self.label_update.path,
            "label_update_entries": 0 if self.label_update is None else self.label_update.size,
            "counts": dict(sorted(self.counts.items())),
        }

    def frame_labels(self, frame_id: str, count: bool) -> list[AgentBox] | None:
        """A 2 Hz sample's cooperative boxes after UniV2X's label update (in its own LiDAR
        frame); None when the file is missing or malformed (counted)."""
        path = self.root / "cooperative/label" / f"{frame_id}.json"
        if not path.exists():
            if count:
                self.counts["label_file_missing"] += 1
            return None
        try:
            objects = load_json(path)
            if not isinstance(objects, list):
                raise DatasetError(path, None, "expected a list of objects")
            if self.label_update is not None:
                objects, applied, missing = self.label_update.apply(frame_id, objects)
                if count:
                    self.counts["label_update_applied"] += applied
                    self.counts["label_update_token_not_found"] += missing
            boxes = parse_objects(objects, path, keep_degenerate=True)
        except DatasetError as exc:
            if path not in self._bad_labels:
                self._bad_labels.add(path)
                self.skips.add("label_invalid", relpath(path, self.root), exc.field, exc.reason)
            return None
        return dedupe_by_token(objects, boxes)

    def scene(self, scene: str) -> dict[str, list[AgentBox] | None]:
        """Boxes of every 2 Hz sample of a scene (vehicle-side sequence), updated and with
        hidden objects interpolated, keyed by frame id (a few scenes are cached)."""
        cache = self._scene_cache
        if scene in cache:
            cache.move_to_end(scene)
            return cache[scene]
        count = scene not in self._scenes_counted
        frames = [LabelledFrame(r.frame.frame_id, r.frame_index, r.frame.cloud_stamp_us,
                                (r.calib.lidar2ego, r.calib.ego2global),
                                self.frame_labels(r.frame.frame_id, count))
                  for r in self._converted if r.sequence.sequence_id == scene]
        added, counts = interpolate_hidden_boxes(frames)
        out = {}
        for f in frames:
            extra = added.get(f.frame_id, [])
            if f.boxes is None and extra and count:
                self.counts["interpolated_boxes_on_unlabelled_frames_dropped"] += len(extra)
            out[f.frame_id] = None if f.boxes is None else f.boxes + extra
        if count:
            self.counts.update(counts)
            self._scenes_counted.add(scene)
        cache[scene] = out
        if len(cache) > SCENE_CACHE_SIZE:
            cache.popitem(last=False)
        return out

    def future(self, reference: gt.FrameCalib, j: int) -> list[AgentBox] | None:
        """The boxes of occupancy frame ``j`` (an evaluated row; < 0: none) in the LiDAR frame
        of ``reference``, moved as occflow_label.py moves them (mmdet3d float32 boxes, bottom
        centres)."""
        if j < 0:
            return None
        row = self._evaluated[j]
        boxes = self.scene(row.sequence.sequence_id)[row.frame.frame_id]
        if boxes is None:
            return None
        if not boxes:
            return []
        f32 = np.float32
        dims = np.array([[b.width, b.length, b.height] for b in boxes], dtype=np.float32)
        centre = np.array([[b.x, b.y, b.z] for b in boxes], dtype=np.float32)
        centre[:, 2] = centre[:, 2] + dims[:, 2] * f32(-0.5)  # origin (0.5, 0.5, 0.5) -> bottom
        yaw = (-np.array([b.yaw for b in boxes], dtype=np.float64) - np.pi / 2).astype(np.float32)
        pts, yaw = gt.reframe_f32(centre, yaw, row.calib, reference, inverse_in_float32=True)
        return [AgentBox(b.track_id, b.category, float(p[0]), float(p[1]), float(p[2]), float(d[1]),
                         float(d[0]), float(d[2]), -float(a) - math.pi / 2, b.occluded_state, b.from_side)
                for b, p, d, a in zip(boxes, pts, dims, yaw)]
