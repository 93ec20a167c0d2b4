"""``v2x-vlm bench``: what it times and what it records (never how fast: timings are not asserted)."""

import json

import numpy as np
import pytest

from v2x_vlm_ros.cli import main
from v2x_vlm_ros.preprocessing.image_codec import decode_image
from v2x_vlm_ros.tools.bench import bench, record, render, road_scene_jpeg


@pytest.fixture(scope="module")
def tiny_result():
    return bench(None, "tiny", "cpu", 1, "eager", iterations=2, warmup=1, image_size=(96, 54))


def test_test_image_is_a_decodable_jpeg_of_the_requested_size():
    img = decode_image(road_scene_jpeg(96, 54, seed=3), "bench image")
    assert img.shape == (54, 96, 3)
    assert img.std() > 10  # structure, not a flat frame that would decode unrealistically fast


def test_result_has_both_paths_stages_and_machine(tiny_result):
    r = tiny_result
    assert r["model"] == "tiny (random weights)" and r["batch"] == 1 and r["backend"] == "eager"
    for path in ("fast", "baseline"):
        p = r[path]
        assert 0 < p["p50_ms"] <= p["p90_ms"] <= p["p99_ms"]
        assert p["fps"] == pytest.approx(1000.0 / p["mean_ms"])
        assert p["peak_memory_mb"] > 0
    stages = r["fast"]["stages_ms"]
    assert set(stages) == {"preprocess", "vision", "encoder", "decode", "postprocess"}
    assert all(v >= 0 for v in stages.values())
    # the stages are parts of the frame: together no longer than the whole frame
    assert sum(stages.values()) <= r["fast"]["mean_ms"] * 1.05
    assert r["speedup_p50"] == pytest.approx(r["baseline"]["p50_ms"] / r["fast"]["p50_ms"])
    assert 0 < r["preprocess_share"] < 1
    assert r["machine"]["cpu_count"] >= 1 and r["machine"]["torch"]
    json.dumps(r)  # serialisable as written to docs/benchmarks.json


def test_record_replaces_the_same_configuration_and_keeps_others(tiny_result, tmp_path):
    history, md = tmp_path / "b.json", tmp_path / "B.md"
    record(tiny_result, history, md)
    record(tiny_result, history, md)
    assert len(json.loads(history.read_text())) == 1
    other = dict(tiny_result, batch=4)
    record(other, history, md)
    rows = json.loads(history.read_text())
    assert sorted(r["batch"] for r in rows) == [1, 4]
    table = md.read_text()
    assert table == render(rows)
    body = [line for line in table.splitlines() if line.startswith("| 20")]
    assert len(body) == 2 and "tiny (random weights)" in body[0]
    assert "TensorRT" in table and "GPU: not measured" in table  # what was not measured is said
    goals = [line for line in table.splitlines() if line.startswith("- tiny (random weights)")]
    assert len(goals) == 2 and all("shown for scale" in g for g in goals)  # no CPU goal for random weights
    record(dict(tiny_result, model="models/demo"), history, md)
    demo = [line for line in md.read_text().splitlines() if line.startswith("- models/demo")]
    assert len(demo) == 1 and (" met (" in demo[0]) != (" missed (" in demo[0])
    record(dict(tiny_result, note="why it missed"), history, md)
    assert "why it missed" in md.read_text()
    gpu = dict(tiny_result, device="cuda", machine=dict(tiny_result["machine"], gpu="Some GPU"))
    record(gpu, history, md)
    assert "GPU: not measured" not in md.read_text() and "Some GPU (cuda)" in md.read_text()


def test_cli_bench_writes_json_and_needs_exactly_one_model_source(tmp_path, capsys):
    out = tmp_path / "r.json"
    rc = main(["bench", "--config", "tiny", "--image-size", "96x54", "--iterations", "1", "--warmup", "0",
               "--no-record", "--json", str(out)])
    assert rc == 0
    r = json.loads(out.read_text())
    assert np.isfinite(r["fast"]["p50_ms"]) and "speed-up" in capsys.readouterr().out
    assert main(["bench", "--image-size", "96x54"]) != 0


@pytest.mark.parametrize("crop", [None, (0.0, 0.1, 1.0, 0.6), (0.25, 0.0, 0.75, 0.5)])
def test_the_baselines_pillow_canvas_is_the_fast_paths_canvas(crop):
    """The baseline fuses in Pillow what ImagePreprocessor fuses in torch (its uint8 kernel, a
    port of Pillow's bicubic): the same canvas within one level, the roadside crop included."""
    from dataclasses import replace

    from PIL import Image

    from v2x_vlm_ros.model.configuration import ModelSettings
    from v2x_vlm_ros.model.processing import ImagePreprocessor
    from v2x_vlm_ros.tools.bench import _pillow_canvas

    rng = np.random.default_rng(3)
    ego = rng.integers(0, 256, (72, 128, 3), dtype=np.uint8)
    # smooth roadside content, so that a crop misplaced by a row shows
    yy, xx = np.mgrid[0:90, 0:160]
    road = np.stack([yy * 2, xx, (yy + xx) % 256], axis=-1).astype(np.uint8)
    settings = replace(ModelSettings(), roadside_crop=crop)
    fast = ImagePreprocessor(settings).fuse_u8(ego, road, bgr=False)
    slow = np.asarray(_pillow_canvas(Image.fromarray(ego), Image.fromarray(road), settings))
    assert slow.shape == fast.shape == (72, 128 + 128, 3)  # 160 x 90 at height 72
    assert np.array_equal(slow[:, :128], ego)
    assert np.abs(slow.astype(int) - fast.astype(int)).max() <= 1
