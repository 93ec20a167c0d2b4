"""Per-frame records of an evaluation: what a planner planned for each frame and how that
frame scored, one JSON object per line (``v2x-vlm eval ... --frames FILE``).

The aggregate metrics say how often a planner collides; these say where: which sequences and
frames, and what the plan was next to the ground truth, so that a rate decided by a few
sequences (the hidden-hazard slice of a 30-sequence world holds five) can be seen as such.

A line: ``sequence_id``, ``sample_id`` (the vehicle frame), ``scenario`` (synthetic worlds;
else null), ``slices`` (the names of the ``eval.slices`` slices holding the frame), ``plan``
and ``ground_truth`` (10 x 2 waypoints in the ego frame; a ground-truth step past the
sequence's end is null), and ``l2`` / ``collision`` at each horizon as ``PlanningMetrics``
scores them (``l2`` null at a masked step), so summing a slice's ``collision`` flags gives
that slice's ``collision_counts``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from v2x_vlm_ros.eval.metrics import PlanningMetrics


class FrameRecords:
    """An ``eval.evaluate.score`` observer writing one JSON line per scored frame."""

    def __init__(self, path, slices=(), collision: str = "univ2x", protocol: str = "time"):
        self.path = Path(path)
        self.slices = list(slices)
        self.collision = collision
        self.protocol = protocol
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("w", encoding="utf-8")
        self.count = 0

    def update(self, sample, pred_xy, gt_xy, gt_mask, future_agents, sample_id=None) -> None:
        # one sample's metrics, scored exactly as the aggregate scores it
        metrics = PlanningMetrics(self.collision, keep_per_sample=True, protocol=self.protocol)
        metrics.update(pred_xy, gt_xy, gt_mask, future_agents, sample_id)
        scored = metrics.per_sample()[0]
        mask = np.asarray(gt_mask, dtype=bool)
        gt = np.asarray(gt_xy, dtype=np.float64)
        record = {
            "sequence_id": None if sample.sequence_id is None else str(sample.sequence_id),
            "sample_id": str(sample.sample_id),
            "scenario": getattr(sample, "scenario", None),
            "slices": [s.name for s in self.slices if sample in s],
            "plan": np.round(np.asarray(pred_xy, dtype=np.float64), 3).tolist(),
            "ground_truth": [[round(float(x), 3), round(float(y), 3)] if m else None
                             for (x, y), m in zip(gt, mask)],
            "l2": scored["l2"],
            "collision": scored["collision"],
        }
        self._file.write(json.dumps(record) + "\n")
        self.count += 1

    def close(self) -> None:
        self._file.close()


def read_frame_records(path) -> list[dict]:
    """The records a ``FrameRecords`` wrote."""
    with Path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
