"""`v2x-vlm eval --frames FILE`: one JSON line per scored frame (eval.frames)."""

import json

import numpy as np
import pytest

from v2x_vlm_ros.cli import main
from v2x_vlm_ros.data.dair import DairV2XDataset
from v2x_vlm_ros.data.synth.visibility import hazard_twin_frames, hidden_hazard_frames, read_visibility
from v2x_vlm_ros.eval.baselines import ConstantVelocityPlanner
from v2x_vlm_ros.eval.frames import read_frame_records


def test_frames_file_holds_each_frame_its_plan_its_slices_and_its_scores(world, tmp_path, capsys):
    frames_path, json_path = tmp_path / "out" / "frames.jsonl", tmp_path / "r.json"
    assert main(["eval", str(world), "--planner", "constant-velocity", "--quiet",
                 "--frames", str(frames_path), "--json", str(json_path)]) == 0
    result = json.loads(json_path.read_text())
    records = read_frame_records(frames_path)
    assert len(records) == result["num_samples"] == result["frames_written"]["count"]
    assert result["frames_written"]["path"] == str(frames_path)

    by_key = {(r["sequence_id"], r["sample_id"]): r for r in records}
    assert len(by_key) == len(records)  # every frame once
    visibility = read_visibility(world)
    hidden, twins = hidden_hazard_frames(visibility), hazard_twin_frames(visibility)
    assert {k for k, r in by_key.items() if "hidden_hazard" in r["slices"]} == hidden
    assert {k for k, r in by_key.items() if "hazard_twin" in r["slices"]} == twins

    planner = ConstantVelocityPlanner()
    ds = DairV2XDataset(world)
    scenarios = json.loads((world / "scenarios.json").read_text())
    ended = 0
    for sample in ds:
        r = by_key[(sample.sequence_id, sample.sample_id)]
        np.testing.assert_allclose(r["plan"], planner.plan(sample), atol=1e-3)
        mask = np.asarray(sample.future_mask, dtype=bool)
        assert [g is None for g in r["ground_truth"]] == list(~mask)
        ended += int(not mask.all())
        for horizon, k in {"2.5": 4, "3.5": 6, "4.5": 8}.items():
            if mask[k]:  # the error at one waypoint, by hand
                want = float(np.hypot(*(np.asarray(r["plan"][k]) - np.asarray(sample.future_xy[k]))))
                assert r["l2"][horizon] == pytest.approx(want, abs=2e-3)
            else:
                assert r["l2"][horizon] is None and r["collision"][horizon] is False
        assert r["scenario"] in set(scenarios.values()) | {None}
    assert ended > 0  # the frames near a sequence's end have steps past it

    # the flags add up to the aggregate counts, overall and on the slice
    for horizon in ("2.5", "3.5", "4.5"):
        assert sum(r["collision"][horizon] for r in records) == result["collision_counts"][horizon]
        assert (sum(r["collision"][horizon] for r in records if "hidden_hazard" in r["slices"])
                == result["slices"]["hidden_hazard"]["collision_counts"][horizon])
    # constant velocity drives on into the hidden hazard: some of those frames collide
    assert any(any(r["collision"].values()) for r in records if "hidden_hazard" in r["slices"])


def test_without_frames_nothing_is_written_and_the_result_says_nothing(world, tmp_path, capsys):
    json_path = tmp_path / "r.json"
    assert main(["eval", str(world), "--planner", "constant-velocity", "--quiet",
                 "--json", str(json_path)]) == 0
    assert "frames_written" not in json.loads(json_path.read_text())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]
