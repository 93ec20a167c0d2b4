"""`v2x-vlm eval --frames FILE`: one JSON line per scored frame (eval.frames)."""

import json

import numpy as np
import pytest

from v2x_vlm_ros.cli import main
from v2x_vlm_ros.data.dair import DairV2XDataset
from v2x_vlm_ros.data.synth.visibility import hazard_twin_frames, hidden_hazard_frames, read_visibility
from v2x_vlm_ros.eval.frames import read_frame_records
from v2x_vlm_ros.runtime.baselines import ConstantVelocityPlanner


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


# `v2x-vlm frames`: the colliding plan steps per sequence, several runs side by side

def _record(seq, frame, scenario, slices, l2, collision):
    return {"sequence_id": seq, "sample_id": frame, "scenario": scenario, "slices": slices,
            "plan": [[0.0, 0.0]] * 10, "ground_truth": [[0.0, 0.0]] * 10,
            "l2": dict(zip(("2.5", "3.5", "4.5"), l2)),
            "collision": dict(zip(("2.5", "3.5", "4.5"), collision))}


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


HH = ["hidden_hazard"]


def _two_runs(tmp_path):
    a = [_record("0003", "000360", "hidden_queue", HH, (1.0, 2.0, 3.0), (False, True, True)),
         _record("0003", "000361", "hidden_queue", HH, (1.0, 1.0, None), (False, False, False)),
         _record("0001", "000120", "occluded_crossing", HH, (2.0, 4.0, 6.0), (False, False, True)),
         _record("0001", "000121", "occluded_crossing", [], (9.0, 9.0, 9.0), (True, True, True)),
         _record("0002", "000240", "straight", [], (0.5, 0.5, 0.5), (False, False, False))]
    b = [_record("0003", "000360", "hidden_queue", HH, (0.0, 0.0, 0.0), (False, False, False)),
         _record("0003", "000361", "hidden_queue", HH, (3.0, 3.0, None), (True, True, False)),
         _record("0001", "000120", "occluded_crossing", HH, (1.0, 1.0, 1.0), (False, False, False)),
         _record("0001", "000121", "occluded_crossing", [], (0.0, 0.0, 0.0), (False, False, False)),
         _record("0002", "000240", "straight", [], (0.5, 0.5, 0.5), (False, True, False))]
    return _write(tmp_path / "fused.jsonl", a), _write(tmp_path / "ego.jsonl", b)


def test_frames_counts_colliding_steps_per_sequence_and_scenario_on_a_slice(tmp_path, capsys):
    fused, ego = _two_runs(tmp_path)
    out, js = tmp_path / "t.md", tmp_path / "t.json"
    assert main(["frames", str(fused), str(ego), "--names", "fused", "ego", "--slice", "hidden_hazard",
                 "--out", str(out), "--json", str(js)]) == 0
    table = json.loads(js.read_text())
    assert [s["sequence_id"] for s in table["sequences"]] == ["0001", "0003"]  # 0002 has no slice frame
    seq1, seq3 = table["sequences"]
    assert (seq1["scenario"], seq1["frames"], seq3["scenario"], seq3["frames"]) == \
        ("occluded_crossing", 1, "hidden_queue", 2)
    # by hand: 0003 fused flags F,T,T + F,F,F; ego F,F,F + T,T,F; L2 over the 5 valid steps
    assert seq3["runs"]["fused"] == {"colliding_steps": 2, "colliding_frames": 1, "l2": pytest.approx(1.6)}
    assert seq3["runs"]["ego"] == {"colliding_steps": 2, "colliding_frames": 1, "l2": pytest.approx(1.2)}
    assert seq1["runs"]["fused"] == {"colliding_steps": 1, "colliding_frames": 1, "l2": pytest.approx(4.0)}
    assert seq1["runs"]["ego"] == {"colliding_steps": 0, "colliding_frames": 0, "l2": pytest.approx(1.0)}
    assert table["by_scenario"]["hidden_queue"]["runs"]["fused"]["colliding_steps"] == 2
    assert table["total"]["frames"] == 3
    assert table["total"]["runs"]["fused"] == {"colliding_steps": 3, "colliding_frames": 2,
                                               "l2": pytest.approx(20.0 / 8)}
    assert table["total"]["runs"]["ego"]["colliding_steps"] == 2
    text = out.read_text()
    assert text == capsys.readouterr().out
    assert "| 0003 | hidden_queue | 2 | 2 (1) | 1.60 | 2 (1) | 1.20 |" in text.splitlines()
    assert text.splitlines()[-1] == "| all | all | 3 | 3 (2) | 2.50 | 2 (1) | 1.12 |"

    # without --slice every frame counts (0001's second frame collides at all three horizons)
    assert main(["frames", str(fused), "--json", str(js)]) == 0
    table = json.loads(js.read_text())
    assert table["runs"] == ["fused"] and table["total"]["frames"] == 5
    assert table["total"]["runs"]["fused"]["colliding_steps"] == 6
    assert [s["sequence_id"] for s in table["sequences"]] == ["0001", "0002", "0003"]


def test_frames_refuses_runs_over_different_frames_and_names_one(tmp_path, capsys):
    fused, ego = _two_runs(tmp_path)
    records = [json.loads(line) for line in ego.read_text().splitlines()]
    _write(ego, [r for r in records if r["sample_id"] != "000361"])
    assert main(["frames", str(fused), str(ego), "--slice", "hidden_hazard"]) == 2
    err = capsys.readouterr().err
    assert ("runs 'fused' and 'ego' do not hold the same frames of slice 'hidden_hazard' (3 and 2; "
            "frame 000361 of sequence 0003 is in 'fused', not in 'ego')") in err
    # outside the slice the files may differ: only the slice's frames are compared
    _write(ego, [r for r in records if r["sample_id"] != "000121"])
    assert main(["frames", str(fused), str(ego), "--slice", "hidden_hazard"]) == 0


def test_frames_names_the_file_and_line_of_a_bad_record(tmp_path, capsys):
    fused, ego = _two_runs(tmp_path)
    lines = fused.read_text().splitlines()
    fused.write_text("\n".join([lines[0], lines[1][:-5]] + lines[2:]) + "\n")  # a truncated line
    assert main(["frames", str(fused), str(ego)]) == 2
    assert f"{fused}:2: not JSON" in capsys.readouterr().err
    record = json.loads(lines[1])
    del record["collision"]
    fused.write_text("\n".join([lines[0], json.dumps(record)] + lines[2:]) + "\n")
    assert main(["frames", str(fused), str(ego)]) == 2
    assert f"{fused}:2: not a frame record of `v2x-vlm eval --frames` (missing collision)" in \
        capsys.readouterr().err
    record = json.loads(lines[1])
    record["collision"], record["slices"] = [True, False, False], "hidden_hazard"
    fused.write_text("\n".join([lines[0], json.dumps(record)] + lines[2:]) + "\n")
    assert main(["frames", str(fused), str(ego)]) == 2
    assert (f"{fused}:2: not a frame record of `v2x-vlm eval --frames` (slices is not a list, "
            "collision is not a dict)") in capsys.readouterr().err
    assert main(["frames", str(tmp_path / "absent.jsonl")]) == 2
    assert "absent.jsonl" in capsys.readouterr().err
    assert main(["frames", str(ego), str(ego)]) == 2  # two columns of one name
    assert "run names repeat (ego, ego): give --names" in capsys.readouterr().err
    assert main(["frames", str(ego), "--slice", "hazard_twin"]) == 2
    assert "no frame of slice 'hazard_twin'" in capsys.readouterr().err


def test_frames_of_an_eval_add_up_to_its_slice_counts(world, tmp_path, capsys):
    frames_path, json_path = tmp_path / "f.jsonl", tmp_path / "r.json"
    assert main(["eval", str(world), "--planner", "constant-velocity", "--quiet",
                 "--frames", str(frames_path), "--json", str(json_path)]) == 0
    result = json.loads(json_path.read_text())["slices"]["hidden_hazard"]
    table_path = tmp_path / "t.json"
    assert main(["frames", str(frames_path), "--slice", "hidden_hazard", "--json", str(table_path)]) == 0
    table = json.loads(table_path.read_text())
    assert table["total"]["frames"] == result["num_samples"]
    assert table["total"]["runs"]["f"]["colliding_steps"] == sum(result["collision_counts"].values()) > 0
    scenarios = json.loads((world / "scenarios.json").read_text())
    assert {s["sequence_id"]: s["scenario"] for s in table["sequences"]} == \
        {s["sequence_id"]: scenarios[s["sequence_id"]] for s in table["sequences"]}
