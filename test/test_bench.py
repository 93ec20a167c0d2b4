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


@pytest.mark.parametrize("layout", ["blue", "stack"])
def test_the_baselines_pillow_canvas_reads_motion_as_the_fast_path_does(layout):
    """A model that reads motion: the earlier roadside image in the box's blue channel (or
    stacked above it), in Pillow as in ImagePreprocessor; without an earlier image, the
    current box alone (blue) or twice (stack)."""
    from PIL import Image

    from v2x_vlm_ros.model.configuration import ModelSettings
    from v2x_vlm_ros.model.processing import ImagePreprocessor
    from v2x_vlm_ros.tools.bench import _pillow_canvas

    rng = np.random.default_rng(4)
    ego = rng.integers(0, 256, (72, 128, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:90, 0:160]
    road = np.stack([yy * 2, xx, (yy + xx) % 256], axis=-1).astype(np.uint8)
    earlier = np.stack([xx, yy * 2, (3 * yy + xx) % 256], axis=-1).astype(np.uint8)
    settings = ModelSettings(image_size=(96, 256), roadside_crop=(0.0, 0.1, 1.0, 0.6), roadside_motion_s=0.5,
                             roadside_motion_layout=layout)
    prep = ImagePreprocessor(settings)
    pil = [Image.fromarray(a) for a in (ego, road, earlier)]
    with_earlier = np.asarray(_pillow_canvas(pil[0], pil[1], settings, pil[2]))
    fast = prep.fuse_u8(ego, road, bgr=False, previous=earlier)
    assert np.abs(with_earlier.astype(int) - fast.astype(int)).max() <= 1
    without = np.asarray(_pillow_canvas(pil[0], pil[1], settings))
    assert np.abs(without.astype(int) - prep.fuse_u8(ego, road, bgr=False).astype(int)).max() <= 1
    assert np.abs(with_earlier.astype(int) - without.astype(int)).max() > 50  # the earlier image shows
    if layout == "blue":  # red and green are the current box's alone
        assert np.array_equal(with_earlier[..., :2], without[..., :2])


def test_bench_gives_a_motion_model_the_earlier_roadside_frame(tmp_path, tiny_tokenizer, monkeypatch):
    """The vehicle node decodes the earlier roadside frame for each plan of a motion model: the
    benchmark times that too, handing the engine the frame before each one."""
    from v2x_vlm_ros.model.configuration import PRESETS, ModelSettings
    from v2x_vlm_ros.model.modeling import build_model, save_model
    from v2x_vlm_ros.runtime.engine import PlannerEngine

    model_dir = tmp_path / "motion"
    settings = ModelSettings(image_size=PRESETS["tiny"].image_size, roadside_motion_s=0.5,
                             roadside_motion_layout="blue")
    save_model(model_dir, build_model("tiny", tiny_tokenizer, seed=0), tiny_tokenizer, settings)
    given = []
    plan = PlannerEngine.plan

    def recording(self, inputs):
        outputs = plan(self, inputs)
        given.append((inputs, outputs))
        return outputs

    monkeypatch.setattr(PlannerEngine, "plan", recording)
    result = bench(str(model_dir), None, "cpu", 1, "eager", iterations=2, warmup=1, image_size=(96, 54))
    assert np.isfinite(result["fast"]["p50_ms"])
    frames = [decode_image(road_scene_jpeg(96, 54, 2 * i + 1), "road") for i in range(4)]
    assert len(given) == 3
    for k, ((frame,), (out,)) in enumerate(given):  # frame k's earlier roadside image is frame k-1's
        assert np.array_equal(frame.roadside, frames[k % 4])
        assert np.array_equal(frame.roadside_previous, frames[(k - 1) % 4])
        assert not out.roadside_previous_missing
