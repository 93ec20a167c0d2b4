"""``v2x-vlm experiments``: the five tables and the plot, their accounting, the perturbations'
definitions and determinism. The tiny models are random: structure is checked, not quality."""

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from v2x_vlm_ros.cli import main
from v2x_vlm_ros.data.dair import DairV2XDataset
from v2x_vlm_ros.data.images import load_image
from v2x_vlm_ros.eval.experiments import (
    SCALES,
    ExperimentError,
    ExperimentOptions,
    ExperimentPlanner,
    parse_ablations,
    run_experiments,
    train_command,
)
from v2x_vlm_ros.eval.perturb import (
    DescriptionPerturbation,
    RoadsideLink,
    RoadsideNoise,
    description_vocabulary,
    gaussian_noise,
    perturb_words,
    sample_rng,
)
from v2x_vlm_ros.model.configuration import PRESETS, ModelSettings
from v2x_vlm_ros.model.modeling import build_model, save_model
from v2x_vlm_ros.model.processing import state_text
from v2x_vlm_ros.preprocessing.image_codec import downsample, encode_image
from v2x_vlm_ros.runtime.engine import PlanInput
from v2x_vlm_ros.runtime.planner import ModelPlanner

DATA = Path(__file__).resolve().parents[1] / "data" / "sample"
MAX = 20


def _tiny(out: Path, tokenizer, **settings) -> Path:
    model = build_model("tiny", tokenizer, seed=0)
    save_model(out, model, tokenizer, ModelSettings(image_size=PRESETS["tiny"].image_size, **settings))
    return out


@pytest.fixture(scope="module")
def dataset():
    return DairV2XDataset(DATA, split="train")


@pytest.fixture(scope="module")
def no_scene_text_dir(tmp_path_factory, tiny_tokenizer):
    return _tiny(tmp_path_factory.mktemp("ablation") / "no-scene-text", tiny_tokenizer, scene_text=False)


def _options(out, model, **kw) -> ExperimentOptions:
    return ExperimentOptions(root=str(DATA), model=str(model), out=str(out), max_samples=MAX, seed=3, **kw)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, tiny_model_dir, no_scene_text_dir):
    out = tmp_path_factory.mktemp("experiments")
    ablations = {"no_scene_text": str(no_scene_text_dir)}
    result = run_experiments(_options(out, tiny_model_dir, ablations=ablations), progress=False)
    return out, result


# -- the report ---------------------------------------------------------------------------------


def test_all_tables_and_the_plot_are_written(full_run):
    out, result = full_run
    assert sorted(p.name for p in out.iterdir()) == ["l2_vs_bandwidth.png", "results.json", "tables.md"]
    assert (out / "l2_vs_bandwidth.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "tables.md").read_text()
    for n in range(1, 6):
        assert f"## Table {n}." in md
        caption = result["tables"][f"table{n}"]["caption"]
        assert f"*{caption}*" in md and "\n" not in caption and f"{MAX} samples of" in caption
    stored = json.loads((out / "results.json").read_text())
    assert stored["tables"] == json.loads(json.dumps(result["tables"]))
    for key in ("versions", "machine", "created", "seed", "dataset", "protocol", "runs", "timings"):
        assert key in stored
    assert stored["seed"] == 3 and stored["versions"]["torch"] and stored["dataset"]["samples_used"] == MAX
    assert len(stored["dataset"]["sample_keys"]) == MAX


def test_table1_rows_baselines_and_the_occluded_scenario(full_run):
    t1 = full_run[1]["tables"]["table1"]
    methods = [r["method"] for r in t1["rows"]]
    assert methods[:2] == ["V2X-VLM (model)", "constant velocity"]
    # no <model>-ego-only sibling: the fused model with the roadside blanked, labelled so
    assert methods[2] == "model, roadside blanked (no ego-only checkpoint)"
    model, cv, blanked = t1["rows"]
    assert model["formula_bps"] == pytest.approx(144 * 81 * 3 * 2.0) and model["measured_bps"] > 0
    assert cv["formula_bps"] == 0 and blanked["formula_bps"] == 0
    for row in t1["rows"]:
        assert row["num_samples"] == MAX and set(row["l2"]) == {"2.5", "3.5", "4.5", "avg"}
    assert t1["scenario"] == "occluded_crossing"
    assert [r["method"] for r in t1["scenario_rows"]] == [f"{m}, occluded_crossing" for m in methods]
    assert 0 < t1["scenario_rows"][0]["num_samples"] < MAX


def test_table2_bps_follows_s_squared_and_measured_bytes_fall(full_run):
    rows = full_run[1]["tables"]["table2"]["rows"]
    assert [r["scale"] for r in rows] == list(SCALES)
    full = rows[0]["formula_bps"]
    for r in rows:
        assert r["formula_bps"] / full == pytest.approx(r["scale"] ** 2, rel=1e-12)
        assert r["quality"] == 90 and r["codec"] == "jpeg" and r["num_samples"] == MAX
        assert r["measured_bps"] == pytest.approx(r["mean_bytes"] * 2.0)
        assert r["latency"]["model_ms"] > 0 and r["latency"]["fps"] > 0
    measured = [r["measured_bps"] for r in rows]
    assert measured == sorted(measured, reverse=True) and len(set(measured)) == len(measured)
    assert [r["sent_size"] for r in rows] == [[144, 81], [72, 40], [29, 16], [14, 8]]


def test_roadside_link_accounts_the_bytes_actually_encoded(dataset):
    samples = [dataset[i] for i in (0, 50, 100)]
    link = RoadsideLink(0.5)
    for s in samples:
        image = load_image(s.roadside_image_path)
        frame = link(s, PlanInput(image, image, s.description, s.motion, s.command))
        assert frame.roadside.shape == (40, 72, 3) and frame.ego is image
    sizes = [len(encode_image(downsample(load_image(s.roadside_image_path), 0.5), "jpeg", 90))
             for s in samples]
    cost = link.cost()
    assert cost["total_bytes"] == sum(sizes) and cost["messages"] == 3
    assert cost["measured_bps"] == pytest.approx(np.mean(sizes) * 2.0)


def test_table3_conditions_and_deltas(full_run):
    t3 = full_run[1]["tables"]["table3"]
    assert [r["condition"] for r in t3["rows"]] == [
        "clean", "noise std 5", "noise std 10", "text p = 0.1", "noise std 5 + text p = 0.1",
        "noise std 10 + text p = 0.1"]
    clean = t3["rows"][0]
    for r in t3["rows"]:
        assert r["delta_l2"]["avg"] == pytest.approx(r["l2"]["avg"] - clean["l2"]["avg"])
        assert r["delta_collision"]["avg"] == pytest.approx(r["collision"]["avg"] - clean["collision"]["avg"])
        assert (r["text"] is None) == (r["text_p"] == 0)
    texts = [r["text"] for r in t3["rows"] if r["text"]]
    assert all(t == texts[0] for t in texts)  # the same words hit whatever noise goes with them
    assert texts[0]["words_total"] > 0 and texts[0]["vocabulary_size"] > 0


def test_table4_stages_shares_and_device(full_run):
    t4 = full_run[1]["tables"]["table4"]
    stages = ["preprocess", "vision", "encoder", "decoder", "decode", "refine"]
    assert [s["stage"] for s in t4["stages"]] == stages
    assert sum(s["mean_ms"] for s in t4["stages"]) == pytest.approx(t4["total_ms"])
    assert sum(s["share"] for s in t4["stages"]) == pytest.approx(1.0)
    assert t4["fps"] == pytest.approx(1000.0 / t4["total_ms"]) and t4["frames"] == MAX
    assert t4["device"] == "cpu" and "eager" in t4["backend"]


def test_table5_lists_missing_ablations_with_their_command(full_run):
    t5 = full_run[1]["tables"]["table5"]
    rows = {r["name"]: r for r in t5["rows"]}
    assert list(rows) == ["no_fusion", "no_scene_text", "no_alignment", "no_distillation", "no_augmentation",
                          "no_roadside_dropout", "no_modality_weights", "no_pair_weight",
                          "no_hazard_weight", "no_hazard_probe", "no_objects_probe", "no_speed_reference",
                          "no_roadside_crop", "no_roadside_motion", "no_vision_training"]
    assert "--override hazard_weight=1 " in rows["no_hazard_weight"]["command"]
    assert "--override roadside_motion_s=null --override roadside_motion_layout=stack " in \
        rows["no_roadside_motion"]["command"]
    assert "--override freeze_vision=true " in rows["no_vision_training"]["command"]
    assert "--override lambda_hazard=0 --override roadside_crop=null --override roadside_motion_s=null " \
        "--override roadside_motion_layout=stack " in rows["no_fusion"]["command"]
    assert "--override lambda_hazard=0 " in rows["no_hazard_probe"]["command"]
    assert "--override lambda_objects=0 " in rows["no_objects_probe"]["command"]
    assert "--override augment_resolution=null --override augment_jpeg_quality=null" in \
        rows["no_augmentation"]["command"]
    assert "--override roadside_dropout=0 " in rows["no_roadside_dropout"]["command"]
    assert "--override modality_weights=false" in rows["no_modality_weights"]["command"]
    assert "--override roadside_crop=null " in rows["no_roadside_crop"]["command"]
    assert "--override codec_reference=none --override codec_x_range=[-10,80] --override codec_bins=400 " \
        "--override distillation=false " in rows["no_speed_reference"]["command"]
    assert rows["no_scene_text"]["status"] == "evaluated" and rows["no_scene_text"]["num_samples"] == MAX
    for name, switch in (("no_fusion", "fusion"), ("no_alignment", "alignment"),
                         ("no_distillation", "distillation")):
        assert rows[name]["status"] == "not trained" and "l2" not in rows[name]
        assert f"--override {switch}=false" in rows[name]["command"]
        assert rows[name]["command"].startswith("v2x-vlm train config/train_synthetic_student.yaml")
    md = (full_run[0] / "tables.md").read_text()
    assert md.count("not trained") >= 3 and train_command("no_alignment", t5["train_config"]) in md


def test_same_seed_same_numbers(tmp_path, full_run, tiny_model_dir, no_scene_text_dir):
    again = run_experiments(_options(tmp_path, tiny_model_dir,
                                     ablations={"no_scene_text": str(no_scene_text_dir)}), progress=False)

    def numbers(result):  # a copy without the timings (table 4 is all timings)
        tables = json.loads(json.dumps({k: v for k, v in result["tables"].items() if k != "table4"}))
        for row in tables["table2"]["rows"]:
            del row["latency"]
        return tables

    assert numbers(again) == numbers(full_run[1])
    runs = lambda r: {k: {m: v for m, v in run.items() if m != "latency"} for k, run in r["runs"].items()}
    assert json.loads(json.dumps(runs(again))) == json.loads(json.dumps(runs(full_run[1])))


# -- the perturbations ------------------------------------------------------------------------


def test_text_perturbation_touches_only_the_description(dataset):
    s = dataset[7]
    ego = load_image(s.ego_image_path)
    road = load_image(s.roadside_image_path)
    frame = PlanInput(ego, road, s.description, s.motion, s.command)
    out = DescriptionPerturbation(0.5, seed=1, vocabulary=["zebra"])(s, frame)
    assert out.description != s.description
    assert out.ego is ego and out.roadside is road and out.motion == s.motion and out.command == s.command
    assert state_text(out.motion) == state_text(s.motion) and frame.description == s.description
    assert set(out.description.split()) <= set(s.description.split()) | {"zebra"}
    # p = 0 is the identity, exactly
    assert DescriptionPerturbation(0.0, seed=1)(s, frame).description == s.description
    assert perturb_words(s.description, 0.0, np.random.default_rng(0)) == (
        s.description, 0, len(s.description.split()))
    assert perturb_words(None, 0.1, np.random.default_rng(0)) == (None, 0, 0)


def test_text_perturbation_rate_over_many_samples(dataset):
    texts = list(dataset.descriptions.values())
    vocab = description_vocabulary(texts)
    hit = total = kept = 0
    for i, text in enumerate(texts):
        out, h, n = perturb_words(text, 0.1, sample_rng(0, "description", str(i)), vocab)
        hit, total, kept = hit + h, total + n, kept + len(out.split())
    assert total > 10_000
    assert hit / total == pytest.approx(0.1, abs=0.01)
    assert 1 - kept / total == pytest.approx(0.05, abs=0.01)  # half of the hit words are dropped


def test_noise_identity_determinism_and_order_independence(dataset):
    image = np.full((40, 60, 3), 128, np.uint8)
    assert np.array_equal(gaussian_noise(image, 0.0, np.random.default_rng(0)), image)
    noisy = gaussian_noise(image, 10.0, np.random.default_rng(0)).astype(float) - 128
    assert noisy.mean() == pytest.approx(0.0, abs=0.5) and noisy.std() == pytest.approx(10.0, rel=0.05)
    with pytest.raises(ValueError):
        gaussian_noise(image, -1.0, np.random.default_rng(0))

    samples = [dataset[i] for i in range(0, 300, 60)]
    frames = [PlanInput(image, image, s.description, s.motion, s.command) for s in samples]
    forward = [RoadsideNoise(5.0, seed=4)(s, f).roadside for s, f in zip(samples, frames)]
    backward = [RoadsideNoise(5.0, seed=4)(s, f).roadside for s, f in zip(samples[::-1], frames[::-1])][::-1]
    other_seed = RoadsideNoise(5.0, seed=5)(samples[0], frames[0]).roadside
    assert all(np.array_equal(a, b) for a, b in zip(forward, backward))
    assert not np.array_equal(forward[0], forward[1]) and not np.array_equal(forward[0], other_seed)
    assert RoadsideNoise(0.0, seed=4)(samples[0], frames[0]) is frames[0]
    assert np.array_equal(image, np.full((40, 60, 3), 128, np.uint8))  # the input is never modified


def test_planner_inputs_do_not_depend_on_batching(dataset, tiny_model_dir):
    samples = [dataset[i] for i in range(0, 300, 30)]
    base = ModelPlanner(str(tiny_model_dir), batch_size=4)
    make = lambda: ExperimentPlanner(base, "x", [RoadsideNoise(10.0, 2), DescriptionPerturbation(0.3, 2)])
    whole = make().inputs(samples)
    one_by_one = [make().inputs([s])[0] for s in samples[::-1]][::-1]
    for a, b in zip(whole, one_by_one):
        assert np.array_equal(a.roadside, b.roadside) and a.description == b.description
    planner = make()
    assert len(planner.plan_batch(samples)) == len(samples) == len(planner.engine.stage_ms)


# -- the command line ---------------------------------------------------------------------------


def test_cli_with_an_ego_only_sibling(tmp_path, tiny_tokenizer, capsys):
    model = _tiny(tmp_path / "student", tiny_tokenizer)
    _tiny(tmp_path / "student-ego-only", tiny_tokenizer, fusion=False)
    out = tmp_path / "out"
    rc = main(["experiments", str(DATA), "--model", str(model), "--max-samples", "6", "--out", str(out),
               "--tables", "1,5", "--quiet", "--split", "train", "--ablation", "no-alignment=" + str(model)])
    printed = capsys.readouterr().out
    assert rc == 0 and "## Table 1." in printed and "## Table 5." in printed and "## Table 2." not in printed
    assert f"wrote {out}: tables.md, results.json" in printed
    result = json.loads((out / "results.json").read_text())
    assert list(result["tables"]) == ["table1", "table5"] and result["dataset"]["split"] == "train"
    assert [r["method"] for r in result["tables"]["table1"]["rows"]][2] == "ego-only model"
    rows = {r["name"]: r for r in result["tables"]["table5"]["rows"]}
    assert rows["no_fusion"]["status"].startswith("evaluated") and rows["no_fusion"]["formula_bps"] == 0
    assert rows["no_alignment"]["status"] == "evaluated"
    assert not (out / "l2_vs_bandwidth.png").exists()  # no Table 2, no plot


@pytest.mark.parametrize("args, message", [
    (["--tables", "1,7"], "subset"), (["--ablation", "no_fusion"], "NAME=DIR"),
    (["--max-samples", "0"], "max-samples"), (["--model", "/nonexistent/model"], "check --model"),
])
def test_cli_bad_input_exits_2(tmp_path, tiny_model_dir, capsys, args, message):
    argv = ["experiments", str(DATA), "--model", str(tiny_model_dir), "--out", str(tmp_path), "--quiet"]
    assert main(argv + args) == 2
    assert message in capsys.readouterr().err


def test_option_parsing():
    assert parse_ablations(["No-Fusion=a/b", "x=c=d"]) == {"no_fusion": "a/b", "x": "c=d"}
    with pytest.raises(ExperimentError):
        parse_ablations(["bad name=x"])
    assert replace(ExperimentOptions(tables=(3, 1, 3)), seed=1).tables == (1, 3)
    assert re.fullmatch(r"v2x-vlm train c\.yaml --override scene_text=false "
                        r"--override output_dir=runs/ablation-no-scene-text",
                        train_command("no_scene_text", "c.yaml"))
    assert train_command("something_else", "c.yaml") is None
