"""Algorithm 1 as a service: pairing, descriptions, degraded mode, bad and late frames."""

import time

import cv2
import numpy as np
import pytest

from v2x_vlm_ros.data.records import Command, EgoMotion
from v2x_vlm_ros.model.modeling import load_model
from v2x_vlm_ros.runtime.describer import ClockedDescriber, Description, DescriptionCache, ThreadedDescriber
from v2x_vlm_ros.runtime.engine import PlannerEngine, PlanOutput
from v2x_vlm_ros.runtime.vehicle import VehicleConfig, VehicleService

from service_checks import check_accounting

S = 1_000_000_000
EGO = np.full((81, 144, 3), 90, np.uint8)
ROAD = np.full((81, 144, 3), 160, np.uint8)
ROAD[1::2, 1::2] = 150  # texture: a one-colour roadside frame is a dead camera (planned ego-only)
JPEG = cv2.imencode(".jpg", EGO)[1].tobytes()


class RecordingEngine:
    """Stands in for the model: records what the service hands it, answers constant velocity."""

    uses_roadside = True

    def __init__(self):
        self.inputs = []

    def plan(self, inputs):
        self.inputs.extend(inputs)
        xy = np.column_stack([np.arange(1, 11) * 0.5 * inputs[0].motion.speed_mps, np.zeros(10)])
        return [PlanOutput(xy=xy, raw_xy=xy, stage_ms={"preprocess": 1.0, "model": 2.0, "decode": 0.1,
                                                       "refine": 0.1})]


def service(**config):
    engine = RecordingEngine()
    svc = VehicleService(engine, VehicleConfig(**config))
    svc.on_motion(0, EgoMotion(8.0, 0.3, 0.0, 0.5))
    return svc, engine


def t(seconds):
    return int(round(seconds * S))


def test_pairing_within_and_outside_the_slop():
    svc, engine = service(sync_slop_s=0.2, roadside_max_age_s=1.0)
    svc.on_roadside_image(t(0.9), ROAD)
    svc.on_roadside_image(t(1.15), ROAD + 1)  # 0.15 s newer than the ego frame: within the slop
    svc.on_ego_image(t(1.0), EGO)
    plan = svc.step(t(1.0))
    assert plan.mode == "fused" and plan.roadside_stamp_ns == t(1.15)
    assert plan.roadside_age_s == pytest.approx(-0.15)
    assert engine.inputs[-1].roadside[0, 0, 0] == 161
    svc.on_roadside_image(t(1.5), ROAD)  # 0.4 s ahead of the next ego frame: beyond the slop
    svc.on_ego_image(t(1.1), EGO)
    assert svc.step(t(1.1)).roadside_stamp_ns == t(1.15)
    svc2, _ = service(sync_slop_s=0.2, roadside_max_age_s=1.0)
    svc2.on_roadside_image(t(0.5), ROAD)  # 1.5 s old: stale
    svc2.on_ego_image(t(2.0), EGO)
    plan = svc2.step(t(2.0))
    assert plan.mode == "ego_only" and svc2.counts["roadside_unpaired"] == 1
    assert svc2.engine.inputs[-1].roadside is None


def test_roadside_loss_and_return_enter_and_leave_the_degraded_mode():
    svc, _ = service(roadside_max_age_s=1.0)
    modes = []
    for k in range(60):  # 6 s at 10 Hz; the roadside sends at 2 Hz except from 2 s to 4 s
        now = t(k / 10)
        if k % 5 == 0 and not 20 <= k < 40:
            svc.on_roadside_image(now, ROAD)
        svc.on_ego_image(now, EGO)
        modes.append(svc.step(now).mode)
    assert modes[:26] == ["fused"] * 26  # the 1.5 s frame serves until it is older than 1 s
    assert modes[26:40] == ["ego_only"] * 14
    assert modes[40:] == ["fused"] * 20  # back as soon as a frame arrives
    assert svc.counts["mode_ego_only_entered"] == 1 and svc.counts["mode_fused_entered"] == 1
    assert svc.counts["cycles_ego_only"] == 14 and svc.counts["cycles_fused"] == 46


def test_no_description_yet_then_fresh_then_stale():
    cache = DescriptionCache(max_age_s=0.5)
    svc = VehicleService(RecordingEngine(), VehicleConfig(), descriptions=cache)
    svc.on_ego_image(t(1.0), EGO)
    assert svc.step(t(1.0)).description_state == "none"
    cache.put(Description("a truck on the right", t(1.05)))
    svc.on_ego_image(t(1.1), EGO)
    plan = svc.step(t(1.1))
    assert (plan.description, plan.description_state) == ("a truck on the right", "fresh")
    assert plan.description_age_s == pytest.approx(0.05)
    svc.on_ego_image(t(2.0), EGO)
    plan = svc.step(t(2.0))
    assert plan.description is None and plan.description_state == "stale"
    assert svc.counts["description_none"] == 1 and svc.counts["description_stale"] == 1


def test_a_describer_slower_than_the_camera_on_a_logical_clock():
    cache = DescriptionCache(max_age_s=2.0)
    calls = []
    describer = ClockedDescriber(lambda image: calls.append(1) or f"view {len(calls)}", cache, rate_hz=1.0)
    svc = VehicleService(RecordingEngine(), VehicleConfig(), describer=describer, descriptions=cache)
    ages = []
    for k in range(30):
        svc.on_ego_image(t(k / 10), EGO)
        ages.append(svc.step(t(k / 10)).description_age_s)
    assert len(calls) == 3 and describer.counts["skipped_rate"] == 27
    assert ages[:12] == pytest.approx([0.0, .1, .2, .3, .4, .5, .6, .7, .8, .9, 0.0, .1])


def test_a_threaded_describer_never_blocks_planning_and_survives_errors_and_hangs():
    cache = DescriptionCache(max_age_s=5.0)

    def slow(image):
        if image[0, 0, 0] == 1:
            raise RuntimeError("describer crashed")
        if image[0, 0, 0] == 2:
            time.sleep(0.6)
            return "late"
        time.sleep(0.05)
        return "ok"

    describer = ThreadedDescriber(slow, cache, rate_hz=50.0, deadline_s=0.3)
    try:
        svc = VehicleService(RecordingEngine(), VehicleConfig(), describer=describer, descriptions=cache)
        began = time.perf_counter()
        for k in range(10):  # ten frames in a burst: the describer takes the newest when free
            svc.on_ego_image(t(k / 10), EGO)
            svc.step(t(k / 10))
        assert time.perf_counter() - began < 0.3  # planning did not wait for the describer
        time.sleep(0.2)
        assert describer.counts["described"] >= 1 and describer.counts["superseded"] >= 1
        describer.submit(t(2), np.full((4, 4, 3), 1, np.uint8))
        time.sleep(0.1)
        assert describer.counts["errors"] == 1
        describer.submit(t(3), np.full((4, 4, 3), 2, np.uint8))
        time.sleep(0.4)
        assert describer.status() == "hung" and describer.counts["hung"] == 1
        time.sleep(0.4)
        assert describer.status() == "idle" and describer.counts["late"] == 1
        assert cache.get(t(3))[0] == "late"
    finally:
        describer.close()


def test_frames_out_of_order_duplicated_or_faster_than_planning():
    svc, engine = service()
    for k in (10, 11, 12):  # three frames arrive between two steps
        svc.on_ego_image(t(k / 10), EGO)
    svc.on_ego_image(t(1.1), EGO)  # late
    svc.on_ego_image(t(1.2), EGO)  # repeated stamp
    plan = svc.step(t(1.2))
    assert plan.stamp_ns == t(1.2)
    assert svc.drops == {"ego_superseded": 2, "ego_out_of_order": 1, "ego_duplicate_stamp": 1}
    assert svc.step(t(1.3)) is None and svc.counts["steps_without_new_ego_frame"] == 1
    svc.on_ego_image(t(60.0), EGO, now_ns=t(1.3))  # years are not needed: a minute ahead is enough
    assert svc.drops["ego_from_the_future"] == 1
    svc.on_ego_image(t(1.4), EGO)
    assert svc.step(t(2.5)) is None and svc.drops["ego_too_old"] == 1


@pytest.mark.parametrize("data", [b"", b"\xff\xd8garbage", b"GIF89a....", JPEG[: len(JPEG) // 2]])
def test_corrupt_or_empty_images_are_dropped_and_planning_goes_on(data):
    svc, _ = service()
    svc.on_roadside_image(t(0.95), encoded=data)
    svc.on_ego_image(t(1.0), encoded=data)
    assert svc.step(t(1.0)) is None and svc.drops["ego_undecodable"] == 1
    svc.on_ego_image(t(1.1), encoded=JPEG)
    plan = svc.step(t(1.1))
    assert plan is not None and plan.mode == "ego_only" and svc.drops["roadside_undecodable"] == 1


def test_bad_motion_and_default_command():
    svc, engine = service(default_command="left")
    svc.on_motion(t(1), EgoMotion(float("nan"), 0.0, 0.0, 0.5))
    svc.on_ego_image(t(1.0), EGO)
    svc.step(t(1.0))
    assert svc.drops["motion_not_finite"] == 1 and engine.inputs[-1].motion.speed_mps == 8.0
    assert engine.inputs[-1].command is Command.LEFT
    svc.on_command(Command.RIGHT)
    svc.on_ego_image(t(1.1), EGO)
    assert svc.step(t(1.1)).command is Command.RIGHT
    with pytest.raises(ValueError, match="default_command"):
        VehicleConfig(default_command="UP")


def test_with_the_real_planning_step(tiny_model_dir):
    engine = PlannerEngine(load_model(tiny_model_dir))
    svc = VehicleService(engine, VehicleConfig())
    svc.on_motion(0, EgoMotion(6.0, 0.0, 0.0, 0.5))
    svc.on_roadside_image(t(0.95), encoded=cv2.imencode(".jpg", ROAD)[1].tobytes())
    svc.on_ego_image(t(1.0), encoded=JPEG)
    plan = svc.step(t(1.0))
    svc.record_publish(0.5)
    assert plan.mode == "fused" and plan.xy.shape == (10, 2) and np.isfinite(plan.xy).all()
    stats = svc.diagnostics()["latency_ms"]
    stages = {"preprocess", "vision", "encoder", "decoder", "decode", "refine", "publish", "total"}
    assert set(stats) >= stages
    assert stats["total"]["p50"] >= stats["decoder"]["p50"] > 0


def test_an_encoded_roadside_frame_is_decoded_once_for_all_the_ego_frames_it_serves(monkeypatch):
    from v2x_vlm_ros.runtime import vehicle as vehicle_module

    calls = []
    real = vehicle_module.decode_image
    monkeypatch.setattr(vehicle_module, "decode_image", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    svc, engine = service(roadside_max_age_s=1.0)
    road_png = cv2.imencode(".png", ROAD)[1].tobytes()
    svc.on_roadside_image(t(1.0), encoded=road_png)
    for k in range(5):  # a 2 Hz roadside frame, five 10 Hz ego frames
        svc.on_ego_image(t(1.0 + 0.1 * k), EGO)
        plan = svc.step(t(1.0 + 0.1 * k))
        assert plan.mode == "fused" and plan.roadside_stamp_ns == t(1.0)
        assert np.array_equal(engine.inputs[-1].roadside, ROAD)
    assert len(calls) == 1


def test_a_blank_roadside_frame_is_dropped_and_the_cycle_runs_ego_only():
    """A dead roadside camera (one colour, raw or JPEG): no information, planned as none."""
    svc, engine = service()
    svc.on_roadside_image(t(0.95), np.full((81, 144, 3), 128, np.uint8))
    svc.on_ego_image(t(1.0), EGO)
    plan = svc.step(t(1.0))
    assert plan.mode == "ego_only" and engine.inputs[-1].roadside is None
    assert svc.drops["roadside_blank"] == 1 and not svc.roadside.frames
    dark = cv2.imencode(".jpg", np.full((81, 144, 3), 30, np.uint8))[1].tobytes()
    svc.on_roadside_image(t(1.05), encoded=dark)
    svc.on_ego_image(t(1.1), EGO)
    assert svc.step(t(1.1)).mode == "ego_only" and svc.drops["roadside_blank"] == 2
    svc.on_roadside_image(t(1.15), ROAD)  # a frame with texture is fused again
    svc.on_ego_image(t(1.2), EGO)
    assert svc.step(t(1.2)).mode == "fused" and svc.drops["roadside_blank"] == 2
    check_accounting(svc)
