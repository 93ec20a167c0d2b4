"""The ``v2x-vlm`` contract: command names, flags and JSON keys outside tools rely on."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from builders import TINY_JPEG, arc, line, sequence, world_agent, write
from v2x_vlm_ros.cli import main


@pytest.fixture()
def root(tmp_path):
    return write(tmp_path / "ds", [sequence(line(8.0), n_frames=60, agents=lambda t: [world_agent(80, 0)]),
                                   sequence(arc(8.0, 0.2), n_frames=60)])


def test_eval_json_holds_the_contract_keys(root, tmp_path, capsys):
    out = tmp_path / "eval.json"
    md = tmp_path / "eval.md"
    assert main(["eval", str(root), "--planner", "constant-velocity", "--json", str(out),
                 "--markdown", str(md), "--quiet", "--protocol", "time"]) == 0
    result = json.loads(out.read_text())
    assert result["num_samples"] == 120
    for key in ("l2", "collision"):
        assert set(result[key]) >= {"2.5", "3.5", "4.5", "avg"}
        assert all(isinstance(result[key][h], float) for h in ("2.5", "3.5", "4.5", "avg"))
    assert result["collision_method"] == "univ2x"
    printed = capsys.readouterr().out
    assert "| constant-velocity |" in printed and "120 samples" in printed
    assert md.read_text().startswith("| method |")


def test_eval_split_and_collision_flags(root, tmp_path):
    out = tmp_path / "val.json"
    assert main(["eval", str(root), "--planner", "constant-velocity", "--split", "val",
                 "--protocol", "time", "--collision", "obb", "--json", str(out), "--quiet"]) == 0
    result = json.loads(out.read_text())
    assert result["num_samples"] == 60 and result["collision_method"] == "obb"
    assert result["dataset"]["split"] == "val"


def test_dataset_summary_counts_and_skips(root, tmp_path, capsys):
    (root / "vehicle-side/image/000003.jpg").write_bytes(b"")
    out = tmp_path / "summary.json"
    assert main(["dataset", "summary", str(root), "--json", str(out), "--quiet", "--protocol", "time"]) == 0
    summary = json.loads(out.read_text())
    assert summary["sequences"] == 2 and summary["frames"] == 120 and summary["samples"] == 119
    assert summary["skipped"] == {"image_invalid": 1}
    assert "vehicle-side/image/000003.jpg" in summary["skipped_items"][0]
    assert summary["commands"]["LEFT"] > 0 and summary["commands"]["FORWARD"] > 0
    stream = summary["roadside_stream"]  # the stored 16x8 JPEGs sent at 2 Hz
    assert stream["formula_bps"] == 16 * 8 * 3 * 2.0 and stream["messages"] == 119
    assert stream["measured_bps"] == pytest.approx(2.0 * len(TINY_JPEG))
    assert "skipped [image_invalid] vehicle-side/image/000003.jpg: empty file" in capsys.readouterr().out


def test_bad_input_exits_2_with_a_message(tmp_path, capsys):
    assert main(["dataset", "summary", str(tmp_path / "nowhere"), "--quiet"]) == 2
    assert "dataset root is not a directory" in capsys.readouterr().err
    (tmp_path / "bad.yaml").write_text("dataset:\n  waypoint_dt: 0.5\n")
    tmp_path.joinpath("ds").mkdir()
    assert main(["eval", str(tmp_path / "ds"), "--planner", "constant-velocity",
                 "--config", str(tmp_path / "bad.yaml")]) == 2
    assert "unknown key(s) ['waypoint_dt']" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["synth", "OUT", "--sequences", "-3"], "num_sequences >= 0"),
    (["bench", "--config", "tiny", "--batch", "0", "--no-record"], "--batch >= 1"),
    (["eval", "ROOT", "--planner", "model", "--model", "/no/such/model"], "no such directory"),
    (["eval", "ROOT", "--planner", "model", "--model", "./model"], "no such directory"),
])
def test_out_of_range_values_and_missing_paths_are_clear_errors(root, tmp_path, capsys, argv, message):
    argv = [str(tmp_path / "out") if a == "OUT" else str(root) if a == "ROOT" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_console_script_is_installed(root):
    exe = shutil.which("v2x-vlm") or str(__import__("pathlib").Path(sys.executable).with_name("v2x-vlm"))
    proc = subprocess.run([exe, "dataset", "summary", str(root), "--quiet", "--protocol", "time"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.split("\n}\n")[0] + "\n}")["samples"] == 120


def test_table_merges_eval_results(root, tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    time = ["--protocol", "time", "--quiet"]
    assert main(["eval", str(root), "--planner", "constant-velocity", "--json", str(a), *time]) == 0
    assert main(["eval", str(root), "--planner", "constant-velocity", "--collision", "obb",
                 "--split", "val", "--json", str(b), *time]) == 0
    capsys.readouterr()
    assert main(["table", str(a), str(b), "--names", "all", "val", "--out", str(tmp_path / "t.md")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| method |")
    assert lines[2].startswith("| all |") and lines[3].startswith("| val |")
    l2 = json.loads(a.read_text())["l2"]["avg"]
    assert f"{l2:.2f}" in lines[2]
    assert (tmp_path / "t.md").read_text().splitlines() == lines
    assert main(["table", str(a), "--names", "x", "y"]) == 2
    assert main(["table", str(a), "--scenario", "left_turn"]) == 2  # the analytic data has no scenarios


def test_eval_runs_under_both_protocols_without_naming_a_planner(tmp_path, capsys):
    """`v2x-vlm eval data/sample --protocol univ2x|time` (issue 12's check): the default
    planner is the constant-velocity baseline, and the JSON says which protocol made it."""
    sample = Path(__file__).resolve().parents[1] / "data" / "sample"
    for protocol in ("univ2x", "time"):
        out = tmp_path / f"{protocol}.json"
        assert main(["eval", str(sample), "--protocol", protocol, "--quiet", "--json", str(out)]) == 0
        result = json.loads(out.read_text())
        assert result["protocol"] == protocol and result["planner"] == "constant-velocity"
        assert result["num_samples"] > 0
