"""Motion in the roadside view (``ModelSettings.roadside_motion_s``): the earlier roadside frame
from the dataset's history, stacked above the current one in the canvas, through the engine,
the eval ablations, training's examples and the vehicle service."""

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from v2x_vlm_ros.data.dair import DairV2XDataset
from v2x_vlm_ros.data.images import earlier_roadside_image, load_image
from v2x_vlm_ros.data.records import ROADSIDE_HISTORY_S, Command, EgoMotion, roadside_before
from v2x_vlm_ros.eval.perturb import BlankRoadside, GreyRoadside, SwapRoadside
from v2x_vlm_ros.model.configuration import PRESETS, ModelSettings
from v2x_vlm_ros.model.modeling import build_model, save_model
from v2x_vlm_ros.model.processing import ImagePreprocessor
from v2x_vlm_ros.runtime.engine import PlanInput
from v2x_vlm_ros.runtime.planner import ModelPlanner
from v2x_vlm_ros.runtime.sync import Stamped, pick_earlier
from v2x_vlm_ros.training.config import TrainConfig
from v2x_vlm_ros.training.data import Augmentation, PlanningExamples

CROP = (0.0, 0.1, 1.0, 0.6)


@pytest.fixture(scope="module")
def dataset(world):
    return DairV2XDataset(world)


@pytest.fixture(scope="module")
def motion_model_dir(tmp_path_factory, tiny_tokenizer):
    out = tmp_path_factory.mktemp("motion_model")
    model = build_model("tiny", tiny_tokenizer, seed=0)
    settings = ModelSettings(image_size=PRESETS["tiny"].image_size, roadside_crop=CROP, roadside_motion_s=0.5)
    save_model(out, model, tiny_tokenizer, settings)
    return out


# -- the data: each sample's roadside history ------------------------------------------------


def _infra_records(world):
    return json.loads((world / "infrastructure-side" / "data_info.json").read_text())


def test_the_history_holds_the_same_sequences_earlier_frames_in_time_order(world, dataset):
    records = {str(world / "infrastructure-side" / r["image_path"]): r for r in _infra_records(world)}
    for i in (0, 5, 40, len(dataset) - 1):
        s = dataset[i]
        own = records[str(s.roadside_image_path)]
        stamps = [stamp for stamp, _ in s.roadside_history]
        assert stamps == sorted(stamps)
        assert all(0 < s.roadside_timestamp_us - t <= ROADSIDE_HISTORY_S * 1e6 for t in stamps)
        for stamp, path in s.roadside_history:
            rec = records[str(path)]
            assert rec["sequence_id"] == own["sequence_id"] and int(rec["image_timestamp"]) == stamp
        # every earlier frame of the sequence within the window is there (the world is 10 Hz)
        window = ROADSIDE_HISTORY_S * 1e6
        expected = sum(1 for r in records.values() if r["sequence_id"] == own["sequence_id"]
                       and 0 < s.roadside_timestamp_us - int(r["image_timestamp"]) <= window)
        assert len(s.roadside_history) == expected
    assert dataset[20].roadside_history and len(dataset[20].roadside_history) >= 19


def test_roadside_before_picks_the_frame_nearest_the_time_within_the_tolerance(dataset):
    s = dataset[20]
    stamp, path = roadside_before(s, 0.5)
    assert abs(s.roadside_timestamp_us - stamp - 500_000) <= 60_000  # 10 Hz frames: within half a period
    nearest = min(s.roadside_history, key=lambda e: abs(s.roadside_timestamp_us - 500_000 - e[0]))
    assert (stamp, path) == nearest
    # a sequence's first frames have none that far back; nor does a history moved out of reach
    first = dataset[0]
    assert all(first.roadside_timestamp_us - t < 400_000 for t, _ in first.roadside_history)
    assert roadside_before(first, 0.5) is None
    gap = replace(s, roadside_history=tuple(e for e in s.roadside_history  # frames lost: nearest 0.3 s off
                                            if s.roadside_timestamp_us - e[0] > 750_000))
    assert roadside_before(gap, 0.5, tolerance_s=0.1) is None
    assert roadside_before(gap, 0.5, tolerance_s=0.5) == gap.roadside_history[-1]
    assert earlier_roadside_image(s, None) is None
    assert np.array_equal(earlier_roadside_image(s, 0.5), load_image(path))


# -- the settings ----------------------------------------------------------------------------------


def test_motion_is_stored_with_the_settings_and_omitted_when_unset(tmp_path):
    settings = ModelSettings(image_size=(96, 256), roadside_motion_s=1)
    assert settings.roadside_motion_s == 1.0 and isinstance(settings.roadside_motion_s, float)
    settings.save(tmp_path)
    assert ModelSettings.load(tmp_path).roadside_motion_s == 1.0
    assert "roadside_motion_s" not in json.loads(ModelSettings(image_size=(96, 256)).to_json())


@pytest.mark.parametrize("value", [0, -0.5, 2.5, math.nan, math.inf, True, "0.5", None])
def test_bad_motion_settings_are_refused_naming_the_setting(value):
    if value is None:
        assert ModelSettings(image_size=(96, 256), roadside_motion_s=None).roadside_motion_s is None
        return
    with pytest.raises(ValueError) as err:
        ModelSettings(image_size=(96, 256), roadside_motion_s=value)
    assert str(err.value) == f"roadside_motion_s must be seconds in (0, 2], got {value!r}"


def test_training_refuses_motion_without_fusion_or_with_the_dense_probe():
    with pytest.raises(ValueError, match="roadside_motion_s needs fusion"):
        TrainConfig(fusion=False, roadside_motion_s=0.5)
    with pytest.raises(ValueError, match="roadside_motion_s and lambda_objects > 0 do not go together"):
        TrainConfig(roadside_motion_s=0.5, lambda_objects=1.0)
    with pytest.raises(ValueError, match=r"roadside_motion_s must be seconds in \(0, 2\], got -1"):
        TrainConfig(roadside_motion_s=-1)
    assert TrainConfig(roadside_motion_s=0.5).roadside_motion_s == 0.5


# -- the canvas ------------------------------------------------------------------------------------


def _scene(h, w, seed):
    """Smooth shading, a hard-edged block and noise (BGR, uint8)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([(xx * 255 / w), (yy * 255 / h), ((xx + yy) % 64) * 4], axis=-1)
    img[h // 3: h // 2, w // 4 + 20 * seed: w // 2] = (20, 200, 240)
    return np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)


def _bands(h, w, colours):
    img = np.zeros((h, w, 3), np.uint8)
    for k, c in enumerate(colours):
        img[k * h // len(colours):(k + 1) * h // len(colours)] = c
    return img


def test_the_earlier_box_is_stacked_above_the_current_one():
    ego = np.full((216, 384, 3), 77, np.uint8)
    current, earlier = _scene(216, 384, 0), _scene(216, 384, 1)
    prep = ImagePreprocessor(ModelSettings(image_size=(96, 256), roadside_crop=CROP, roadside_motion_s=0.5))
    u8 = prep.fuse_u8(ego, current, bgr=True, previous=earlier)
    assert u8.shape == (216, 768, 3) and np.array_equal(u8[:, :384], ego)
    # the reference, by hand with Pillow: both boxes cut (rows 21-130), stacked, resized
    boxes = np.concatenate([earlier[21:130], current[21:130]], axis=0)
    pil = np.asarray(Image.fromarray(boxes[..., ::-1].copy()).resize((384, 216), Image.BICUBIC))
    assert np.abs(u8[:, 384:][..., ::-1].astype(np.int16) - pil).max() <= 1
    # the device (float) path agrees with the 8-bit one on the model's input
    tensors = [torch.from_numpy(x[..., ::-1].copy()).permute(2, 0, 1) for x in (ego, current, earlier)]
    std = torch.tensor(prep.settings.image_std).view(1, 3, 1, 1)
    levels = ((prep([(ego, current, earlier)]) - prep([tuple(tensors)])).abs() * std * 255).max()
    assert float(levels) <= 1.0 + 1e-3


def test_a_missing_earlier_frame_shows_the_current_one_twice_and_one_frame_models_ignore_it():
    ego = np.full((216, 384, 3), 77, np.uint8)
    current = _bands(216, 384, [(0, 0, 255), (0, 255, 0), (255, 0, 0)])
    earlier_small = _bands(108, 192, [(255, 255, 255), (0, 0, 0), (9, 9, 9)])  # another size
    motion = ImagePreprocessor(ModelSettings(image_size=(96, 256), roadside_motion_s=0.5))
    twice = motion.fuse_u8(ego, current, bgr=True, previous=None)[:, 384:]
    # the same frame above and below (but for the rows the resize filter reaches across the seam)
    assert np.array_equal(twice[4:104], twice[112:212])
    stacked = motion.fuse_u8(ego, current, bgr=True, previous=earlier_small)[:, 384:]
    assert (stacked[:30] == 255).all() and (stacked[-30:] == (255, 0, 0)).all()  # earlier top, current bottom
    one_frame = ImagePreprocessor(ModelSettings(image_size=(96, 256)))
    assert torch.equal(one_frame([(ego, current, earlier_small)]), one_frame([(ego, current)]))
    # without a roadside view the earlier frame changes nothing: the mean colour
    assert torch.equal(motion([(ego, None, earlier_small)]), one_frame([(ego, None)]))


def test_the_blue_layout_gives_the_current_box_the_earlier_boxs_blue_channel():
    ego = np.full((216, 384, 3), 77, np.uint8)
    current, earlier = _scene(216, 384, 0), _scene(216, 384, 1)
    blue = ModelSettings(image_size=(96, 256), roadside_crop=CROP, roadside_motion_s=0.5,
                         roadside_motion_layout="blue")
    prep = ImagePreprocessor(blue)
    u8 = prep.fuse_u8(ego, current, bgr=True, previous=earlier)
    assert u8.shape == (216, 768, 3) and np.array_equal(u8[:, :384], ego)
    # the reference, by hand with Pillow: the current box (rows 21-130) at its full scale, its
    # blue channel (BGR: the first) from the earlier frame's box
    box = current[21:130].copy()
    box[..., 0] = earlier[21:130, :, 0]
    pil = np.asarray(Image.fromarray(box[..., ::-1].copy()).resize((384, 216), Image.BICUBIC))
    assert np.abs(u8[:, 384:][..., ::-1].astype(np.int16) - pil).max() <= 1
    # red and green are exactly what a one-frame model with the same crop sees
    one_frame = ImagePreprocessor(ModelSettings(image_size=(96, 256), roadside_crop=CROP))
    alone = one_frame.fuse_u8(ego, current, bgr=True)
    assert np.array_equal(u8[..., 1:], alone[..., 1:]) and not np.array_equal(u8[..., 0], alone[..., 0])
    # the caller's images are left as they were (the crop is a view of them)
    assert np.array_equal(current, _scene(216, 384, 0))
    # the device (float) path agrees with the 8-bit one on the model's input, in RGB order too
    tensors = [torch.from_numpy(x[..., ::-1].copy()).permute(2, 0, 1) for x in (ego, current, earlier)]
    std = torch.tensor(blue.image_std).view(1, 3, 1, 1)
    levels = ((prep([(ego, current, earlier)]) - prep([tuple(tensors)])).abs() * std * 255).max()
    assert float(levels) <= 1.0 + 1e-3
    rgb = [np.ascontiguousarray(x[..., ::-1]) for x in (ego, current, earlier)]
    assert torch.equal(prep([tuple(rgb)], bgr=False), prep([(ego, current, earlier)]))
    # no earlier frame: the one-frame picture (nothing moved)
    assert torch.equal(prep([(ego, current, None)]), one_frame([(ego, current)]))


def test_the_motion_layout_is_stored_checked_and_needs_motion():
    settings = ModelSettings(image_size=(96, 256), roadside_motion_s=0.5, roadside_motion_layout="blue")
    assert json.loads(settings.to_json())["roadside_motion_layout"] == "blue"
    stacked = json.loads(ModelSettings(image_size=(96, 256), roadside_motion_s=0.5).to_json())
    assert "roadside_motion_layout" not in stacked  # the default: older readers keep loading it
    for bad in ("side", "Blue", 1, None):
        with pytest.raises(ValueError) as err:
            ModelSettings(image_size=(96, 256), roadside_motion_s=0.5, roadside_motion_layout=bad)
        assert str(err.value) == f"roadside_motion_layout must be one of stack, blue, got {bad!r}"
    with pytest.raises(ValueError) as err:
        TrainConfig(roadside_motion_layout="blue")
    assert str(err.value) == ("roadside_motion_layout 'blue' needs roadside_motion_s: with one roadside "
                              "frame there is nothing to lay out")
    with pytest.raises(ValueError, match="roadside_motion_layout must be one of stack, blue, got 'x'"):
        TrainConfig(roadside_motion_s=0.5, roadside_motion_layout="x")
    assert TrainConfig(roadside_motion_s=0.5, roadside_motion_layout="blue").roadside_motion_layout == "blue"


# -- planning: the engine, eval and its ablations ---------------------------------------------------


def test_eval_plans_with_the_earlier_frame_and_counts_the_frames_without(
        dataset, motion_model_dir, tiny_model_dir):
    planner = ModelPlanner(motion_model_dir, batch_size=4)
    assert planner.engine.roadside_motion_s == 0.5
    samples = [dataset[i] for i in range(12)]
    frames = planner.inputs(samples)
    for s, f in zip(samples, frames):
        earlier = roadside_before(s, 0.5)
        assert (f.roadside_previous is None) == (earlier is None)
        if earlier is not None:
            assert np.array_equal(f.roadside_previous, load_image(earlier[1]))
    missing = sum(roadside_before(s, 0.5) is None for s in samples)
    assert 0 < missing < len(samples)
    planner.plan_batch(samples)
    assert planner.roadside_previous_missing == missing
    # a model that reads one frame loads no earlier one, and counts nothing
    one_frame = ModelPlanner(tiny_model_dir, batch_size=4)
    assert all(f.roadside_previous is None for f in one_frame.inputs(samples))
    one_frame.plan_batch(samples)
    assert one_frame.roadside_previous_missing == 0


def test_the_engine_flags_a_plan_without_the_earlier_frame(motion_model_dir, tiny_model_dir):
    img = (np.indices((36, 64)).sum(axis=0) % 7 * 30).astype(np.uint8)[..., None].repeat(3, axis=2)
    frame = PlanInput(img, img, "", EgoMotion(5.0, 0.0, 0.0, 0.5), Command.FORWARD)
    engine = ModelPlanner(motion_model_dir).engine
    out = engine.plan([frame, replace(frame, roadside_previous=img[::-1].copy()),
                       replace(frame, roadside=None)])
    assert [o.roadside_previous_missing for o in out] == [True, False, False]
    assert not ModelPlanner(tiny_model_dir).engine.plan([frame])[0].roadside_previous_missing


def test_the_roadside_ablations_take_the_earlier_frame_away_too(dataset):
    samples = [dataset[i] for i in range(len(dataset))]
    s = samples[20]
    frame = PlanInput(load_image(s.ego_image_path), load_image(s.roadside_image_path), "",
                      s.motion, s.command, roadside_previous=earlier_roadside_image(s, 0.5))
    grey = GreyRoadside()(s, frame)
    assert (grey.roadside == 128).all() and (grey.roadside_previous == 128).all()
    assert grey.roadside_previous.shape == frame.roadside_previous.shape
    none = BlankRoadside()(s, frame)
    assert none.roadside is None and none.roadside_previous is None
    swap = SwapRoadside(samples, motion_s=0.5)
    other = swap.source_sample(s)
    assert other.sequence_id != s.sequence_id
    swapped = swap(s, frame)
    assert np.array_equal(swapped.roadside, load_image(other.roadside_image_path))
    assert np.array_equal(swapped.roadside_previous, load_image(roadside_before(other, 0.5)[1]))
    # for a model that reads one frame, the swap gives no earlier frame
    plain = replace(frame, roadside_previous=None)
    assert SwapRoadside(samples)(s, plain).roadside_previous is None


# -- training's examples ---------------------------------------------------------------------------


def test_training_examples_carry_the_earlier_frame_through_dropout_and_augmentation(dataset):
    i = 20
    plain = PlanningExamples(dataset, motion_s=0.5)[i]
    assert np.array_equal(plain["roadside_previous"], load_image(roadside_before(dataset[i], 0.5)[1]))
    assert PlanningExamples(dataset)[i]["roadside_previous"] is None
    assert PlanningExamples(dataset, fusion=False, motion_s=0.5)[i]["roadside_previous"] is None
    # dropped: both gone; shown uniform: both the same uniform colour
    dropped = PlanningExamples(dataset, motion_s=0.5, roadside_dropout=1.0)[i]
    assert dropped["roadside"] is None and dropped["roadside_previous"] is None
    uniform = PlanningExamples(dataset, motion_s=0.5, roadside_dropout=1.0, roadside_dropout_uniform=1.0)[i]
    value = int(uniform["roadside"].flat[0])
    assert (uniform["roadside"] == value).all() and (uniform["roadside_previous"] == value).all()
    # augmented: the earlier frame gets the current one's resolution (and quality)
    aug = Augmentation(resolution=(0.5, 0.6), jpeg_quality=None, p=1.0)
    ex = PlanningExamples(dataset, motion_s=0.5, augment=aug)[i]
    assert ex["roadside_previous"].shape == ex["roadside"].shape != plain["roadside"].shape
    # and the current frame is augmented exactly as without the earlier one (same draws)
    ex_one = PlanningExamples(dataset, augment=aug)[i]
    assert np.array_equal(ex["roadside"], ex_one["roadside"]) and np.array_equal(ex["ego"], ex_one["ego"])
    examples = PlanningExamples(dataset, motion_s=0.5)
    first = next(k for k in range(len(dataset)) if roadside_before(dataset[k], 0.5) is None)
    assert examples[first]["roadside_previous"] is None and examples.previous_missing == 1


# -- the vehicle service -----------------------------------------------------------------------------


def test_pick_earlier_takes_the_frame_nearest_the_time_within_the_tolerance():
    frames = [Stamped(t, t) for t in (0, 480_000_000, 1_000_000_000)]
    assert pick_earlier(1_000_000_000, frames, 0.5, 0.1).stamp_ns == 480_000_000
    assert pick_earlier(1_000_000_000, frames, 0.3, 0.1) is None
    assert pick_earlier(1_000_000_000, [], 0.5, 0.1) is None
    assert pick_earlier(1_000_000_000, frames, 1.0, 0.1).stamp_ns == 0


class _MotionEngine:
    """Stands in for a model that reads motion: records what the service hands it."""

    uses_roadside = True
    roadside_motion_s = 0.5

    def __init__(self):
        self.inputs = []

    def plan(self, inputs):
        from v2x_vlm_ros.runtime.engine import PlanOutput

        self.inputs.extend(inputs)
        xy = np.column_stack([np.arange(1, 11) * 1.0, np.zeros(10)])
        return [PlanOutput(xy=xy, raw_xy=xy, stage_ms={"preprocess": 1.0})]


def test_the_vehicle_hands_the_model_the_roadside_frame_from_half_a_second_before():
    from v2x_vlm_ros.runtime.vehicle import VehicleConfig, VehicleService

    S = 1_000_000_000
    ego = np.full((81, 144, 3), 90, np.uint8)
    roads = []
    for k in range(4):
        road = np.full((81, 144, 3), 100 + 20 * k, np.uint8)
        road[1::2, 1::2] = 10 * k  # texture: a one-colour frame is a dead camera
        roads.append(road)
    engine = _MotionEngine()
    svc = VehicleService(engine, VehicleConfig(roadside_max_age_s=1.0))
    svc.on_motion(0, EgoMotion(8.0, 0.0, 0.0, 0.5))
    svc.on_roadside_image(1 * S, roads[0])
    svc.on_ego_image(int(1.05 * S), ego)
    assert svc.step(int(1.05 * S)).mode == "fused"
    assert engine.inputs[-1].roadside_previous is None and svc.counts["roadside_previous_missing"] == 1
    svc.on_roadside_image(int(1.5 * S), roads[1])  # the 2 Hz stream: the next message
    svc.on_ego_image(int(1.55 * S), ego)
    assert svc.step(int(1.55 * S)).roadside_stamp_ns == int(1.5 * S)
    assert np.array_equal(engine.inputs[-1].roadside, roads[1])
    assert np.array_equal(engine.inputs[-1].roadside_previous, roads[0])
    # a message lost in between: the one a second before is too far back, none is given, counted
    svc.on_roadside_image(int(2.5 * S), roads[3])
    svc.on_ego_image(int(2.55 * S), ego)
    svc.step(int(2.55 * S))
    assert engine.inputs[-1].roadside_previous is None and svc.counts["roadside_previous_missing"] == 2
    # a blank earlier frame (a dead camera then) is no motion either
    svc.on_roadside_image(int(3.0 * S), np.full((81, 144, 3), 128, np.uint8))
    svc.on_roadside_image(int(3.5 * S), roads[2])
    svc.on_ego_image(int(3.55 * S), ego)
    svc.step(int(3.55 * S))
    assert engine.inputs[-1].roadside_previous is None and svc.counts["roadside_previous_missing"] == 3


# -- training ----------------------------------------------------------------------------------------


def test_a_motion_student_is_trained_stored_and_on_the_card(tmp_path, tiny_model_dir):
    from v2x_vlm_ros.model.modeling import load_model
    from v2x_vlm_ros.training.trainer import teacher_needs_own_inputs, train

    from training_support import train_config

    cfg = train_config(tmp_path, tiny_model_dir, max_steps=2, roadside_motion_s=0.5, roadside_crop=list(CROP))
    train(cfg, progress=False)
    model = tmp_path / "run" / "model"
    assert json.loads((model / "v2x_vlm.json").read_text())["roadside_motion_s"] == 0.5
    assert load_model(model).settings.roadside_motion_s == 0.5
    assert "roadside motion 0.5 s" in (model / "README.md").read_text()
    # a teacher that reads one frame is given its own inputs
    teacher, student = load_model(tiny_model_dir), load_model(model)
    assert teacher_needs_own_inputs(teacher, student)
    student.settings.roadside_crop = None
    assert teacher_needs_own_inputs(teacher, student)
    student.settings.roadside_motion_s = None
    assert not teacher_needs_own_inputs(teacher, student)


def test_a_blue_layout_student_is_trained_stored_and_on_the_card(tmp_path, tiny_model_dir):
    from v2x_vlm_ros.model.modeling import load_model
    from v2x_vlm_ros.training.trainer import teacher_needs_own_inputs, train

    from training_support import train_config

    cfg = train_config(tmp_path, tiny_model_dir, max_steps=1, roadside_motion_s=0.5,
                       roadside_motion_layout="blue")
    train(cfg, progress=False)
    model = tmp_path / "run" / "model"
    assert json.loads((model / "v2x_vlm.json").read_text())["roadside_motion_layout"] == "blue"
    assert load_model(model).settings.roadside_motion_layout == "blue"
    assert "roadside motion 0.5 s (blue)" in (model / "README.md").read_text()
    teacher, student = load_model(tiny_model_dir), load_model(model)
    student.settings.roadside_motion_s = teacher.settings.roadside_motion_s = 0.5
    assert teacher_needs_own_inputs(teacher, student)  # the same frames, laid out otherwise
    student.settings.roadside_motion_layout = "stack"
    assert not teacher_needs_own_inputs(teacher, student)
