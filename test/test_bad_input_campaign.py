"""Bad-input campaign (issue 6, item 2): hostile input through the real entry points.

Every case goes in where it would in the field: ``VehicleService`` callbacks, the message
conversions on rosbags' real ROS 2 classes, image decoding, the codecs' decode, the
planning engine and the DAIR-V2X reader. Each one must end as a clear error naming the
input (an exception type the callers catch), as a degradation counted in
``diagnostics()``, or be accepted as valid; and after every case the long-lived service
must still plan on the next good frame. Hypothesis runs derandomized, without a database,
so the cases are the same on every run. The number of cases per category and their
outcomes are printed at the end of the session (a table in the terminal summary).
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import struct
import zlib
from collections import Counter

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from builders import line, sequence, write
from service_checks import check_accounting, register_summary
from v2x_vlm_ros.conversion import messages as m
from v2x_vlm_ros.data.calib import read_intrinsics, read_rigid
from v2x_vlm_ros.data.dair import DairV2XDataset
from v2x_vlm_ros.data.errors import DatasetError
from v2x_vlm_ros.data.records import EgoMotion
from v2x_vlm_ros.model.codec import CodecConfig, LocTokenCodec, TextCodec, TrajectoryDecodeError
from v2x_vlm_ros.model.configuration import PRESETS, ModelSettings
from v2x_vlm_ros.model.modeling import build_model, save_model
from v2x_vlm_ros.preprocessing.image_codec import ImageDecodeError, decode_image
from v2x_vlm_ros.runtime.describer import ClockedDescriber, Description, DescriptionCache
from v2x_vlm_ros.runtime.engine import PlanInput, PlanOutput
from v2x_vlm_ros.runtime.factory import make_engine
from v2x_vlm_ros.runtime.vehicle import VehicleConfig, VehicleService

S = 1_000_000_000
MS = 1_000_000
T0 = 1_700_000_000 * S  # a plausible wall-clock epoch
YEAR = 365 * 86400 * S
TYPES = m.rosbags_types("humble")
EGO = np.full((81, 144, 3), 90, np.uint8)
ROAD = np.full((81, 144, 3), 160, np.uint8)
ROAD[1::2, 1::2] = 150  # texture: a one-colour roadside frame is a dead camera (planned ego-only)
EGO_JPEG = cv2.imencode(".jpg", EGO)[1].tobytes()
ROAD_JPEG = cv2.imencode(".jpg", ROAD)[1].tobytes()
_YY, _XX = np.mgrid[0:48, 0:64]
GRADIENT = np.dstack([_XX * 4, _YY * 5, (_XX + _YY) % 256]).astype(np.uint8)
JPEG = cv2.imencode(".jpg", GRADIENT)[1].tobytes()
PNG = cv2.imencode(".png", GRADIENT)[1].tobytes()
BAD_FLOATS = (math.nan, math.inf, -math.inf)
HUGE_FLOATS = (1e308, -1e308, 1e20)


def campaign(max_examples: int):
    return settings(max_examples=max_examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# -- the summary table --------------------------------------------------------------------

OUTCOMES = ("error", "counted", "valid")
CASES: dict[str, Counter] = {}


def record(category: str, outcome: str) -> None:
    """One case tried: ``error`` (raised naming the input), ``counted`` (a degradation
    counted in diagnostics or the reader's skip log), ``valid`` (input was usable)."""
    assert outcome in OUTCOMES, outcome
    CASES.setdefault(category, Counter())[outcome] += 1


def _campaign_lines() -> list[str]:
    if not CASES:
        return []
    width = max(len(c) for c in CASES) + 2
    lines = [f"{'category':<{width}}{'cases':>7}" + "".join(f"{o:>9}" for o in OUTCOMES)]
    for category, counts in sorted(CASES.items()):
        lines.append(f"{category:<{width}}{sum(counts.values()):>7}"
                     + "".join(f"{counts[o]:>9}" for o in OUTCOMES))
    lines.append(f"{'total':<{width}}{sum(sum(c.values()) for c in CASES.values()):>7}")
    return lines


@pytest.fixture(scope="module", autouse=True)
def campaign_summary(request):
    """The table is printed at the end of the session (no conftest hook needed)."""
    register_summary(request.config, "v2x-bad-input-campaign-summary",
                     "bad-input campaign: cases per category", _campaign_lines)
    yield


# -- a long-lived service on a logical clock ----------------------------------------------


class ConstantVelocityEngine:
    """Stands in for the model in service-logic cases: constant velocity at the input speed."""

    uses_roadside = True

    def __init__(self):
        self.inputs = []

    def plan(self, inputs):
        self.inputs = list(inputs)  # keep only the last batch: runs are long
        xy = np.column_stack([np.arange(1, 11) * 0.5 * inputs[0].motion.speed_mps, np.zeros(10)])
        return [PlanOutput(xy=xy, raw_xy=xy, stage_ms={"model": 0.1})]


class Rig:
    """One service for a whole category: bad cases in between good frames. The describer
    (logical clock) names each good ego frame by its pixel value, so a plan can tell which
    frame its description came from."""

    def __init__(self, engine=None, **config):
        self.engine = engine or ConstantVelocityEngine()
        self.cache = DescriptionCache(3.0)
        self.describer = ClockedDescriber(self.describe, self.cache, rate_hz=100.0)
        self.svc = VehicleService(self.engine, VehicleConfig(**config), self.describer, self.cache)
        self.now = T0
        self.value = 0
        self.svc.on_motion(T0, EgoMotion(8.0, 0.3, 0.0, 0.5))

    @staticmethod
    def describe(image) -> str:
        return f"value {int(image[0, 0, 0])}"

    def tick(self, seconds: float = 0.1) -> int:
        self.now += int(round(seconds * S))
        return self.now

    def good_plan(self, fused: bool = True, gap_s: float = 0.1):
        """A good roadside and ego frame after anything seen: the service must plan on it."""
        now = self.tick(gap_s)
        self.value = self.value % 200 + 20
        ego = np.full((81, 144, 3), self.value, np.uint8)
        if fused:
            self.svc.on_roadside_image(now - 50 * MS, encoded=ROAD_JPEG, now_ns=now)
        self.svc.on_ego_image(now, ego, now_ns=now)
        plan = self.svc.step(now)
        assert plan is not None, self.svc.diagnostics()
        assert plan.stamp_ns == now and plan.xy.shape == (10, 2) and np.isfinite(plan.xy).all()
        assert plan.mode == ("fused" if fused else "ego_only")
        assert (plan.description, plan.description_state) == (f"value {self.value}", "fresh")
        check_accounting(self.svc)
        return plan


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    """The real planning step (tiny random Florence-2, loc codec, refinement on)."""
    return make_engine(tiny_model_dir)[0]


@pytest.fixture(scope="module")
def text_engine(tmp_path_factory, tiny_tokenizer):
    """The real planning step with the text codec (the reference ``generate`` path)."""
    out = tmp_path_factory.mktemp("tiny_text_model")
    settings_ = ModelSettings(image_size=PRESETS["tiny"].image_size, codec=CodecConfig(kind="text"))
    save_model(out, build_model("tiny", tiny_tokenizer, seed=0), tiny_tokenizer, settings_)
    return make_engine(out)[0]


# -- 1. encoded image bytes: random, truncated, corrupted ---------------------------------


def truncated(full: bytes):
    return st.integers(0, len(full) - 1).map(lambda n: full[:n])


def corrupted(full: bytes):
    edits = st.lists(st.tuples(st.integers(0, len(full) - 1), st.integers(0, 255)), min_size=1, max_size=8)

    def apply(changes):
        buf = bytearray(full)
        for pos, value in changes:
            buf[pos] = value
        return bytes(buf)
    return edits.map(apply)


BAD_BYTES = st.one_of(
    st.binary(max_size=300),
    st.sampled_from([b"\xff\xd8", b"\x89PNG\r\n\x1a\n"]).flatmap(lambda sig: st.binary(max_size=200).map(
        lambda tail: sig + tail)),
    truncated(JPEG), truncated(PNG), corrupted(JPEG), corrupted(PNG),
)


COMPRESSED_FORMATS_OK = ("jpeg", "png", "bgr8; jpeg compressed bgr8", "")


def test_random_truncated_and_corrupted_image_bytes():
    rig = Rig()
    formats = st.sampled_from(["jpeg", "png", "bgr8; jpeg compressed bgr8", "", "rgb8", "tiff", "\x00"])

    @campaign(150)
    @given(BAD_BYTES, formats)
    def case(data, fmt):
        svc = rig.svc
        # the message conversion the node uses for a compressed topic
        msg = m.bgr_to_compressed_msg(TYPES, JPEG, 0, "cam")
        msg = dataclasses.replace(msg, format=fmt, data=np.frombuffer(data, np.uint8).copy())
        try:
            decode_image(data, "ego")
            decodes = True
        except ImageDecodeError as exc:
            assert exc.source == "ego" and exc.reason
            decodes = False
        try:
            pixels = m.compressed_msg_to_bgr(msg, "/camera/compressed")
        except ImageDecodeError as exc:
            assert exc.source == "/camera/compressed" and str(exc).startswith("/camera/compressed: ")
            assert not decodes or fmt not in COMPRESSED_FORMATS_OK
        else:
            assert decodes and fmt in COMPRESSED_FORMATS_OK
            assert pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == 3
        # the same bytes as the ego frame, then as the roadside frame
        before = dict(svc.drops)
        now = rig.tick()
        svc.on_ego_image(now, encoded=data, source="ego", now_ns=now)
        plan = svc.step(now)
        if decodes:
            assert plan is not None
        else:
            assert plan is None and svc.drops["ego_undecodable"] == before.get("ego_undecodable", 0) + 1
        now = rig.tick()
        svc.on_roadside_image(now - 50 * MS, encoded=data, now_ns=now)
        svc.on_ego_image(now, encoded=EGO_JPEG, now_ns=now)
        plan = svc.step(now)
        assert plan is not None and plan.mode == ("fused" if decodes else "ego_only")
        if not decodes:
            assert svc.drops["roadside_undecodable"] == before.get("roadside_undecodable", 0) + 1
        record("image bytes (random/truncated/corrupt)", "valid" if decodes else "counted")
        rig.good_plan()

    case()
    assert rig.svc.drops["ego_undecodable"] > 100  # the campaign is mostly bad bytes


# -- 2. image sizes: empty, 1x1, 16384 x 2 and 2 x 16384 -----------------------------------


def crafted_png(width: int, height: int) -> bytes:
    def chunk(kind, payload):
        crc = struct.pack(">I", zlib.crc32(kind + payload))
        return struct.pack(">I", len(payload)) + kind + payload + crc
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
            + chunk(b"IEND", b""))


def sized(h: int, w: int, form: str):
    """(pixels, encoded) of an h x w image in ``form``: pixels, png, jpeg or a raw Image msg."""
    img = np.random.default_rng(h * 7 + w).integers(0, 256, (max(h, 0), max(w, 0), 3), dtype=np.uint8)
    if form == "pixels":
        return img, None
    if form == "raw_msg":
        msg = TYPES("sensor_msgs/msg/Image")(
            header=m.header(TYPES, 0, "cam"), height=h, width=w, encoding="bgr8", is_bigendian=0,
            step=w * 3, data=img.reshape(-1))
        return m.image_msg_to_bgr(msg, "/camera/image_raw"), None  # may raise: the node counts it
    if h == 0 or w == 0:
        return None, crafted_png(w, h)  # encoders refuse empty images: a header that says so
    return None, cv2.imencode(".png" if form == "png" else ".jpg", img)[1].tobytes()


SIZES = [(0, 0), (0, 16), (16, 0), (1, 1), (2, 16384), (16384, 2)]


@pytest.mark.parametrize("form", ["pixels", "png", "jpeg", "raw_msg"])
def test_empty_tiny_and_extreme_aspect_images_with_the_real_planner(engine, form):
    rig = Rig(engine)
    for h, w in SIZES:
        for side in ("ego", "roadside"):
            svc, before = rig.svc, Counter(rig.svc.drops)
            now = rig.tick()
            try:
                pixels, encoded = sized(h, w, form)
            except ImageDecodeError as exc:  # the node's conversion of a raw message
                assert form == "raw_msg" and h * w == 0 and "empty image" in str(exc)
                assert exc.source == "/camera/image_raw"
                record("image sizes (0, 1x1, 16384x2, 2x16384)", "error")
                rig.good_plan()
                continue
            if side == "ego":
                svc.on_ego_image(now, pixels, encoded, now_ns=now)
                svc.on_roadside_image(now - 50 * MS, encoded=ROAD_JPEG, now_ns=now)
            else:
                svc.on_roadside_image(now - 50 * MS, pixels, encoded, now_ns=now)
                svc.on_ego_image(now, encoded=EGO_JPEG, now_ns=now)
            plan = svc.step(now)
            new = Counter(svc.drops) - before
            new = Counter({k: v for k, v in new.items() if not k.endswith("queue_full")})
            if h * w == 0:
                key = f"{side}_undecodable"
                assert new == {key: 1}, new
                assert (plan is None) if side == "ego" else (plan.mode == "ego_only")
                record("image sizes (0, 1x1, 16384x2, 2x16384)", "counted")
            else:
                assert plan is not None and np.isfinite(plan.xy).all() and plan.xy.shape == (10, 2)
                # the roadside half is resized to the ego's height: a 2-pixel-high roadside
                # strip next to an 81-pixel ego view (or any roadside next to a 16384-high
                # ego strip) would make a canvas of tens of millions of pixels
                too_large = (side == "roadside" and h == 2) or (side == "ego" and h == 16384)
                # a 1x1 roadside image is one colour: no more information than a dead camera
                blank = side == "roadside" and h * w == 1
                expected = ({"roadside_canvas_too_large": 1} if too_large
                            else {"roadside_blank": 1} if blank else {})
                assert new == expected, new
                assert plan.mode == ("ego_only" if too_large or blank else "fused")
                record("image sizes (0, 1x1, 16384x2, 2x16384)", "counted" if too_large or blank else "valid")
            rig.good_plan()


# -- 3. sensor_msgs/Image: wrong encodings, step and size that disagree -------------------

ENCODINGS = ["bgr8", "rgb8", "mono8", "bgra8", "rgba8", "8UC1", "8UC3", "BGR8", "bgr8 ", "", "rgb16",
             "mono16", "32FC1", "bayer_rggb8", "yuv422", "jpeg", "16UC3", "\u00e9", "bgr8\x00"]
CHANNELS = {"bgr8": 3, "rgb8": 3, "bgra8": 4, "rgba8": 4, "mono8": 1, "8UC1": 1, "8UC3": 3}


def ramp(size: int) -> np.ndarray:
    return (np.arange(size) % 256).astype(np.uint8)


def test_raw_image_messages_with_wrong_encoding_step_or_size():
    rig = Rig()

    @campaign(200)
    @given(st.one_of(st.sampled_from(ENCODINGS), st.text(max_size=12)), st.integers(-2, 12),
           st.integers(-2, 12), st.integers(-4, 60), st.integers(0, 400), st.booleans())
    # well-formed messages of every accepted encoding, whatever the generator draws
    @example("bgr8", 2, 3, 9, 18, False)
    @example("rgb8", 4, 4, 14, 56, False)  # step padding
    @example("mono8", 3, 5, 5, 15, True)
    @example("bgra8", 2, 2, 8, 16, False)
    @example("rgba8", 1, 1, 4, 4, False)
    @example("8UC3", 2, 2, 6, 13, False)  # one spare byte
    def case(encoding, height, width, step, size, bigendian):
        msg = TYPES("sensor_msgs/msg/Image")(
            header=m.header(TYPES, 0, "cam"), height=height, width=width, encoding=encoding,
            is_bigendian=int(bigendian), step=step, data=ramp(size))
        try:
            pixels = m.image_msg_to_bgr(msg, "/ego/image_raw")
        except ImageDecodeError as exc:
            assert exc.source == "/ego/image_raw" and exc.reason
            record("raw Image: encoding/step/size", "error")
            return
        channels = CHANNELS[encoding]
        assert height > 0 and width > 0 and step >= width * channels and size >= step * height
        assert pixels.shape == (height, width, 3) and pixels.dtype == np.uint8
        first = ramp(size)[: width * channels].reshape(width, channels)
        expected = first[:, :3] if channels >= 3 else np.repeat(first, 3, axis=1)
        if encoding.startswith(("rgb", "rgba")):
            expected = expected[:, ::-1]
        assert np.array_equal(pixels[0], expected)  # row 0, honouring step padding elsewhere
        now = rig.tick()
        rig.svc.on_ego_image(now, pixels, now_ns=now)
        plan = rig.svc.step(now)
        assert plan is not None and np.isfinite(plan.xy).all()
        record("raw Image: encoding/step/size", "valid")
        rig.good_plan()

    case()
    assert CASES["raw Image: encoding/step/size"]["valid"] >= 5  # some well-formed ones got through


# -- 4. NaN, inf and absurd values: motion, odometry, tf, paths, calibration --------------

MOTION_VALUES = st.one_of(st.sampled_from(BAD_FLOATS + HUGE_FLOATS), st.floats(-5.0, 5.0))


def test_non_finite_or_absurd_motion_with_the_real_planner(engine):
    rig = Rig(engine)

    @campaign(40)
    @given(MOTION_VALUES, MOTION_VALUES, MOTION_VALUES, st.sampled_from([0.0, 0.5, math.nan]))
    def case(speed, heading, yaw_rate, history):
        svc = rig.svc
        before = Counter(svc.drops)
        good = svc.motion
        svc.on_motion(rig.now, EgoMotion(speed, heading, yaw_rate, history))
        new = Counter(svc.drops) - before
        values = (speed, heading, yaw_rate)
        if not all(map(math.isfinite, values)):
            assert new == {"motion_not_finite": 1} and svc.motion is good
            outcome = "counted"
        elif abs(speed) > 100.0 or abs(yaw_rate) > 10.0:
            assert new == {"motion_implausible": 1} and svc.motion is good
            outcome = "counted"
        else:
            assert not new and svc.motion[1].speed_mps == speed
            outcome = "valid"
        plan = rig.good_plan()
        assert plan.motion is svc.motion[1]
        record("motion: NaN/inf/absurd", outcome)
        if outcome == "valid":  # back to the usual motion for the next case
            svc.on_motion(rig.now, EgoMotion(8.0, 0.3, 0.0, 0.5))

    case()


ODOM_FIELDS = ["twist.twist.linear.x", "twist.twist.linear.y", "twist.twist.angular.z",
               "pose.pose.orientation.x", "pose.pose.orientation.w"]


def _set(msg, path: str, value: float):
    *parents, leaf = path.split(".")
    obj = msg
    for p in parents:
        obj = getattr(obj, p)
    setattr(obj, leaf, value)


def test_odometry_with_nan_or_inf_through_the_conversion_and_the_service():
    """What the vehicle node does with an odometry message: convert, then ``on_motion``."""
    rig = Rig()

    @campaign(60)
    @given(st.sampled_from(ODOM_FIELDS), st.sampled_from(BAD_FLOATS + HUGE_FLOATS))
    def case(field, value):
        msg = m.odometry_msg(TYPES, np.eye(4), 8.0, 0.0, rig.now)
        _set(msg, field, value)
        svc, before = rig.svc, Counter(rig.svc.drops)
        try:
            pose, speed, yaw_rate = m.odometry_to_state(msg)
        except ValueError as exc:  # the quaternion cannot be normalised
            assert field.startswith("pose.pose.orientation") and "quaternion" in str(exc)
            assert not math.isfinite(value) or abs(value) > 1e150
            record("odometry: NaN/inf/absurd", "error")
        else:
            heading = math.atan2(pose[1, 0], pose[0, 0])
            assert np.isfinite(pose).all() and math.isfinite(heading)
            svc.on_motion(rig.now, EgoMotion(speed, heading, yaw_rate, 0.5))
            new = Counter(svc.drops) - before
            if field.startswith("twist"):  # a speed or yaw rate that is not finite or absurd
                assert new in ({"motion_not_finite": 1}, {"motion_implausible": 1}), new
                record("odometry: NaN/inf/absurd", "counted")
            else:  # a finite quaternion far from unit length is normalised: a valid rotation
                assert not new and svc.motion[1].heading_rad == heading
                record("odometry: NaN/inf/absurd", "valid")
        assert rig.good_plan().motion.speed_mps == 8.0

    case()


@pytest.mark.parametrize("where", ["odometry position", "tf translation"])
def test_non_finite_positions_are_refused_by_the_conversion(where):
    if where == "odometry position":
        msg = m.odometry_msg(TYPES, np.eye(4), 8.0, 0.0, T0)
        msg.pose.pose.position.x = math.nan
        convert = m.odometry_to_state
    else:
        msg = m.tf_message(TYPES, [m.transform_stamped(TYPES, "map", "base_link", np.eye(4), T0)])
        msg.transforms[0].transform.translation.y = math.inf
        convert = m.tf_to_matrices
    with pytest.raises(ValueError, match="not finite"):
        convert(msg)


def test_nan_in_tf_rotations_and_planned_paths_is_a_named_error():
    cases = 0
    for value in BAD_FLOATS:
        msg = m.tf_message(TYPES, [m.transform_stamped(TYPES, "map", "base_link", np.eye(4), T0)])
        msg.transforms[0].transform.rotation.z = value
        with pytest.raises(ValueError, match="quaternion"):
            m.tf_to_matrices(msg)
        xy = np.column_stack([np.arange(10.0), np.zeros(10)])
        xy[3, 1] = value
        for build in (m.trajectory_to_path, lambda t, p, ns, f: m.trajectory_markers(t, p, ns, f, "plan")):
            with pytest.raises(ValueError, match="NaN or infinity"):
                build(TYPES, xy, T0, "base_link")
        with pytest.raises(ValueError, match="finite 4x4"):
            m.MapFrame(np.where(np.eye(4) == 1, value, 0.0))
        cases += 4
    for _ in range(cases):
        record("tf / path / map frame: NaN/inf", "error")


CALIB_EDITS = [  # (file under vehicle-side or infrastructure-side, JSON field path, reader)
    ("vehicle-side/calib/novatel_to_world", ("translation", 1, 0), "dataset"),
    ("vehicle-side/calib/novatel_to_world", ("rotation", 2, 2), "dataset"),
    ("vehicle-side/calib/lidar_to_novatel", ("transform", "rotation", 0, 1), "dataset"),
    ("vehicle-side/calib/lidar_to_novatel", ("transform", "translation", 2, 0), "dataset"),
    ("vehicle-side/calib/lidar_to_camera", ("translation", 0, 0), read_rigid),
    ("vehicle-side/calib/camera_intrinsic", ("cam_K", 4), read_intrinsics),
    ("infrastructure-side/calib/virtuallidar_to_world", ("rotation", 1, 1), read_rigid),
    ("infrastructure-side/calib/camera_intrinsic", ("cam_D", 0), read_intrinsics),
]


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory):
    return write(tmp_path_factory.mktemp("dair"), [sequence(line(10.0), n_frames=30, agents=lambda t: [])])


def _edit_json(path, keys, value):
    data = json.loads(path.read_text())
    obj = data
    for k in keys[:-1]:
        obj = obj[k]
    obj[keys[-1]] = value
    path.write_text(json.dumps(data))


def test_nan_or_inf_in_calibration_is_a_named_skip_or_error(dataset_root):
    @campaign(40)
    @given(st.sampled_from(CALIB_EDITS), st.integers(0, 29), st.sampled_from(BAD_FLOATS))
    def case(edit, frame, value):
        rel, keys, reader = edit
        path = dataset_root / rel / f"{frame:06d}.json"
        original = path.read_bytes()
        _edit_json(path, keys, value)
        try:
            field = ".".join(k for k in keys if isinstance(k, str))
            if reader == "dataset":
                ds = DairV2XDataset(dataset_root)
                item = next(s for s in ds.skips.items if s.code == "calib_invalid")
                assert item.path.endswith(f"{rel}/{frame:06d}.json") and item.field == field
                assert "NaN or infinity" in item.reason and len(ds) == 29
                assert all(np.isfinite(s.future_xy).all() and np.isfinite(s.world_from_ego).all() for s in ds)
                record("calibration: NaN/inf (reader)", "counted")
            else:
                with pytest.raises(DatasetError, match="NaN or infinity") as info:
                    reader(path)
                assert info.value.path == str(path) and info.value.field == field
                record("calibration: NaN/inf (reader)", "error")
        finally:
            path.write_bytes(original)

    case()


# -- 5. timestamps: jumps back, repeats, clock resets, years ahead -------------------------

STAMP_EVENTS = st.lists(st.tuples(
    st.sampled_from(["ego", "roadside", "step", "motion"]),
    st.sampled_from(["next", "repeat", "back_small", "back_reset", "years_ahead", "ahead_within_tolerance",
                     "clock_reset"])), min_size=1, max_size=12)
OFFSETS_S = {"next": 0.0, "repeat": 0.0, "back_small": -0.05, "back_reset": -5.0,
             "years_ahead": 10 * YEAR / S, "ahead_within_tolerance": 0.3}


def test_timestamps_that_jump_back_repeat_reset_or_sit_years_ahead():
    rig = Rig()
    last = {"ego": None, "roadside": None}

    @campaign(80)
    @given(STAMP_EVENTS)
    @example([("ego", "next"), ("ego", "next"), ("ego", "back_reset"), ("step", "next")])
    @example([("roadside", "next"), ("ego", "next"), ("step", "next"), ("ego", "clock_reset"),
              ("roadside", "next"), ("step", "next")])
    @example([("ego", "years_ahead"), ("roadside", "years_ahead"), ("step", "next")])
    @example([("ego", "next"), ("ego", "repeat"), ("ego", "back_small"), ("step", "next")])
    def case(events):
        svc, before = rig.svc, Counter(rig.svc.drops)
        for stream, kind in events:
            now = rig.tick(0.1)
            if kind == "clock_reset":  # every clock starts over (a bag played again): for good
                rig.now -= 60 * S
                now = rig.now
                kind = "next"
            stamp = last[stream] if kind == "repeat" and last.get(stream) else now + int(OFFSETS_S[kind] * S)
            if stream == "ego":
                svc.on_ego_image(stamp, np.full((81, 144, 3), 7, np.uint8), now_ns=now)
                last["ego"] = stamp
            elif stream == "roadside":
                svc.on_roadside_image(stamp, ROAD, now_ns=now)
                last["roadside"] = stamp
            elif stream == "motion":
                svc.on_motion(stamp, EgoMotion(8.0, 0.3, 0.0, 0.5))
            else:
                plan = svc.step(now)
                assert plan is None or np.isfinite(plan.xy).all()
            check_accounting(svc)
        counted = bool(Counter(svc.drops) - before)
        record("timestamps: back/repeat/reset/years ahead", "counted" if counted else "valid")
        # frames stamped within the future tolerance were admitted: the next good frame
        # comes after them, and its description must be its own (no stale pinning)
        rig.good_plan(gap_s=svc.config.future_tolerance_s + 0.1)

    case()
    drops = rig.svc.drops
    for key in ("ego_from_the_future", "roadside_from_the_future", "ego_duplicate_stamp", "ego_out_of_order",
                "ego_clock_reset_discarded", "roadside_clock_reset", "ego_too_old"):
        assert drops[key] > 0, (key, dict(drops))


def test_dataset_timestamps_that_jump_back_repeat_or_sit_years_ahead(dataset_root):
    info = dataset_root / "vehicle-side/data_info.json"
    clean = {s.sample_id: s for s in DairV2XDataset(dataset_root)}
    assert clean["000024"].future_mask[0]  # waypoint 0 of frame 24 is frame 29

    @campaign(25)
    @given(st.integers(0, 29), st.sampled_from(["repeat", "back", "years_ahead", "negative", "text"]))
    def case(frame, kind):
        original = info.read_bytes()
        rows = json.loads(original)
        stamps = [int(r["image_timestamp"]) for r in rows]
        prev = stamps[frame - 1] if frame else stamps[0] - 100_000
        new = {"repeat": prev, "back": prev - 30_000, "years_ahead": stamps[frame] + 10 * YEAR // 1000,
               "negative": -stamps[frame], "text": "16261551xx"}[kind]
        rows[frame]["image_timestamp"] = str(new)
        info.write_text(json.dumps(rows))
        try:
            ds = DairV2XDataset(dataset_root)
            assert all(np.isfinite(s.future_xy[s.future_mask]).all() and np.isfinite(
                [s.motion.speed_mps, s.motion.yaw_rate_rps]).all() for s in ds)
            in_order = kind in ("repeat", "back", "years_ahead") and (frame == 0 or new > stamps[frame - 1]) \
                and (frame == 29 or new < stamps[frame + 1])
            if in_order:  # a stamp that keeps the order is a gap in time: waypoints there are masked
                assert not ds.skips.counts and len(ds) == 30
                if kind == "years_ahead":
                    assert not {s.sample_id: s for s in ds}["000024"].future_mask[0]
                record("dataset timestamps", "valid")
            else:
                code = "timestamp_invalid" if kind in ("negative", "text") else "timestamp_out_of_order"
                assert ds.skips.counts == {code: 1, "vehicle_frame_unavailable": 1} and len(ds) == 29
                item = ds.skips.items[0]
                assert "vehicle-side/data_info.json" in item.path and item.field.endswith("image_timestamp")
                assert f"{frame:06d}" in str(item) or f"{frame - 1:06d}" in str(item) or str(new) in str(item)
                record("dataset timestamps", "counted")
        finally:
            info.write_bytes(original)

    case()


# -- 6. descriptions: empty, 100 kB, control characters, not UTF-8 -------------------------

DESCRIPTIONS = st.one_of(
    st.just(""), st.just(" \t\n"),
    st.integers(90_000, 110_000).map(lambda n: ("a truck on the right " * (n // 21 + 1))[:n]),
    st.text(st.characters(codec=None, categories=["Cc", "Cf", "Zl", "Zp", "Co"]), max_size=200),
    st.text(max_size=300),
    st.binary(min_size=1, max_size=200).map(lambda b: b.decode("utf-8", "surrogateescape")),
    st.binary(min_size=1, max_size=200).map(lambda b: b.decode("latin-1")),
    st.sampled_from(["\udcff\udcfe", "\ud800", "caf\u00e9 \u202e\u200b\ufeff", "\x00" * 1000,
                     "\x1b[31mred\x1b[0m", "line\r\nbreaks\x85"]),
)


def test_descriptions_empty_huge_control_or_not_utf8_with_the_real_planner(engine):
    """A description takes this path: describer -> ``DescriptionCache`` -> ``step`` ->
    ``PlanInput.description`` -> ``PromptEncoder`` (``clean_description``) and, on the
    node, the published ``std_msgs/String``."""
    rig = Rig(engine)

    @campaign(60)
    @given(DESCRIPTIONS)
    def case(text):
        svc, before = rig.svc, Counter(rig.svc.counts)
        now = rig.tick()
        rig.describer.describe_fn = lambda image: text  # this frame's caption
        svc.on_roadside_image(now - 50 * MS, encoded=ROAD_JPEG, now_ns=now)
        svc.on_ego_image(now, EGO, now_ns=now)
        rig.describer.describe_fn = rig.describe
        plan = svc.step(now)
        assert plan is not None and plan.description_state == "fresh" and np.isfinite(plan.xy).all()
        TYPES.serialize(m.string_msg(TYPES, plan.description))  # what the node publishes
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            assert (Counter(svc.counts) - before)["description_not_utf8"] == 1
            assert plan.description == text.encode("utf-8", "replace").decode("utf-8")
            record("descriptions: empty/100 kB/control/non-UTF-8", "counted")
        else:
            assert plan.description == text
            record("descriptions: empty/100 kB/control/non-UTF-8", "valid")
        prompt = engine.prompts.encode(plan.description, plan.motion, plan.command)
        assert len(prompt.input_ids) <= engine.prompts.budget + engine.settings.num_image_tokens
        assert prompt.truncated or len(text) < 50_000
        rig.good_plan()

    case()


BAD_DESCRIPTION_LINES = [
    b'{"vehicle_frame": "000001", "description": "caf\xe9 \xff\xfe raw bytes"}',
    b'{"vehicle_frame": "000002", "description": "\\udcff\\ud800 escaped surrogates"}',
    b'{"vehicle_frame": "000003", "description": "\\u0000\\u001b[31m \\u202e"}',
    b'{"vehicle_frame": "000004", "description": ' + json.dumps("x" * 100_000).encode() + b"}",
    b'{"vehicle_frame": "000005"}', b"not json",
]


@pytest.fixture(scope="module")
def described_root(dataset_root, tmp_path_factory):
    """The dataset with a hostile descriptions.jsonl: raw non-UTF-8 bytes, JSON-escaped lone
    surrogates, control characters, 100 kB, a line without a description, one not JSON."""
    root = tmp_path_factory.mktemp("described") / "dair"
    shutil.copytree(dataset_root, root)
    (root / "descriptions.jsonl").write_bytes(b"\n".join(BAD_DESCRIPTION_LINES) + b"\n")
    return root


def test_descriptions_file_with_bad_text_through_replay_reaches_the_planner_safely(described_root, engine):
    """Replay without a describer puts each sample's description in the cache, as here."""
    ds = DairV2XDataset(described_root)
    assert ds.skips.counts == {"description_invalid": 2}
    for _ in range(2):
        record("descriptions: dataset file (replay path)", "counted")
    by_id = {s.sample_id: s for s in ds}
    rig = Rig(engine)
    for frame in ("000001", "000002", "000003", "000004"):
        s, now = by_id[frame], rig.tick()
        rig.svc.on_motion(now, s.motion)
        rig.svc.on_ego_image(now, EGO, now_ns=now)
        rig.cache.put(Description(s.description, now))  # the sample's, over the rig's describer
        plan = rig.svc.step(now)
        assert plan is not None and np.isfinite(plan.xy).all()
        TYPES.serialize(m.string_msg(TYPES, plan.description))
        surrogates = frame == "000002"
        assert rig.svc.counts["description_not_utf8"] == (1 if frame >= "000002" else 0)
        assert (plan.description == s.description) != surrogates
        record("descriptions: dataset file (replay path)", "counted" if surrogates else "valid")
        rig.svc.on_motion(now, EgoMotion(8.0, 0.3, 0.0, 0.5))
        rig.good_plan()


def test_descriptions_file_with_escaped_surrogates_on_the_eval_path(described_root, engine):
    """eval and training call the engine with the dataset's description directly: the prompt
    cleaning replaces lone surrogates (JSON \\udcff in descriptions.jsonl) instead of failing."""
    s = {x.sample_id: x for x in DairV2XDataset(described_root)}["000002"]
    assert any(0xD800 <= ord(c) <= 0xDFFF for c in s.description)
    out = engine.plan([PlanInput(EGO, ROAD, s.description, s.motion, s.command)])
    assert len(out) == 1 and np.isfinite(out[0].xy).all()


# -- 7. malformed model output: the loc and the text codec ---------------------------------


def test_loc_codec_decode_of_token_sequences_that_break_its_grammar(tiny_tokenizer):
    from v2x_vlm_ros.model.tokenizer import loc_token_ids

    ids = list(loc_token_ids(tiny_tokenizer))
    codec = LocTokenCodec(CodecConfig(), ids)
    loc = st.sampled_from(ids)
    other = st.one_of(st.integers(-5, 2 * max(ids)), st.sampled_from([0, 1, 2]), st.just(True), st.just(1.5))

    @campaign(200)
    @given(st.lists(st.one_of(loc, loc, loc, other), max_size=24))
    def case(tokens):
        try:
            xy = codec.decode(tokens)
        except TrajectoryDecodeError as exc:
            assert exc.reason
            record("model output: loc tokens", "error")
            return
        assert len(tokens) == 20 and all(t in ids for t in tokens)
        assert xy.shape == (10, 2) and np.isfinite(xy).all()
        assert (-20 <= xy[:, 0]).all() and (xy[:, 0] <= 100).all() and (np.abs(xy[:, 1]) <= 50).all()
        record("model output: loc tokens", "valid")

    case()


def test_text_codec_decode_of_text_that_breaks_its_grammar():
    codec = TextCodec(CodecConfig(kind="text"))
    good = codec.encode(np.column_stack([np.arange(1.0, 11.0), np.zeros(10)]))
    pieces = st.sampled_from(["1", "2.5", "-3", ",", ";", " ", ".", "e5", "nan", "inf", "+", "\x00", "\u0663",
                              "1" * 400, "<loc_3>", "</s>", "\ufffd"])

    @campaign(200)
    @given(st.one_of(st.lists(pieces, max_size=60).map("".join), st.text(max_size=80),
                     st.tuples(st.integers(0, len(good)), st.text(max_size=3)).map(
                         lambda c: good[: c[0]] + c[1] + good[c[0] + 1:])))
    def case(text):
        try:
            xy = codec.decode(text)
        except TrajectoryDecodeError as exc:
            assert exc.reason
            record("model output: text", "error")
            return
        assert xy.shape == (10, 2) and np.isfinite(xy).all()
        record("model output: text", "valid")

    case()


def _with_tokens(engine, rows_fn):
    """The engine with its model stages replaced by ``rows_fn(batch)`` (the answer tokens)."""
    engine.tokens = lambda batch: (rows_fn(batch), {"decoder": 0.0})


def test_malformed_model_output_falls_back_counted_and_planning_goes_on(engine, text_engine, tiny_tokenizer):
    """Through the real engines: the decoded answer is replaced by malformed tokens; the
    plan is the constant-velocity fallback, counted as a decode failure, and the next
    frame (real model output again) decodes."""
    loc_ids = engine.codec.allowed_token_ids(0)
    loc_rows = st.lists(st.one_of(st.sampled_from(loc_ids), st.integers(0, 300)), max_size=24)
    text_rows = st.one_of(st.text(st.sampled_from("0123456789.,;- abc"), max_size=60),
                          st.just(""), st.just("1,2;3,4")).map(
        lambda t: tiny_tokenizer(t, add_special_tokens=False)["input_ids"])
    for kind, eng, rows in (("loc", engine, loc_rows), ("text", text_engine, text_rows)):
        rig = Rig(eng)
        if kind == "text":  # keep the reference generate path short: the answer is replaced anyway
            eng.generation_config.max_new_tokens = 4

        @campaign(30)
        @given(rows)
        def case(row):
            svc, before = rig.svc, svc_failures(rig.svc)
            _with_tokens(eng, lambda batch: [list(row)])
            try:
                now = rig.tick()
                svc.on_ego_image(now, EGO, now_ns=now)
                plan = svc.step(now)
            finally:
                del eng.tokens
            assert plan is not None and np.isfinite(plan.xy).all()
            try:
                eng.decode_tokens(list(row), plan.motion.speed_mps)
                failed = False
            except TrajectoryDecodeError:
                failed = True
            assert plan.decode_failed == failed and svc_failures(svc) == before + failed
            if failed:
                speed = plan.motion.speed_mps
                fallback = np.column_stack([np.arange(1, 11) * 0.5 * speed, np.zeros(10)])
                assert np.allclose(plan.raw_xy, fallback)
            record(f"model output: malformed ({kind}, through the engine)", "counted" if failed else "valid")
            if kind == "loc":
                assert not rig.good_plan().decode_failed  # the grammar-constrained real answer
            else:
                rig.good_plan()

        case()


def svc_failures(svc: VehicleService) -> int:
    return svc.counts["decode_failures"]
