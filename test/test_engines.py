"""Backends and built engines: the fallback chain, the cache's keys and checks, and the
planner running on cached engines. TensorRT and CUDA cannot run here: the chain is tested
against their absence, and the cache with torch.export programs, which go through the
same keys, hashes, validation and fallbacks as TensorRT engines."""

import dataclasses
import importlib.abc
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from v2x_vlm_ros.cli import main
from v2x_vlm_ros.data.records import Command, EgoMotion
from v2x_vlm_ros.model.modeling import load_model
from v2x_vlm_ros.runtime import backends
from v2x_vlm_ros.runtime.engine import EngineOptions, PlanInput, PlannerEngine
from v2x_vlm_ros.runtime.engine_build import ExportCompiler, build_engines, engine_key
from v2x_vlm_ros.runtime.engine_cache import EngineCache, EngineCacheMiss, model_fingerprint, validate

CPU = torch.device("cpu")


class _BrokenTensorRT(importlib.abc.MetaPathFinder):
    """Imports of torch_tensorrt fail the way they do without TensorRT's libraries."""

    def find_spec(self, name, path, target=None):
        if name == "torch_tensorrt":
            raise Exception("libnvinfer.so.10: cannot open shared object file")
        return None


def test_tensorrt_is_unavailable_without_cuda_or_its_libraries(monkeypatch):
    ok, why = backends.tensorrt_available(CPU)
    assert not ok and "CUDA" in why
    monkeypatch.delitem(sys.modules, "torch_tensorrt", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_BrokenTensorRT(), *sys.meta_path])
    ok, why = backends.tensorrt_available(torch.device("cuda"))
    assert not ok and "libnvinfer" in why and why.startswith("torch_tensorrt does not import (Exception")


def test_the_fallback_chain_says_each_step(monkeypatch):
    report = backends.choose_backend("tensorrt", CPU)
    assert report.used in ("inductor", "eager") and report.notes[0].startswith("tensorrt unavailable")
    monkeypatch.setitem(backends.AVAILABILITY, "inductor", lambda d: (False, "no C++ compiler"))
    report = backends.choose_backend("tensorrt", CPU)
    assert report.used == "eager" and len(report.notes) == 2
    assert "requested tensorrt" in report.line() and "no C++ compiler" in report.line()
    assert backends.choose_backend("eager", CPU).notes == []
    with pytest.raises(ValueError, match="unknown backend 'onnx'"):
        backends.choose_backend("onnx", CPU)


@pytest.fixture(scope="module")
def built(tiny_model_dir, tmp_path_factory):
    cache = EngineCache(tmp_path_factory.mktemp("engines"))
    loaded = load_model(tiny_model_dir)
    s = loaded.settings
    summary = build_engines(loaded.model, tiny_model_dir, CPU, "fp32", 1, s.image_size, 128,
                            s.num_image_tokens, cache, ExportCompiler())
    return cache, loaded, summary


def key_for(tiny_model_dir, loaded, **changes):
    key = engine_key(tiny_model_dir, 1, loaded.settings.image_size, 128, "fp32", CPU)
    return dataclasses.replace(key, **changes)


def test_build_saves_verified_engines_under_their_key(built, tiny_model_dir):
    cache, loaded, summary = built
    assert summary["parity_max_abs"] == {"vision": 0.0, "encoder": 0.0}
    key = key_for(tiny_model_dir, loaded)
    files = cache.lookup(key)
    assert set(files) == {"vision", "encoder"} and Path(summary["folder"]) == cache.folder(key)
    meta = json.loads((cache.folder(key) / "meta.json").read_text())
    assert meta["key"]["model_sha256"] == model_fingerprint(tiny_model_dir)


@pytest.mark.parametrize("change", [{"batch": 2}, {"image_size": (96, 256)}, {"prompt_length": 129},
                                    {"precision": "fp16"}, {"device_name": "NVIDIA H100 80GB HBM3"},
                                    {"tensorrt": "10.9.0"}, {"torch_tensorrt": "2.13.0"}, {"torch": "2.11.0"},
                                    {"model_sha256": "0" * 64}])
def test_every_key_field_selects_a_different_engine(built, tiny_model_dir, change):
    cache, loaded, _ = built
    key = key_for(tiny_model_dir, loaded, **change)
    assert key.digest() != key_for(tiny_model_dir, loaded).digest()
    with pytest.raises(EngineCacheMiss, match="run `v2x-vlm build-engine`"):
        cache.lookup(key)


def test_changed_files_and_wrong_keys_are_refused(built, tiny_model_dir, tmp_path):
    cache, loaded, _ = built
    key = key_for(tiny_model_dir, loaded)
    import shutil
    copy = EngineCache(tmp_path)
    shutil.copytree(cache.folder(key), copy.folder(key))
    vision = copy.lookup(key)["vision"]
    vision.write_bytes(vision.read_bytes() + b"\0")
    with pytest.raises(EngineCacheMiss, match="contents changed since it was built"):
        copy.lookup(key)
    meta = json.loads((copy.folder(key) / "meta.json").read_text())
    meta["key"]["batch"] = 8
    (copy.folder(key) / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(EngineCacheMiss, match="built for a different key"):
        copy.lookup(key)


def test_validation_rejects_shape_and_parity_errors():
    x = (torch.ones(2, 3),)
    with pytest.raises(EngineCacheMiss, match="shape"):
        validate(lambda t: t[:1], lambda t: t, x, "fp32")
    with pytest.raises(EngineCacheMiss, match="differs from eager by 0.5"):
        validate(lambda t: t + 0.5, lambda t: t, x, "fp16")
    assert validate(lambda t: t + 0.01, lambda t: t, x, "fp16") == pytest.approx(0.01)


def frame():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (81, 144, 3), dtype=np.uint8)
    return PlanInput(image, image[::-1].copy(), "A white truck parked at the right.",
                     EgoMotion(7.0, 0.3, 0.0, 0.5), Command.LEFT)


def test_the_planner_runs_on_cached_engines_with_eager_tokens(built, tiny_model_dir):
    cache, loaded, _ = built
    eager = PlannerEngine(loaded)
    engined = PlannerEngine(loaded, engines=EngineOptions(cache_dir=str(cache.root), precision="fp32",
                                                          prompt_length=128, compiler="export"))
    assert engined.backend.used == "export" and engined.fixed_length == 128
    a, b = eager.plan([frame()])[0], engined.plan([frame()])[0]
    np.testing.assert_array_equal(a.raw_xy, b.raw_xy)


def test_a_missing_engine_falls_back_and_still_plans(tiny_model_dir, tmp_path):
    loaded = load_model(tiny_model_dir)
    engine = PlannerEngine(loaded, engines=EngineOptions(cache_dir=str(tmp_path), precision="fp32",
                                                         compiler="export"))
    assert engine.backend.used in ("inductor", "eager") and engine.fixed_length is None
    assert "no engine built" in engine.backend.line()
    assert np.isfinite(PlannerEngine(loaded).plan([frame()])[0].xy).all()


def test_build_engine_cli(tiny_model_dir, tmp_path, capsys):
    args = ["build-engine", "--model", str(tiny_model_dir), "--device", "cpu", "--precision", "fp32",
            "--compiler", "export", "--prompt-length", "128", "--cache-dir", str(tmp_path)]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["compiler"] == "export" and summary["key"]["prompt_length"] == 128
    assert main([*args[:-4], "--compiler", "tensorrt", "--cache-dir", str(tmp_path)]) == 2
    assert "engine build failed" in capsys.readouterr().err


def test_a_speed_relative_codec_reads_the_answer_at_the_frames_speed(tiny_model_dir, tmp_path):
    """With ``reference="constant_speed"`` the same answer tokens are a plan that many
    metres further ahead at each waypoint as the prompt's speed is higher."""
    loaded = load_model(tiny_model_dir)
    loaded.settings.codec = dataclasses.replace(loaded.settings.codec, reference="constant_speed")
    engine = PlannerEngine(loaded)
    answer = engine.codec.encode(np.zeros((10, 2)), speed_mps=0.0).token_ids
    engine.tokens = lambda batch: ([list(answer) for _ in range(batch["input_ids"].shape[0])], {})
    slow, fast = (dataclasses.replace(frame(), motion=EgoMotion(v, 0.3, 0.0, 0.5)) for v in (3.0, 9.0))
    a, b = engine.plan([slow, fast])
    t = 0.5 * np.arange(1, 11)
    np.testing.assert_allclose(b.raw_xy - a.raw_xy, np.column_stack([6.0 * t, np.zeros(10)]), atol=1e-9)
    np.testing.assert_allclose(a.raw_xy[:, 0], 3.0 * t + engine.codec.decode(answer)[:, 0], atol=1e-9)
