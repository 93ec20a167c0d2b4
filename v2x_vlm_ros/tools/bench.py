"""``v2x-vlm bench``: the planning step timed from JPEG bytes to refined trajectory,
against the baseline a user would write, in the same run, on the same weights.

Fast path (``PlannerEngine``): JPEG decode (OpenCV), fused pixels and prompt ids in torch
on the device (``preprocess``), vision tower + projector (``vision``), text encoder
(``encoder``), the grammar-constrained greedy loop over a static KV cache (``decode``),
tokens to waypoints and refinement (``postprocess``).

Baseline: Pillow decodes and pastes the two images side by side, transformers'
``Florence2Processor`` resizes, normalises and tokenises the whole prompt, and
``model.generate`` decodes greedily the same number of tokens (``min_new_tokens =
max_new_tokens``, so both decode for equally long), then the same codec and refinement.

Timings: ``iterations`` timed frames after ``warmup`` untimed ones; p50/p90/p99 of the whole
frame, mean per stage, frames per second (batch / mean latency), peak memory (CUDA: peak
allocated; CPU: the process's peak resident set, which only grows, so the baseline, timed
second, reports the peak of both). Results go to ``docs/benchmarks.json`` (one entry per
device, model, batch and backend, replaced when measured again) and ``docs/BENCHMARKS.md``.
"""

from __future__ import annotations

import datetime
import io
import json
import resource
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from v2x_vlm_ros.data.records import Command, EgoMotion
from v2x_vlm_ros.eval.machine import machine
from v2x_vlm_ros.model.configuration import PRESETS, ModelSettings
from v2x_vlm_ros.model.modeling import LoadedModel, build_model, load_model
from v2x_vlm_ros.model.processing import (COMMAND_TEXT, TASK_TEXT, crop_slices, florence2_processor,
                                          roadside_width, state_text)
from v2x_vlm_ros.model.tokenizer import build_tokenizer
from v2x_vlm_ros.preprocessing.image_codec import decode_image
from v2x_vlm_ros.runtime.engine import PlanInput, PlannerEngine
from v2x_vlm_ros.runtime.refine import RefineConfig, Refiner

DESCRIPTION = (
    "Clear daylight over a two-lane urban road with a yellow centre line. A four-way "
    "intersection with zebra crosswalks is about 25 m ahead. Visible: a white truck parked "
    "at the right roadside, about 15 m away and a blue car in the oncoming lane."
)


def road_scene_jpeg(width: int, height: int, seed: int) -> bytes:
    """A JPEG with the structure of a road scene (sky, road, lanes, boxes): realistic to decode."""
    rng = np.random.default_rng(seed)
    img = np.zeros((height, width, 3), np.uint8)
    img[: height // 2] = (200, 170, 140)
    img[height // 2 :] = (70, 70, 70)
    for _ in range(12):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        w, h = int(rng.integers(width // 30, width // 6)), int(rng.integers(height // 30, height // 4))
        cv2.rectangle(img, (x, y), (x + w, y + h), tuple(int(c) for c in rng.integers(0, 255, 3)), -1)
    cv2.line(img, (width // 2, height), (width // 2, height // 2), (40, 185, 225), max(1, width // 200))
    img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
    return cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


def model_for(model_dir: str | None, preset: str | None, device) -> LoadedModel:
    if model_dir:
        return load_model(model_dir, device)
    corpus = [DESCRIPTION, TASK_TEXT, *COMMAND_TEXT.values(), state_text(EgoMotion(8.4, 1.0, 0.1, 0.5))] * 4
    tokenizer = build_tokenizer(corpus, vocab_size=400)
    model = build_model(preset, tokenizer, seed=0).to(device).eval()
    return LoadedModel(
        model, tokenizer, ModelSettings(image_size=PRESETS[preset].image_size), f"random {preset}"
    )


def _peak_memory_mb(device) -> float:
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _sync(device) -> float:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _summary(totals: list[float], stages: dict[str, list[float]], batch: int, device) -> dict:
    arr = np.array(totals)
    out = {
        "p50_ms": float(np.percentile(arr, 50)),
        "p90_ms": float(np.percentile(arr, 90)),
        "p99_ms": float(np.percentile(arr, 99)),
        "mean_ms": float(arr.mean()),
        "fps": float(batch * 1000.0 / arr.mean()),
        "peak_memory_mb": _peak_memory_mb(device),
    }
    if stages:
        out["stages_ms"] = {k: float(np.mean(v)) for k, v in stages.items()}
    return out


def _with_earlier(frames: list[tuple[bytes, bytes]], k: int) -> tuple[bytes, bytes, bytes]:
    """Frame ``k`` (cycling) with the roadside image of the frame before it: the earlier
    roadside frame a model that reads motion is given."""
    ego, road = frames[k % len(frames)]
    return ego, road, frames[(k - 1) % len(frames)][1]


def run_fast(
    engine: PlannerEngine,
    frames: list[tuple[bytes, bytes]],
    motion,
    batch: int,
    iterations: int,
    warmup: int,
    device,
) -> dict:
    totals, stages = [], {k: [] for k in ("preprocess", "vision", "encoder", "decode", "postprocess")}
    reads_motion = getattr(engine, "roadside_motion_s", None) is not None
    for i in range(warmup + iterations):
        chunk = [_with_earlier(frames, i * batch + j) for j in range(batch)]
        t0 = _sync(device)
        inputs = [
            PlanInput(
                decode_image(e, "bench ego"),
                decode_image(r, "bench roadside"),
                DESCRIPTION,
                motion,
                Command.FORWARD,
                # as the vehicle node does: the earlier roadside frame decoded for each plan
                roadside_previous=decode_image(before, "bench earlier roadside") if reads_motion else None,
            )
            for e, r, before in chunk
        ]
        t1 = _sync(device)
        outputs = engine.plan(inputs)
        t2 = _sync(device)
        if i < warmup:
            continue
        s = outputs[0].stage_ms  # per frame; x batch = the batch's time
        totals.append(1000.0 * (t2 - t0))
        stages["preprocess"].append(1000.0 * (t1 - t0) + batch * s["preprocess"])
        stages["vision"].append(batch * s.get("vision", 0.0))
        stages["encoder"].append(batch * s.get("encoder", 0.0))
        stages["decode"].append(batch * s.get("decoder", s.get("model", 0.0)))
        stages["postprocess"].append(batch * (s["decode"] + s["refine"]))
    return _summary(totals, stages, batch, device)


def _pillow_canvas(ego, road, settings: ModelSettings, earlier=None):
    """The baseline's fused image, in Pillow: the roadside image (its ``roadside_crop`` box,
    if the model has one) resized with Pillow's bicubic to the ego's height, aspect of the
    whole image kept, and pasted beside the ego image, as ``ImagePreprocessor`` fuses them.
    For a model that reads motion (``roadside_motion_s``), ``earlier`` (the roadside image
    that long before) gives the box its blue channel, or is stacked above it."""
    from PIL import Image

    width = roadside_width(road.height, road.width, ego.height)

    def box(image):
        rows, cols = crop_slices(image.height, image.width, settings.roadside_crop)
        if settings.roadside_crop is not None:
            image = image.crop((cols.start, rows.start, cols.stop, rows.stop))
        return image

    road = box(road)
    if settings.roadside_motion_s is not None:
        before = road if earlier is None else box(earlier)
        if before.size != road.size:
            before = before.resize(road.size, Image.BICUBIC)
        if settings.roadside_motion_layout == "blue":
            road = Image.merge("RGB", (*road.split()[:2], before.split()[2]))
        else:
            stacked = Image.new("RGB", (road.width, 2 * road.height))
            stacked.paste(before, (0, 0))
            stacked.paste(road, (0, road.height))
            road = stacked
    if road.size != (width, ego.height):
        road = road.resize((width, ego.height), Image.BICUBIC)
    fused = Image.new("RGB", (ego.width + width, ego.height))
    fused.paste(ego, (0, 0))
    fused.paste(road, (ego.width, 0))
    return fused


def run_baseline(
    loaded: LoadedModel,
    frames,
    motion,
    batch: int,
    iterations: int,
    warmup: int,
    device,
    refiner,
    num_tokens: int,
) -> dict:
    from PIL import Image

    from v2x_vlm_ros.model.codec import TrajectoryDecodeError, build_codec
    from v2x_vlm_ros.model.tokenizer import loc_token_ids

    processor = florence2_processor(loaded.tokenizer, loaded.settings)
    codec = build_codec(loaded.settings.codec, loc_token_ids(loaded.tokenizer))
    prompt = f"{DESCRIPTION} {state_text(motion)} {COMMAND_TEXT[Command.FORWARD]} {TASK_TEXT}"
    totals = []
    for i in range(warmup + iterations):
        chunk = [_with_earlier(frames, i * batch + j) for j in range(batch)]
        t0 = _sync(device)
        images = []
        for ego_bytes, road_bytes, earlier_bytes in chunk:
            ego = Image.open(io.BytesIO(ego_bytes)).convert("RGB")
            road = Image.open(io.BytesIO(road_bytes)).convert("RGB")
            earlier = None
            if loaded.settings.roadside_motion_s is not None:
                earlier = Image.open(io.BytesIO(earlier_bytes)).convert("RGB")
            images.append(_pillow_canvas(ego, road, loaded.settings, earlier))
        inputs = processor(images=images, text=[prompt] * batch, return_tensors="pt", padding=True).to(
            device
        )
        with torch.no_grad():
            out = loaded.model.generate(
                **inputs,
                max_new_tokens=num_tokens + 2,
                min_new_tokens=num_tokens + 2,
                num_beams=1,
                do_sample=False,
            )
        for seq in out:
            body = [int(t) for t in seq.tolist()[2:-1]]
            try:
                xy = codec.decode(body, motion.speed_mps)
            except TrajectoryDecodeError:  # random weights: same amount of work, no trajectory
                xy = np.zeros((codec.num_waypoints, 2))
            refiner(xy, motion.speed_mps)
        t1 = _sync(device)
        if i >= warmup:
            totals.append(1000.0 * (t1 - t0))
    return _summary(totals, {}, batch, device)


def bench(
    model_dir: str | None,
    preset: str | None,
    device: str,
    batch: int,
    backend: str,
    iterations: int,
    warmup: int,
    image_size: tuple[int, int],
    note: str | None = None,
) -> dict:
    torch.manual_seed(0)
    loaded = model_for(model_dir, preset, device)
    refiner = Refiner(RefineConfig())
    engine = PlannerEngine(loaded, device, refiner, backend=backend)
    w, h = image_size
    frames = [(road_scene_jpeg(w, h, 2 * i), road_scene_jpeg(w, h, 2 * i + 1)) for i in range(4)]
    motion = EgoMotion(8.4, 1.0, 0.05, 0.5)
    fast = run_fast(engine, frames, motion, batch, iterations, warmup, device)
    baseline = run_baseline(
        loaded,
        frames,
        motion,
        batch,
        max(3, iterations // 3),
        min(warmup, 2),
        device,
        refiner,
        engine.codec.num_tokens,
    )
    fast_pre = fast["stages_ms"]["preprocess"] / fast["mean_ms"]
    return {
        "date": datetime.date.today().isoformat(),
        "device": str(device),
        "backend": engine.backend.used,
        "backend_notes": engine.backend.notes,
        "model": model_dir or f"{preset} (random weights)",
        "batch": batch,
        "input_images": f"2 x {w}x{h} JPEG",
        "model_input": list(loaded.settings.image_size),
        "iterations": iterations,
        "fast": fast,
        "baseline": baseline,
        "speedup_p50": baseline["p50_ms"] / fast["p50_ms"],
        "preprocess_share": fast_pre,
        "machine": machine(),
        "note": note,
    }


def record(result: dict, history_path: Path, markdown_path: Path) -> None:
    """Replace (or add) this configuration's entry and re-render the Markdown table."""
    history = json.loads(history_path.read_text()) if history_path.exists() else []
    key = (result["device"], result["model"], result["batch"], result["backend"], result["input_images"])
    history = [
        r for r in history if (r["device"], r["model"], r["batch"], r["backend"], r["input_images"]) != key
    ] + [result]
    history_path.parent.mkdir(parents=True, exist_ok=True)
    history_path.write_text(json.dumps(history, indent=1) + "\n")
    markdown_path.write_text(render(history))


VERDICT = {True: "met", False: "missed", None: "shown for scale"}


def render(history: list[dict]) -> str:
    lines = [
        "# Benchmarks",
        "",
        "Written by `v2x-vlm bench` (see `v2x_vlm_ros/tools/bench.py` for what is timed). One frame =",
        "two JPEGs in, refined trajectory out. *fast*: this package's engine; *baseline*: Pillow +",
        "transformers' Florence2Processor + `generate` on the same weights, decoding as many tokens,",
        "measured in the same run. Stage columns are the fast path's mean per batch.",
        "",
        "| date | device | model | input | batch | backend | fast p50 / p90 / p99 (ms) | FPS | "
        "preprocess / vision / encoder / decode / postprocess (ms) | baseline p50 (ms) | speed-up p50 | "
        "peak mem fast / baseline (MB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in history:
        f, b, s = r["fast"], r["baseline"], r["fast"]["stages_ms"]
        dev = r["machine"].get("gpu", r["machine"]["cpu"]) + f" ({r['device']})"
        lines.append(
            f"| {r['date']} | {dev} | {r['model']} | {r['input_images']} | {r['batch']} | {r['backend']} | "
            f"{f['p50_ms']:.1f} / {f['p90_ms']:.1f} / {f['p99_ms']:.1f} | {f['fps']:.1f} | "
            f"{s['preprocess']:.1f} / {s['vision']:.1f} / {s['encoder']:.1f} / {s['decode']:.1f} / "
            f"{s['postprocess']:.1f} | {b['p50_ms']:.1f} | {r['speedup_p50']:.2f}x | "
            f"{f['peak_memory_mb']:.0f} / {b['peak_memory_mb']:.0f} |"
        )
    lines += ["", "Goals (issue 5; measured, not asserted):", ""]
    for r in history:
        f = r["fast"]
        if r["device"].startswith("cuda"):
            ok = f["p50_ms"] <= 15.0 and r["speedup_p50"] >= 5.0
            goal = "GPU: p50 <= 15 ms and >= 5x the baseline"
        elif "random weights" in r["model"]:
            ok, goal = None, "no CPU goal for a full-size random model (its goal is on a GPU)"
        else:
            ok = r["speedup_p50"] >= 3.0 and r["preprocess_share"] < 0.15
            goal = "CPU: >= 3x the baseline, preprocessing < 15 % of the frame"
        lines.append(
            f"- {r['model']}, {r['input_images']}, batch {r['batch']}, {r['backend']} on {r['device']}: "
            f"{VERDICT[ok]} ({goal}; measured p50 {f['p50_ms']:.1f} ms, "
            f"{r['speedup_p50']:.2f}x, preprocessing {100 * r['preprocess_share']:.0f} %)"
            + (f". {r['note']}" if r.get("note") else "")
        )
    if not any(r["device"].startswith("cuda") for r in history):
        lines.append("- GPU: not measured (no CUDA GPU was available to the runs recorded here).")
    lines += [
        "",
        "Not measured: TensorRT. torch-tensorrt's libraries cannot be installed on any machine this",
        "package was developed or measured on (the GPU machine's image has no torch_tensorrt either:",
        "`--backend tensorrt` there falls back to inductor, with the reason in the result's",
        "`backend_notes`), so every row runs without it; what TensorRT engines would add",
        "(`backend tensorrt`, built by `v2x-vlm build-engine`) is unmeasured.",
        "",
        "Machines:",
        "",
    ]
    seen = set()
    for r in history:
        m = r["machine"]
        text = (
            f"- {m.get('gpu', m['cpu'])}: {m['cpu_count']} CPU cores, {m['platform']}, Python {m['python']}, "
            f"torch {m['torch']}, transformers {m['transformers']}"
        )
        if text not in seen:
            seen.add(text)
            lines.append(text)
    return "\n".join(lines) + "\n"
