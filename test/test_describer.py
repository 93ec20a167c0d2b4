"""Scene descriptions for training: describe -> JSONL -> used by training instead of the
dataset's own descriptions."""

import json
from pathlib import Path

import pytest

from v2x_vlm_ros.cli import main
from v2x_vlm_ros.data.dair import DairV2XDataset
from v2x_vlm_ros.training.data import PlanningExamples, read_descriptions

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"


def test_describe_writes_one_line_per_sample(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "descriptions.jsonl"
    assert main(["describe", str(SAMPLE), "--split", "train", "--scenario", "left_turn", "--model",
                 str(tiny_model_dir), "--out", str(out), "--max-new-tokens", "8", "--quiet"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    ds = DairV2XDataset(SAMPLE, split="train", scenario="left_turn")
    assert [r["vehicle_frame"] for r in rows] == [s.vehicle_frame for s in ds]
    assert all(r["task"] == "<MORE_DETAILED_CAPTION>" and isinstance(r["description"], str) for r in rows)
    assert f"wrote {len(ds)} descriptions" in capsys.readouterr().out


def test_training_reads_the_edited_file_instead_of_the_built_in_descriptions(tmp_path):
    path = tmp_path / "edited.jsonl"
    ds = DairV2XDataset(SAMPLE, split="train", scenario="straight")
    first = ds[0].vehicle_frame
    path.write_text(json.dumps({"vehicle_frame": first, "description": "A person wrote this."}) + "\n\n")
    examples = PlanningExamples(ds, read_descriptions(path))
    assert examples[0]["description"] == "A person wrote this."
    assert examples[1]["description"] == ""  # not in the file: no description, not the built-in one
    assert PlanningExamples(ds)[1]["description"] == ds[1].description != ""
    path.write_text('{"vehicle_frame": "1"}\n')
    with pytest.raises(ValueError, match="line 1: KeyError"):
        read_descriptions(path)
