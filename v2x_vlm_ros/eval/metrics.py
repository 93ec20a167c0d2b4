"""UniV2X planning metrics: L2 error and collision rate at 2.5 / 3.5 / 4.5 s (REFERENCE §3).

The protocol's details decide whether numbers are comparable with the paper's tables, so
they are spelled out here and repeated in every result:

- A horizon is ONE waypoint (indices 4, 6, 8 of the 10 at 0.5 s), not an average up to it.
  "avg" is the mean of the three horizon values.
- L2 divides by ALL samples N; a masked step (past a sequence's end) adds 0 but is still
  counted (UniV2X's convention, which flatters methods on short sequences). The valid-only
  mean is reported beside it so the effect is visible.
- Collision counts a step when the predicted ego box collides and the ground-truth box at
  the same step does not (a GT collision is a labelling artefact, not the planner's fault),
  the step is valid and the step has labels. Denominator: all samples N.

The result dict's keys ``num_samples``, ``l2`` and ``collision`` (each with "2.5", "3.5",
"4.5", "avg") are a contract with external tools; do not rename them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from v2x_vlm_ros.data.records import NUM_WAYPOINTS, AgentBox
from v2x_vlm_ros.eval import univ2x
from v2x_vlm_ros.eval.collision import (
    COLLISION_METHODS,
    DEFAULT_COLLISION_CONFIG,
    CollisionConfig,
    collision_flags,
)
from v2x_vlm_ros.eval.protocols import DESCRIPTIONS, PROTOCOLS, comparability

#: Horizon label (seconds) -> 0-based waypoint index (0.5 s steps; index k is t0 + 0.5 (k+1)).
HORIZONS = {"2.5": 4, "3.5": 6, "4.5": 8}

L2_CONVENTION = (
    "univ2x: masked steps contribute 0 and are included in N (all samples); "
    "l2_valid_only divides by the samples valid at that step"
)


def _mean_or_none(values):
    """Mean of the horizon values, or None when any is missing (a partial mean would not
    be comparable with other rows of a table)."""
    if any(v is None for v in values):
        return None
    return float(sum(values) / len(values))


class PlanningMetrics:
    """Accumulates the planning metrics one sample at a time.

    ``update`` validates everything before changing any state, so a rejected sample leaves
    the running totals untouched."""

    def __init__(
        self,
        collision_method: str = "univ2x",
        collision_config: CollisionConfig = DEFAULT_COLLISION_CONFIG,
        keep_per_sample: bool = False,
        protocol: str = "time",
    ):
        if collision_method not in COLLISION_METHODS:
            raise ValueError(
                f"unknown collision method {collision_method!r}; allowed: {', '.join(COLLISION_METHODS)}"
            )
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r}; allowed: {', '.join(PROTOCOLS)}")
        fixed = collision_method == "univ2x" and collision_config == DEFAULT_COLLISION_CONFIG
        if protocol == "univ2x" and not fixed:
            raise ValueError("the univ2x protocol fixes the collision test (UniV2X's raster); "
                             f"collision method {collision_method!r} belongs to the time protocol")
        self.protocol = protocol
        self.collision_method = collision_method
        self.collision_config = collision_config
        self.keep_per_sample = keep_per_sample
        self.reset()

    def reset(self) -> None:
        self._n = 0
        keys = list(HORIZONS)
        self._l2_sum = dict.fromkeys(keys, 0.0)
        self._valid = dict.fromkeys(keys, 0)
        self._collisions = dict.fromkeys(keys, 0)
        self._gt_collisions = dict.fromkeys(keys, 0)
        self._unlabelled = dict.fromkeys(keys, 0)
        self._obj_col = dict.fromkeys(keys, 0)
        self._per_sample: list[dict] = []
        self._steps = univ2x.Univ2xAccumulator(NUM_WAYPOINTS)

    @property
    def num_samples(self) -> int:
        return self._n

    def update(
        self,
        pred_xy,
        gt_xy,
        gt_mask,
        future_agents: Sequence[Sequence[AgentBox] | None],
        sample_id: str | None = None,
    ) -> None:
        """Add one sample. ``pred_xy``/``gt_xy``: (10, 2) waypoints in the current ego frame;
        ``gt_mask``: (10,) bool, False where the ground truth does not exist (its xy may then
        be anything, NaN included); ``future_agents``: 10 entries, each the agent boxes at
        that step in the current ego frame, or None when unlabelled."""
        name = sample_id if sample_id is not None else f"#{self._n}"
        pred = np.asarray(pred_xy, dtype=np.float64)
        gt = np.asarray(gt_xy, dtype=np.float64)
        mask_in = np.asarray(gt_mask)
        if pred.shape != (NUM_WAYPOINTS, 2):
            raise ValueError(f"sample {name}: pred_xy must have shape ({NUM_WAYPOINTS}, 2), got {pred.shape}")
        if gt.shape != (NUM_WAYPOINTS, 2):
            raise ValueError(f"sample {name}: gt_xy must have shape ({NUM_WAYPOINTS}, 2), got {gt.shape}")
        if mask_in.shape != (NUM_WAYPOINTS,):
            raise ValueError(
                f"sample {name}: gt_mask must have shape ({NUM_WAYPOINTS},), got {mask_in.shape}"
            )
        if mask_in.dtype != bool and not np.all((mask_in == 0) | (mask_in == 1)):
            raise ValueError(f"sample {name}: gt_mask must be boolean (or 0/1)")
        mask = mask_in.astype(bool)
        if not np.all(np.isfinite(pred)):
            raise ValueError(f"sample {name}: prediction holds non-finite values (NaN or inf)")
        if not np.all(np.isfinite(gt[mask])):
            raise ValueError(f"sample {name}: ground truth holds non-finite values at valid steps")
        if len(future_agents) != NUM_WAYPOINTS:
            raise ValueError(
                f"sample {name}: future_agents must have {NUM_WAYPOINTS} entries, got {len(future_agents)}"
            )

        if self.protocol == "univ2x":
            self._update_univ2x(pred, gt, mask, future_agents, sample_id)
            return
        # Only the horizon steps are scored, so only they need collision tests; other
        # steps are passed as unlabelled. The "obb" heading still uses every waypoint.
        scored = [None] * NUM_WAYPOINTS
        for k in HORIZONS.values():
            scored[k] = future_agents[k]
        method, cfg = self.collision_method, self.collision_config
        pred_col = collision_flags(pred, scored, method, cfg)
        gt_col = collision_flags(gt, scored, method, cfg, valid=mask)

        errors = np.where(mask, np.linalg.norm(pred - np.where(mask[:, None], gt, 0.0), axis=1), 0.0)
        record = {"sample_id": sample_id, "l2": {}, "collision": {}}
        for key, k in HORIZONS.items():
            labelled = future_agents[k] is not None
            self._l2_sum[key] += float(errors[k])
            if mask[k]:
                self._valid[key] += 1
                if not labelled:
                    self._unlabelled[key] += 1
                elif gt_col[k]:
                    self._gt_collisions[key] += 1
            hit = bool(mask[k] and labelled and pred_col[k] and not gt_col[k])
            self._collisions[key] += int(hit)
            record["l2"][key] = float(errors[k]) if mask[k] else None
            record["collision"][key] = hit
        self._n += 1
        if self.keep_per_sample:
            record["l2_per_step"] = [float(e) if m else None for e, m in zip(errors, mask)]
            self._per_sample.append(record)

    def _update_univ2x(self, pred, gt, mask, future_agents, sample_id) -> None:
        """UniV2X's metric on one sample: the segmentation of every step (255 where the
        future frame is missing), then ``univ2x.step_flags``. Masked ground truth is (0, 0)
        as in UniV2X."""
        steps = [None if a is None else univ2x.BoxArrays.from_agents(a) for a in future_agents]
        flags = univ2x.step_flags(pred, np.where(mask[:, None], gt, 0.0), mask.astype(np.float64),
                                  univ2x.segmentation_of(steps))
        self._steps.add(flags)
        record = {"sample_id": sample_id, "l2": {}, "collision": {}, "obj_col": {}}
        for key, k in HORIZONS.items():
            labelled = future_agents[k] is not None
            self._l2_sum[key] += float(flags.l2[k])
            self._valid[key] += int(mask[k])
            if not labelled:
                self._unlabelled[key] += 1
            elif flags.gt_box_coll[k]:
                self._gt_collisions[key] += 1
            self._collisions[key] += int(flags.obj_box_col[k])
            self._obj_col[key] += int(flags.obj_col[k])
            record["l2"][key] = float(flags.l2[k]) if mask[k] else None
            record["collision"][key] = bool(flags.obj_box_col[k])
            record["obj_col"][key] = bool(flags.obj_col[k])
        self._n += 1
        if self.keep_per_sample:
            record["l2_per_step"] = [float(e) if m else None for e, m in zip(flags.l2, mask)]
            record["collision_per_step"] = [int(v) for v in flags.obj_box_col]
            self._per_sample.append(record)

    def per_sample(self) -> list[dict]:
        """Per-sample records (only kept when ``keep_per_sample`` is True)."""
        return list(self._per_sample)

    def result(self) -> dict:
        """JSON-serialisable summary (plain floats / ints / None)."""
        n = self._n
        l2, l2_valid, col = {}, {}, {}
        for key in HORIZONS:
            l2[key] = self._l2_sum[key] / n if n else None
            l2_valid[key] = self._l2_sum[key] / self._valid[key] if self._valid[key] else None
            col[key] = 100.0 * self._collisions[key] / n if n else None
        for table in (l2, l2_valid, col):
            table["avg"] = _mean_or_none([table[key] for key in HORIZONS])
        out = {
            "num_samples": n,
            "l2": l2,
            "collision": col,
            "protocol": self.protocol,
            "comparability": comparability(self.protocol),
            "protocol_description": DESCRIPTIONS[self.protocol],
            "collision_method": self.collision_method,
            "l2_convention": L2_CONVENTION,
            "horizon_steps": dict(HORIZONS),
            "l2_valid_only": l2_valid,
            "samples_per_horizon": dict.fromkeys(HORIZONS, n),
            "valid_counts": dict(self._valid),
            "collision_counts": dict(self._collisions),
            "gt_collision_excluded": dict(self._gt_collisions),
            "unlabelled_steps": dict(self._unlabelled),
        }
        if self.protocol == "univ2x":
            obj_col = {key: 100.0 * self._obj_col[key] / n if n else None for key in HORIZONS}
            obj_col["avg"] = _mean_or_none([obj_col[key] for key in HORIZONS])
            out["collision_test"] = "UniV2X's PlanningMetric raster (obj_box_col)"
            out["obj_col"] = obj_col
            out["obj_col_counts"] = dict(self._obj_col)
            per_step = self._steps.per_step()
            out["per_step"] = {"step_times": list(univ2x.STEP_TIMES), "L2": per_step["L2"],
                               "obj_col": per_step["obj_col"], "obj_box_col": per_step["obj_box_col"]}
        return out


# --------------------------------------------------------------------------- table

_TABLE_HORIZONS = ("2.5", "3.5", "4.5", "avg")


def _fmt(value, spec: str = ".2f") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return format(float(value), spec)


def _bps(result: Mapping) -> float | None:
    transmission = result.get("transmission")
    if isinstance(transmission, Mapping):
        return transmission.get("formula_bps")
    return None


def format_markdown_table(results: Mapping[str, Mapping], details: bool = True) -> str:
    """Markdown table of {method name: result dict} in the layout of the paper's Table 1.

    A BPS column appears when any result carries ``{"transmission": {"formula_bps": ...}}``;
    rows without one (no roadside image sent) show 0. Beside the UniV2X L2 average, an
    "L2 valid avg" column (the mean over valid steps only, ``l2_valid_only``) appears when
    any result carries it. Missing values show "n/a".
    ``details``: below the table, what decides the numbers (``format_counts_table``) and
    which protocol made them (``protocol_note``)."""
    with_bps = any(_bps(r) is not None for r in results.values())
    with_valid = any(isinstance(r.get("l2_valid_only"), Mapping) for r in results.values())
    header = ["method", "L2 (m) 2.5 s", "3.5 s", "4.5 s", "avg"]
    header += ["L2 valid avg"] if with_valid else []
    header += ["Col. (%) 2.5 s", "3.5 s", "4.5 s", "avg"]
    if with_bps:
        header.append("BPS")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, result in results.items():
        l2 = result.get("l2") or {}
        col = result.get("collision") or {}
        row = [str(name)] + [_fmt(l2.get(h)) for h in _TABLE_HORIZONS]
        if with_valid:
            row.append(_fmt((result.get("l2_valid_only") or {}).get("avg")))
        row += [_fmt(col.get(h)) for h in _TABLE_HORIZONS]
        if with_bps:
            bps = _bps(result)
            row.append("0" if not bps else _fmt(bps, ".2e"))
        lines.append("| " + " | ".join(row) + " |")
    table = "\n".join(lines) + "\n"
    if details:
        table += "\n" + format_counts_table(results) + "\n" + protocol_note(results)
    return table


def _count(result: Mapping, key: str, horizon: str) -> str:
    value = (result.get(key) or {}).get(horizon)
    return "n/a" if value is None else str(value)


def format_counts_table(results: Mapping[str, Mapping]) -> str:
    """Per horizon, what the rates above are made of: the samples (the denominator of
    both L2 and collision), the steps with a ground-truth waypoint, the steps excluded
    because the ground-truth ego box itself collides, and the steps without labels."""
    horizons = list(HORIZONS)
    header = (["method", "protocol", "samples"] + [f"valid {h} s" for h in horizons]
              + [f"GT collides {h} s" for h in horizons] + [f"no labels {h} s" for h in horizons])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, result in results.items():
        row = [str(name), str(result.get("protocol", "time")), str(result.get("num_samples", "n/a"))]
        for key in ("valid_counts", "gt_collision_excluded", "unlabelled_steps"):
            row += [_count(result, key, h) for h in horizons]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def protocol_note(results: Mapping[str, Mapping]) -> str:
    """One line per distinct (protocol, comparability) among the results."""
    seen: dict[tuple, list[str]] = {}
    for name, result in results.items():
        protocol = str(result.get("protocol", "time"))
        text = result.get("comparability") or comparability(protocol)
        seen.setdefault((protocol, text), []).append(str(name))
    lines = []
    for (protocol, text), names in seen.items():
        which = "" if len(seen) == 1 else f" ({', '.join(names)})"
        lines.append(f"Protocol {protocol}{which}: {text}.")
    return "\n".join(lines) + "\n"
