"""Soak: a long run of the onboard services on a cycled dataset. Every frame is accounted
for, memory is sampled, and a growing resident set fails the run."""

import json
import mmap
from pathlib import Path

import numpy as np
import pytest

from v2x_vlm_ros.cli import main
from v2x_vlm_ros.tools import soak as soak_module
from v2x_vlm_ros.tools.soak import SoakOptions, accounting, memory_growth, memory_verdict, soak

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"
KEYS = {"passed", "checks", "date", "machine", "model", "backend", "data", "source_frames", "options",
        "clock", "frames", "plans_out", "drops", "counts", "soak_counts", "errors", "first_error",
        "last_plan_error", "link", "accounting", "unexplained", "latency_ms", "roadside_encode_ms",
        "wall_ms_per_frame", "wall_ms_per_plan", "memory", "files"}
STAGES = {"preprocess", "vision", "encoder", "decoder", "decode", "refine", "total"}


@pytest.fixture(scope="module")
def run(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("soak")
    return out, soak(SoakOptions(frames=300, model=str(tiny_model_dir), data=str(SAMPLE), out=str(out),
                                 sample_every=20), progress=False)


def _ego_balance(result):
    drops = sum(v for k, v in result["drops"].items() if k.startswith("ego_"))
    held = result["accounting"]["ego"]["explained_by"]["held_at_end"]
    return result["plans_out"] + drops + held + result["soak_counts"].get("step_errors", 0)


def test_every_frame_is_accounted_for(run):
    _, r = run
    assert r["passed"] and all(r["checks"].values()), r["checks"]
    assert r["frames"]["ego_in"] == 300 == r["frames"]["roadside_camera"]
    assert r["unexplained"] == 0 and all(b["unexplained"] == 0 for k, b in r["accounting"].items()
                                         if k != "unexplained")
    # logical clock, camera and timer at 10 Hz: every ego frame is planned, nothing is pending
    assert r["plans_out"] == 300 == _ego_balance(r)
    assert r["clock"]["mode"] == "logical" and r["clock"]["timer_ticks_missed"] == 0
    assert r["clock"]["simulated_s"] == pytest.approx(29.9)
    # the link at 2 Hz sends one camera frame in five, JPEG, and the vehicle receives each
    assert r["frames"]["roadside_sent"] == 60 == r["frames"]["roadside_in"]
    assert r["link"]["skipped_rate"] == 240 and r["link"]["config"]["codec"] == "jpeg"
    # frames a buffer lets go are counted as drops; what is still held is the rest
    road = r["accounting"]["roadside_vehicle"]["explained_by"]
    assert road["roadside_queue_full"] + road["held_at_end"] == 60
    assert r["counts"]["cycles_fused"] == 300 and r["counts"]["steps"] == 300


def test_report_keys_latency_and_files(run):
    out, r = run
    assert KEYS <= set(r)
    assert STAGES <= set(r["latency_ms"])
    for stats in r["latency_ms"].values():
        assert stats["p50"] <= stats["p90"] <= stats["p99"] <= stats["max"]
    assert r["latency_ms"]["total"]["n"] == 300 and r["roadside_encode_ms"]["n"] == 60
    on_disk = json.loads((out / "soak.json").read_text())
    assert on_disk["unexplained"] == 0 and on_disk["plans_out"] == 300
    md = (out / "soak.md").read_text()
    for text in ("# Soak: PASSED", "## Drops by cause", "| roadside_queue_full |", "**unexplained**",
                 "| total |", "p90", "## Memory", "memory.png"):
        assert text in md, text
    assert (out / "memory.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_memory_is_sampled_over_the_run(run):
    _, r = run
    mem = r["memory"]
    frames = [s["frame"] for s in mem["samples"]]
    assert frames[0] == 0 and frames[-1] == 300 and frames == sorted(frames) and len(frames) >= 15
    assert all(s["rss_mb"] > 0 for s in mem["samples"]) and mem["source"] == "VmRSS"
    assert mem["growth_mb"] is not None and mem["growth_mb"] <= mem["max_growth_mb"] and mem["passed"]
    assert mem["start_mb"] == mem["samples"][0]["rss_mb"] and mem["peak_mb"] >= mem["end_mb"]


def test_held_allocation_fails_the_memory_check(tiny_model_dir, tmp_path):
    """200 KiB kept alive per frame: the measured resident set grows, the check fails. Each
    block is a fresh anonymous mapping, written to, so no allocator can serve it from memory
    an earlier test freed: it is new resident memory."""
    kept = []

    def leak(k):
        block = mmap.mmap(-1, 200 * 1024)
        np.frombuffer(block, np.uint8).fill(1)
        kept.append(block)

    r = soak(SoakOptions(frames=200, model=str(tiny_model_dir), data=str(SAMPLE), out=str(tmp_path),
                         sample_every=10, max_growth_mb=8.0), progress=False, on_frame=leak)
    mem = r["memory"]
    # the second and the last quarter are half the run (100 frames, ~20 MiB) apart
    assert mem["growth_mb"] > 12.0, mem["growth_mb"]
    assert mem["slope_mb_per_1k_frames"] > 100.0
    assert not mem["passed"] and not r["checks"]["memory"] and not r["passed"]
    assert r["checks"]["accounting"] and r["unexplained"] == 0
    assert "# Soak: FAILED (memory)" in (tmp_path / "soak.md").read_text()
    assert json.loads((tmp_path / "soak.json").read_text())["passed"] is False
    for block in kept:
        block.close()


def test_growth_is_robust_and_skips_the_warm_up():
    frames = list(range(0, 400, 10))
    flat = [500.0] * 40
    flat[35] = 900.0  # one spike in the last quarter
    warm = [300.0 + 20 * i for i in range(10)] + [500.0] * 30  # growth during warm-up only
    for series in (flat, warm):
        g = memory_growth(frames, series)
        assert g["growth_mb"] == 0.0 and memory_verdict(g, 1.0)
    linear = [100.0 + 0.1 * f for f in frames]  # 100 MiB per 1000 frames
    g = memory_growth(frames, linear)
    assert g["slope_mb_per_1k_frames"] == pytest.approx(100.0)
    assert g["growth_mb"] == pytest.approx(20.0)  # medians 200 frames apart
    assert not memory_verdict(g, 19.9) and memory_verdict(g, 20.1)
    assert memory_growth([0, 1, 2], [1.0, 2.0, 3.0])["growth_mb"] is None
    assert not memory_verdict(memory_growth([0, 1, 2], [1.0, 1.0, 1.0]), 50.0)  # not measured: no pass


def test_a_frame_no_counter_explains_is_unexplained():
    link = {"offered": 10, "sent": 2, "skipped_rate": 8}
    counts = {"ego_frames_in": 10, "plans_out": 8, "steps": 10, "roadside_frames_in": 2, "cycles_fused": 8,
              "steps_without_new_ego_frame": 1}
    drops = {"ego_superseded": 1, "ego_too_old": 1}
    held = {"ego": 0, "roadside": 2}
    assert accounting(counts, drops, link, {}, held)["unexplained"] == 0
    # a frame gone without a count (e.g. a buffer cleared with one count for several frames)
    lost = accounting({**counts, "ego_frames_in": 11}, drops, link, {}, held)
    assert lost["unexplained"] == 1 and lost["ego"]["unexplained"] == 1
    # a reset that discards 3 frames is one event: the frames are counted beside it
    reset = {**drops, "ego_clock_reset": 1, "ego_clock_reset_discarded": 3}
    assert accounting({**counts, "ego_frames_in": 13}, reset, link, {}, held)["unexplained"] == 0
    # a planning step that failed in the model consumed its frame and its cycle
    failed = accounting({**counts, "ego_frames_in": 11, "steps": 11, "cycles_fused": 9},
                        {**drops, "plan_failed": 1}, link, {}, held)
    assert failed["unexplained"] == 0 and failed["modes"]["explained_by"]["plan_failed"] == 1


def test_realtime_planning_slower_than_the_camera_supersedes_frames(tiny_model_dir, tmp_path):
    r = soak(SoakOptions(frames=40, model=str(tiny_model_dir), data=str(SAMPLE), out=str(tmp_path),
                         camera_rate_hz=100.0, realtime=True), progress=False)
    assert r["clock"]["mode"] == "realtime" and r["unexplained"] == 0
    assert 0 < r["plans_out"] < 40 and r["clock"]["wall_s"] >= 0.39
    not_planned = sum(v for k, v in r["drops"].items() if k.startswith("ego_"))
    assert not_planned > 0 and _ego_balance(r) == 40


def test_cli(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "soak"
    extra = tmp_path / "copy.json"
    assert main(["soak", "--frames", "60", "--model", str(tiny_model_dir), "--data", str(SAMPLE),
                 "--out", str(out), "--sample-every", "5", "--json", str(extra), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "soak passed: 60 frames, 60 plans" in text and "0 unexplained" in text and "# Soak: PASSED" in text
    for name in ("soak.json", "soak.md", "memory.png"):
        assert (out / name).stat().st_size > 0, name
    copy = json.loads(extra.read_text())
    assert copy["plans_out"] == 60 and copy["options"]["sample_every"] == 5
    assert main(["soak", "--frames", "0", "--model", str(tiny_model_dir), "--out", str(out)]) == 2
    assert main(["soak", "--frames", "5", "--model", str(tmp_path / "missing"), "--out", str(out)]) == 2


def test_cli_exit_code_when_memory_grows(tiny_model_dir, tmp_path, monkeypatch, capsys):
    calls = iter(range(10**6))
    monkeypatch.setattr(soak_module, "rss_mb", lambda: (100.0 + 2.0 * next(calls), "test"))
    rc = main(["soak", "--frames", "40", "--model", str(tiny_model_dir), "--data", str(SAMPLE),
               "--out", str(tmp_path), "--sample-every", "4", "--max-growth-mb", "5", "--quiet"])
    assert rc == 1
    assert "soak FAILED" in capsys.readouterr().out
    result = json.loads((tmp_path / "soak.json").read_text())
    assert result["passed"] is False and result["memory"]["growth_mb"] > 5 and result["unexplained"] == 0
