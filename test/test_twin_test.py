"""The decision-token twin test (`v2x-vlm twin-test`, eval/twin_test.py): which pairs it
compares, that its greedy value is the first token `generate` writes, in either waypoint
order, and the errors it names."""

import dataclasses
import json
import shutil

import numpy as np
import pytest

from v2x_vlm_ros.cli import main
from v2x_vlm_ros.data.dair import DairV2XDataset
from v2x_vlm_ros.data.images import load_image
from v2x_vlm_ros.data.synth.visibility import hidden_hazard_frames, read_visibility
from v2x_vlm_ros.eval.twin_test import first_token_x, same_prompt_pairs, twin_test
from v2x_vlm_ros.model.configuration import ModelSettings
from v2x_vlm_ros.runtime.planner import ModelPlanner


def test_pairs_are_hidden_hazard_frames_and_their_twins_with_the_same_prompt(world):
    ds = DairV2XDataset(world)
    pairs = same_prompt_pairs(ds)
    visibility = read_visibility(world)
    hidden = hidden_hazard_frames(visibility)
    sequences = visibility["sequences"]
    assert pairs and len(pairs) < len(hidden)  # frames where the ground truth brakes are left out
    for h, t in pairs:
        seq, frame = str(h.sequence_id), str(h.sample_id)
        assert (seq, frame) in hidden
        # the twin's frame at the same position of the sequence the sidecar names as the pair
        assert str(t.sequence_id) == sequences[seq]["pair"]
        order_h, order_t = sorted(sequences[seq]["frames"]), sorted(sequences[str(t.sequence_id)]["frames"])
        assert order_t.index(str(t.sample_id)) == order_h.index(frame)
        # the same prompt: speed, ego image and description; only the roadside image differs
        assert abs(h.motion.speed_mps - t.motion.speed_mps) < 0.05
        assert np.array_equal(load_image(h.ego_image_path), load_image(t.ego_image_path))
        assert h.description == t.description
    assert any(not np.array_equal(load_image(h.roadside_image_path), load_image(t.roadside_image_path))
               for h, t in pairs)


def _endpoint_first_copy(tiny_model_dir, tmp_path):
    copy = tmp_path / "endpoint_first"
    shutil.copytree(tiny_model_dir, copy)
    settings = ModelSettings.load(copy)
    settings.codec = dataclasses.replace(settings.codec, order="endpoint_first")
    settings.save(copy)
    return copy


@pytest.mark.parametrize("order", ["time", "endpoint_first"])
def test_greedy_first_token_is_the_one_generate_writes(world, tiny_model_dir, tmp_path, order):
    model = tiny_model_dir if order == "time" else _endpoint_first_copy(tiny_model_dir, tmp_path)
    planner = ModelPlanner(model, batch_size=8)
    samples = [h for h, _ in same_prompt_pairs(DairV2XDataset(world))][:6]
    expected, greedy = first_token_x(planner, samples)
    # reference: transformers' generate through the engine, decoded by the codec
    rows, _ = planner.engine.tokens(planner.engine.encode(planner.inputs(samples))[0])
    first = planner.engine.codec.config.waypoint_order[0]
    assert first == (0 if order == "time" else 9)
    want = [planner.engine.decode_tokens(row, s.motion.speed_mps)[first, 0] for row, s in zip(rows, samples)]
    np.testing.assert_allclose(greedy, want, atol=1e-9)
    # the mean of a distribution over the bins lies within the bins' range (plus the reference)
    lo, hi = planner.engine.codec.config.x_range
    assert np.all((expected >= lo) & (expected <= hi))
    # grey and no roadside reach the model, differently (the same frames again give the same numbers)
    assert np.array_equal(first_token_x(planner, samples, "real")[0], expected)
    grey, none = first_token_x(planner, samples, "grey")[0], first_token_x(planner, samples, "none")[0]
    assert not np.array_equal(grey, expected) and not np.array_equal(none, expected)
    assert not np.array_equal(grey, none)
    with pytest.raises(ValueError) as err:
        first_token_x(planner, samples, "black")
    assert str(err.value) == "view must be one of real, grey, none, got 'black'"


def test_report_and_command(world, tiny_model_dir, tmp_path, capsys):
    planner = ModelPlanner(tiny_model_dir)
    report = twin_test(planner, DairV2XDataset(world), max_pairs=5, batch_size=2)
    assert report["pairs"] == 5 and report["first_waypoint"] == 1 and report["order"] == "time"
    for view in ("real", "grey", "none"):
        r = report[view]
        assert r["expected_gap_m"] == pytest.approx(r["expected_x"]["hidden"] - r["expected_x"]["twin"])
        assert 0.0 <= r["hidden_shorter_share"] <= 1.0
    out = tmp_path / "twin.json"
    assert main(["twin-test", str(tiny_model_dir), "--data", str(world), "--max-pairs", "5",
                 "--batch-size", "5", "--json", str(out), "--quiet"]) == 0
    written = json.loads(out.read_text())
    for view in ("real", "grey", "none"):  # other batches, the same numbers
        for key in ("expected_x", "greedy_x"):
            assert written[view][key] == pytest.approx(report[view][key], abs=1e-4)
        assert written[view]["hidden_shorter_share"] == report[view]["hidden_shorter_share"]
    assert written["model"] == str(tiny_model_dir) and written["scenario"] is None
    capsys.readouterr()


def test_errors_name_the_world_and_the_model(world, tiny_model_dir, tmp_path, capsys):
    copy = tmp_path / "no_sidecar"
    shutil.copytree(world, copy)
    (copy / "visibility.json").unlink()
    assert main(["twin-test", str(tiny_model_dir), "--data", str(copy), "--quiet"]) == 2
    assert capsys.readouterr().err.strip() == \
        f"v2x-vlm: error: {copy}: no visibility.json (a synthetic world's sidecar): no twin pairs"
    # a scenario without hidden hazards has no pairs
    assert main(["twin-test", str(tiny_model_dir), "--data", str(world), "--scenario", "straight",
                 "--quiet"]) == 2
    assert capsys.readouterr().err.strip() == (f"v2x-vlm: error: {world}: no hidden-hazard frame with a "
                                               "same-speed twin frame (split all, scenario straight)")
    text = tmp_path / "text_model"
    shutil.copytree(tiny_model_dir, text)
    settings = ModelSettings.load(text)
    settings.codec = dataclasses.replace(settings.codec, kind="text")
    settings.save(text)
    assert main(["twin-test", str(text), "--data", str(world), "--quiet"]) == 2
    assert capsys.readouterr().err.strip() == (f"v2x-vlm: error: {text}: the twin test reads loc-token "
                                               "plans; this model writes text (codec.kind 'text')")
