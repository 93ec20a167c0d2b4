"""Write cooperative sequences in the exact on-disk layouts of V2X-Seq-SPD and DAIR-V2X-C.

The synthetic world and the tests describe sequences in world coordinates
(``SequenceSpec``); this module owns the translation to DAIR-V2X files: frame and
sequence ids, per-frame calibration split into lidar_to_novatel and novatel_to_world,
labels in each frame's LiDAR frame (SPD) or in world coordinates (DAIR-V2X-C),
microsecond timestamp strings, the split file and two sidecar files of our own:

- ``scenarios.json``: ``{sequence_id: scenario name}``;
- ``descriptions.jsonl``: one ``{"vehicle_frame", "sequence_id", "description"}`` per line.

Point clouds are not written (the planner never reads them); ``pointcloud_path`` keys are
kept as in the real data. ``maps/`` is not written either.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from v2x_vlm_ros.data.calib import intrinsics_json, lidar_to_novatel_json, rigid_json
from v2x_vlm_ros.data.labels import label_object_json, transform_boxes
from v2x_vlm_ros.data.records import AgentBox
from v2x_vlm_ros.geometry import invert_pose

SCENARIOS_FILE = "scenarios.json"
DESCRIPTIONS_FILE = "descriptions.jsonl"
SPLIT_FILE = "split_datas/cooperative-split-data.json"


@dataclass
class VehicleFrameSpec:
    timestamp_us: int
    world_from_lidar: np.ndarray  # (4, 4) ego pose
    image: np.ndarray | bytes  # BGR uint8 image, or already-encoded bytes written as they are
    agents: list[AgentBox] = field(default_factory=list)  # world coordinates, ego excluded
    infra_index: int | None = None  # paired roadside frame; None: not a cooperative sample
    description: str | None = None
    camera_agents: list[AgentBox] | None = None  # agents in the camera label; None: all


@dataclass
class InfraFrameSpec:
    timestamp_us: int  # on the roadside clock
    image: np.ndarray | bytes
    agents: list[AgentBox] | None = None  # world coordinates; None: no side labels written


@dataclass
class SequenceSpec:
    vehicle_frames: list[VehicleFrameSpec]
    infra_frames: list[InfraFrameSpec]
    novatel_from_lidar: np.ndarray
    camera_from_lidar: np.ndarray
    vehicle_K: np.ndarray
    world_from_virtuallidar: np.ndarray
    camera_from_virtuallidar: np.ndarray
    infra_K: np.ndarray
    intersection_loc: str = "yizhuang06"
    system_error_offset: tuple[float, float] | None = (0.0, 0.0)
    scenario: str | None = None


@dataclass
class WriteOptions:
    layout: str = "spd"  # "spd" (V2X-Seq-SPD) or "c" (DAIR-V2X-C)
    jpeg_quality: int = 90
    side_labels: bool = True  # write vehicle-side label/{lidar,camera} files (and their keys)
    label_key: str = "label_lidar_std_path"  # DAIR-V2X-C also knows "label_lidar_path"


@dataclass
class WrittenSequence:
    sequence_id: str
    vehicle_frames: list[str]
    infra_frames: list[str]
    paired_frames: list[str]  # vehicle frames with a cooperative row


def _encode(image, quality: int) -> bytes:
    if isinstance(image, (bytes, bytearray)):
        return bytes(image)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


class _Tree:
    """Writes files under one root, creating folders once."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._dirs: set[Path] = set()

    def write(self, rel: str, data: bytes | str | object) -> None:
        path = self.root / rel
        if path.parent not in self._dirs:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._dirs.add(path.parent)
        if isinstance(data, str):
            data = data.encode("utf-8")
        elif not isinstance(data, (bytes, bytearray)):
            data = json.dumps(data, separators=(",", ":")).encode("utf-8")
        path.write_bytes(data)


def _offset_json(offset):
    if offset is None:
        return ""
    return {"delta_x": float(offset[0]), "delta_y": float(offset[1])}


class DatasetWriter:
    """Writes sequences one at a time, so a large world never sits in memory at once;
    ``close`` writes the data_info files, the split file and the sidecars."""

    def __init__(self, root, options: WriteOptions | None = None):
        self.options = options or WriteOptions()
        if self.options.layout not in ("spd", "c"):
            raise ValueError(f"unknown layout {self.options.layout!r}; expected 'spd' or 'c'")
        self._tree = _Tree(root)
        self._spd = self.options.layout == "spd"
        self._veh_infos: list[dict] = []
        self._inf_infos: list[dict] = []
        self._coop_infos: list[dict] = []
        self._descriptions: list[dict] = []
        self._scenarios: dict[str, str] = {}
        self.written: list[WrittenSequence] = []
        self._veh_next = self._inf_next = 0

    def add(self, seq: SequenceSpec) -> WrittenSequence:
        opts, tree, spd = self.options, self._tree, self._spd
        seq_index = len(self.written)
        seq_id = f"{seq_index:04d}" if spd else str(seq_index)
        veh_ids = [f"{self._veh_next + i:06d}" for i in range(len(seq.vehicle_frames))]
        inf_ids = [f"{self._inf_next + i:06d}" for i in range(len(seq.infra_frames))]
        self._veh_next += len(veh_ids)
        self._inf_next += len(inf_ids)
        paired = [fid for fid, f in zip(veh_ids, seq.vehicle_frames) if f.infra_index is not None]
        written = WrittenSequence(seq_id, veh_ids, inf_ids, paired)
        self.written.append(written)
        if seq.scenario:
            self._scenarios[seq_id] = seq.scenario
        seq_keys_v = _sequence_keys(spd, seq_id, veh_ids, seq.intersection_loc)
        seq_keys_i = _sequence_keys(spd, seq_id, inf_ids, seq.intersection_loc)
        if spd:
            seq_keys_i["valid_frames_splits"] = [{"start_frame_id": inf_ids[0] if inf_ids else "",
                                                  "end_frame_id": inf_ids[-1] if inf_ids else ""}]
        for fid, frame in zip(inf_ids, seq.infra_frames):
            tree.write(f"infrastructure-side/image/{fid}.jpg", _encode(frame.image, opts.jpeg_quality))
            tree.write(f"infrastructure-side/calib/camera_intrinsic/{fid}.json",
                       intrinsics_json(seq.infra_K, with_projection=spd))
            tree.write(f"infrastructure-side/calib/virtuallidar_to_camera/{fid}.json",
                       rigid_json(seq.camera_from_virtuallidar))
            to_world = rigid_json(seq.world_from_virtuallidar)
            to_world["relative_error"] = {"delta_x": 0.0, "delta_y": 0.0}
            tree.write(f"infrastructure-side/calib/virtuallidar_to_world/{fid}.json", to_world)
            if frame.agents is not None:
                local = transform_boxes(frame.agents, invert_pose(seq.world_from_virtuallidar))
                objs = [label_object_json(b) for b in local]
                tree.write(f"infrastructure-side/label/virtuallidar/{fid}.json", objs)
                tree.write(f"infrastructure-side/label/camera/{fid}.json", objs)
            stamp = str(int(frame.timestamp_us))
            info = {
                "image_path": f"image/{fid}.jpg",
                "pointcloud_path": f"velodyne/{fid}.pcd",
                "calib_camera_intrinsic_path": f"calib/camera_intrinsic/{fid}.json",
                "calib_virtuallidar_to_camera_path": f"calib/virtuallidar_to_camera/{fid}.json",
                "calib_virtuallidar_to_world_path": f"calib/virtuallidar_to_world/{fid}.json",
                "label_camera_std_path": f"label/camera/{fid}.json",
                "label_lidar_std_path": f"label/virtuallidar/{fid}.json",
                "image_timestamp": stamp,
                "pointcloud_timestamp": stamp,
                "camera_ip": "172.16.0.1",
                "camera_id": "0",
                "lidar_id": "0",
                **seq_keys_i,
            }
            if spd:
                info["frame_id"] = fid
            self._inf_infos.append(info)

        for fid, frame in zip(veh_ids, seq.vehicle_frames):
            novatel_from_lidar = seq.novatel_from_lidar
            world_from_novatel = frame.world_from_lidar @ invert_pose(novatel_from_lidar)
            tree.write(f"vehicle-side/image/{fid}.jpg", _encode(frame.image, opts.jpeg_quality))
            tree.write(f"vehicle-side/calib/camera_intrinsic/{fid}.json",
                       intrinsics_json(seq.vehicle_K, with_projection=spd))
            tree.write(f"vehicle-side/calib/lidar_to_camera/{fid}.json", rigid_json(seq.camera_from_lidar))
            tree.write(f"vehicle-side/calib/lidar_to_novatel/{fid}.json",
                       lidar_to_novatel_json(novatel_from_lidar))
            tree.write(f"vehicle-side/calib/novatel_to_world/{fid}.json", rigid_json(world_from_novatel))
            lidar_from_world = invert_pose(frame.world_from_lidar)
            local_agents = transform_boxes(frame.agents, lidar_from_world)
            label_key = opts.label_key
            camera_key = label_key.replace("lidar", "camera")
            if opts.side_labels:
                tree.write(f"vehicle-side/label/lidar/{fid}.json",
                           [label_object_json(b) for b in local_agents])
                cam_agents = frame.agents if frame.camera_agents is None else frame.camera_agents
                tree.write(f"vehicle-side/label/camera/{fid}.json",
                           [label_object_json(b) for b in transform_boxes(cam_agents, lidar_from_world)])
            stamp = str(int(frame.timestamp_us))
            info = {
                "image_path": f"image/{fid}.jpg",
                "pointcloud_path": f"velodyne/{fid}.pcd",
                "calib_camera_intrinsic_path": f"calib/camera_intrinsic/{fid}.json",
                "calib_lidar_to_camera_path": f"calib/lidar_to_camera/{fid}.json",
                "calib_lidar_to_novatel_path": f"calib/lidar_to_novatel/{fid}.json",
                "calib_novatel_to_world_path": f"calib/novatel_to_world/{fid}.json",
                "image_timestamp": stamp,
                "pointcloud_timestamp": stamp,
                **seq_keys_v,
            }
            if opts.side_labels:  # no key may point at a file that was not written
                info[camera_key] = f"label/camera/{fid}.json"
                info[label_key] = f"label/lidar/{fid}.json"
            if spd:
                info["frame_id"] = fid
            self._veh_infos.append(info)

            if frame.description is not None:
                self._descriptions.append({"vehicle_frame": fid, "sequence_id": seq_id,
                                           "description": frame.description})
            if frame.infra_index is None:
                continue
            inf_fid = inf_ids[frame.infra_index]
            if spd:
                tree.write(f"cooperative/label/{fid}.json",
                           [label_object_json(b) for b in local_agents])
                self._coop_infos.append({
                    "vehicle_frame": fid,
                    "infrastructure_frame": inf_fid,
                    "vehicle_sequence": seq_id,
                    "infrastructure_sequence": seq_id,
                    "system_error_offset": _offset_json(seq.system_error_offset),
                })
            else:
                tree.write(f"cooperative/label_world/{fid}.json",
                           [label_object_json(b, world_points=True) for b in frame.agents])
                self._coop_infos.append({
                    "infrastructure_image_path": f"infrastructure-side/image/{inf_fid}.jpg",
                    "infrastructure_pointcloud_path": f"infrastructure-side/velodyne/{inf_fid}.pcd",
                    "vehicle_image_path": f"vehicle-side/image/{fid}.jpg",
                    "vehicle_pointcloud_path": f"vehicle-side/velodyne/{fid}.pcd",
                    "cooperative_label_path": f"cooperative/label_world/{fid}.json",
                    "system_error_offset": _offset_json(seq.system_error_offset),
                })

        return written

    def close(self, split: dict[str, list[int]] | None = None) -> list[WrittenSequence]:
        """Write the index files. ``split`` maps a split name (train / val / test) to
        sequence indices; it becomes the DAIR-shaped split file."""
        tree = self._tree
        tree.write("vehicle-side/data_info.json", self._veh_infos)
        tree.write("infrastructure-side/data_info.json", self._inf_infos)
        tree.write("cooperative/data_info.json", self._coop_infos)
        if self._scenarios:
            tree.write(SCENARIOS_FILE, json.dumps(self._scenarios, indent=1, sort_keys=True))
        if self._descriptions:
            tree.write(DESCRIPTIONS_FILE, "".join(json.dumps(d) + "\n" for d in self._descriptions))
        if split is not None:
            tree.write(SPLIT_FILE, split_json(self.written, split))
        return self.written


def write_dataset(root, sequences, split: dict[str, list[int]] | None = None,
                  options: WriteOptions | None = None) -> list[WrittenSequence]:
    """Write an iterable of ``SequenceSpec`` under ``root`` (see ``DatasetWriter``)."""
    writer = DatasetWriter(root, options)
    for seq in sequences:
        writer.add(seq)
    return writer.close(split)


def _sequence_keys(spd: bool, seq_id: str, frame_ids: list[str], loc: str) -> dict:
    first, last = (frame_ids[0], frame_ids[-1]) if frame_ids else ("", "")
    if spd:
        return {"sequence_id": seq_id, "start_frame_id": first, "end_frame_id": last,
                "num_frames": str(len(frame_ids)), "intersection_loc": loc}
    return {"batch_id": seq_id, "batch_start_id": first, "batch_end_id": last,
            "intersection_loc": loc}


def split_json(written: list[WrittenSequence], split: dict[str, list[int]]) -> dict:
    """The DAIR-shaped cooperative split file for a sequence-level split."""
    out = {key: {} for key in ("batch_split", "vehicle_split", "infrastructure_split",
                               "cooperative_split")}
    for name in ("train", "val", "test"):
        indices = sorted(split.get(name, []))
        out["batch_split"][name] = [written[i].sequence_id for i in indices]
        out["vehicle_split"][name] = [f for i in indices for f in written[i].vehicle_frames]
        out["infrastructure_split"][name] = [f for i in indices for f in written[i].infra_frames]
        out["cooperative_split"][name] = [f for i in indices for f in written[i].paired_frames]
    return out
