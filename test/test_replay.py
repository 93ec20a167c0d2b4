"""Replay: the onboard services on recorded data. Untouched link and no describer give
exactly eval's numbers; the default link costs what it costs; bags replay too."""

import json
from pathlib import Path

import cv2
import pytest
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory

from v2x_vlm_ros.cli import main

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"
PICK = ["--split", "train", "--scenario", "left_turn"]


@pytest.fixture(scope="module")
def untouched(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("replay_untouched")
    assert main(["replay", str(SAMPLE), *PICK, "--model", str(tiny_model_dir), "--out", str(out),
                 "--roadside-scale", "1", "--roadside-codec", "raw", "--roadside-rate", "0", "--quiet"]) == 0
    return out


def test_untouched_link_without_describer_equals_eval(untouched, tiny_model_dir, tmp_path):
    evaluated = tmp_path / "eval.json"
    assert main(["eval", str(SAMPLE), *PICK, "--planner", "model", "--model", str(tiny_model_dir),
                 "--batch-size", "1", "--json", str(evaluated), "--quiet"]) == 0
    a = json.loads((untouched / "metrics.json").read_text())
    b = json.loads(evaluated.read_text())
    assert a["num_samples"] == b["num_samples"] == 60
    for key in ("l2", "collision", "l2_valid_only", "collision_counts"):
        assert a[key] == b[key], key
    assert a["replay"]["frames_not_planned"] == 0
    assert a["vehicle"]["counts"]["cycles_fused"] == 60 and a["bandwidth"]["sent"] == 60


def test_outputs_are_written(untouched):
    for name in ("metrics.json", "metrics.md", "bev.png", "replay.mp4"):
        assert (untouched / name).stat().st_size > 0, name
    frames = list((untouched / "frames").glob("*.png"))
    assert frames and cv2.imread(str(frames[0])) is not None
    video = cv2.VideoCapture(str(untouched / "replay.mp4"))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == 60
    md = (untouched / "metrics.md").read_text()
    assert "| model (replay) |" in md and "Latency per planning step" in md and "| decoder |" in md


def test_predictions_mcap_reads_with_the_mcap_library(untouched):
    mcap_files = list((untouched / "predictions.mcap").glob("*.mcap"))
    with open(mcap_files[0], "rb") as fh:
        counts = {}
        first_path = None
        reader = make_reader(fh, decoder_factories=[DecoderFactory()])
        for _, channel, _, msg in reader.iter_decoded_messages():
            counts[channel.topic] = counts.get(channel.topic, 0) + 1
            if channel.topic == "/v2x/planning/path" and first_path is None:
                first_path = msg
    for topic in ("/v2x/planning/path", "/v2x/planning/markers", "/v2x/ego/image/compressed", "/tf",
                  "/v2x/planning/debug_image", "/diagnostics"):
        assert counts[topic] == 60, topic
    assert first_path.header.frame_id == "base_link" and len(first_path.poses) == 10


def test_the_default_link_costs_what_it_costs(tiny_model_dir, tmp_path):
    out = tmp_path / "default"
    assert main(["replay", str(SAMPLE), *PICK, "--model", str(tiny_model_dir), "--out", str(out),
                 "--quiet"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    bw = m["bandwidth"]
    assert bw["config"] == {"scale": 1.0, "codec": "jpeg", "quality": 90, "rate_hz": 2.0}
    assert bw["sent"] == 12 and bw["skipped_rate"] == 48  # 2 Hz of a 10 Hz camera over 6 s
    assert m["transmission"]["formula_bps"] == pytest.approx(144 * 81 * 3 * 2.0)
    assert 0 < m["transmission"]["measured_bps"] < m["transmission"]["formula_bps"]
    assert m["vehicle"]["counts"]["cycles_fused"] == 60  # older roadside frames still pair (< 1 s)


def test_no_roadside_drives_ego_only_and_costs_nothing(tiny_model_dir, tmp_path):
    out = tmp_path / "alone"
    assert main(["replay", str(SAMPLE), *PICK, "--model", str(tiny_model_dir), "--out", str(out),
                 "--no-roadside", "--quiet"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["vehicle"]["counts"]["cycles_ego_only"] == 60
    assert m["transmission"] == {"uses_roadside": False, "formula_bps": 0.0, "measured_bps": 0.0}


def test_a_describer_model_writes_asynchronous_descriptions(tiny_model_dir, tmp_path):
    out = tmp_path / "described"
    assert main(["replay", str(SAMPLE), *PICK, "--model", str(tiny_model_dir), "--out", str(out),
                 "--describer", str(tiny_model_dir), "--describer-rate", "1", "--quiet"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["describer"]["described"] == 6  # 1 Hz over 2 x 3 s
    counts = m["vehicle"]["counts"]
    assert counts["description_fresh"] == 60  # ages below the 3 s limit


def test_a_bag_replays_too(tiny_model_dir, tmp_path):
    bag = tmp_path / "bag"
    assert main(["bag", str(SAMPLE), str(bag), *PICK, "--storage", "mcap", "--quiet"]) == 0
    out = tmp_path / "from_bag"
    assert main(["replay", str(bag), "--model", str(tiny_model_dir), "--out", str(out), "--quiet"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["num_samples"] == 60 and m["replay"]["frames_not_planned"] == 0
    assert m["unlabelled_steps"]["4.5"] > 0  # a bag carries no agent boxes: no collision test


def test_realtime_plans_the_newest_frame_and_counts_the_rest(tiny_model_dir, tmp_path):
    out = tmp_path / "realtime"
    assert main(["replay", str(SAMPLE), *PICK, "--model", str(tiny_model_dir), "--out", str(out),
                 "--realtime", "--quiet"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    drops = m["vehicle"]["drops"]
    lost = drops.get("ego_superseded", 0) + drops.get("ego_queue_full", 0) + drops.get("ego_too_old", 0)
    assert m["replay"]["frames"] == 60 and m["replay"]["realtime"]
    assert m["replay"]["planned"] + lost == 60  # every frame is planned on or counted
    assert m["replay"]["seconds"] >= 5.5  # the recorded pace: 6 s of frames
