"""Algorithm 1 on the vehicle, without ROS: inputs in, one plan per timer tick out.

Subscriptions only store (``on_ego_image``, ``on_roadside_image``, ``on_motion``,
``on_command``): decoding and planning happen in ``step(now_ns)``, which the node calls
from a timer and replay calls on its clock. A step takes the newest ego frame (older ones
are superseded, counted), pairs it with a roadside frame by the rule in ``runtime.sync``,
reads the newest scene description from the cache (fresh, stale or none), and runs the
planning step (``PlannerEngine``: preprocess, model, decode, refine). It records the
latency of each stage; the caller adds the publish stage with ``record_publish``.

Modes: **fused** when a roadside frame pairs; **ego_only** otherwise (stream missing,
stale, undecodable): the roadside half of the model input is blank, which the model
reads as "no roadside information". The mode is left as soon as a roadside frame pairs
again; every cycle, entry and exit is counted. Nothing an input can contain stops the
service: bad frames are dropped and counted by cause (``diagnostics()``). Neither does a
planning step that raises (the model out of memory, ...): that frame gets no plan, the
failure is counted (``plan_failed``, ``plan_error_<type>``, ``last_plan_error``) and the
next cycle plans as usual.

Threads: a node takes frames in on one thread while another plans, so that a slow plan
never stops intake. Every change of the buffers and counters happens under one lock;
decoding and the model run outside it, so intake waits at most for a buffer operation.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np

from v2x_vlm_ros.data.records import ROADSIDE_PREVIOUS_TOLERANCE_S, Command, EgoMotion
from v2x_vlm_ros.model.processing import roadside_width, valid_utf8
from v2x_vlm_ros.preprocessing.blank_image import is_blank_image
from v2x_vlm_ros.preprocessing.image_codec import ImageDecodeError, decode_image
from v2x_vlm_ros.runtime.describer import DescriptionCache
from v2x_vlm_ros.runtime.engine import PlanInput
from v2x_vlm_ros.runtime.sync import FrameBuffer, pick_earlier, pick_roadside
from v2x_vlm_ros.runtime.vehicle_config import VehicleConfig  # noqa: F401 (its home for most callers)

MODES = ("fused", "ego_only")
#: Ego motion beyond these is a broken sensor, not a car: dropped (counted) like a NaN.
MAX_SPEED_MPS = 100.0
MAX_YAW_RATE_RPS = 10.0


@dataclass
class PlanResult:
    stamp_ns: int  # stamp of the ego frame planned on
    xy: np.ndarray  # (T, 2) refined plan in the ego frame at that stamp
    raw_xy: np.ndarray
    mode: str  # "fused" or "ego_only"
    roadside_stamp_ns: int | None
    roadside_age_s: float | None
    description: str | None
    description_state: str  # "fresh", "stale" or "none"
    description_age_s: float | None
    motion: EgoMotion
    command: Command
    stage_ms: dict = field(default_factory=dict)
    decode_failed: bool = False
    refine_report: object = None


@dataclass
class _Image:
    """An image as received: decoded pixels or still-encoded bytes (decoded on planning)."""

    pixels: np.ndarray | None = None
    encoded: bytes | None = None
    source: str = ""

    def decode(self, max_pixels: int) -> np.ndarray:
        if self.pixels is None:
            # decoded once: at 2 Hz a roadside frame serves about five ego frames
            self.pixels = decode_image(self.encoded, self.source, max_pixels=max_pixels)
            self.encoded = None
            return self.pixels
        return _checked_pixels(self.pixels, self.source, max_pixels)


def _checked_pixels(pixels, source: str, max_pixels: int) -> np.ndarray:
    """Decoded pixels obey the same rules as encoded images (``ImageDecodeError`` otherwise)."""
    if not (isinstance(pixels, np.ndarray) and pixels.dtype == np.uint8 and pixels.ndim == 3
            and pixels.shape[2] == 3 and pixels.size > 0):
        got = f"{pixels.dtype} {pixels.shape}" if isinstance(pixels, np.ndarray) else type(pixels).__name__
        raise ImageDecodeError(source, f"expected a non-empty HxWx3 uint8 image, got {got}")
    if pixels.shape[0] * pixels.shape[1] > max_pixels:
        raise ImageDecodeError(source, f"{pixels.shape[1]}x{pixels.shape[0]} pixels, more than {max_pixels}")
    return pixels


def _fused_pixels(ego_shape, roadside_shape) -> int:
    """Pixels of the fused canvas: the roadside image is resized to the ego's height
    (``ImagePreprocessor.fuse``), so a thin strip next to a tall image can be huge."""
    h, w = ego_shape[:2]
    return h * (w + roadside_width(roadside_shape[0], roadside_shape[1], h))


class VehicleService:
    def __init__(self, engine, config: VehicleConfig | None = None, describer=None,
                 descriptions: DescriptionCache | None = None):
        self.config = config or VehicleConfig()
        self.engine = engine
        self.describer = describer
        self.descriptions = descriptions or DescriptionCache(self.config.description_max_age_s)
        self.drops: Counter = Counter()
        self.counts: Counter = Counter()
        self.ego = FrameBuffer("ego", self.config.queue_depth, self.drops)
        self.roadside = FrameBuffer("roadside", self.config.queue_depth, self.drops)
        self.motion: tuple[int, EgoMotion] | None = None
        self.command = Command[self.config.default_command.upper()]
        self.mode: str | None = None
        self._last_planned_ns: int | None = None
        self.last_ego: np.ndarray | None = None  # the last image planned on (debug views)
        self.latencies: deque[dict] = deque(maxlen=self.config.latency_window)
        self.last_plan_error: str | None = None
        self._lock = threading.RLock()

    def reconfigure(self, config: VehicleConfig) -> None:
        """Apply new settings while running. Buffer sizes are fixed at start: a change of
        ``queue_depth`` or ``latency_window`` is refused (ValueError naming it)."""
        for name in ("queue_depth", "latency_window"):
            if getattr(config, name) != getattr(self.config, name):
                raise ValueError(f"{name} cannot change while running (restart to change it)")
        with self._lock:
            self.config = config
            self.descriptions.max_age_ns = int(config.description_max_age_s * 1e9)

    # -- subscriptions: store only --------------------------------------------------------

    def _admit(self, name: str, stamp_ns: int, now_ns: int | None) -> bool:
        if now_ns is not None and stamp_ns > now_ns + self.config.future_tolerance_s * 1e9:
            self.drops[f"{name}_from_the_future"] += 1
            return False
        return True

    def on_ego_image(self, stamp_ns: int, pixels: np.ndarray | None = None, encoded: bytes | None = None,
                     source: str = "ego", now_ns: int | None = None) -> None:
        with self._lock:
            self.counts["ego_frames_in"] += 1
            image = _Image(pixels, encoded, source)
            kept = self._admit("ego", stamp_ns, now_ns) and self.ego.push(stamp_ns, image)
        if self.describer is not None and kept:  # a frame from the future would pin the cache
            self.describer.submit(stamp_ns, pixels if pixels is not None else encoded)

    def on_roadside_image(self, stamp_ns: int, pixels: np.ndarray | None = None, encoded: bytes | None = None,
                          source: str = "roadside", now_ns: int | None = None) -> None:
        with self._lock:
            self.counts["roadside_frames_in"] += 1
            if self._admit("roadside", stamp_ns, now_ns):
                self.roadside.push(stamp_ns, _Image(pixels, encoded, source))

    def on_unreadable(self, stream: str) -> None:
        """A frame of ``stream`` ("ego" or "roadside") that came in but could not even be
        read as an image (a raw Image with a wrong size or encoding): it is counted in, and
        dropped as undecodable, like one whose bytes fail to decode later."""
        if stream not in ("ego", "roadside"):
            raise ValueError(f"stream must be 'ego' or 'roadside', got {stream!r}")
        with self._lock:
            self.counts[f"{stream}_frames_in"] += 1
            self.drops[f"{stream}_undecodable"] += 1

    def on_motion(self, stamp_ns: int, motion: EgoMotion) -> None:
        values = (motion.speed_mps, motion.heading_rad, motion.yaw_rate_rps)
        with self._lock:
            if not all(np.isfinite(values)):
                self.drops["motion_not_finite"] += 1
                return
            if abs(motion.speed_mps) > MAX_SPEED_MPS or abs(motion.yaw_rate_rps) > MAX_YAW_RATE_RPS:
                self.drops["motion_implausible"] += 1
                return
            self.motion = (int(stamp_ns), motion)

    def on_command(self, command: Command) -> None:
        self.command = Command(command)

    def count_drop(self, cause: str, n: int = 1) -> None:
        """Count an input the caller refused before it reached the service (a broken
        odometry message, an unknown command, ...)."""
        with self._lock:
            self.drops[cause] += n

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counts[name] += n

    # -- the planning step ----------------------------------------------------------------

    def step(self, now_ns: int) -> PlanResult | None:
        """Plan on the newest ego frame; None (and a counted reason) when there is none."""
        with self._lock:
            self.counts["steps"] += 1
            frame = self.ego.take_latest()
            if frame is None:
                self.counts["steps_without_new_ego_frame"] += 1
                return None
            if now_ns - frame.stamp_ns > self.config.ego_max_age_s * 1e9:
                self.drops["ego_too_old"] += 1
                return None
            config, command = self.config, self.command
            motion = self.motion[1] if self.motion is not None else None
            roadside_frames = list(self.roadside.frames) if self.engine.uses_roadside else []
        t0 = time.perf_counter()
        try:
            ego = frame.value.decode(config.max_image_pixels)
        except ImageDecodeError:
            self.count_drop("ego_undecodable")
            return None
        self.last_ego = ego
        roadside, road_frame = self._roadside_for(frame.stamp_ns, ego.shape, roadside_frames, config)
        previous = None if roadside is None else self._earlier_roadside(road_frame, roadside_frames, config)
        mode = "fused" if roadside is not None else "ego_only"
        text, state, age = self.descriptions.get(frame.stamp_ns)
        notes = [f"description_{state}"]
        if text is not None:
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:  # lone surrogates: the tokenizer and ROS strings refuse them
                text = valid_utf8(text)
                notes.append("description_not_utf8")
        if motion is None:
            notes.append("steps_without_motion")
            motion = EgoMotion(0.0, 0.0, 0.0, 0.0)
        with self._lock:
            self._enter(mode)
            for name in notes:
                self.counts[name] += 1
        decode_ms = 1000.0 * (time.perf_counter() - t0)
        try:
            out = self.engine.plan([PlanInput(ego, roadside, text, motion, command,
                                              roadside_previous=previous)])[0]
        except Exception as exc:  # the model failing (CUDA out of memory, ...) must not stop the service
            with self._lock:
                self.drops["plan_failed"] += 1
                self.counts[f"plan_error_{type(exc).__name__}"] += 1
                self.last_plan_error = f"{type(exc).__name__}: {exc}"
            return None
        stage_ms = dict(out.stage_ms)
        stage_ms["preprocess"] = stage_ms.get("preprocess", 0.0) + decode_ms
        with self._lock:
            self.latencies.append(stage_ms)
            self.counts["plans_out"] += 1
            self.counts["decode_failures"] += int(out.decode_failed)
            self._last_planned_ns = frame.stamp_ns
        return PlanResult(
            stamp_ns=frame.stamp_ns, xy=out.xy, raw_xy=out.raw_xy, mode=mode,
            roadside_stamp_ns=None if road_frame is None else road_frame.stamp_ns,
            roadside_age_s=None if road_frame is None else (frame.stamp_ns - road_frame.stamp_ns) * 1e-9,
            description=text, description_state=state, description_age_s=age, motion=motion,
            command=command, stage_ms=stage_ms, decode_failed=out.decode_failed,
            refine_report=out.refine_report,
        )

    def _roadside_for(self, ego_stamp_ns: int, ego_shape, candidates, config: VehicleConfig):
        """The roadside image paired with the ego frame (decoded), from a snapshot of the
        buffer taken under the lock; decoding runs outside it."""
        if not self.engine.uses_roadside:
            return None, None
        frame = pick_roadside(ego_stamp_ns, candidates, config.sync_slop_s, config.roadside_max_age_s)
        if frame is None:
            self.count("roadside_unpaired")
            return None, None
        try:
            image = frame.value.decode(config.max_image_pixels)
        except ImageDecodeError:
            self._discard_roadside(frame, "roadside_undecodable")
            return None, None
        if is_blank_image(image):  # a dead camera: no information, plan ego-only (blank_image)
            self._discard_roadside(frame, "roadside_blank")
            return None, None
        if _fused_pixels(ego_shape, image.shape) > config.max_image_pixels:
            self._discard_roadside(frame, "roadside_canvas_too_large")
            return None, None
        return image, frame

    def _earlier_roadside(self, road_frame, candidates, config: VehicleConfig) -> np.ndarray | None:
        """For a model that reads motion (``engine.roadside_motion_s``): the roadside frame
        taken that long before the paired one, decoded, from the same snapshot of the buffer;
        None when there is none (the stream's start, a dropped message: the model then sees
        the current frame twice, counted as ``roadside_previous_missing``)."""
        seconds = getattr(self.engine, "roadside_motion_s", None)  # engines without it read one frame
        if seconds is None:
            return None
        earlier = pick_earlier(road_frame.stamp_ns, [f for f in candidates if f is not road_frame], seconds,
                               ROADSIDE_PREVIOUS_TOLERANCE_S)
        image = None
        if earlier is not None:
            try:
                image = earlier.value.decode(config.max_image_pixels)
            except ImageDecodeError:
                image = None
            if image is not None and is_blank_image(image):
                image = None
        if image is None:
            self.count("roadside_previous_missing")
        return image

    def _discard_roadside(self, frame, cause: str) -> None:
        with self._lock:
            # intake may have pushed frames since the snapshot; only a frame still held is
            # removed and counted (one pushed out meanwhile was counted as queue_full)
            if any(f is frame for f in self.roadside.frames):
                self.drops[cause] += 1
                self.roadside.discard(frame)

    def _enter(self, mode: str) -> None:
        if mode != self.mode:
            if self.mode is not None:
                self.counts[f"mode_{mode}_entered"] += 1
            self.mode = mode
        self.counts[f"cycles_{mode}"] += 1

    def record_publish(self, ms: float) -> None:
        with self._lock:
            if self.latencies:
                self.latencies[-1]["publish"] = ms

    # -- reporting ------------------------------------------------------------------------

    def latency_stats(self) -> dict:
        """Per stage: mean, p50, p99 (ms) over the last ``latency_window`` plans."""
        out = {}
        with self._lock:
            latencies = [dict(e) for e in self.latencies]
        stages = sorted({k for entry in latencies for k in entry})
        for stage in stages + ["total"]:
            values = np.array([sum(e.values()) if stage == "total" else e.get(stage, 0.0)
                               for e in latencies])
            if values.size:
                out[stage] = {"mean": float(values.mean()), "p50": float(np.percentile(values, 50)),
                              "p99": float(np.percentile(values, 99))}
        return out

    def diagnostics(self) -> dict:
        with self._lock:
            counts, drops = dict(self.counts), dict(self.drops)
        return {
            "mode": self.mode, "command": self.command.name, "counts": counts,
            "drops": drops, "latency_ms": self.latency_stats(),
            "describer": self.describer.stats() if self.describer is not None else None,
            "last_plan_error": self.last_plan_error,
        }
