"""The vision stage (the encoder pretrained on the dense roadside probe alone) and the probe's
report (training/probe.py): rank AUC by hand, hidden-hazard pairs from a hand-written
sidecar, the stage's config errors, and a vision-stage run on the sample: only the vision
side trains, each epoch is scored, and `v2x-vlm probe` on the checkpoint gives the same
report."""

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from v2x_vlm_ros.cli import main
from v2x_vlm_ros.training.config import TrainConfig
from v2x_vlm_ros.training.losses import LossWeights, total_loss
from v2x_vlm_ros.training.probe import hidden_pairs, probe_run, rank_auc
from v2x_vlm_ros.training.trainer import train

SAMPLE = str(Path(__file__).resolve().parents[1] / "data" / "sample")


def test_rank_auc_by_hand():
    assert rank_auc([3, 4], [1, 2]) == 1.0
    assert rank_auc([1, 2], [3, 4]) == 0.0
    assert rank_auc([1, 3], [2]) == 0.5
    assert rank_auc([5], [5]) == 0.5  # a tie counts half
    # pairs (2,2) (2,1) (2,2) (2,1): 0.5 + 1 + 0.5 + 1 over 4
    assert rank_auc([2, 2], [2, 1]) == 0.75
    assert rank_auc(torch.tensor([0.1, 0.9, 0.4]), torch.tensor([0.3])) == pytest.approx(2 / 3)
    assert rank_auc([], [1.0]) is None and rank_auc([1.0], []) is None


def _fake_dataset(frames: list[tuple[str, str]]):
    """An object with the dataset index hidden_pairs reads: one entry per (sequence, frame)."""
    index = []
    for seq, frame in frames:
        sequence = SimpleNamespace(sequence_id=seq, frames=[SimpleNamespace(frame_id=frame)])
        index.append(SimpleNamespace(sequence=sequence, position=0))
    return SimpleNamespace(_index=index)


def test_hidden_pairs_from_a_hand_written_sidecar():
    visibility = {"schema": "x", "sequences": {
        # the hazard: car 7 conflicts; the roadside alone sees it at 002, both cameras at 003
        "A": {"conflict": ["7"], "pair": "B", "frames": {
            "001": {"roadside": [], "ego": []}, "002": {"roadside": ["7", "3"], "ego": ["3"]},
            "003": {"roadside": ["7"], "ego": ["7"]}}},
        "B": {"conflict": [], "pair": "A", "frames": {
            "101": {"roadside": [], "ego": []}, "102": {"roadside": ["3"], "ego": ["3"]},
            "103": {"roadside": [], "ego": []}}},
        # a hazard whose twin has another length: no frame to compare with
        "C": {"conflict": ["9"], "pair": "D", "frames": {"201": {"roadside": ["9"], "ego": []}}},
        "D": {"conflict": [], "pair": "C", "frames": {"301": {}, "302": {}}},
    }}
    frames = [("B", "103"), ("A", "002"), ("B", "102"), ("A", "001"), ("C", "201"), ("D", "301")]
    assert hidden_pairs(_fake_dataset(frames), visibility) == [(1, 2)]
    # the twin's frame not in the dataset (another split): no pair
    assert hidden_pairs(_fake_dataset([("A", "002"), ("B", "101")]), visibility) == []


def test_the_vision_stage_needs_the_dense_probe_and_a_trainable_encoder():
    with pytest.raises(ValueError, match="stage must be 'plan' or 'vision', got 'encoder'"):
        TrainConfig(stage="encoder")
    with pytest.raises(ValueError, match="stage 'vision' trains the vision encoder on the dense roadside "
                                         "probe alone: set lambda_objects > 0"):
        TrainConfig(stage="vision", freeze_vision=False)
    message = "stage 'vision' trains the vision encoder: set freeze_vision: false"
    with pytest.raises(ValueError, match=message):
        TrainConfig(stage="vision", lambda_objects=1.0)
    vision = TrainConfig(stage="vision", lambda_objects=1.0, freeze_vision=False, teacher="some/teacher")
    assert not vision.uses_teacher  # no decoder, no logits to distil
    assert TrainConfig(teacher="some/teacher").uses_teacher


def test_total_loss_without_a_trajectory_term():
    objects = torch.tensor(0.7)
    got = total_loss(None, None, None, LossWeights(lambda_objects=3.0), None, objects)
    assert float(got["loss"]) == pytest.approx(2.1)
    assert got["traj"] == 0.0 and got["objects"] == pytest.approx(0.7)
    with pytest.raises(ValueError, match="total_loss needs at least one loss term"):
        total_loss(None)


def test_a_vision_stage_run_trains_only_the_vision_side_and_scores_each_epoch(tmp_path, tiny_model_dir,
                                                                              capsys):
    cfg = TrainConfig(data_root=SAMPLE, student=str(tiny_model_dir), teacher=None, stage="vision",
                      freeze_vision=False, lambda_objects=2.0, epochs=1, max_steps=3, batch_size=6,
                      lr=5e-3, val_split="train", eval_max_samples=24, output_dir=str(tmp_path / "run"),
                      log_every=1, seed=1)
    summary = train(cfg, progress=False)
    run = tmp_path / "run"
    rows = list(csv.DictReader(open(run / "train_log.csv")))
    assert len(rows) == 3
    for r in rows:  # the probe's loss alone, weighted
        assert float(r["traj"]) == 0.0 and float(r["align"]) == 0.0 and float(r["objects"]) > 0
        assert float(r["loss"]) == pytest.approx(2 * float(r["objects"]), rel=1e-6)

    before = load_file(Path(tiny_model_dir) / "model.safetensors")
    after = load_file(run / "model" / "model.safetensors")
    assert set(before) == set(after)
    language = [k for k in before if "language_model" in k or k.startswith("lm_head")]
    vision = [k for k in before if "vision_tower" in k]
    assert language and vision
    assert all(torch.equal(before[k], after[k]) for k in language)  # decoder untouched
    assert sum(not torch.equal(before[k], after[k]) for k in vision) > len(vision) // 2

    assert not (run / "eval_log.csv").exists()  # nothing planned
    probe = list(csv.DictReader(open(run / "probe_log.csv")))
    assert len(probe) == 1 and probe[0]["epoch"] == "1" and probe[0]["step"] == "3"
    assert int(probe[0]["frames"]) == 24 and int(probe[0]["hidden_pairs"]) > 0
    assert summary["validation"] is None
    assert summary["probe"]["hidden"]["pairs"] == int(probe[0]["hidden_pairs"])

    # the same report from the checkpoint, through the command
    assert main(["probe", str(run), "--data", SAMPLE, "--split", "train", "--max-frames", "24",
                 "--json", str(tmp_path / "probe.json")]) == 0
    again = json.loads((tmp_path / "probe.json").read_text())
    assert again["frames"] == 24
    assert again["cells_auc"] == pytest.approx(float(probe[0]["cells_auc"]), abs=1e-9)
    assert again["hidden"]["auc"] == pytest.approx(float(probe[0]["hidden_auc"]), abs=1e-9)
    assert again["hidden"]["mean_with"] == pytest.approx(float(probe[0]["hidden_mean_with"]), rel=1e-5)
    assert json.loads(capsys.readouterr().out) == again
    assert probe_run(run, SAMPLE, split="train", max_frames=24)["hidden"]["pairs"] == again["hidden"]["pairs"]


def test_probe_command_names_what_is_missing(tmp_path, capsys):
    assert main(["probe", str(tmp_path / "nothing"), "--data", SAMPLE]) == 2
    err = capsys.readouterr().err
    missing = tmp_path / "nothing" / "checkpoint" / "objects_head.safetensors"
    assert f"{missing}: no dense roadside probe in this run" in err
