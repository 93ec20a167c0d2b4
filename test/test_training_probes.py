"""The training-only probes: the roadside-hazard probe (on the roadside image cells or on the
decoder state that writes the first plan token) and the dense objects probe; their labels
read from the sample's sidecar, their losses, checkpoints and resume, and that no probe is
shipped with the model."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from v2x_vlm_ros.data.dair import DairV2XDataset
from v2x_vlm_ros.model.modeling import load_model
from v2x_vlm_ros.training.config import TrainConfig
from v2x_vlm_ros.training.data import PlanningExamples
from v2x_vlm_ros.training.trainer import train

from training_support import SAMPLE, tiny_batch, train_config


def _sidecar_labels(ds) -> list[int]:
    """The probe's labels read straight from the sample's sidecar: 1 where a conflict agent
    is in the frame's roadside list (seen by the ego camera or not)."""
    sidecar = json.loads((Path(SAMPLE) / "visibility.json").read_text())["sequences"]
    out = []
    for i in range(len(ds)):
        entry = sidecar[ds[i].sequence_id]
        frame = entry["frames"][ds[i].vehicle_frame]
        road = set(entry["conflict"]) & set(frame["roadside"])
        # 1: only the roadside camera sees it; -1: the ego camera sees it too; 0: not seen
        out.append(0 if not road else (1 if road - set(frame["ego"]) else -1))
    return out


def test_roadside_hazard_labels_come_from_the_sidecar():
    from v2x_vlm_ros.training.data import roadside_hazard_labels

    ds = DairV2XDataset(SAMPLE)
    labels = roadside_hazard_labels(ds)
    assert labels == _sidecar_labels(ds)
    assert {-1, 0, 1} <= set(labels)  # all three kinds in the sample
    # an example carries its label, or -1 when no roadside image reaches the model
    i = labels.index(1)
    assert PlanningExamples(ds, hazard_labels=labels)[i]["roadside_hazard"] == 1
    assert PlanningExamples(ds, hazard_labels=labels, roadside_dropout=1.0)[i]["roadside_hazard"] == -1
    blank = PlanningExamples(ds, hazard_labels=labels, roadside_dropout=1.0, roadside_dropout_uniform=1.0)[i]
    assert blank["roadside"] is not None and blank["roadside_hazard"] == -1  # a uniform view shows nothing
    assert PlanningExamples(ds, hazard_labels=labels, fusion=False)[i]["roadside_hazard"] == -1
    assert PlanningExamples(ds)[i]["roadside_hazard"] == -1


def test_hazard_probe_reads_only_the_roadside_half():
    from v2x_vlm_ros.training.losses import RoadsideHazardHead, hazard_loss

    torch.manual_seed(0)
    head = RoadsideHazardHead(8)
    cells = torch.randn(2, 3, 6, 8)
    base = head(cells)
    ego_changed = cells.clone()
    ego_changed[:, :, :3] = 100.0  # the left (ego) three columns
    assert torch.equal(head(ego_changed), base)
    # the largest roadside cell decides
    scores = head.score(cells[:, :, 3:]).squeeze(-1)
    assert torch.allclose(base, scores.flatten(1).max(1).values)
    with pytest.raises(ValueError, match=r"got \(2, 3, 8\)"):
        head(cells[..., 0, :])
    logits = torch.tensor([2.0, -1.0, 0.5], requires_grad=True)
    labels = torch.tensor([1.0, 0.0, -1.0])
    # by hand: -(log sigmoid(2) + log(1 - sigmoid(-1))) / 2, the unknown label left out
    want = -(np.log(1 / (1 + np.exp(-2.0))) + np.log(1 - 1 / (1 + np.exp(1.0)))) / 2
    assert float(hazard_loss(logits, labels).detach()) == pytest.approx(want, rel=1e-6)
    none = hazard_loss(logits, torch.full((3,), -1.0))
    none.backward()
    assert float(none.detach()) == 0.0 and torch.equal(logits.grad, torch.zeros(3))


def test_training_with_the_hazard_probe_logs_checkpoints_and_does_not_ship_it(tmp_path, tiny_model_dir):
    from safetensors.torch import load_file

    opts = dict(lambda_hazard=1.0, roadside_dropout=0.2)
    train(train_config(tmp_path / "a", tiny_model_dir, max_steps=4, **opts), progress=False)
    run = tmp_path / "a" / "run"
    rows = list(csv.DictReader(open(run / "train_log.csv")))
    assert len(rows) == 4 and all(float(r["hazard"]) > 0 for r in rows)
    # loss = traj + 0.1 align + 1.0 hazard
    r = rows[0]
    assert float(r["loss"]) == pytest.approx(float(r["traj"]) + 0.1 * float(r["align"]) + float(r["hazard"]),
                                             rel=1e-5)
    probe = load_file(run / "checkpoint" / "hazard_head.safetensors")
    assert set(probe) == {"score.weight", "score.bias"}
    shipped = load_file(run / "model" / "model.safetensors")
    assert not any(k.startswith("score.") or "hazard" in k for k in shipped)
    # resumed in two parts: the probe ends where the straight run's does
    train(train_config(tmp_path / "b", tiny_model_dir, max_steps=2, **opts), progress=False)
    train(train_config(tmp_path / "b", tiny_model_dir, max_steps=4, **opts), progress=False)
    resumed = load_file(tmp_path / "b" / "run" / "checkpoint" / "hazard_head.safetensors")
    assert all(torch.allclose(probe[k], resumed[k], atol=1e-6) for k in probe)


def test_hazard_probe_needs_fusion_and_a_sidecar(tmp_path, tiny_model_dir):
    import shutil

    with pytest.raises(ValueError, match="lambda_hazard needs fusion: the probe reads the roadside half"):
        TrainConfig(lambda_hazard=1.0, fusion=False)
    with pytest.raises(ValueError, match="lambda_hazard must be >= 0, got -1"):
        TrainConfig(lambda_hazard=-1.0)
    copy = tmp_path / "sample"
    shutil.copytree(SAMPLE, copy)
    (copy / "visibility.json").unlink()
    message = f"lambda_hazard needs the probe's labels: {copy} has no visibility.json"
    with pytest.raises(ValueError, match=message):
        train(train_config(tmp_path, tiny_model_dir, data_root=str(copy), max_steps=1, lambda_hazard=1.0),
              progress=False)


def test_plan_state_is_the_decoder_state_that_writes_the_first_plan_token(tiny_model_dir):
    from v2x_vlm_ros.training.losses import PlanStateHazardHead
    from v2x_vlm_ros.training.trainer import forward_planner

    loaded, batch = tiny_batch(tiny_model_dir)
    model = loaded.model.eval()
    with torch.no_grad():
        logits, _, _, state = forward_planner(model, batch, keep_plan_state=True)
        assert forward_planner(model, batch)[3] is None
        # the first plan token (labels[:, 1]) is read from that state
        assert torch.allclose(model.lm_head(state), logits[:, 1], atol=1e-5)
        # later plan tokens do not reach it (the decoder is causal); the image does
        later = dict(batch, labels=batch["labels"].clone())
        later["labels"][:, 3:-1] = later["labels"][:, 2:3]
        assert torch.allclose(forward_planner(model, later, keep_plan_state=True)[3], state, atol=1e-6)
        other = dict(batch, pixel_values=batch["pixel_values"].flip(-1))
        assert not torch.allclose(forward_planner(model, other, keep_plan_state=True)[3], state, atol=1e-3)
    head = PlanStateHazardHead(state.shape[-1])
    assert head(state).shape == (2,)
    with pytest.raises(ValueError) as err:
        head(state[:, None])
    assert str(err.value) == f"need (batch, dim) decoder states, got (2, 1, {state.shape[-1]})"


def test_training_with_the_hazard_probe_on_the_decoder(tmp_path, tiny_model_dir):
    from safetensors.torch import load_file

    train(train_config(tmp_path, tiny_model_dir, max_steps=3, lambda_hazard=1.0, hazard_probe_on="decoder",
                       freeze_vision=True), progress=False)
    run = tmp_path / "run"
    rows = list(csv.DictReader(open(run / "train_log.csv")))
    assert len(rows) == 3 and all(float(r["hazard"]) > 0 for r in rows)
    r = rows[0]  # loss = traj + 0.1 align + 1.0 hazard
    assert float(r["loss"]) == pytest.approx(float(r["traj"]) + 0.1 * float(r["align"]) + float(r["hazard"]),
                                             rel=1e-5)
    assert not (run / "checkpoint" / "hazard_head.safetensors").exists()
    probe = load_file(run / "checkpoint" / "plan_state_hazard_head.safetensors")
    d_model = load_model(run / "model").model.config.text_config.d_model
    assert probe["score.weight"].shape == (1, d_model)
    shipped = load_file(run / "model" / "model.safetensors")
    assert not any("hazard" in k or k.startswith("score.") for k in shipped)


def test_resuming_with_the_hazard_probe_moved_is_refused(tmp_path, tiny_model_dir):
    """Both places hold a (dim -> 1) linear probe: the vision probe's weights must not be
    loaded into the decoder's."""
    train(train_config(tmp_path, tiny_model_dir, max_steps=1, lambda_hazard=1.0), progress=False)
    ckpt = tmp_path / "run" / "checkpoint"
    with pytest.raises(ValueError) as err:
        train(train_config(tmp_path, tiny_model_dir, max_steps=2, lambda_hazard=1.0,
                           hazard_probe_on="decoder"), progress=False)
    assert str(err.value) == (
        f"{ckpt}: no plan_state_hazard_head.safetensors: this run trains a probe the checkpoint was "
        "written without (lambda_hazard, hazard_probe_on or lambda_objects changed since); resume with "
        f"the settings it was written with, or start a new output_dir with student: {ckpt / 'student'}")


@pytest.mark.parametrize("kwargs, message", [
    (dict(lambda_hazard=1.0, hazard_probe_on="encoder"),
     "hazard_probe_on must be 'vision' or 'decoder', got 'encoder'"),
    (dict(stage="vision", lambda_objects=1.0, lambda_hazard=1.0, hazard_probe_on="decoder",
          freeze_vision=False),
     "stage 'vision' runs no decoder: hazard_probe_on 'decoder' needs stage 'plan'"),
])
def test_hazard_probe_on_config_errors(kwargs, message):
    with pytest.raises(ValueError) as err:
        TrainConfig(data_root=SAMPLE, **kwargs)
    assert str(err.value) == message


def _sample_without_boxes(tmp_path) -> Path:
    """A copy of the sample whose sidecar was written before roadside_boxes existed."""
    import shutil

    copy = tmp_path / "sample"
    shutil.copytree(SAMPLE, copy)
    data = json.loads((copy / "visibility.json").read_text())
    for entry in data["sequences"].values():
        for frame in entry["frames"].values():
            del frame["roadside_boxes"]
    (copy / "visibility.json").write_text(json.dumps(data))
    return copy


def test_roadside_object_boxes_come_from_the_sidecar(tmp_path):
    from v2x_vlm_ros.training.data import roadside_object_boxes

    ds = DairV2XDataset(SAMPLE)
    boxes = roadside_object_boxes(ds)
    sidecar = json.loads((Path(SAMPLE) / "visibility.json").read_text())["sequences"]
    for i in range(len(ds)):
        frame = sidecar[ds[i].sequence_id]["frames"][ds[i].vehicle_frame]
        assert boxes[i] == [frame["roadside_boxes"][t] for t in frame["roadside_boxes"]]
        assert sorted(frame["roadside_boxes"]) == sorted(frame["roadside"])
    assert sum(len(b) for b in boxes) > len(ds) / 2 and max(len(b) for b in boxes) >= 2
    # an example carries its boxes, or None when no roadside image reaches the model
    i = max(range(len(ds)), key=lambda k: len(boxes[k]))
    assert PlanningExamples(ds, roadside_boxes=boxes)[i]["roadside_boxes"] == boxes[i]
    assert PlanningExamples(ds, roadside_boxes=boxes, roadside_dropout=1.0)[i]["roadside_boxes"] is None
    assert PlanningExamples(ds, roadside_boxes=boxes, roadside_dropout=1.0,
                            roadside_dropout_uniform=1.0)[i]["roadside_boxes"] is None
    assert PlanningExamples(ds)[i]["roadside_boxes"] is None
    # a sidecar written before the boxes existed: no targets at all
    copy = _sample_without_boxes(tmp_path)
    assert roadside_object_boxes(DairV2XDataset(copy)) is None


def test_roadside_cell_targets_by_hand():
    from v2x_vlm_ros.training.losses import roadside_cell_targets

    nan = float("nan")
    boxes = torch.tensor([
        # a large box: cells covered >= 25 % (rows 1-2, columns 3-5; row 3 is covered 20 %)
        [[0.55, 0.30, 0.95, 0.80], [0.0, 0.0, 0.1, 0.1], [nan] * 4],
        # one smaller than a cell: its centre's cell (0.35, 0.265) -> row 1, column 2
        [[0.34, 0.26, 0.36, 0.27], [nan] * 4, [nan] * 4],
        [[nan] * 4] * 3,  # nothing seen
    ])
    want = torch.zeros(3, 4, 6)
    want[0, 1:3, 3:6] = 1
    want[0, 0, 0] = 1  # covers 24 % of the cell, but its centre is there
    want[1, 1, 2] = 1
    assert torch.equal(roadside_cell_targets(boxes, 4, 6), want)
    with pytest.raises(ValueError, match=r"need \(batch, boxes, 4\) boxes, got \(3, 4\)"):
        roadside_cell_targets(boxes[0], 4, 6)


def test_objects_probe_reads_the_roadside_half_per_cell():
    from v2x_vlm_ros.training.data import _boxes_tensor
    from v2x_vlm_ros.training.losses import RoadsideObjectsHead, objects_loss

    torch.manual_seed(0)
    head = RoadsideObjectsHead(8)
    cells = torch.randn(2, 2, 4, 8)
    logits = head(cells)
    assert logits.shape == (2, 2, 2)
    changed = cells.clone()
    changed[:, :, :2] = 50.0  # the ego half
    assert torch.equal(head(changed), logits)
    assert torch.allclose(logits, head.score(cells[:, :, 2:]).squeeze(-1))
    # boxes: sample 0 has one road user in the top-left roadside cell, sample 1 is unknown
    batch = _boxes_tensor([[[0.1, 0.1, 0.3, 0.3]], None])
    assert batch["roadside_known"].tolist() == [True, False]
    assert batch["roadside_boxes"].shape == (2, 1, 4) and torch.isnan(batch["roadside_boxes"][1]).all()
    x = logits[0].detach().double()
    target = torch.tensor([[1.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    want = -(target * torch.log(torch.sigmoid(x)) + (1 - target) * torch.log(1 - torch.sigmoid(x))).mean()
    got = objects_loss(logits, batch["roadside_boxes"], batch["roadside_known"])
    assert float(got.detach()) == pytest.approx(float(want), rel=1e-5)
    none = objects_loss(logits, batch["roadside_boxes"], torch.tensor([False, False]))
    assert float(none.detach()) == 0.0


def test_training_with_the_objects_probe_logs_checkpoints_and_resumes(tmp_path, tiny_model_dir):
    from safetensors.torch import load_file

    opts = dict(lambda_objects=2.0, roadside_dropout=0.2)
    train(train_config(tmp_path / "a", tiny_model_dir, max_steps=4, **opts), progress=False)
    run = tmp_path / "a" / "run"
    rows = list(csv.DictReader(open(run / "train_log.csv")))
    assert len(rows) == 4 and all(float(r["objects"]) > 0 for r in rows)
    r = rows[0]  # loss = traj + 0.1 align + 2.0 objects
    want = float(r["traj"]) + 0.1 * float(r["align"]) + 2 * float(r["objects"])
    assert float(r["loss"]) == pytest.approx(want, rel=1e-5)
    probe = load_file(run / "checkpoint" / "objects_head.safetensors")
    assert set(probe) == {"score.weight", "score.bias"}
    assert not any(k.startswith("score.") for k in load_file(run / "model" / "model.safetensors"))
    train(train_config(tmp_path / "b", tiny_model_dir, max_steps=2, **opts), progress=False)
    train(train_config(tmp_path / "b", tiny_model_dir, max_steps=4, **opts), progress=False)
    resumed = load_file(tmp_path / "b" / "run" / "checkpoint" / "objects_head.safetensors")
    assert all(torch.allclose(probe[k], resumed[k], atol=1e-6) for k in probe)


def test_objects_probe_needs_fusion_and_boxes(tmp_path, tiny_model_dir):
    with pytest.raises(ValueError, match="lambda_objects needs fusion: the probe reads the roadside half"):
        TrainConfig(lambda_objects=1.0, fusion=False)
    with pytest.raises(ValueError, match="lambda_objects must be >= 0, got -1"):
        TrainConfig(lambda_objects=-1.0)
    copy = _sample_without_boxes(tmp_path)
    message = (f"lambda_objects needs roadside boxes: {copy}/visibility.json is missing or was written "
               "without 'roadside_boxes'")
    with pytest.raises(ValueError, match=message):
        train(train_config(tmp_path, tiny_model_dir, data_root=str(copy), max_steps=1, lambda_objects=1.0),
              progress=False)
