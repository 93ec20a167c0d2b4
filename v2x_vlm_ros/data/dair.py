"""Reader for V2X-Seq-SPD and DAIR-V2X-C cooperative datasets (REFERENCE §2–3).

Every vehicle frame listed in ``cooperative/data_info.json`` is a sample. A sample pairs
the ego image with its roadside image, and carries the ego pose (world <- LiDAR, composed
from the frame's novatel_to_world and lidar_to_novatel calibration), the ego's recent
motion, the 10-waypoint future in the current ego frame with its mask, the agents' boxes
at each future step in the current ego frame, and UniV2X's navigation command.

The trajectory of a sequence (SPD ``sequence_id``, DAIR-V2X-C ``batch_id``) is its vehicle
frames in frame-id order. Records and frames that cannot be used are skipped and counted
(``DairV2XDataset.skips``) with the file and field that caused it; ``strict=True`` raises
instead. Files the whole dataset depends on (the three data_info.json) always raise.

Timestamps inside a sequence must increase with the frame id. Frames that break the order
are found as the complement of the longest strictly increasing run of stamps (so one bad
stamp costs one frame, not the rest of the sequence); duplicates count the same way.

Two protocols decide which samples exist and what their ground truth is (README, Metrics):

- ``time`` (``DatasetConfig`` default): every cooperative row is a sample; waypoint k is the
  frame nearest t0 + 0.5 k (within 50 ms), labels as written (``ground_truth``).
- ``univ2x`` (V2X-Seq-SPD only): UniV2X's own preparation. The cooperative rows of each
  cooperative vehicle sequence are resampled at 2 Hz (``ground_truth.resample_frames``);
  the split defaults to ``val`` of UniV2X's split file (shipped); waypoint k is the k-th
  next 2 Hz sample (``ground_truth.univ2x_waypoints``); the labels are the cooperative
  ones after UniV2X's ``update_label_info.json`` (shipped) with hidden objects interpolated
  between sightings (``labels.interpolate_hidden_boxes``); the future boxes of step k come
  from the k-th next evaluated sample in point-cloud time order within the same sequence
  (``ground_truth.occupancy_future_positions``), moved into the current frame by
  mmdetection3d's float32 transforms; a step without such a frame has no labels (None).
  Those boxes are ``univ2x_labels.Univ2xLabels``'s work; this reader picks the rows.
"""

from __future__ import annotations

import bisect
import json
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from v2x_vlm_ros.data import ground_truth as gt
from v2x_vlm_ros.data.calib import load_json, read_lidar_to_novatel, read_rigid
from v2x_vlm_ros.data.errors import DatasetError, SkipLog, relpath
from v2x_vlm_ros.data.images import load_image, quick_check
from v2x_vlm_ros.data.labels import LabelUpdate, read_label_file, transform_boxes
from v2x_vlm_ros.data.records import ROADSIDE_HISTORY_S, AgentBox, Command, CooperativeSample
from v2x_vlm_ros.data.splits import (UNIV2X_LABEL_UPDATE_FILE, UNIV2X_SPLIT_FILE, SplitSelection,
                                     find_split_file, load_split, resolve_file)
from v2x_vlm_ros.data.univ2x_labels import Univ2xLabels, Univ2xRow
from v2x_vlm_ros.data.writer import DESCRIPTIONS_FILE, SCENARIOS_FILE
from v2x_vlm_ros.geometry import invert_pose


#: ``DatasetConfig.protocol`` values; "auto" resolves per root (``resolve_protocol``).
PROTOCOLS = ("time", "univ2x")
#: ``split`` value that keeps every sequence, whatever the protocol's default split.
ALL_SEQUENCES = "all"


def resolve_protocol(protocol: str, layout: str, synthetic: bool) -> str:
    """"auto": ``univ2x`` on a V2X-Seq-SPD root that is not a synthetic world (no
    scenarios.json), else ``time`` (the synthetic sample, DAIR-V2X-C)."""
    if protocol == "auto":
        return "univ2x" if layout == "spd" and not synthetic else "time"
    return protocol


@dataclass
class DatasetConfig:
    """How samples and their ground truth are derived (see the module docstring)."""

    #: Number of future waypoints.
    num_waypoints: int = 10
    #: Time between waypoints, seconds.
    waypoint_dt_s: float = 0.5
    #: A future frame is used for waypoint k only if its stamp is within this of t0 + k·dt.
    match_tolerance_s: float = gt.DEFAULT_TOLERANCE_S
    #: Look-back window for the ego's speed and yaw rate, seconds.
    motion_window_s: float = gt.MOTION_WINDOW_S
    #: Lateral offset of the last valid waypoint that makes the command LEFT / RIGHT, metres.
    command_threshold_m: float = gt.COMMAND_LATERAL_THRESHOLD_M
    #: Decode every image while indexing (slow on real data); otherwise only a marker check.
    check_images: bool = False
    #: Raise on the first bad record instead of counting a skip.
    strict: bool = False
    #: "time", "univ2x" or "auto" (univ2x on real V2X-Seq-SPD, time elsewhere).
    protocol: str = "time"
    #: univ2x protocol: UniV2X's label update file ("univ2x": the shipped
    #: update_label_info.json; None: labels as they are on disk).
    label_update_file: str | None = "univ2x"

    def __post_init__(self):
        if self.protocol not in (*PROTOCOLS, "auto"):
            raise ValueError(f"protocol must be one of time, univ2x, auto; got {self.protocol!r}")
        if self.num_waypoints < 1:
            raise ValueError(f"num_waypoints must be >= 1, got {self.num_waypoints}")
        if not self.waypoint_dt_s > 0:
            raise ValueError(f"waypoint_dt_s must be > 0, got {self.waypoint_dt_s}")
        if not 0 < self.match_tolerance_s < self.waypoint_dt_s / 2:
            raise ValueError("match_tolerance_s must be in (0, waypoint_dt_s / 2), "
                             f"got {self.match_tolerance_s}")
        if not self.motion_window_s > 0:
            raise ValueError(f"motion_window_s must be > 0, got {self.motion_window_s}")
        if not self.command_threshold_m > 0:
            raise ValueError(f"command_threshold_m must be > 0, got {self.command_threshold_m}")


@dataclass
class _VehicleFrame:
    frame_id: str
    sequence_id: str
    stamp_us: int
    image: Path
    lidar_to_novatel: Path
    novatel_to_world: Path
    side_label: Path | None
    record: str  # "vehicle-side/data_info.json[i]" for messages
    lidar_to_camera: Path | None = None
    intrinsics: Path | None = None
    cloud_stamp_us: float = 0.0  # pointcloud_timestamp (UniV2X's sample time); image's if absent


@dataclass
class _Sequence:
    sequence_id: str
    frames: list[_VehicleFrame]
    stamps_us: np.ndarray
    poses: np.ndarray  # (n, 4, 4) world <- LiDAR
    index_of: dict[str, int] = field(default_factory=dict)
    calibs: list[gt.FrameCalib] = field(default_factory=list)  # as read, for the univ2x protocol


@dataclass
class _SampleIndex:
    sequence: _Sequence
    position: int
    infra_frame: str
    infra_stamp_us: int
    infra_image: Path
    offset: tuple[float, float] | None
    xy: np.ndarray
    mask: np.ndarray
    future_frames: np.ndarray  # time: positions in the sequence; univ2x: in the evaluated rows
    command: Command
    motion: object


def _stamp(value, where: str, path: str, skips: SkipLog) -> int | None:
    text = str(value).strip() if isinstance(value, (str, int)) and not isinstance(value, bool) else ""
    if not text.isdigit():
        skips.add("timestamp_invalid", path, where, f"not an integer microsecond stamp: {value!r:.40}")
        return None
    return int(text)


def _longest_increasing(stamps: list[int]) -> set[int]:
    """Positions of one longest strictly increasing subsequence (patience sorting)."""
    tails: list[int] = []  # stamps
    tail_pos: list[int] = []
    parent = [-1] * len(stamps)
    for i, s in enumerate(stamps):
        k = bisect.bisect_left(tails, s)
        if k == len(tails):
            tails.append(s)
            tail_pos.append(i)
        else:
            tails[k] = s
            tail_pos[k] = i
        parent[i] = tail_pos[k - 1] if k > 0 else -1
    keep, i = set(), tail_pos[-1] if tail_pos else -1
    while i >= 0:
        keep.add(i)
        i = parent[i]
    return keep


def _optional(side: Path, rel) -> Path | None:
    return side / rel if isinstance(rel, str) and rel else None


def _frame_id_from_path(path: str) -> str:
    return Path(str(path)).stem


class DairV2XDataset:
    """Cooperative samples of a V2X-Seq-SPD or DAIR-V2X-C root.

    ``split`` names a split (train / val / test) of ``split_file`` (default: the first of
    ``splits.DEFAULT_SPLIT_FILES`` under the root); no split means every sequence.
    ``scenario`` keeps only sequences of that scenario (needs the synthetic world's
    scenarios.json).
    """

    def __init__(self, root, split: str | None = None, split_file=None,
                 scenario: str | None = None, config: DatasetConfig | None = None,
                 progress: bool = False):
        self.root = Path(root)
        self.config = config or DatasetConfig()
        self.skips = SkipLog(strict=self.config.strict)
        self._progress = progress
        if not self.root.is_dir():
            raise DatasetError(self.root, None, "dataset root is not a directory")
        self.scenarios = self._read_scenarios()
        if scenario is not None and scenario not in set(self.scenarios.values()):
            known = sorted(set(self.scenarios.values()))
            where = SCENARIOS_FILE if self.scenarios else f"{SCENARIOS_FILE} (absent)"
            raise DatasetError(self.root / where, None,
                               f"no sequence has scenario {scenario!r}; known: {known}")
        self.scenario = scenario
        self.descriptions = self._read_descriptions()

        veh = self._data_info("vehicle-side/data_info.json")
        inf = self._data_info("infrastructure-side/data_info.json")
        coop = self._data_info("cooperative/data_info.json")
        self.layout = self._detect_layout(coop, veh)
        self.protocol = resolve_protocol(self.config.protocol, self.layout, bool(self.scenarios))
        if self.protocol == "univ2x" and self.layout != "spd":
            raise DatasetError(self.root / "cooperative/data_info.json", None,
                               "the univ2x protocol is UniV2X's evaluation of V2X-Seq-SPD; this is a "
                               "DAIR-V2X-C root (use --protocol time)")
        self.split = self._select_split(split, split_file)
        self.univ2x_counts: Counter = Counter()
        self._label_cache: OrderedDict[Path, list[AgentBox] | None] = OrderedDict()
        self._bad_labels: set[Path] = set()  # label files already reported as skips
        label_update = None
        if self.protocol == "univ2x" and self.config.label_update_file is not None:
            label_update = LabelUpdate.load(resolve_file(self.config.label_update_file,
                                                         UNIV2X_LABEL_UPDATE_FILE))
        self._univ2x = Univ2xLabels(self.root, label_update, self.univ2x_counts, self.skips, self._bad_labels)
        self.sequences = self._read_vehicle_side(veh)
        self._infra_sequence_of: dict[Path, str] = {}  # roadside image -> its sequence
        self._infra_frames: dict[str, list[tuple[int, Path]]] = {}  # sequence -> (stamp, path), in time
        self._infra_stamps: dict[str, list[int]] = {}  # sequence -> the same frames' stamps (bisect)
        self._infra = self._read_infra_side(inf)
        self._coop_labels: dict[str, Path] = {}
        self._index = (self._read_cooperative_univ2x(coop) if self.protocol == "univ2x"
                       else self._read_cooperative(coop))

    # -- files --------------------------------------------------------------------------

    def _data_info(self, rel: str) -> list:
        data = load_json(self.root / rel)
        if not isinstance(data, list):
            raise DatasetError(self.root / rel, None, "expected a list of records")
        return data

    def _select_split(self, split, split_file) -> SplitSelection | None:
        """``split`` None: every sequence (time) or ``val`` (univ2x); "all": every sequence.
        ``split_file`` None: UniV2X's shipped file (univ2x) or the first of
        ``DEFAULT_SPLIT_FILES`` under the root (time); "univ2x": the shipped file."""
        if split == ALL_SEQUENCES:
            return None
        if split is None:
            if self.protocol != "univ2x":
                return None
            split = "val"
        if split_file is None and self.protocol == "univ2x":
            split_file = "univ2x"
        path = resolve_file(split_file, UNIV2X_SPLIT_FILE) or find_split_file(self.root)
        if path is None:
            raise DatasetError(self.root, None, f"split {split!r} asked for but no split file given "
                               "(--split-file) or found under the root")
        return load_split(path, split)

    def _read_scenarios(self) -> dict[str, str]:
        path = self.root / SCENARIOS_FILE
        if not path.exists():
            return {}
        data = load_json(path)
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise DatasetError(path, None, "expected {sequence_id: scenario name}")
        return {str(k): v for k, v in data.items()}

    def _read_descriptions(self) -> dict[str, str]:
        path = self.root / DESCRIPTIONS_FILE
        if not path.exists():
            return {}
        out = {}
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                out[str(row["vehicle_frame"])] = str(row["description"])
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                self.skips.add("description_invalid", path, f"line {n}", f"{type(exc).__name__}: {exc}")
        return out

    def _detect_layout(self, coop: list, veh: list) -> str:
        probe = coop[0] if coop else (veh[0] if veh else {})
        if isinstance(probe, dict):
            if "vehicle_frame" in probe or "sequence_id" in probe:
                return "spd"
            if "vehicle_image_path" in probe or "batch_id" in probe:
                return "c"
        raise DatasetError(self.root / "cooperative/data_info.json", "[0]",
                           "neither V2X-Seq-SPD (vehicle_frame) nor DAIR-V2X-C "
                           "(vehicle_image_path) records")

    # -- vehicle side -------------------------------------------------------------------

    def _read_vehicle_side(self, records: list) -> dict[str, _Sequence]:
        side = self.root / "vehicle-side"
        name = "vehicle-side/data_info.json"
        seq_key = "sequence_id" if self.layout == "spd" else "batch_id"
        frames: dict[str, list[_VehicleFrame]] = {}
        for i, rec in enumerate(records):
            where = f"[{i}]"
            if not isinstance(rec, dict):
                self.skips.add("record_invalid", name, where, "expected an object")
                continue
            required = ("image_path", "image_timestamp", "calib_lidar_to_novatel_path",
                        "calib_novatel_to_world_path", seq_key)
            missing = [k for k in required if not isinstance(rec.get(k), (str, int))]
            if self.layout == "spd" and "frame_id" not in rec:
                missing.append("frame_id")
            if missing:
                self.skips.add("record_invalid", name, f"{where}.{missing[0]}", "missing key")
                continue
            stamp = _stamp(rec["image_timestamp"], f"{where}.image_timestamp", name, self.skips)
            if stamp is None:
                continue
            frame_id = str(rec["frame_id"]) if self.layout == "spd" else _frame_id_from_path(rec["image_path"])
            label = rec.get("label_lidar_std_path") or rec.get("label_lidar_path")
            cloud = rec.get("pointcloud_timestamp")
            if isinstance(cloud, (str, int)) and not isinstance(cloud, bool) and str(cloud).strip().isdigit():
                cloud_stamp = float(cloud)  # UniV2X: float(pointcloud_timestamp)
            else:
                cloud_stamp = float(stamp)
                if self.protocol == "univ2x":
                    self.univ2x_counts["pointcloud_timestamp_missing_image_stamp_used"] += 1
            frames.setdefault(str(rec[seq_key]), []).append(_VehicleFrame(
                frame_id=frame_id, sequence_id=str(rec[seq_key]), stamp_us=stamp,
                image=side / str(rec["image_path"]),
                lidar_to_novatel=side / str(rec["calib_lidar_to_novatel_path"]),
                novatel_to_world=side / str(rec["calib_novatel_to_world_path"]),
                side_label=side / str(label) if isinstance(label, str) else None,
                record=f"{name}{where}",
                lidar_to_camera=_optional(side, rec.get("calib_lidar_to_camera_path")),
                intrinsics=_optional(side, rec.get("calib_camera_intrinsic_path")),
                cloud_stamp_us=cloud_stamp,
            ))

        sequences = {}
        items = sorted(frames.items())
        for seq_id, seq_frames in tqdm(items, desc="sequences", unit="seq", disable=not self._progress):
            seq_frames.sort(key=lambda f: (int(f.frame_id) if f.frame_id.isdigit() else 0, f.frame_id))
            keep = _longest_increasing([f.stamp_us for f in seq_frames])
            ordered = []
            for pos, f in enumerate(seq_frames):
                if pos not in keep:
                    self.skips.add("timestamp_out_of_order", f.record, "image_timestamp",
                                   f"frame {f.frame_id} stamp {f.stamp_us} breaks the time order of "
                                   f"sequence {seq_id} (out of order or duplicate)")
                    continue
                pose = self._pose(f)
                if pose is not None:
                    ordered.append((f, pose))
            if not ordered:
                continue
            seq = _Sequence(seq_id, [f for f, _ in ordered],
                            np.array([f.stamp_us for f, _ in ordered], dtype=np.int64),
                            np.stack([p[0] for _, p in ordered]), calibs=[p[1] for _, p in ordered])
            seq.index_of = {f.frame_id: n for n, f in enumerate(seq.frames)}
            sequences[seq_id] = seq
        return sequences

    def _pose(self, frame: _VehicleFrame) -> tuple[np.ndarray, gt.FrameCalib] | None:
        """(world <- LiDAR, the two transforms it is composed of), or None (counted)."""
        try:
            novatel_from_lidar = read_lidar_to_novatel(frame.lidar_to_novatel)
            world_from_novatel = read_rigid(frame.novatel_to_world)
        except DatasetError as exc:
            exc = DatasetError(relpath(Path(exc.path), self.root), exc.field, exc.reason)
            self.skips.add_error("calib_invalid", exc)
            return None
        return world_from_novatel @ novatel_from_lidar, gt.FrameCalib(novatel_from_lidar, world_from_novatel)

    # -- roadside and cooperative -------------------------------------------------------

    def _read_infra_side(self, records: list) -> dict[str, tuple[int, Path]]:
        side = self.root / "infrastructure-side"
        name = "infrastructure-side/data_info.json"
        out = {}
        for i, rec in enumerate(records):
            where = f"[{i}]"
            if not isinstance(rec, dict) or not isinstance(rec.get("image_path"), str):
                self.skips.add("record_invalid", name, f"{where}.image_path", "missing key")
                continue
            stamp = _stamp(rec.get("image_timestamp"), f"{where}.image_timestamp", name, self.skips)
            if stamp is None:
                continue
            if self.layout == "spd":
                if "frame_id" not in rec:
                    self.skips.add("record_invalid", name, f"{where}.frame_id", "missing key")
                    continue
                key = str(rec["frame_id"])
            else:
                key = "infrastructure-side/" + rec["image_path"]
            out[key] = (stamp, side / rec["image_path"])
            sequence = rec.get("sequence_id", rec.get("batch_id"))
            if isinstance(sequence, (str, int)):  # the roadside camera's sequence: its earlier frames
                self._infra_sequence_of[out[key][1]] = str(sequence)
                self._infra_frames.setdefault(str(sequence), []).append(out[key])
        for sequence, frames in self._infra_frames.items():
            frames.sort(key=lambda entry: entry[0])
            self._infra_stamps[sequence] = [entry[0] for entry in frames]
        return out

    def _roadside_history(self, image: Path, stamp_us: int) -> tuple[tuple[int, Path], ...]:
        """The roadside frames of ``image``'s sequence in the ``ROADSIDE_HISTORY_S`` before it."""
        sequence = self._infra_sequence_of.get(image)
        frames, stamps = self._infra_frames.get(sequence, []), self._infra_stamps.get(sequence, [])
        lo = bisect.bisect_left(stamps, stamp_us - int(ROADSIDE_HISTORY_S * 1e6))
        hi = bisect.bisect_left(stamps, stamp_us)
        return tuple(frames[lo:hi])

    def _valid_rows(self, rows: list):
        """The cooperative rows whose vehicle and roadside frames are usable, as
        ``(where, row, vehicle frame id, sequence, roadside frame id, roadside (stamp, path),
        offset)``; the others are counted skips."""
        name = "cooperative/data_info.json"
        by_frame_id = {f.frame_id: s for s in self.sequences.values() for f in s.frames}
        for i, row in enumerate(tqdm(rows, desc="samples", unit="sample", disable=not self._progress)):
            where = f"[{i}]"
            if not isinstance(row, dict):
                self.skips.add("record_invalid", name, where, "expected an object")
                continue
            if self.layout == "spd":
                keys = ("vehicle_frame", "infrastructure_frame")
                veh_key, inf_key = "vehicle_frame", "infrastructure_frame"
            else:
                keys = ("vehicle_image_path", "infrastructure_image_path")
                veh_key, inf_key = keys
            missing = [k for k in keys if not isinstance(row.get(k), str)]
            if missing:
                self.skips.add("record_invalid", name, f"{where}.{missing[0]}", "missing key")
                continue
            frame_id = row[veh_key] if self.layout == "spd" else _frame_id_from_path(row[veh_key])
            seq = by_frame_id.get(frame_id)
            if seq is None:
                self.skips.add("vehicle_frame_unavailable", name, f"{where}.{veh_key}",
                               f"vehicle frame {frame_id} is not a usable vehicle-side frame")
                continue
            if self.layout == "c" and isinstance(row.get("cooperative_label_path"), str):
                self._coop_labels[frame_id] = self.root / row["cooperative_label_path"]
            infra = self._infra.get(row[inf_key])
            if infra is None:
                self.skips.add("infrastructure_frame_unavailable", name, f"{where}.{inf_key}",
                               f"roadside frame {row[inf_key]} is not in infrastructure-side/data_info.json")
                continue
            offset = self._offset(row.get("system_error_offset"), name, f"{where}.system_error_offset")
            infra_frame = row[inf_key] if self.layout == "spd" else _frame_id_from_path(row[inf_key])
            yield f"{name}{where}", row, frame_id, seq, infra_frame, infra, offset

    def _read_cooperative(self, rows: list) -> list[_SampleIndex]:
        index = []
        for where, _, frame_id, seq, infra_frame, infra, offset in self._valid_rows(rows):
            if self.split is not None and not self.split.keeps(seq.sequence_id, frame_id):
                continue
            if self.scenario is not None and self.scenarios.get(seq.sequence_id) != self.scenario:
                continue
            pos = seq.index_of[frame_id]
            if not self._images_ok(seq.frames[pos].image, infra[1], where):
                continue
            index.append(self._build_index(seq, pos, infra_frame, infra, offset))
        return index

    def _read_cooperative_univ2x(self, rows: list) -> list[_SampleIndex]:
        """The univ2x protocol's samples (module docstring): UniV2X's 2 Hz rows, waypoints
        along each cooperative vehicle sequence, occupancy frames along the evaluated rows."""
        groups: dict[str, dict] = {}
        for where, row, frame_id, seq, infra_frame, infra, offset in self._valid_rows(rows):
            coop_seq = row.get("vehicle_sequence")
            if not isinstance(coop_seq, (str, int)) or isinstance(coop_seq, bool):
                self.univ2x_counts["vehicle_sequence_missing_vehicle_side_used"] += 1
                coop_seq = seq.sequence_id
            if not frame_id.isdigit():
                raise DatasetError(self.root / "cooperative/data_info.json", where,
                                   f"vehicle frame id {frame_id!r} is not a number; UniV2X's 2 Hz "
                                   "resampling buckets frames by id")
            group = groups.setdefault(str(coop_seq), {"frames": [], "rows": {}})
            group["frames"].append(frame_id)
            # gen_example_data keeps one row per vehicle frame: the last one listed
            group["rows"][frame_id] = (seq, (where, infra_frame, infra, offset))
        converted: list[Univ2xRow] = []
        chains: dict[str, list[Univ2xRow]] = {}
        rows_in = sum(len(g["frames"]) for g in groups.values())
        for coop_seq in sorted(groups):
            group = groups[coop_seq]
            chain = chains.setdefault(coop_seq, [])
            for frame_id in gt.resample_frames(group["frames"]):
                seq, row = group["rows"][frame_id]
                item = Univ2xRow(seq, seq.index_of[frame_id], coop_seq, len(chain), row)
                chain.append(item)
                converted.append(item)
        self.univ2x_counts["cooperative_rows"] = rows_in
        self.univ2x_counts["samples_2hz"] = len(converted)
        if not converted:
            return []
        # UniV2X's converter gives every planning label the first converted sample's lidar2ego
        fixed = converted[0].calib.lidar2ego
        self.univ2x_counts["frames_whose_lidar_to_novatel_differs_from_the_first"] = sum(
            not np.array_equal(r.calib.lidar2ego, fixed) for r in converted)
        evaluated = [r for r in converted
                     if self.split is None or self.split.keeps(r.sequence.sequence_id, r.frame.frame_id)]
        self._univ2x.set_rows(converted, evaluated)
        futures = gt.occupancy_future_positions([r.frame.cloud_stamp_us for r in evaluated],
                                                [r.sequence.sequence_id for r in evaluated],
                                                self.config.num_waypoints)
        index = []
        for item, future in zip(evaluated, futures):
            seq, pos = item.sequence, item.position
            if self.scenario is not None and self.scenarios.get(seq.sequence_id) != self.scenario:
                continue
            where, infra_frame, infra, offset = item.row
            if not self._images_ok(seq.frames[pos].image, infra[1], where):
                continue
            chain = chains[item.coop_sequence]
            xy, mask, _ = gt.univ2x_waypoints([r.calib for r in chain], item.frame_index, fixed,
                                              self.config.num_waypoints)
            motion = gt.ego_motion(seq.stamps_us, seq.poses, pos, self.config.motion_window_s)
            command = gt.navigation_command(xy, mask, gt.COMMAND_LATERAL_THRESHOLD_M)
            index.append(_SampleIndex(seq, pos, infra_frame, infra[0], infra[1], offset, xy, mask, future,
                                      command, motion))
        return index

    def _offset(self, value, name: str, where: str):
        if value in (None, ""):  # DAIR-V2X-C writes "" when there is no offset
            return None
        try:
            dx, dy = float(value["delta_x"]), float(value["delta_y"])
        except (TypeError, KeyError, ValueError):
            self.skips.add("offset_invalid", name, where, f"expected {{delta_x, delta_y}}, got {value!r:.60}")
            return None
        if not (np.isfinite(dx) and np.isfinite(dy)):
            self.skips.add("offset_invalid", name, where, "NaN or infinity")
            return None
        return (dx, dy)

    def _images_ok(self, ego: Path, roadside: Path, where: str) -> bool:
        for path in (ego, roadside):
            reason = quick_check(path)
            if reason is None and self.config.check_images:
                try:
                    load_image(path)
                except ValueError as exc:
                    reason = getattr(exc, "reason", str(exc))
            if reason is not None:
                code = "image_missing" if reason == "file not found" else "image_invalid"
                self.skips.add(code, relpath(path, self.root), None, f"{reason} (listed by {where})")
                return False
        return True

    def _build_index(self, seq: _Sequence, pos: int, infra_frame: str, infra, offset) -> _SampleIndex:
        cfg = self.config
        xy, mask, frames = gt.future_waypoints(seq.stamps_us, seq.poses, pos, cfg.num_waypoints,
                                               cfg.waypoint_dt_s, cfg.match_tolerance_s)
        motion = gt.ego_motion(seq.stamps_us, seq.poses, pos, cfg.motion_window_s)
        command = gt.navigation_command(xy, mask, cfg.command_threshold_m)
        return _SampleIndex(seq, pos, infra_frame, infra[0], infra[1], offset, xy, mask, frames,
                            command, motion)

    # -- labels -------------------------------------------------------------------------

    def _labels_world(self, seq: _Sequence, position: int) -> list[AgentBox] | None:
        """Boxes at a frame, in world coordinates; None when the frame has no usable label."""
        frame = seq.frames[position]
        if self.layout == "spd":
            candidates = [(self.root / "cooperative/label" / f"{frame.frame_id}.json", "lidar")]
        else:
            coop = self._coop_labels.get(frame.frame_id)
            candidates = [(coop, "world")] if coop is not None else []
        if frame.side_label is not None:
            candidates.append((frame.side_label, "lidar"))
        for path, frame_kind in candidates:
            if not path.exists():
                continue
            boxes = self._read_labels(path)
            if boxes is None:
                return None
            return boxes if frame_kind == "world" else transform_boxes(boxes, seq.poses[position])
        return None

    def _read_labels(self, path: Path) -> list[AgentBox] | None:
        if path in self._label_cache:
            self._label_cache.move_to_end(path)
            return self._label_cache[path]
        try:
            boxes = read_label_file(path)
        except DatasetError as exc:
            boxes = None
            if path not in self._bad_labels:
                self._bad_labels.add(path)
                self.skips.add("label_invalid", relpath(path, self.root), exc.field, exc.reason)
        self._label_cache[path] = boxes
        if len(self._label_cache) > 512:
            self._label_cache.popitem(last=False)
        return boxes

    # -- public -------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._index)

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def __getitem__(self, i: int) -> CooperativeSample:
        entry = self._index[i]
        seq, pos = entry.sequence, entry.position
        frame = seq.frames[pos]
        current_from_world = invert_pose(seq.poses[pos])
        agents: list[list[AgentBox] | None] = []
        for j in entry.future_frames:
            if self.protocol == "univ2x":
                agents.append(self._univ2x.future(seq.calibs[pos], int(j)))
                continue
            world = self._labels_world(seq, int(j)) if j >= 0 else None
            agents.append(None if world is None else transform_boxes(world, current_from_world))
        return CooperativeSample(
            sample_id=frame.frame_id, sequence_id=seq.sequence_id, layout=self.layout,
            vehicle_frame=frame.frame_id, infrastructure_frame=entry.infra_frame,
            ego_image_path=frame.image, roadside_image_path=entry.infra_image,
            ego_timestamp_us=int(frame.stamp_us), roadside_timestamp_us=int(entry.infra_stamp_us),
            world_from_ego=seq.poses[pos].copy(), motion=entry.motion,
            future_xy=entry.xy.copy(), future_mask=entry.mask.copy(), future_agents=agents,
            command=entry.command, system_error_offset=entry.offset,
            description=self.descriptions.get(frame.frame_id),
            scenario=self.scenarios.get(seq.sequence_id), frame_index=pos,
            ego_lidar_to_camera_path=frame.lidar_to_camera, ego_intrinsics_path=frame.intrinsics,
            roadside_history=self._roadside_history(entry.infra_image, int(entry.infra_stamp_us)),
        )

    def sample_sequences(self) -> list:
        """The distinct sequences that have samples (objects with ``sequence_id``)."""
        return list({id(e.sequence): e.sequence for e in self._index}.values())

    def univ2x_info(self) -> dict:
        """What the univ2x protocol's preparation did (counts grow as labels are read)."""
        return self._univ2x.info()

    def time_order(self) -> list[int]:
        """Sample indices sequence by sequence, each in frame order (replay order)."""
        return sorted(range(len(self._index)), key=lambda i: (self._index[i].sequence.sequence_id,
                                                               self._index[i].position))

    def roadside_image_paths(self) -> list[Path]:
        """The distinct roadside images the samples use."""
        return sorted({e.infra_image for e in self._index})

    def summary(self, progress: bool = False) -> dict:
        """Counts for ``v2x-vlm dataset summary``. Reads every label file once, so label
        problems are counted too."""
        for i in tqdm(range(len(self)), desc="labels", unit="sample", disable=not progress):
            self[i]
        seqs = {e.sequence.sequence_id for e in self._index}
        commands = Counter(e.command.name for e in self._index)
        scen = Counter(self.scenarios.get(e.sequence.sequence_id, "unknown") for e in self._index)
        full = sum(bool(e.mask.all()) for e in self._index)
        return {
            "root": str(self.root),
            "layout": {"spd": "V2X-Seq-SPD", "c": "DAIR-V2X-C"}[self.layout],
            "protocol": self.protocol,
            "split": None if self.split is None else self.split.name,
            "split_file": None if self.split is None else self.split.path,
            "scenario": self.scenario,
            **({"univ2x": self.univ2x_info()} if self.protocol == "univ2x" else {}),
            "sequences": len(seqs),
            "frames": sum(len(self.sequences[s].frames) for s in seqs),
            "samples": len(self),
            "samples_with_full_horizon": full,
            "commands": dict(sorted(commands.items())),
            "scenarios": dict(sorted(scen.items())) if self.scenarios else {},
            "descriptions": sum(e.sequence.frames[e.position].frame_id in self.descriptions
                                for e in self._index),
            "skipped": self.skips.counts,
            "skipped_total": len(self.skips),
            "skipped_items": [str(s) for s in self.skips.items],
        }
