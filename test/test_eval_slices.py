"""The hidden-hazard slice in eval / replay, the inference-time ablations (`--roadside
grey|swap|none`, `--description empty`, `--command swap`) and the valid-step L2 column of the tables."""

import json
from dataclasses import replace

import numpy as np
import pytest

from v2x_vlm_ros.cli import main
from v2x_vlm_ros.data.dair import DairV2XDataset
from v2x_vlm_ros.data.images import load_image
from v2x_vlm_ros.data.records import Command
from v2x_vlm_ros.data.synth.visibility import (
    VISIBILITY_FILE, hazard_twin_frames, hidden_hazard_frames,
    hidden_hazard_twin_frames, read_visibility)
from v2x_vlm_ros.eval.evaluate import evaluate
from v2x_vlm_ros.eval.experiment_planners import ExperimentPlanner
from v2x_vlm_ros.eval.metrics import PlanningMetrics, format_markdown_table
from v2x_vlm_ros.eval.perturb import GREY, EmptyDescription, GreyRoadside, SwapRoadside, ablation_transforms
from v2x_vlm_ros.eval.slices import HAZARD_TWIN, HIDDEN_HAZARD, FrameSlice, SliceScores, dataset_slices
from v2x_vlm_ros.runtime.baselines import ConstantVelocityPlanner
from v2x_vlm_ros.runtime.planner import ModelPlanner


def _slice_keys(result: dict) -> set:
    return set(result)


def test_eval_json_has_the_hidden_hazard_slice_with_the_top_level_shape(world):
    ds = DairV2XDataset(world)
    result = evaluate(ds, ConstantVelocityPlanner(), progress=False)
    hidden = result["slices"][HIDDEN_HAZARD]
    assert _slice_keys(hidden) == _slice_keys({k: v for k, v in result.items()
                                               if k in PlanningMetrics().result()})
    frames = hidden_hazard_frames(read_visibility(world))
    assert hidden["num_samples"] == len(frames) > 10
    assert set(hidden["l2"]) == set(hidden["collision"]) == {"2.5", "3.5", "4.5", "avg"}
    # the same numbers as scoring exactly those samples by hand
    by_hand = PlanningMetrics()
    planner = ConstantVelocityPlanner()
    for s in ds:
        if (s.sequence_id, s.sample_id) in frames:
            by_hand.update(planner.plan(s), s.future_xy, s.future_mask, s.future_agents, s.sample_id)
    assert hidden["l2"] == by_hand.result()["l2"] and hidden["collision"] == by_hand.result()["collision"]
    # constant velocity drives into the hidden hazard: worse there than overall
    assert hidden["l2"]["avg"] > result["l2"]["avg"]


def test_a_dataset_without_the_sidecar_has_no_slices(world, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(world, copy)
    (copy / VISIBILITY_FILE).unlink()
    assert dataset_slices(copy) == []
    result = evaluate(DairV2XDataset(copy), ConstantVelocityPlanner(), progress=False)
    assert result["slices"] == {}


def test_slice_scores_count_only_their_frames():
    class Sample:
        def __init__(self, seq, sid):
            self.sequence_id, self.sample_id = seq, sid

    scores = SliceScores([FrameSlice("a", {("0000", "000001")})])
    xy = np.zeros((10, 2))
    args = (xy, xy + 1.0, np.ones(10, bool), [None] * 10)
    scores.update(Sample("0000", "000001"), *args, "x")
    scores.update(Sample("0000", "000002"), *args, "y")
    scores.update(Sample("0001", "000001"), *args, "z")
    result = scores.result()["a"]
    assert result["num_samples"] == 1 and result["l2"]["avg"] == pytest.approx(np.sqrt(2.0))


def test_valid_step_l2_sits_next_to_the_univ2x_figure():
    m = PlanningMetrics()
    mask = np.ones(10, bool)
    mask[8:] = False  # the 4.5 s step is past the sequence's end
    m.update(np.zeros((10, 2)), np.ones((10, 2)), mask, [None] * 10)
    m.update(np.zeros((10, 2)), np.ones((10, 2)), np.ones(10, bool), [None] * 10)
    result = m.result()
    lines = format_markdown_table({"m": result}).strip().split("\n")
    header, row = lines[0].split(" | "), lines[2].split(" | ")
    assert header[4:6] == ["avg", "L2 valid avg"]
    assert row[4] == f"{result['l2']['avg']:.2f}" and row[5] == f"{result['l2_valid_only']['avg']:.2f}"
    assert result["l2_valid_only"]["avg"] > result["l2"]["avg"]  # masked steps count 0 in UniV2X's


def test_ablation_transforms_change_exactly_their_input(world, tiny_model_dir):
    ds = DairV2XDataset(world)
    samples = [ds[i] for i in range(len(ds))]
    base = ModelPlanner(str(tiny_model_dir), batch_size=4)
    clean = base.inputs(samples[:3])
    grey = ExperimentPlanner(base, "grey", [GreyRoadside()]).inputs(samples[:3])
    assert all(np.all(f.roadside == GREY) and f.roadside.shape == c.roadside.shape
               for f, c in zip(grey, clean))
    assert all(np.array_equal(f.ego, c.ego) and f.description == c.description for f, c in zip(grey, clean))
    empty = ExperimentPlanner(base, "empty", [EmptyDescription()]).inputs(samples[:3])
    assert all(f.description == "" and np.array_equal(f.roadside, c.roadside) for f, c in zip(empty, clean))
    assert all(c.description for c in clean)
    swap = SwapRoadside(samples)
    by_seq = {}
    for s in samples:
        by_seq.setdefault(s.sequence_id, {})[s.frame_index] = s
    for s in samples[::11]:
        other = str((int(s.sequence_id) + 1) % 3).zfill(4)  # the next sequence, cyclic
        want = by_seq[other][min(s.frame_index, max(by_seq[other]))].roadside_image_path
        assert swap.source(s) == want
        frame = swap(s, base.inputs([s])[0])
        assert np.array_equal(frame.roadside, load_image(want))
    # the agent sequence (0000) gets its twin's (0001) roadside view: the same scene, no hazard
    assert swap.source(by_seq["0000"][5]) == by_seq["0001"][5].roadside_image_path
    with pytest.raises(ValueError, match="two sequences"):
        SwapRoadside([s for s in samples if s.sequence_id == "0000"])
    with pytest.raises(ValueError):
        ablation_transforms("purple", None)


def test_swap_turn_command_swaps_left_and_right_only(world, tiny_model_dir):
    ds = DairV2XDataset(world)
    sample = ds[0]
    clean = ModelPlanner(str(tiny_model_dir)).inputs([sample])[0]
    (swap,) = ablation_transforms(None, None, command="swap")
    for given, planned in ((Command.LEFT, Command.RIGHT), (Command.RIGHT, Command.LEFT),
                           (Command.FORWARD, Command.FORWARD)):
        frame = swap(sample, replace(clean, command=given))
        assert frame.command == planned
        assert np.array_equal(frame.ego, clean.ego) and np.array_equal(frame.roadside, clean.roadside)
        assert frame.description == clean.description and frame.motion == clean.motion
    with pytest.raises(ValueError) as err:
        ablation_transforms(None, None, command="reverse")
    assert str(err.value) == "command ablation must be one of ('swap',), got 'reverse'"


def test_cli_eval_command_swap(world, tiny_model_dir, tmp_path):
    out = tmp_path / "r.json"
    assert main(["eval", str(world), "--planner", "model", "--model", str(tiny_model_dir), "--json", str(out),
                 "--quiet", "--command", "swap"]) == 0
    result = json.loads(out.read_text())
    assert result["ablation"] == {"roadside": None, "description": None, "command": "swap",
                                  "keep_blank_roadside": False}
    assert result["planner"] == "model, turn command swapped"


@pytest.mark.parametrize("roadside, description, uses_roadside",
                         [("grey", None, True), ("swap", None, True), ("none", None, False),
                          (None, "empty", True)])
def test_cli_eval_ablations(world, tiny_model_dir, tmp_path, capsys, roadside, description, uses_roadside):
    out = tmp_path / "r.json"
    argv = ["eval", str(world), "--planner", "model", "--model", str(tiny_model_dir), "--json", str(out),
            "--quiet", "--batch-size", "16"]
    argv += ["--roadside", roadside] if roadside else []
    argv += ["--description", description] if description else []
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert result["ablation"] == {"roadside": roadside, "description": description, "command": None,
                                  "keep_blank_roadside": False}
    assert result["transmission"]["uses_roadside"] is uses_roadside
    # a grey view is a dead camera: every frame planned as none, counted; real views never are
    assert result["roadside_blank"] == (result["num_samples"] if roadside == "grey" else 0)
    assert result["planner"].startswith("model, ")
    assert result["slices"][HIDDEN_HAZARD]["num_samples"] > 10
    printed = capsys.readouterr().out
    assert "L2 valid avg" in printed and f"{result['planner']}, hidden_hazard" in printed


def test_cli_eval_ablations_need_a_model(world, capsys):
    assert main(["eval", str(world), "--planner", "constant-velocity", "--roadside", "grey", "--quiet"]) == 2
    assert "--planner model" in capsys.readouterr().err
    assert main(["eval", str(world), "--planner", "constant-velocity", "--keep-blank-roadside",
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--keep-blank-roadside changes how a model plans: use it with --planner model" in err


def test_cli_eval_grey_roadside_kept_is_the_models_own_reading(world, tiny_model_dir, tmp_path):
    """By default a grey roadside view is planned as none (the same plans, counted);
    --keep-blank-roadside plans the grey image itself (that it reaches the model's input:
    test_blank_image.py; the tiny model's plans do not depend on it)."""
    runs = {}
    for name, extra in {"none": ["--roadside", "none"], "grey": ["--roadside", "grey"],
                        "grey_kept": ["--roadside", "grey", "--keep-blank-roadside"]}.items():
        out = tmp_path / f"{name}.json"
        assert main(["eval", str(world), "--planner", "model", "--model", str(tiny_model_dir), "--json",
                     str(out), "--quiet", "--batch-size", "16", "--scenario", "occluded_crossing",
                     *extra]) == 0
        runs[name] = json.loads(out.read_text())
    assert runs["grey"]["l2"] == runs["none"]["l2"] and runs["grey"]["collision"] == runs["none"]["collision"]
    assert runs["grey"]["roadside_blank"] == runs["grey"]["num_samples"] > 0
    assert runs["grey_kept"]["roadside_blank"] == 0
    assert runs["grey_kept"]["ablation"]["keep_blank_roadside"] is True


def test_experiments_show_the_slice_and_the_input_ablations(world, tiny_model_dir, tmp_path):
    from v2x_vlm_ros.eval.experiments import ExperimentOptions, run_experiments

    out = tmp_path / "exp"
    result = run_experiments(ExperimentOptions(root=str(world), model=str(tiny_model_dir), out=str(out),
                                               tables=(1, 5, 6), batch_size=16), progress=False)
    n_hidden = len(hidden_hazard_frames(read_visibility(world)))
    n_twin = len(hazard_twin_frames(read_visibility(world)))
    assert result["dataset"]["slices"] == {HIDDEN_HAZARD: n_hidden, HAZARD_TWIN: n_twin}
    assert n_twin == n_hidden
    t1 = result["tables"]["table1"]
    assert [r["method"] for r in t1["slice_rows"]] == [
        f"{r['method']}, {name}" for r in t1["rows"] for name in ("hidden_hazard", "hazard_twin")]
    assert all(r["num_samples"] == n_hidden for r in t1["slice_rows"])
    assert "hazard_twin\": the same frames of the same scenes without" in (out / "tables.md").read_text()
    t6 = result["tables"]["table6"]
    assert [r["ablation"] for r in t6["rows"]] == [
        "none (full inputs)", "roadside grey", "roadside grey, fed to the model",
        "roadside of another sequence", "no roadside (ego-only input)", "empty description"]
    clean = t6["rows"][0]
    assert clean["delta_l2"]["avg"] == 0.0 and clean["hidden_hazard"]["num_samples"] == n_hidden
    for r in t6["rows"][1:]:
        assert r["delta_l2"]["avg"] == pytest.approx(r["l2"]["avg"] - clean["l2"]["avg"])
        h = r["hidden_hazard"]
        assert h["delta_collision"]["avg"] == pytest.approx(
            h["collision"]["avg"] - clean["hidden_hazard"]["collision"]["avg"])
    assert t6["rows"][4]["formula_bps"] == 0  # no roadside image: nothing sent
    # grey is planned as none (a dead camera); fed to the model it is another input
    assert t6["rows"][1]["l2"] == t6["rows"][4]["l2"]
    t5 = result["tables"]["table5"]
    assert t5["reference"]["hidden_hazard"]["num_samples"] == n_hidden
    md = (out / "tables.md").read_text()
    assert "## Table 6." in md and "L2 valid avg" in md and ", hidden_hazard |" in md


def test_replay_reports_the_slice_like_eval(world, tiny_model_dir, tmp_path):
    out, evaluated = tmp_path / "replay", tmp_path / "eval.json"
    assert main(["replay", str(world), "--model", str(tiny_model_dir), "--out", str(out), "--roadside-scale",
                 "1", "--roadside-codec", "raw", "--roadside-rate", "0", "--quiet"]) == 0
    assert main(["eval", str(world), "--planner", "model", "--model", str(tiny_model_dir),
                 "--batch-size", "1", "--json", str(evaluated), "--quiet"]) == 0
    for name in (HIDDEN_HAZARD, HAZARD_TWIN):
        replayed = json.loads((out / "metrics.json").read_text())["slices"][name]
        scored = json.loads(evaluated.read_text())["slices"][name]
        assert replayed["num_samples"] == scored["num_samples"] > 10
        assert replayed["l2"] == scored["l2"] and replayed["collision"] == scored["collision"]
    md = (out / "metrics.md").read_text()
    assert "Slices (hidden_hazard: a yielded-to agent" in md
    assert "| model, hidden_hazard |" in md and "| model, hazard_twin |" in md


def test_table_tabulates_the_slice(world, tmp_path, capsys):
    out = tmp_path / "cv.json"
    assert main(["eval", str(world), "--planner", "constant-velocity", "--json", str(out), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["table", str(out), "--names", "cv", "--slice", HIDDEN_HAZARD]) == 0
    row = capsys.readouterr().out.strip().split("\n")[2]
    hidden = json.loads(out.read_text())["slices"][HIDDEN_HAZARD]
    assert row.startswith("| cv | ") and f"{hidden['l2']['avg']:.2f}" in row
    assert main(["table", str(out), "--slice", "nope"]) == 2
    assert "no results for slice 'nope'" in capsys.readouterr().err


def test_hazard_twin_slice_is_the_same_frames_of_the_twin_scene(world):
    visibility = read_visibility(world)
    hidden = hidden_hazard_frames(visibility)
    twins = hazard_twin_frames(visibility)
    sequences = visibility["sequences"]
    # read from the sidecar directly: each hidden-hazard frame's twin frame sits at the same
    # index of the sequence named by "pair", a "twin" without the conflicting agent
    expected = set()
    for seq, frame in hidden:
        twin = sequences[seq]["pair"]
        assert sequences[twin]["variant"] == "twin" and sequences[twin]["conflict"] == []
        expected.add((twin, sorted(sequences[twin]["frames"])[sorted(sequences[seq]["frames"]).index(frame)]))
    assert twins == expected and len(twins) == len(hidden) and not twins & hidden
    ds = DairV2XDataset(world)
    result = evaluate(ds, ConstantVelocityPlanner(), progress=False)
    assert list(result["slices"]) == [HIDDEN_HAZARD, HAZARD_TWIN]
    twin = result["slices"][HAZARD_TWIN]
    assert twin["num_samples"] == len(twins)
    # the twin's ground truth drives on, as constant velocity does; the hazard's stops
    assert twin["l2"]["avg"] < 0.5 * result["slices"][HIDDEN_HAZARD]["l2"]["avg"]
    # the hazard-weighted training frames are exactly the two slices together
    assert hidden_hazard_twin_frames(visibility) == hidden | twins
