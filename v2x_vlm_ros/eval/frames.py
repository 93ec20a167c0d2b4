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

``collisions_by_sequence`` (``v2x-vlm frames A.jsonl B.jsonl ...``) sums them per sequence and
scenario for several runs over the same frames, side by side.
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


REQUIRED_KEYS = ("sequence_id", "sample_id", "scenario", "slices", "l2", "collision")


def read_frame_records(path) -> list[dict]:
    """The records a ``FrameRecords`` wrote; ``ValueError`` naming the file and line of one
    that is not such a record."""
    records = []
    with Path(path).open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not JSON ({exc.msg})") from None
            missing = [k for k in REQUIRED_KEYS if not isinstance(record, dict) or k not in record]
            if missing:
                raise ValueError(f"{path}:{number}: not a frame record of `v2x-vlm eval --frames` "
                                 f"(missing {', '.join(missing)})")
            shapes = {"slices": list, "l2": dict, "collision": dict}
            wrong = [k for k, kind in shapes.items() if not isinstance(record[k], kind)]
            if wrong:
                raise ValueError(f"{path}:{number}: not a frame record of `v2x-vlm eval --frames` "
                                 f"({', '.join(f'{k} is not a {shapes[k].__name__}' for k in wrong)})")
            records.append(record)
    return records


def collisions_by_sequence(runs: dict[str, list[dict]], slice_name: str | None = None) -> dict:
    """Where the plans collide, for several runs over the same frames (one planner each, or
    one planner with and without an ablation), on the frames of ``slice_name`` (all frames
    when None).

    Per sequence (in id order), per scenario and in total: ``frames``, and per run
    ``colliding_steps`` (the ``collision`` flags summed over the horizons and frames: the
    numerator of the collision rate), ``colliding_frames`` (frames with at least one) and
    ``l2`` (the mean over the valid horizon steps; null when none is valid). A rate decided by
    a few sequences shows as such; two runs that differ by whole sequences too.

    ``ValueError`` when the runs do not hold the same frames of the slice (different worlds,
    slices or scenario filters), naming the runs and a frame one of them lacks."""
    if not runs:
        raise ValueError("no runs to compare")
    selected = {}
    for name, records in runs.items():
        chosen = [r for r in records if slice_name is None or slice_name in r["slices"]]
        selected[name] = {(str(r["sequence_id"]), str(r["sample_id"])): r for r in chosen}
    names = list(selected)
    first = selected[names[0]]
    for name in names[1:]:
        if selected[name].keys() != first.keys():
            lacking = sorted(first.keys() ^ selected[name].keys())[0]
            holder, other = (names[0], name) if lacking in first else (name, names[0])
            raise ValueError(f"runs {names[0]!r} and {name!r} do not hold the same frames"
                             f"{'' if slice_name is None else f' of slice {slice_name!r}'} "
                             f"({len(first)} and {len(selected[name])}; frame {lacking[1]} of "
                             f"sequence {lacking[0]} is in {holder!r}, not in {other!r})")

    def summary(keys) -> dict:
        out = {"frames": len(keys), "runs": {}}
        for name in names:
            steps = frames = 0
            errors = []
            for key in keys:
                record = selected[name][key]
                flags = [bool(v) for v in record["collision"].values()]
                steps += sum(flags)
                frames += any(flags)
                errors += [float(v) for v in record["l2"].values() if v is not None]
            out["runs"][name] = {"colliding_steps": steps, "colliding_frames": frames,
                                 "l2": sum(errors) / len(errors) if errors else None}
        return out

    by_sequence, by_scenario = {}, {}
    for key, record in first.items():
        by_sequence.setdefault(key[0], (record["scenario"], []))[1].append(key)
        by_scenario.setdefault(str(record["scenario"]), []).append(key)
    return {
        "runs": names,
        "slice": slice_name,
        "sequences": [{"sequence_id": seq, "scenario": scenario, **summary(keys)}
                      for seq, (scenario, keys) in sorted(by_sequence.items())],
        "by_scenario": {scenario: summary(keys) for scenario, keys in sorted(by_scenario.items())},
        "total": summary(list(first)),
    }


def format_collision_table(table: dict) -> str:
    """``collisions_by_sequence``'s result as one Markdown table: a row per sequence, then per
    scenario and the total; per run its colliding plan steps (frames with one) and mean L2."""
    names = table["runs"]
    head = ["sequence", "scenario", "frames"]
    for name in names:
        head += [f"{name}: colliding steps (frames)", f"{name}: L2 (m)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def row(label, scenario, entry):
        cells = [label, str(scenario), str(entry["frames"])]
        for name in names:
            run = entry["runs"][name]
            cells += [f"{run['colliding_steps']} ({run['colliding_frames']})",
                      "-" if run["l2"] is None else f"{run['l2']:.2f}"]
        return "| " + " | ".join(cells) + " |"

    lines += [row(s["sequence_id"], s["scenario"], s) for s in table["sequences"]]
    lines += [row("all", scenario, entry) for scenario, entry in table["by_scenario"].items()]
    lines.append(row("all", "all", table["total"]))
    return "\n".join(lines) + "\n"
