"""``v2x-vlm replay``: the onboard system on recorded data, without ROS.

The same services the nodes wrap run on a DAIR-V2X root or on a bag written by
``v2x-vlm bag``: each roadside frame goes through ``RoadsideService`` (rate limit,
downsampling, encoding, bandwidth), each ego frame into ``VehicleService`` (pairing,
descriptions, degraded mode, planning, refinement), and every plan is scored against the
ground truth with the UniV2X metrics.

Clock. By default frames are fed as fast as planning goes, on a logical clock (the
frames' own stamps): every ego frame is planned on and the run is deterministic. With
``realtime`` frames arrive at their recorded pace and planning takes the newest one when
it is free: frames it cannot keep up with are superseded and counted, as on a vehicle.

Descriptions. Without a describer model they come from the dataset (as in ``eval``), fresh
for each frame. With one, a describer captions the ego images asynchronously (on the
logical clock at ``describer_rate_hz``, or on a thread in real time) and the prompt uses
the newest fresh caption; the ages show in the metrics.

Outputs in ``out``: ``predictions.mcap`` (paths, markers, images, tf, odometry,
diagnostics; for Foxglove or ``ros2 bag play`` into RViz), ``metrics.json`` /
``metrics.md`` (the eval JSON plus bandwidth, latency breakdown, modes, drops),
``bev.png`` (bird's-eye views per scenario), ``frames/*.png`` (plans drawn on the ego
image) and ``replay.mp4`` (a short video).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from v2x_vlm_ros.data.calib import read_intrinsics, read_rigid
from v2x_vlm_ros.data.errors import DatasetError
from v2x_vlm_ros.data.records import Command, EgoMotion
from v2x_vlm_ros.eval.metrics import PlanningMetrics, format_markdown_table
from v2x_vlm_ros.eval.slices import SliceScores, dataset_slices
from v2x_vlm_ros.preprocessing.image_codec import ImageDecodeError, decode_image
from v2x_vlm_ros.runtime.baselines import ConstantVelocityPlanner
from v2x_vlm_ros.runtime.describer import ClockedDescriber, Description, DescriptionCache, ThreadedDescriber
from v2x_vlm_ros.runtime.factory import make_engine
from v2x_vlm_ros.runtime.refine import RefineConfig
from v2x_vlm_ros.runtime.roadside import STREAM_GAP_S, RoadsideConfig, RoadsideService
from v2x_vlm_ros.runtime.vehicle import VehicleConfig, VehicleService
from v2x_vlm_ros.tools import draw

#: Height of the ego LiDAR above the road, for drawing plans on the ground (the synthetic
#: world's; DAIR-V2X vehicles carry theirs about as high).
LIDAR_HEIGHT_M = 1.9


@dataclass
class ReplayOptions:
    model: str
    out: str
    realtime: bool = False
    roadside: RoadsideConfig = field(default_factory=RoadsideConfig)
    no_roadside: bool = False
    describer: str | None = None
    describer_rate_hz: float = 0.5
    device: str = "cpu"
    collision: str = "univ2x"
    refine: bool = True
    pictures: int = 6
    video_frames: int = 200


@dataclass
class ReplayFrame:
    """One ego frame with what came with it (encoded images, as a link would carry them;
    a path is read when the frame is fed, so a long dataset never sits in memory)."""

    sample_id: str
    sequence_id: str
    scenario: str | None
    ego_stamp_ns: int
    ego_image: bytes | Path
    roadside_stamp_ns: int | None
    roadside_image: bytes | Path | None
    motion: EgoMotion
    command: Command
    description: str | None
    world_from_ego: np.ndarray | None
    truth_xy: np.ndarray
    truth_mask: np.ndarray
    truth_agents: list | None  # per future step; None when the source has no labels (a bag)
    calib_paths: tuple | None = None  # (lidar_to_camera, intrinsics) for drawing

    @property
    def ego_jpeg(self) -> bytes:
        return _read(self.ego_image)

    @property
    def roadside_jpeg(self) -> bytes | None:
        return None if self.roadside_image is None else _read(self.roadside_image)


def _read(data) -> bytes:
    return data if isinstance(data, bytes) else Path(data).read_bytes()


def frames_from_dataset(dataset):
    """Replay frames of a DAIR-V2X dataset, in time order within each sequence."""
    for i in dataset.time_order():
        s = dataset[i]
        yield ReplayFrame(
            s.sample_id,
            s.sequence_id,
            s.scenario,
            s.ego_timestamp_us * 1000,
            s.ego_image_path.read_bytes(),
            s.roadside_timestamp_us * 1000,
            s.roadside_image_path.read_bytes(),
            s.motion,
            s.command,
            s.description,
            s.world_from_ego,
            s.future_xy,
            s.future_mask,
            s.future_agents,
            (s.ego_lidar_to_camera_path, s.ego_intrinsics_path),
        )


def frames_from_bag(path):
    """Replay frames of a bag written by ``v2x-vlm bag`` (no agent labels: collision n/a)."""
    from v2x_vlm_ros.conversion import messages as m
    from v2x_vlm_ros.tools import bag

    for log_ns, msgs in bag.iter_bag(path):
        if bag.EGO_IMAGE not in msgs or bag.ODOMETRY not in msgs:
            continue
        ego = msgs[bag.EGO_IMAGE]
        road = msgs.get(bag.ROADSIDE_IMAGE)
        pose, speed, yaw_rate = m.odometry_to_state(msgs[bag.ODOMETRY])
        truth = (
            m.path_to_xy(msgs[bag.GROUND_TRUTH_PATH]) if bag.GROUND_TRUTH_PATH in msgs else np.zeros((0, 2))
        )
        xy = np.zeros((10, 2))
        mask = np.zeros(10, bool)
        xy[: len(truth)], mask[: len(truth)] = truth[:10], True
        text = msgs[bag.DESCRIPTION].data if bag.DESCRIPTION in msgs else None
        command = m.command_from_string(msgs[bag.COMMAND].data) if bag.COMMAND in msgs else Command.FORWARD
        yield ReplayFrame(
            str(log_ns),
            "bag",
            None,
            m.stamp_to_ns(ego.header.stamp),
            bytes(ego.data),
            None if road is None else m.stamp_to_ns(road.header.stamp),
            None if road is None else bytes(road.data),
            EgoMotion(speed, float(np.arctan2(pose[1, 0], pose[0, 0])), yaw_rate, 0.5),
            command,
            text,
            pose,
            xy,
            mask,
            None,
        )


class _Recorder:
    """predictions.mcap through rosbags (MCAP, Jazzy message definitions)."""

    def __init__(self, path: Path):
        from rosbags.rosbag2 import StoragePlugin, Writer

        from v2x_vlm_ros.conversion import messages as m

        self.m = m
        self.types = m.rosbags_types("jazzy")
        self.writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
        self.writer.open()
        self.connections: dict = {}
        self.map = None

    def emit(self, topic: str, msgtype: str, ns: int, msg) -> None:
        if topic not in self.connections:
            self.connections[topic] = self.writer.add_connection(
                topic, msgtype, typestore=self.types.typestore
            )
        self.writer.write(self.connections[topic], ns, self.types.serialize(msg))

    def record(self, frame: ReplayFrame, result, debug_bgr: np.ndarray | None, diagnostics: dict) -> None:
        m, t, ns = self.m, self.types, result.stamp_ns
        self.emit("/v2x/planning/path", "nav_msgs/msg/Path", ns, m.trajectory_to_path(t, result.xy, ns))
        rgba = (0.1, 0.8, 0.2, 1.0) if result.mode == "fused" else (0.9, 0.6, 0.1, 1.0)
        self.emit(
            "/v2x/planning/markers",
            "visualization_msgs/msg/MarkerArray",
            ns,
            m.trajectory_markers(t, result.xy, ns, "base_link", "plan", rgba, 0),
        )
        truth = frame.truth_xy[frame.truth_mask]
        if len(truth):
            self.emit("/v2x/ground_truth/path", "nav_msgs/msg/Path", ns, m.trajectory_to_path(t, truth, ns))
        self.emit(
            "/v2x/ego/image/compressed",
            "sensor_msgs/msg/CompressedImage",
            ns,
            m.bgr_to_compressed_msg(t, frame.ego_jpeg, ns, "ego_camera"),
        )
        if debug_bgr is not None:  # raw for RViz (kept small), compressed for Foxglove
            small = (
                debug_bgr
                if debug_bgr.shape[1] <= 320
                else cv2.resize(
                    debug_bgr,
                    (320, round(debug_bgr.shape[0] * 320 / debug_bgr.shape[1])),
                    interpolation=cv2.INTER_AREA,
                )
            )
            self.emit(
                "/v2x/planning/debug_image",
                "sensor_msgs/msg/Image",
                ns,
                m.bgr_to_image_msg(t, small, ns, "ego_camera"),
            )
            self.emit(
                "/v2x/planning/debug_image/compressed",
                "sensor_msgs/msg/CompressedImage",
                ns,
                m.bgr_to_compressed_msg(t, debug_bgr, ns, "ego_camera", quality=85),
            )
        if frame.world_from_ego is not None:
            if self.map is None:
                self.map = m.MapFrame(frame.world_from_ego)
            pose = self.map.map_from_ego(frame.world_from_ego)
            self.emit(
                "/tf",
                "tf2_msgs/msg/TFMessage",
                ns,
                m.tf_message(t, [m.transform_stamped(t, "map", "base_link", pose, ns)]),
            )
            self.emit(
                "/v2x/planning/path_map",
                "nav_msgs/msg/Path",
                ns,
                m.trajectory_to_path(t, result.xy, ns, "map", frame_from_ego=pose),
            )
        self.emit(
            "/diagnostics",
            "diagnostic_msgs/msg/DiagnosticArray",
            ns,
            m.diagnostic_array(
                t, ns, "v2x_vlm_ros: replay", 0 if result.mode == "fused" else 1, result.mode, diagnostics
            ),
        )

    def close(self) -> None:
        self.writer.close()


def _calibration(paths):
    if not paths or paths[0] is None or paths[1] is None:
        return None
    try:
        return read_rigid(paths[0]), read_intrinsics(paths[1]).K
    except DatasetError:
        return None


def _overlay(frame: ReplayFrame, plan: np.ndarray, mode: str, width: int = 480) -> np.ndarray:
    """Ego image with the plan and the ground truth on the road (when calibrated) and in a
    bird's-eye inset, scaled to ``width``."""
    image = decode_image(frame.ego_jpeg, frame.sample_id)
    truth = frame.truth_xy[frame.truth_mask]
    color = draw.PLAN_BGR if mode == "fused" else draw.EGO_ONLY_BGR
    scale = width / image.shape[1]
    big = cv2.resize(image, (width, round(image.shape[0] * scale)), interpolation=cv2.INTER_LINEAR)
    calib = _calibration(frame.calib_paths)
    if calib is not None:
        K = calib[1].copy()
        K[:2] *= scale
        big = draw.draw_on_image(big, plan, calib[0], K, -LIDAR_HEIGHT_M, truth, color)
    return draw.bev_inset(big, plan, truth, color=color)


def replay(source, options: ReplayOptions, dataset=None, progress: bool = True) -> dict:
    """Run the onboard services over ``source`` (a dataset, or a bag directory when
    ``dataset`` is None) and write the outputs into ``options.out``."""
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "frames").mkdir(exist_ok=True)
    if (out / "predictions.mcap").exists():  # a rosbag2 writer never overwrites
        shutil.rmtree(out / "predictions.mcap")
    stream = iter(frames_from_dataset(dataset) if dataset is not None else frames_from_bag(source))
    upcoming = next(stream, None)  # one frame of look-ahead: real time needs the next stamp
    if upcoming is None:
        raise ValueError(f"{source}: nothing to replay")

    roadside = RoadsideService(options.roadside)
    engine, backend_note = make_engine(
        options.model, options.device, "eager", RefineConfig(enabled=options.refine)
    )
    vcfg = VehicleConfig()
    cache = DescriptionCache(vcfg.description_max_age_s)
    describer = None
    if options.describer:
        from v2x_vlm_ros.model.describer import SceneDescriber

        captioner = SceneDescriber(options.describer, device=options.device)

        def caption(image):
            return captioner.describe([image])[0]

        describer = (
            ThreadedDescriber(caption, cache, options.describer_rate_hz)
            if options.realtime
            else ClockedDescriber(caption, cache, options.describer_rate_hz)
        )
    vehicle = VehicleService(engine, vcfg, describer, cache)
    metrics = PlanningMetrics(options.collision)
    per_scenario: dict[str, PlanningMetrics] = {}
    slice_scores = SliceScores(dataset_slices(dataset.root) if dataset is not None else [], options.collision)
    recorder = _Recorder(out / "predictions.mcap")
    baseline = ConstantVelocityPlanner()
    picked: dict[str, dict] = {}
    drawn: list[str] = []
    video = None
    planned = 0
    began = time.perf_counter()
    start_stamp = upcoming.ego_stamp_ns

    skipped_ns = 0  # real time skips the gaps between sequences (minutes of nothing)

    def now_ns(frame: ReplayFrame) -> int:
        if not options.realtime:
            return frame.ego_stamp_ns
        return start_stamp + skipped_ns + int((time.perf_counter() - began) * 1e9)

    def feed(frame: ReplayFrame) -> None:
        stamp_now = now_ns(frame)
        if (
            not options.no_roadside
            and frame.roadside_jpeg is not None
            and roadside.admit(frame.roadside_stamp_ns)
        ):
            try:
                pixels = decode_image(frame.roadside_jpeg, f"{frame.sample_id} roadside")
            except ImageDecodeError:  # the roadside unit cannot read its own camera frame
                roadside.reject()
            else:
                sent = roadside.encode(frame.roadside_stamp_ns, pixels)
                if sent.codec == "raw":
                    raw = np.frombuffer(sent.data, np.uint8).reshape(sent.height, sent.width, 3)
                    vehicle.on_roadside_image(sent.stamp_ns, pixels=raw, now_ns=stamp_now)
                else:
                    vehicle.on_roadside_image(sent.stamp_ns, encoded=sent.data, now_ns=stamp_now)
        if describer is None and frame.description:
            cache.put(Description(frame.description, frame.ego_stamp_ns))
        vehicle.on_motion(frame.ego_stamp_ns, frame.motion)
        vehicle.on_command(frame.command)
        vehicle.on_ego_image(
            frame.ego_stamp_ns, encoded=frame.ego_jpeg, source=frame.sample_id, now_ns=stamp_now
        )

    waiting: dict[int, ReplayFrame] = {}  # fed, not planned yet
    fed = 0
    with tqdm(
        total=len(dataset) if dataset is not None else None,
        desc="replay",
        unit="frame",
        disable=not progress,
    ) as bar:
        while upcoming is not None:
            batch = [upcoming]
            upcoming = next(stream, None)
            if options.realtime and batch[0].ego_stamp_ns - now_ns(batch[0]) > STREAM_GAP_S * 1e9:
                skipped_ns += batch[0].ego_stamp_ns - now_ns(batch[0])
            if options.realtime:  # wait for the frame, then feed everything that is due meanwhile
                due_in = (batch[0].ego_stamp_ns - start_stamp - skipped_ns) * 1e-9 - (
                    time.perf_counter() - began
                )
                if due_in > 0:
                    time.sleep(due_in)
                while upcoming is not None and upcoming.ego_stamp_ns <= now_ns(upcoming):
                    batch.append(upcoming)
                    upcoming = next(stream, None)
            for f in batch:
                feed(f)
                waiting[f.ego_stamp_ns] = f
            fed += len(batch)
            bar.update(len(batch))
            result = vehicle.step(now_ns(batch[-1]))
            if result is None:
                continue
            frame = waiting.pop(result.stamp_ns)
            for stamp in [t for t in waiting if t < result.stamp_ns]:  # superseded: never planned
                del waiting[stamp]
            t0 = time.perf_counter()
            agents = (
                frame.truth_agents if frame.truth_agents is not None else [None] * len(frame.truth_mask)
            )
            args = (result.xy, frame.truth_xy, frame.truth_mask, agents, frame.sample_id)
            metrics.update(*args)
            slice_scores.update(frame, *args)
            if frame.scenario is not None:
                per_scenario.setdefault(frame.scenario, PlanningMetrics(options.collision)).update(*args)
            planned += 1
            want_picture = frame.scenario not in picked and frame.truth_mask.all()
            overlay = _overlay(frame, result.xy, result.mode)
            recorder.record(frame, result, overlay, _diag_values(vehicle))
            if want_picture and len(picked) < max(options.pictures, 0):
                picked[frame.scenario or frame.sequence_id] = {
                    "title": f"{frame.scenario or frame.sequence_id} {frame.sample_id} ({result.mode})",
                    "plan": result.xy,
                    "truth": frame.truth_xy,
                    "mask": frame.truth_mask,
                    "baseline": baseline.plan_from_speed(frame.motion.speed_mps),
                    "agents": agents[int(np.flatnonzero(frame.truth_mask)[-1])],
                }
                name = f"frames/{frame.sample_id}_{frame.scenario or 'frame'}.png"
                cv2.imwrite(str(out / name), overlay)
                drawn.append(name)
            if planned <= options.video_frames:
                if video is None:
                    video = cv2.VideoWriter(
                        str(out / "replay.mp4"),
                        cv2.VideoWriter_fourcc(*"mp4v"),
                        10.0,
                        (overlay.shape[1], overlay.shape[0]),
                    )
                video.write(overlay)
            vehicle.record_publish(1000.0 * (time.perf_counter() - t0))
    if video is not None:
        video.release()
    recorder.close()
    if describer is not None:
        describer.close()
    if picked:
        draw.bev_figure(list(picked.values()), out / "bev.png")

    result = metrics.result()
    stats = roadside.stats()
    uses_roadside = engine.uses_roadside and not options.no_roadside
    result.update(
        {
            "planner": "model",
            "model": str(options.model),
            "transmission": {
                "uses_roadside": uses_roadside,
                "formula_bps": (stats["formula_bps"] or 0.0) if uses_roadside else 0.0,
                "measured_bps": (stats["measured_bps"] or 0.0) if uses_roadside else 0.0,
            },
            "by_scenario": {k: v.result() for k, v in sorted(per_scenario.items())},
            "slices": slice_scores.result(),
            "bandwidth": stats,
            "latency_ms": vehicle.latency_stats(),
            "vehicle": {"counts": dict(vehicle.counts), "drops": dict(vehicle.drops)},
            "describer": describer.stats() if describer is not None else None,
            "replay": {
                "source": str(source),
                "frames": fed,
                "planned": planned,
                "frames_not_planned": fed - planned,
                "realtime": options.realtime,
                "backend": backend_note,
                "seconds": round(time.perf_counter() - began, 2),
                "options": {
                    k: (asdict(v) if hasattr(v, "__dataclass_fields__") else v)
                    for k, v in vars(options).items()
                },
                "pictures": ["bev.png", *drawn] if picked else drawn,
                "video": "replay.mp4" if video is not None else None,
            },
        }
    )
    (out / "metrics.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (out / "metrics.md").write_text(metrics_markdown(result))
    return result


def _diag_values(vehicle: VehicleService) -> dict:
    values = {"mode": vehicle.mode}
    values.update({f"drop.{k}": v for k, v in vehicle.drops.items()})
    return values


def metrics_markdown(result: dict) -> str:
    lines = [format_markdown_table({"model (replay)": result})]
    if result.get("by_scenario"):
        rows = {f"model, {name}": r for name, r in result["by_scenario"].items()}
        lines += ["By scenario:", "", format_markdown_table(rows)]
    if result.get("slices"):
        rows = {f"model, {name}": r for name, r in result["slices"].items()}
        lines += ["Slices (hidden_hazard: a yielded-to agent seen by the roadside camera, not by the ego's; "
                  "hazard_twin: the same frames of the same scene without it):", "",
                  format_markdown_table(rows)]
    bw = result["bandwidth"]
    cfg = bw["config"]
    lines += [
        "Roadside link:",
        "",
        f"- s = {cfg['scale']}, {cfg['codec']} (quality {cfg['quality']}), "
        f"{cfg['rate_hz'] or 'every frame'} Hz: {bw['sent']} of {bw['offered']} frames sent",
        f"- BPS by the paper's formula: {_num(bw['formula_bps'])}; measured: "
        f"{_num(bw['measured_bps'])} B/s ({_num(bw['measured_mean_bytes'])} B per frame)",
        "",
        "Latency per planning step (ms, this machine):",
        "",
        "| stage | mean | p50 | p99 |",
        "|---|---|---|---|",
    ]
    for stage, s in result["latency_ms"].items():
        lines.append(f"| {stage} | {s['mean']:.1f} | {s['p50']:.1f} | {s['p99']:.1f} |")
    counts = result["vehicle"]["counts"]
    lines += [
        "",
        f"Modes: fused {counts.get('cycles_fused', 0)}, ego-only {counts.get('cycles_ego_only', 0)} "
        f"cycles; descriptions fresh {counts.get('description_fresh', 0)}, stale "
        f"{counts.get('description_stale', 0)}, none {counts.get('description_none', 0)}; "
        f"frames planned {result['replay']['planned']} of {result['replay']['frames']}.",
        "",
    ]
    return "\n".join(lines)


def _num(value) -> str:
    return "n/a" if value is None else f"{value:.3g}"
