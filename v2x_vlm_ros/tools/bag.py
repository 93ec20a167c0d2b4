"""Write a DAIR-V2X dataset as a rosbag2 (``v2x-vlm bag``), and read one back.

Every sample of the dataset, sequence by sequence in frame order, becomes these messages
(header stamps are the dataset's real microsecond stamps * 1000):

==================================  ===============================  ==================  ============
topic                               type                             frame               stamp
==================================  ===============================  ==================  ============
/v2x/ego/image/compressed           sensor_msgs/msg/CompressedImage  ego_camera          ego
/v2x/roadside/image/compressed      sensor_msgs/msg/CompressedImage  roadside_camera     roadside
/v2x/ego/odometry                   nav_msgs/msg/Odometry            map -> base_link    ego
/v2x/ground_truth/path              nav_msgs/msg/Path                base_link           ego
/v2x/command                        std_msgs/msg/String              (LEFT/RIGHT/...)    (none)
/v2x/ego/description                std_msgs/msg/String              (only if present)   (none)
/tf                                 tf2_msgs/msg/TFMessage           map -> base_link    ego
/tf_static                          tf2_msgs/msg/TFMessage           base_link ->        first
                                                                     ego_camera          sample
==================================  ===============================  ==================  ============

- Images are the stored JPEG/PNG bytes, unchanged; the roadside image keeps its own
  roadside-clock stamp. Every message of a sample is logged (bag receive time, what
  ``ros2 bag play --clock`` publishes as /clock) at the sample's ego stamp, so one sample's
  messages replay together.
- ``map``: the world's axes, origin at the bag's first ego pose's x, y (world z kept), see
  ``conversion.messages.MapFrame``; the origin is stored in the metadata's custom_data
  (``v2x_vlm_ros.map_origin_world_xy``). ``base_link`` is the vehicle LiDAR frame.
- /tf_static: ``base_link -> ego_camera`` from the vehicle's ``lidar_to_camera``
  calibration (an optical frame: z forward, x right, y down), read from the first frame
  of each sequence and written again only when it changes. Without a readable file the
  topic is left out and the summary says why. The roadside camera has no tf.
- Offered QoS in the metadata: /tf_static reliable + transient local, keep last 1 (what
  tf2's static broadcaster offers); /tf reliable, keep last 100; others reliable, keep
  last 10 (rclcpp's default).
- Storage: ``sqlite3`` writes rosbag2 version 8 (Humble cannot read version 9 metadata)
  with Humble message definitions; ``mcap`` writes version 9 with Jazzy's. ``distro``
  overrides the message definitions (type hashes) of either.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from v2x_vlm_ros.conversion import messages as m
from v2x_vlm_ros.data.calib import load_json, read_rigid
from v2x_vlm_ros.data.errors import DatasetError
from v2x_vlm_ros.geometry import invert_pose

EGO_IMAGE = "/v2x/ego/image/compressed"
ROADSIDE_IMAGE = "/v2x/roadside/image/compressed"
ODOMETRY = "/v2x/ego/odometry"
GROUND_TRUTH_PATH = "/v2x/ground_truth/path"
COMMAND = "/v2x/command"
DESCRIPTION = "/v2x/ego/description"
TF = "/tf"
TF_STATIC = "/tf_static"

TOPIC_TYPES = {
    EGO_IMAGE: "sensor_msgs/msg/CompressedImage",
    ROADSIDE_IMAGE: "sensor_msgs/msg/CompressedImage",
    ODOMETRY: "nav_msgs/msg/Odometry",
    GROUND_TRUTH_PATH: "nav_msgs/msg/Path",
    COMMAND: "std_msgs/msg/String",
    DESCRIPTION: "std_msgs/msg/String",
    TF: "tf2_msgs/msg/TFMessage",
    TF_STATIC: "tf2_msgs/msg/TFMessage",
}

MAP_FRAME, BASE_FRAME = "map", "base_link"
EGO_CAMERA_FRAME, ROADSIDE_CAMERA_FRAME = "ego_camera", "roadside_camera"

#: storage -> (rosbag2 version, default distro)
STORAGES = {"sqlite3": (8, "humble"), "mcap": (9, "jazzy")}
MAP_ORIGIN_KEY = "v2x_vlm_ros.map_origin_world_xy"


def _qos(depth: int, transient_local: bool = False):
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    default = QosTime(0, 0)  # unspecified: the middleware's default (infinite)
    durability = QosDurability.TRANSIENT_LOCAL if transient_local else QosDurability.VOLATILE
    return Qos(QosHistory.KEEP_LAST, depth, QosReliability.RELIABLE, durability, default, default,
               QosLiveliness.AUTOMATIC, default, False)


def offered_qos(topic: str):
    """The QoS profile recorded as offered for ``topic``."""
    if topic == TF_STATIC:
        return _qos(1, transient_local=True)
    return _qos(100 if topic == TF else 10)


@dataclass
class _Frame:
    """What the bag needs of a sample (no agent boxes, so a large dataset fits in memory)."""

    sequence_id: str
    frame_index: int
    vehicle_frame: str
    ego_image: Path
    roadside_image: Path
    ego_ns: int
    roadside_ns: int
    world_from_ego: np.ndarray
    speed_mps: float
    yaw_rate_rps: float
    future_xy: np.ndarray
    command: str
    description: str | None


def _frames(dataset, progress: bool) -> list[_Frame]:
    out = []
    for s in tqdm(dataset, total=len(dataset), desc="samples", unit="sample", disable=not progress):
        out.append(_Frame(
            str(s.sequence_id), int(s.frame_index), str(s.vehicle_frame), Path(s.ego_image_path),
            Path(s.roadside_image_path), int(s.ego_timestamp_us) * 1000, int(s.roadside_timestamp_us) * 1000,
            np.asarray(s.world_from_ego, dtype=np.float64), float(s.motion.speed_mps),
            float(s.motion.yaw_rate_rps),
            np.asarray(s.future_xy, dtype=np.float64)[np.asarray(s.future_mask, dtype=bool)],
            s.command.name, s.description))
    out.sort(key=lambda f: (f.sequence_id, f.frame_index))
    return out


def _lidar_to_camera_files(dataset) -> dict[str, Path]:
    """vehicle frame id -> its lidar_to_camera calibration file (from vehicle-side data_info)."""
    root = Path(dataset.root)
    try:
        records = load_json(root / "vehicle-side/data_info.json")
    except DatasetError:
        return {}
    out = {}
    for rec in records if isinstance(records, list) else []:
        if not isinstance(rec, dict) or not isinstance(rec.get("calib_lidar_to_camera_path"), str):
            continue
        if dataset.layout == "spd":
            key = str(rec.get("frame_id"))
        elif isinstance(rec.get("image_path"), str):
            key = Path(rec["image_path"]).stem
        else:
            continue
        out[key] = root / "vehicle-side" / rec["calib_lidar_to_camera_path"]
    return out


def write_bag(dataset, out, storage: str = "mcap", distro: str | None = None, progress: bool = True) -> dict:
    """Write ``dataset`` (a ``DairV2XDataset``) as a rosbag2 at ``out`` (must not exist).
    Returns a summary: path, storage, version, distro, samples, sequences, per-topic counts,
    map origin, stamps, and notes (e.g. why /tf_static was left out)."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    out = Path(out)
    if storage not in STORAGES:
        raise ValueError(f"unknown storage {storage!r}; allowed: {', '.join(STORAGES)}")
    if out.exists():
        raise FileExistsError(f"{out}: output exists already (a rosbag2 is never overwritten); "
                              "remove it or choose another path")
    version, default_distro = STORAGES[storage]
    types = m.rosbags_types(distro or default_distro)
    frames = _frames(dataset, progress)
    if not frames:
        raise ValueError(f"{dataset.root}: the selection has no samples; nothing to write")
    map_frame = m.MapFrame(frames[0].world_from_ego)
    calib_files = _lidar_to_camera_files(dataset)
    notes: list[str] = []
    plugin = StoragePlugin.SQLITE3 if storage == "sqlite3" else StoragePlugin.MCAP
    writer = Writer(out, version=version, storage_plugin=plugin)
    writer.set_custom_data(MAP_ORIGIN_KEY, json.dumps([float(v) for v in map_frame.origin_xy]))
    connections: dict = {}
    counts = {topic: 0 for topic in TOPIC_TYPES}

    def emit(topic: str, log_ns: int, msg) -> None:
        if topic not in connections:
            connections[topic] = writer.add_connection(topic, TOPIC_TYPES[topic], typestore=types.typestore,
                                                       offered_qos_profiles=[offered_qos(topic)])
        writer.write(connections[topic], log_ns, types.serialize(msg))
        counts[topic] += 1

    writer.open()
    try:
        last_static, sequence = None, None
        for f in tqdm(frames, desc="writing", unit="sample", disable=not progress):
            t = f.ego_ns
            if f.sequence_id != sequence:
                sequence = f.sequence_id
                static = _camera_transform(calib_files.get(f.vehicle_frame), f, notes)
                if static is not None and (last_static is None or not np.allclose(static, last_static)):
                    emit(TF_STATIC, t, m.tf_message(types, [m.transform_stamped(
                        types, BASE_FRAME, EGO_CAMERA_FRAME, static, t)]))
                    last_static = static
            map_from_ego = map_frame.map_from_ego(f.world_from_ego)
            emit(EGO_IMAGE, t, m.bgr_to_compressed_msg(types, f.ego_image.read_bytes(), t, EGO_CAMERA_FRAME))
            emit(ROADSIDE_IMAGE, t, m.bgr_to_compressed_msg(types, f.roadside_image.read_bytes(),
                                                            f.roadside_ns, ROADSIDE_CAMERA_FRAME))
            pose_tf = m.transform_stamped(types, MAP_FRAME, BASE_FRAME, map_from_ego, t)
            emit(TF, t, m.tf_message(types, [pose_tf]))
            emit(ODOMETRY, t, m.odometry_msg(types, map_from_ego, f.speed_mps, f.yaw_rate_rps, t,
                                             MAP_FRAME, BASE_FRAME))
            emit(GROUND_TRUTH_PATH, t, m.trajectory_to_path(types, f.future_xy, t, BASE_FRAME))
            emit(COMMAND, t, m.string_msg(types, f.command))
            if f.description is not None:
                emit(DESCRIPTION, t, m.string_msg(types, f.description))
        writer.close()
    except BaseException:
        writer.abort()
        shutil.rmtree(out, ignore_errors=True)  # we created it: leave no half-written bag
        raise
    return {
        "path": str(out), "storage": storage, "version": version, "distro": types.distro,
        "samples": len(frames), "sequences": len({f.sequence_id for f in frames}),
        "topics": {topic: n for topic, n in counts.items() if n},
        "map_origin_world_xy": [float(v) for v in map_frame.origin_xy],
        "start_ns": min(f.ego_ns for f in frames), "end_ns": max(f.ego_ns for f in frames),
        "notes": notes,
    }


def _camera_transform(path: Path | None, frame: _Frame, notes: list[str]) -> np.ndarray | None:
    """base_link <- ego_camera of a sequence, or None (with a note) when unavailable."""
    if path is None:
        notes.append(f"sequence {frame.sequence_id}: no calib_lidar_to_camera_path for frame "
                     f"{frame.vehicle_frame}; /tf_static not written for it")
        return None
    try:
        return invert_pose(read_rigid(path))
    except DatasetError as exc:
        notes.append(f"sequence {frame.sequence_id}: {exc}; /tf_static not written for it")
        return None


def read_bag(path, topics=None) -> dict[str, list[tuple[int, object]]]:
    """{topic: [(log time ns, message), ...]} of a rosbag2 (any storage), in log-time order,
    decoded with the message definitions stored in the bag."""
    from rosbags.highlevel import AnyReader

    out: dict[str, list[tuple[int, object]]] = {}
    with AnyReader([Path(path)]) as reader:
        conns = [c for c in reader.connections if topics is None or c.topic in topics]
        for conn, timestamp, raw in reader.messages(connections=conns):
            out.setdefault(conn.topic, []).append((timestamp, reader.deserialize(raw, conn.msgtype)))
    return out


def iter_bag(path, topics=None):
    """``(log time ns, {topic: message})`` groups in log-time order, one group per log time,
    streamed (``write_bag`` logs a sample's messages at one time, so a group is a sample)."""
    from rosbags.highlevel import AnyReader

    with AnyReader([Path(path)]) as reader:
        conns = [c for c in reader.connections if topics is None or c.topic in topics]
        group_ns, group = None, {}
        for conn, timestamp, raw in reader.messages(connections=conns):
            if group_ns is not None and timestamp != group_ns:
                yield group_ns, group
                group = {}
            group_ns = timestamp
            group[conn.topic] = reader.deserialize(raw, conn.msgtype)
        if group:
            yield group_ns, group
