"""The training switches on top of the paper's recipe: resolution and JPEG-quality
augmentation, roadside dropout, VLM-E2E's learnable modality-weighted fusion (its weights
logged and stored with a model that transformers' native classes still load), and the
trajectory targets' label spreading and first-waypoint weight. How samples are drawn is in
test_training_sampling.py, the training-only probes in test_training_probes.py."""

import csv
import json

import numpy as np
import pytest
import torch
from transformers import Florence2ForConditionalGeneration

from v2x_vlm_ros.data.dair import DairV2XDataset
from v2x_vlm_ros.model.configuration import ModelSettings
from v2x_vlm_ros.model.fusion import ModalityWeights, install, token_scale
from v2x_vlm_ros.model.modeling import load_model
from v2x_vlm_ros.training.config import TrainConfig
from v2x_vlm_ros.training.data import Augmentation, PlanningExamples
from v2x_vlm_ros.training.trainer import train

from training_support import SAMPLE, random_image, tiny_builder, train_config


def test_resolution_augmentation_shrinks_within_its_range():
    aug = Augmentation(resolution=(0.25, 0.5), p=1.0)
    sizes = []
    for k in range(40):
        out = aug(random_image(), np.random.default_rng(k))
        h, w = out.shape[:2]
        assert 0.25 * 144 - 1 <= w <= 0.5 * 144 + 1 and abs(w / h - 144 / 81) < 0.15
        sizes.append(w)
    assert len(set(sizes)) > 5  # drawn, not fixed
    image = random_image()
    assert aug(image, np.random.default_rng(3)).shape == aug(image, np.random.default_rng(3)).shape


def test_jpeg_quality_augmentation_reencodes_and_p_zero_is_the_identity():
    img = random_image()
    low = Augmentation(jpeg_quality=(5, 5), p=1.0)(img, np.random.default_rng(0))
    high = Augmentation(jpeg_quality=(95, 95), p=1.0)(img, np.random.default_rng(0))
    assert low.shape == img.shape
    err_low = np.abs(low.astype(int) - img).mean()
    err_high = np.abs(high.astype(int) - img).mean()
    assert err_low > err_high > 0
    off = Augmentation(resolution=(0.2, 0.3), jpeg_quality=(5, 10), p=0.0)
    assert np.array_equal(off(img, np.random.default_rng(0)), img)
    assert not Augmentation().active


def test_examples_apply_dropout_and_augmentation_deterministically_per_epoch():
    ds = DairV2XDataset(SAMPLE)
    plain = PlanningExamples(ds)
    dropped = PlanningExamples(ds, roadside_dropout=0.5, seed=1)
    n = 60
    none_count = sum(dropped[i]["roadside"] is None for i in range(n))
    assert 15 <= none_count <= 45 and dropped.dropped == none_count
    assert all(plain[i]["roadside"] is not None for i in range(5))
    again = PlanningExamples(ds, roadside_dropout=0.5, seed=1)

    def pattern(examples):
        return [examples[i]["roadside"] is None for i in range(n)]

    assert pattern(again) == pattern(dropped)
    again.set_epoch(1)
    assert pattern(again) != pattern(dropped)
    # uniform fills: the same examples are dropped, now some as a uniform grey image
    mixed = PlanningExamples(ds, roadside_dropout=0.5, seed=1, roadside_dropout_uniform=0.5)
    kinds = []
    for i in range(n):
        road = mixed[i]["roadside"]
        if road is None or not np.array_equal(road, plain[i]["roadside"]):
            kinds.append("none" if road is None else "uniform")
            if road is not None:
                assert road.shape == plain[i]["roadside"].shape and road.dtype == np.uint8
                assert np.all(road == road.flat[0])
    assert len(kinds) == none_count and mixed.dropped == none_count
    assert 0 < kinds.count("uniform") == mixed.uniform < none_count
    aug = PlanningExamples(ds, augment=Augmentation(resolution=(0.3, 0.6), p=1.0), seed=1)
    ex = aug[0]
    assert ex["ego"].shape[1] < plain[0]["ego"].shape[1]
    assert ex["roadside"].shape[1] < plain[0]["roadside"].shape[1]
    assert np.array_equal(plain[0]["ego"], PlanningExamples(ds, augment=Augmentation())[0]["ego"])


def test_token_scale_follows_the_fused_canvas():
    settings = ModelSettings(image_size=(96, 256))  # 3 x 8 cells + the pooled token
    scale = token_scale(torch.tensor([2.0, 0.5, 0.25]), settings, 30)
    assert scale.shape == (30,)
    assert scale[0] == pytest.approx(1.25)  # pooled: the mean of the two images
    cells = scale[1:25].view(3, 8)
    assert torch.all(cells[:, :4] == 2.0) and torch.all(cells[:, 4:] == 0.5)  # ego left, roadside right
    assert torch.all(scale[25:] == 0.25)  # the prompt


def test_modality_weights_start_at_one_and_keep_their_sum():
    w = ModalityWeights()
    assert torch.allclose(w.weights(), torch.ones(3))
    with torch.no_grad():
        w.logits += torch.tensor([1.0, 0.0, -1.0])
    assert w.weights().sum().item() == pytest.approx(3.0) and w.weights()[0] > w.weights()[2]
    assert ModalityWeights((2.0, 0.5, 0.5)).as_tuple() == pytest.approx((2.0, 0.5, 0.5))
    with pytest.raises(ValueError):
        ModalityWeights((1.0, -1.0, 1.0))


def _encode(model, ids):
    with torch.no_grad():
        embeds = model.get_input_embeddings()(ids)
        return model.model.language_model.encoder(inputs_embeds=embeds).last_hidden_state


def test_stored_weights_scale_the_encoder_output_and_can_be_removed(tiny_model_dir):
    loaded = load_model(tiny_model_dir)
    ids = torch.randint(3, 50, (1, 40))
    plain = _encode(loaded.model, ids)
    settings = ModelSettings(image_size=loaded.settings.image_size, modality_weights=(1.5, 0.6, 0.9))
    install(loaded.model, settings)
    weighted = _encode(loaded.model, ids)
    want = token_scale(torch.tensor([1.5, 0.6, 0.9]), settings, 40).view(1, -1, 1)
    assert torch.allclose(weighted, plain * want, atol=1e-6)
    install(loaded.model, ModelSettings(image_size=loaded.settings.image_size))  # none: removes it
    assert torch.allclose(_encode(loaded.model, ids), plain)


def test_training_learns_logs_and_stores_modality_weights(tmp_path, tiny_model_dir):
    summary = train(train_config(tmp_path, tiny_model_dir, max_steps=6, modality_weights=True,
                                 roadside_dropout=0.3, augment_resolution=(0.4, 1.0),
                                 augment_jpeg_quality=(30, 90)), progress=False)
    run = tmp_path / "run"
    rows = list(csv.DictReader(open(run / "train_log.csv")))
    weights = [(float(r["w_ego"]), float(r["w_roadside"]), float(r["w_text"])) for r in rows]
    assert len(weights) == 6 and all(sum(w) == pytest.approx(3.0, abs=1e-4) for w in weights)
    assert weights[-1] != weights[0]  # they are trained
    assert summary["roadside_dropped"] > 0
    stored = json.loads((run / "model" / "v2x_vlm.json").read_text())["modality_weights"]
    assert stored == pytest.approx(list(summary["modality_weights"])) and stored != [1.0, 1.0, 1.0]
    # the shipped model stays a plain Florence-2 for transformers, and ours applies the weights
    native = Florence2ForConditionalGeneration.from_pretrained(run / "model", use_safetensors=True)
    ours = load_model(run / "model")
    ids = torch.randint(3, 50, (1, 40))
    want = token_scale(torch.tensor(stored), ours.settings, 40).view(1, -1, 1)
    assert torch.allclose(_encode(ours.model, ids), _encode(native, ids) * want, atol=1e-5)
    card = (run / "model" / "README.md").read_text()
    assert "modality-weighted fusion True" in card and "roadside dropout 0.3" in card


def test_switches_off_write_no_weights_and_no_dropout(tmp_path, tiny_model_dir):
    summary = train(train_config(tmp_path, tiny_model_dir, max_steps=2), progress=False)
    assert summary["modality_weights"] is None and summary["roadside_dropped"] == 0
    assert "modality_weights" not in json.loads((tmp_path / "run" / "model" / "v2x_vlm.json").read_text())
    rows = list(csv.DictReader(open(tmp_path / "run" / "train_log.csv")))
    assert rows[0]["w_ego"] == ""


def test_resume_with_modality_weights_continues_exactly(tmp_path, tiny_model_dir):
    opts = dict(modality_weights=True, roadside_dropout=0.3, augment_resolution=(0.4, 1.0))
    train(train_config(tmp_path / "a", tiny_model_dir, max_steps=6, **opts), progress=False)
    train(train_config(tmp_path / "b", tiny_model_dir, max_steps=3, **opts), progress=False)
    resumed = train(train_config(tmp_path / "b", tiny_model_dir, max_steps=6, **opts), progress=False)
    straight = json.loads((tmp_path / "a" / "run" / "summary.json").read_text())
    assert resumed["modality_weights"] == pytest.approx(straight["modality_weights"], abs=1e-6)


def test_bad_switch_values_are_rejected():
    with pytest.raises(ValueError, match="augment_resolution"):
        TrainConfig(augment_resolution=(0.0, 1.0))
    with pytest.raises(ValueError, match="augment_jpeg_quality"):
        TrainConfig(augment_jpeg_quality=(50, 120))
    with pytest.raises(ValueError, match="roadside_dropout"):
        TrainConfig(roadside_dropout=1.5)
    with pytest.raises(ValueError) as err:
        TrainConfig(roadside_dropout_uniform=-0.1)
    assert str(err.value) == "roadside_dropout_uniform must be in [0, 1], got -0.1"


def test_the_teacher_sees_a_uniform_roadside_as_left_out(tiny_model_dir):
    """A uniform roadside image (roadside_dropout_uniform) reaches the student; the
    teacher's batch holds the roadside left out instead (the input it learned "no roadside
    view" from), and nothing else differs. Without a teacher, or without a uniform
    example, no second batch is built."""
    from v2x_vlm_ros.training.data import PairedCollate

    ds = DairV2XDataset(SAMPLE)
    _, builder = tiny_builder(tiny_model_dir)
    real = PlanningExamples(ds)
    blank = PlanningExamples(ds, roadside_dropout=1.0, roadside_dropout_uniform=1.0, seed=3)
    left_out = PlanningExamples(ds, roadside_dropout=1.0, seed=3)
    examples = [real[0], blank[1], real[2]]
    assert [e["roadside_blank"] for e in examples] == [False, True, False]
    assert left_out[1]["roadside"] is None and not left_out[1]["roadside_blank"]
    batch = PairedCollate(builder, None, distill=True)(examples)
    student_px, teacher_px = batch["pixel_values"], batch["teacher"]["pixel_values"]
    # the teacher's inputs are those of the roadside left out for example 1, the same otherwise
    expected = builder([real[0], left_out[1], real[2]])["pixel_values"]
    assert torch.equal(teacher_px, expected)
    assert torch.equal(teacher_px[[0, 2]], student_px[[0, 2]])
    assert not torch.equal(teacher_px[1], student_px[1])
    for key in ("input_ids", "labels", "traj_mask"):
        assert torch.equal(batch["teacher"][key], batch[key])
    # the student's own roadside half is the uniform image: one value per channel
    width = student_px.shape[-1]
    right = student_px[1, :, :, width // 2 + 2:]
    assert torch.allclose(right, right[:, :1, :1].expand_as(right))
    assert "teacher" not in PairedCollate(builder, None, distill=False)(examples)
    assert "teacher" not in PairedCollate(builder, None, distill=True)([real[0], real[2]])


def test_spread_label_targets_change_the_trained_loss_and_are_on_the_card(tmp_path, tiny_model_dir):
    """label_sigma_bins reaches the trajectory loss (same seed, same first batch: another
    loss) and the model card says how the targets were written."""
    def first_traj(run, **kw):
        train(train_config(tmp_path, tiny_model_dir, max_steps=1, output_dir=str(tmp_path / run), **kw),
              progress=False)
        rows = list(csv.DictReader(open(tmp_path / run / "train_log.csv")))
        return float(rows[0]["traj"]), (tmp_path / run / "model" / "README.md").read_text()

    onehot, card0 = first_traj("onehot")
    spread, card = first_traj("spread", label_sigma_bins=2.0)
    again, _ = first_traj("spread_again", label_sigma_bins=2.0)
    assert spread == pytest.approx(again, rel=1e-6)  # deterministic: the difference is the targets
    assert abs(spread - onehot) > 1e-3
    assert "targets spread over 2.0 bins (0: one-hot)" in card
    assert "targets spread over 0.0 bins (0: one-hot)" in card0


@pytest.mark.parametrize("value, message", [
    (-1.0, "label_sigma_bins must be >= 0 (0: one-hot targets), got -1.0"),
    (float("inf"), "label_sigma_bins must be >= 0 (0: one-hot targets), got inf"),
    (True, "label_sigma_bins must be >= 0 (0: one-hot targets), got True"),
    ("3", "label_sigma_bins must be >= 0 (0: one-hot targets), got '3'"),
])
def test_label_sigma_bins_config_errors(value, message):
    with pytest.raises(ValueError) as err:
        TrainConfig(data_root=SAMPLE, label_sigma_bins=value)
    assert str(err.value) == message
    assert TrainConfig(data_root=SAMPLE, label_sigma_bins=3).label_sigma_bins == 3.0


def test_decision_weight_scales_the_first_waypoints_losses_and_is_on_the_card(tmp_path, tiny_model_dir):
    """decision_weight w adds (w - 1) x the first waypoint's terms to the trajectory and the
    distillation losses (same seed, same first batch): both are affine in w, and w = 1 is
    the plain mean."""
    def first_step(run, **kw):
        train(train_config(tmp_path, tiny_model_dir, max_steps=1, teacher=str(tiny_model_dir),
                           output_dir=str(tmp_path / run), **kw), progress=False)
        row = next(csv.DictReader(open(tmp_path / run / "train_log.csv")))
        return float(row["traj"]), float(row["kd"]), (tmp_path / run / "model" / "README.md").read_text()

    traj1, kd1, card1 = first_step("w1")
    traj2, kd2, _ = first_step("w2", decision_weight=2.0)
    traj5, kd5, card5 = first_step("w5", decision_weight=5)
    assert traj2 > traj1 + 1e-3 and kd2 > kd1 + 1e-4
    assert traj5 - traj1 == pytest.approx(4 * (traj2 - traj1), rel=1e-4)
    assert kd5 - kd1 == pytest.approx(4 * (kd2 - kd1), rel=1e-4)
    assert "loss weight of the first waypoint written 5.0" in card5
    assert "loss weight of the first waypoint written 1.0" in card1


@pytest.mark.parametrize("value, message", [
    (0, "decision_weight must be a number > 0 (1: every position alike), got 0"),
    (float("nan"), "decision_weight must be a number > 0 (1: every position alike), got nan"),
    (True, "decision_weight must be a number > 0 (1: every position alike), got True"),
    ("4", "decision_weight must be a number > 0 (1: every position alike), got '4'"),
])
def test_decision_weight_config_errors(value, message):
    with pytest.raises(ValueError) as err:
        TrainConfig(data_root=SAMPLE, decision_weight=value)
    assert str(err.value) == message
    assert TrainConfig(data_root=SAMPLE, decision_weight=4).decision_weight == 4.0


def test_a_roadside_crop_is_trained_stored_and_on_the_card(tmp_path, tiny_model_dir):
    train(train_config(tmp_path, tiny_model_dir, max_steps=2, roadside_crop=[0, 0, 1, 0.6]), progress=False)
    model = tmp_path / "run" / "model"
    assert json.loads((model / "v2x_vlm.json").read_text())["roadside_crop"] == [0.0, 0.0, 1.0, 0.6]
    assert load_model(model).settings.roadside_crop == (0.0, 0.0, 1.0, 0.6)
    assert "roadside crop (0.0, 0.0, 1.0, 0.6)" in (model / "README.md").read_text()
    # without it the model sees the whole image and its settings say nothing of a crop
    train(train_config(tmp_path / "plain", tiny_model_dir, max_steps=1), progress=False)
    plain = tmp_path / "plain" / "run" / "model" / "v2x_vlm.json"
    assert "roadside_crop" not in json.loads(plain.read_text())


def test_a_teacher_without_the_students_crop_gets_its_own_inputs(tiny_model_dir):
    """The teacher was trained on the whole roadside image: a cropping student's batch is
    not the teacher's input."""
    from v2x_vlm_ros.training.trainer import teacher_needs_own_inputs

    teacher, student = load_model(tiny_model_dir), load_model(tiny_model_dir)
    assert not teacher_needs_own_inputs(teacher, student)
    student.settings.roadside_crop = (0.0, 0.0, 1.0, 0.6)
    assert teacher_needs_own_inputs(teacher, student)
    student.settings.roadside_crop = None
    student.settings.image_size = (96, 256)
    assert teacher_needs_own_inputs(teacher, student)


@pytest.mark.parametrize("changes, message", [
    (dict(roadside_crop=[0, 0, 1, 0.6], fusion=False),
     "roadside_crop needs fusion: without it the model sees no roadside image"),
    (dict(roadside_crop=[0, 0, 1, 0.6], lambda_objects=1.0),
     "roadside_crop and lambda_objects > 0 do not go together: the dense probe's boxes are fractions "
     "of the whole roadside image"),
    (dict(roadside_crop=[0, 0.7, 1, 0.6]),
     "roadside_crop must be fractions of the image with 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1, "
     "got [0.0, 0.7, 1.0, 0.6]"),
])
def test_roadside_crop_config_errors(changes, message):
    with pytest.raises(ValueError) as err:
        TrainConfig(**changes)
    assert str(err.value) == message
