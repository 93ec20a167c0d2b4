"""Planner wrappers of ``v2x-vlm experiments``: a ``ModelPlanner`` seen through input
transforms (``eval.perturb``), with the engine's stage times kept.

``ExperimentPlanner`` is a planner for ``eval.evaluate.score`` (``name``, ``uses_roadside``,
``plan_batch``): the frames of a batch come from ``ModelPlanner.inputs`` (the image files
read and decoded as ``v2x-vlm eval`` reads them), pass through the transforms, and the
model planner's engine plans them; ``StageRecorder`` keeps each ``PlanOutput.stage_ms``.
Several wrappers can share one ``ModelPlanner`` (one loaded model).
"""

from __future__ import annotations

import time

import numpy as np

from v2x_vlm_ros.runtime.planner import plan_in_batches

#: Engine stages in pipeline order (``model`` replaces vision/encoder/decoder with generate).
STAGES = ("preprocess", "vision", "encoder", "decoder", "model", "decode", "refine")


class StageRecorder:
    """``engine.plan`` keeping each frame's stage times (``PlanOutput.stage_ms``); with
    ``keep_blank_roadside`` set (not None), the shared engine plans this planner's frames with
    that setting (``PlannerEngine.roadside_views``)."""

    def __init__(self, engine, keep_blank_roadside: bool | None = None):
        self.engine = engine
        self.keep_blank_roadside = keep_blank_roadside
        self.stage_ms: list[dict] = []

    def plan(self, inputs):
        if self.keep_blank_roadside is None:
            outputs = self.engine.plan(inputs)
        else:
            before = self.engine.keep_blank_roadside
            self.engine.keep_blank_roadside = self.keep_blank_roadside
            try:
                outputs = self.engine.plan(inputs)
            finally:
                self.engine.keep_blank_roadside = before
        self.stage_ms.extend(dict(o.stage_ms) for o in outputs)
        return outputs


class ExperimentPlanner:
    """A ``ModelPlanner`` whose frames pass through ``transforms`` (each ``(sample, frame) ->
    frame``) before its engine plans them; a planner for ``score`` (``name``, ``plan_batch``)."""

    def __init__(self, base, name: str, transforms=(), uses_roadside: bool | None = None,
                 keep_blank_roadside: bool | None = None):
        self.base = base
        self.name = name
        self.transforms = list(transforms)
        self.engine = StageRecorder(base.engine, keep_blank_roadside)
        self.uses_roadside = base.uses_roadside if uses_roadside is None else bool(uses_roadside)
        self.decode_failures = 0
        self.roadside_blank = 0
        self.roadside_previous_missing = 0
        self.read_ms: list[float] = []

    def inputs(self, samples) -> list:
        t0 = time.perf_counter()
        frames = self.base.inputs(samples)  # reads and decodes the image files
        self.read_ms += [1000.0 * (time.perf_counter() - t0) / len(samples)] * len(samples)
        out = []
        for sample, frame in zip(samples, frames):
            for transform in self.transforms:
                frame = transform(sample, frame)
            out.append(frame)
        return out

    @property
    def batch_size(self) -> int:
        return self.base.batch_size

    def plan_batch(self, samples) -> list[np.ndarray]:
        return plan_in_batches(self, samples)

    def latency(self) -> dict:
        return latency_summary(self.engine.stage_ms, self.read_ms)


def latency_summary(stage_ms: list[dict], read_ms: list[float] = ()) -> dict:
    """Mean ms per frame of each stage, their total, and frames per second."""
    seen = {k for row in stage_ms for k in row}
    order = [s for s in STAGES if s in seen] + sorted(seen - set(STAGES))
    means = {s: float(np.mean([row.get(s, 0.0) for row in stage_ms])) for s in order}
    total = float(sum(means.values()))
    return {"frames": len(stage_ms), "stages_ms": means, "total_ms": total,
            "fps": 1000.0 / total if total > 0 else None,
            "image_read_ms": float(np.mean(read_ms)) if len(read_ms) else None}
