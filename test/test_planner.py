"""The learned planner around transformers' generate: grammar, batching, fallbacks, CLI."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from v2x_vlm_ros.cli import main
from v2x_vlm_ros.data.dair import DairV2XDataset
from v2x_vlm_ros.model.codec import CodecConfig
from v2x_vlm_ros.model.modeling import load_model, save_model
from v2x_vlm_ros.model.tokenizer import loc_token_ids
from v2x_vlm_ros.runtime.baselines import ConstantVelocityPlanner
from v2x_vlm_ros.runtime.planner import ModelPlanner

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"


@pytest.fixture(scope="module")
def samples():
    ds = DairV2XDataset(SAMPLE, split="train")
    return [ds[i] for i in (0, 7, 61, 130, 250)]


def test_random_weights_still_give_well_formed_trajectories(tiny_model_dir, samples):
    planner = ModelPlanner(tiny_model_dir)
    sequences = planner.generate(planner.model_inputs(samples))
    locs = set(loc_token_ids(planner.loaded.tokenizer)[: planner.settings.codec.bins])
    for seq in sequences.tolist():
        assert seq[0] == 2 and seq[1] == 0 and seq[-1] == 2  # start, <s>, ..., </s>
        assert len(seq) == 23 and set(seq[2:-1]) <= locs
    plans = planner.plan_batch(samples)
    (xlo, xhi), (ylo, yhi) = planner.settings.codec.x_range, planner.settings.codec.y_range
    for plan in plans:
        assert plan.shape == (10, 2) and np.isfinite(plan).all()
        assert (xlo <= plan[:, 0]).all() and (plan[:, 0] <= xhi).all()
        assert (ylo <= plan[:, 1]).all() and (plan[:, 1] <= yhi).all()
    assert planner.decode_failures == 0


def test_batching_does_not_change_the_plans(tiny_model_dir, samples):
    planner = ModelPlanner(tiny_model_dir, batch_size=5)
    together = planner.plan_batch(samples)
    alone = [planner.plan(s) for s in samples]
    for a, b in zip(together, alone):
        np.testing.assert_allclose(a, b)


def test_text_codec_failures_fall_back_to_constant_velocity(tiny_model_dir, tmp_path, samples):
    loaded = load_model(tiny_model_dir)
    settings = dataclasses.replace(loaded.settings, codec=CodecConfig(kind="text"))
    save_model(tmp_path, loaded.model, loaded.tokenizer, settings)
    planner = ModelPlanner(tmp_path)
    torch.manual_seed(0)
    plans = planner.plan_batch(samples[:2])  # random weights write no valid "x,y;..." text
    assert planner.decode_failures == 2
    for plan, sample in zip(plans, samples):
        np.testing.assert_allclose(plan, ConstantVelocityPlanner().plan(sample))


def test_eval_cli_with_the_model_planner(tiny_model_dir, tmp_path):
    out = tmp_path / "model.json"
    args = ["eval", str(SAMPLE), "--planner", "model", "--model", str(tiny_model_dir), "--split", "train",
            "--scenario", "straight", "--json", str(out), "--quiet"]
    assert main(args) == 0
    result = json.loads(out.read_text())
    assert result["num_samples"] == 60 and result["planner"] == "model"
    assert set(result["l2"]) >= {"2.5", "3.5", "4.5", "avg"} and set(result["collision"]) >= {"avg"}
    stream = result["transmission"]
    assert stream["uses_roadside"] and stream["formula_bps"] == 144 * 81 * 3 * 2
    assert result["decode_failures"] == 0 and result["model"] == str(tiny_model_dir)


def test_ego_only_model_costs_no_bandwidth(tiny_model_dir, tmp_path):
    loaded = load_model(tiny_model_dir)
    save_model(tmp_path / "ego", loaded.model, loaded.tokenizer,
               dataclasses.replace(loaded.settings, fusion=False))
    out = tmp_path / "ego.json"
    assert main(["eval", str(SAMPLE), "--planner", "model", "--model", str(tmp_path / "ego"),
                 "--split", "train", "--scenario", "follow_lead", "--json", str(out), "--quiet"]) == 0
    free = {"uses_roadside": False, "formula_bps": 0.0, "measured_bps": 0.0}
    assert json.loads(out.read_text())["transmission"] == free


def test_model_planner_needs_a_loadable_model(tmp_path, capsys):
    assert main(["eval", str(SAMPLE), "--planner", "model", "--quiet"]) == 2
    assert "--planner model needs --model" in capsys.readouterr().err
    assert main(["eval", str(SAMPLE), "--planner", "model", "--model", str(tmp_path), "--quiet"]) == 2
    assert "no config.json" in capsys.readouterr().err


def test_eval_token_choice_is_recorded_changes_plans_and_needs_a_model(tiny_model_dir, tmp_path, capsys):
    base = ["eval", str(SAMPLE), "--split", "train", "--scenario", "straight", "--quiet"]
    model = ["--planner", "model", "--model", str(tiny_model_dir)]
    assert main(base + model + ["--json", str(tmp_path / "greedy.json")]) == 0
    assert main(base + model + ["--token-choice", "mean", "--json", str(tmp_path / "mean.json")]) == 0
    greedy, mean = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("greedy", "mean"))
    assert greedy["token_choice"] == "greedy" and mean["token_choice"] == "mean"
    assert mean["num_samples"] == greedy["num_samples"] == 60 and mean["l2"] != greedy["l2"]
    assert main(base + ["--token-choice", "mean"]) == 2
    assert "--token-choice changes how a model's answer is read" in capsys.readouterr().err


def test_the_text_codec_refuses_the_mean_token_choice(tiny_model_dir, tmp_path):
    loaded = load_model(tiny_model_dir)
    save_model(tmp_path, loaded.model, loaded.tokenizer,
               dataclasses.replace(loaded.settings, codec=CodecConfig(kind="text")))
    with pytest.raises(ValueError, match="token_choice 'mean' needs location tokens"):
        ModelPlanner(tmp_path, token_choice="mean")
