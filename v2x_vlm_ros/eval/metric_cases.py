"""``v2x-vlm metric-cases``: score planning cases given directly as trajectories, masks and
boxes, with either protocol, so that any planner's output or another implementation's test
cases can be scored the way ``v2x-vlm eval`` scores a dataset.

Input: the schema of UniV2X's golden cases (``test/fixtures/univ2x-golden/README.md``):
``{"cases": [{"id", "inputs": {"pred", "gt", "mask", "frame_valid", "boxes",
"drivable_rects"}, "expected"?: {...}}, ...]}`` with 10 steps of 0.5 s, boxes per step as
``{x, y, l, w, yaw, cls}`` (centre, full length and width, heading of the length axis, a
nuScenes or SPD class) in the current frame (x forward, y left), ``drivable_rects`` as
inclusive cell rectangles ``[row0, row1, col0, col1]``. A ``.gz`` or ``.xz`` file is read
decompressed.

Output: ``{"protocol", "cases": [{"id", "l2", "obj_col", "obj_box_col", "obj_out",
"obj_box_out", "gt_box_coll"}, ...], "aggregate": {...}}`` where ``aggregate`` has the keys of
the golden file's (``n_cases``, ``total``, ``step_times``, ``counts``, ``L2_sum``,
``per_step``, ``per_step_univ2x_float32``, ``horizons``, ``univ2x_printed_table``). When the
cases carry ``expected`` values, ``expected_comparison`` says where they disagree.

Protocols:
- ``univ2x``: ``eval.univ2x`` (UniV2X's own rules, golden-tested);
- ``time``: the project's other protocol applied to the same cases: the cell-centre raster
  test of ``eval.collision`` (no clamping, out-of-grid cells dropped), masked steps and
  missing frames excluded from every flag; ``obj_col`` is the predicted waypoint's own cell
  (``floor((v + 50) / 0.5)``) and ``obj_out`` / ``obj_box_out`` test ``1 - drivable`` the same
  way. L2 is the same formula, in float64.
"""

from __future__ import annotations

import gzip
import json
import lzma
import math
from pathlib import Path

import cv2
import numpy as np

from v2x_vlm_ros.data.records import AgentBox
from v2x_vlm_ros.eval import univ2x as u
from v2x_vlm_ros.eval.collision import (DEFAULT_COLLISION_CONFIG, collision_flags, ego_cell_window,
                                        rasterize_occupancy)

PROTOCOLS = ("univ2x", "time")
STEPS = u.NUM_STEPS
_FLAG_KEYS = ("obj_col", "obj_box_col", "obj_out", "obj_box_out")


class CaseError(ValueError):
    """A case file that cannot be scored; the message names the case and the field."""


# --------------------------------------------------------------------------- reading


def read_json_any(path) -> object:
    """Parse a JSON file, ``.gz`` and ``.xz`` decompressed first."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CaseError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
        elif path.suffix == ".xz":
            raw = lzma.decompress(raw)
        return json.loads(raw)
    except (OSError, lzma.LZMAError, EOFError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CaseError(f"{path}: not a readable JSON file: {exc}") from None


def _array(value, shape: tuple, where: str, finite: bool = True) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise CaseError(f"{where}: expected numbers of shape {shape}") from None
    if arr.shape != shape:
        raise CaseError(f"{where}: expected shape {shape}, got {arr.shape}")
    if finite and not np.all(np.isfinite(arr)):
        raise CaseError(f"{where}: NaN or infinity")
    return arr


class Case:
    """One validated case: (10, 2) trajectories, the mask, which frames exist, the boxes of
    each step and the drivable map (None when the case gives no ``drivable_rects``)."""

    def __init__(self, raw, index: int, source: str):
        if not isinstance(raw, dict):
            raise CaseError(f"{source}: cases[{index}]: expected an object")
        self.id = str(raw.get("id", f"#{index}"))
        where = f"{source}: case {self.id}"
        inputs = raw.get("inputs")
        if not isinstance(inputs, dict):
            raise CaseError(f"{where}: inputs: missing or not an object")
        self.pred = _array(inputs.get("pred"), (STEPS, 2), f"{where}: inputs.pred")
        self.gt = _array(inputs.get("gt"), (STEPS, 2), f"{where}: inputs.gt", finite=False)
        self.mask = _array(inputs.get("mask"), (STEPS,), f"{where}: inputs.mask")
        if not np.all((self.mask == 0) | (self.mask == 1)):
            raise CaseError(f"{where}: inputs.mask: expected 0 or 1 per step")
        if not np.all(np.isfinite(self.gt[self.mask == 1])):
            raise CaseError(f"{where}: inputs.gt: NaN or infinity at a step whose mask is 1")
        self.gt = np.where(np.isfinite(self.gt), self.gt, 0.0)
        valid = inputs.get("frame_valid", [True] * STEPS)
        if not (isinstance(valid, list) and len(valid) == STEPS and all(isinstance(v, bool) for v in valid)):
            raise CaseError(f"{where}: inputs.frame_valid: expected {STEPS} booleans")
        self.frame_valid = np.array(valid, dtype=bool)
        boxes = inputs.get("boxes", [[] for _ in range(STEPS)])
        if not (isinstance(boxes, list) and len(boxes) == STEPS):
            raise CaseError(f"{where}: inputs.boxes: expected {STEPS} lists of boxes")
        self.boxes = [self._boxes(step, k, where) for k, step in enumerate(boxes)]
        self.drivable = self._drivable(inputs.get("drivable_rects"), where)
        self.expected = raw.get("expected") if isinstance(raw.get("expected"), dict) else None

    @staticmethod
    def _boxes(step, k: int, where: str) -> list[dict]:
        if step is None:
            return []
        if not isinstance(step, list):
            raise CaseError(f"{where}: inputs.boxes[{k}]: expected a list of boxes")
        out = []
        for j, box in enumerate(step):
            field = f"{where}: inputs.boxes[{k}][{j}]"
            if not isinstance(box, dict):
                raise CaseError(f"{field}: expected an object")
            vals = {}
            for key in ("x", "y", "l", "w", "yaw"):
                v = box.get(key)
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                    raise CaseError(f"{field}.{key}: missing or not a finite number")
                vals[key] = float(v)
            if not isinstance(box.get("cls"), str):
                raise CaseError(f"{field}.cls: missing or not a string")
            vals["cls"] = box["cls"]
            out.append(vals)
        return out

    @staticmethod
    def _drivable(rects, where: str) -> np.ndarray | None:
        if rects is None:
            return None
        grid = np.zeros((u.GRID_CELLS, u.GRID_CELLS), dtype=np.uint8)
        if not isinstance(rects, list):
            raise CaseError(f"{where}: inputs.drivable_rects: expected a list of [row0, row1, col0, col1]")
        for i, rect in enumerate(rects):
            if not (isinstance(rect, list) and len(rect) == 4 and all(isinstance(v, int) for v in rect)):
                raise CaseError(f"{where}: inputs.drivable_rects[{i}]: expected 4 integers")
            r0, r1, c0, c1 = rect
            if not (0 <= r0 <= r1 < u.GRID_CELLS and 0 <= c0 <= c1 < u.GRID_CELLS):
                raise CaseError(f"{where}: inputs.drivable_rects[{i}]: outside the 200 x 200 grid")
            grid[r0:r1 + 1, c0:c1 + 1] = 1
        return grid

    def box_arrays(self, k: int) -> u.BoxArrays | None:
        if not self.frame_valid[k]:
            return None
        b = self.boxes[k]
        return u.BoxArrays.from_boxes([v["x"] for v in b], [v["y"] for v in b], [v["l"] for v in b],
                                      [v["w"] for v in b], [v["yaw"] for v in b], [v["cls"] for v in b])

    def agents(self, k: int) -> list[AgentBox] | None:
        """The boxes of step k as the time protocol's collision test takes them."""
        if not self.frame_valid[k]:
            return None
        return [AgentBox(str(j), "Car" if u.is_vehicle(b["cls"]) else b["cls"], b["x"], b["y"], 0.0,
                         b["l"], b["w"], 1.0, b["yaw"]) for j, b in enumerate(self.boxes[k])]


def load_cases(path) -> list[Case]:
    data = read_json_any(path)
    cases = data.get("cases") if isinstance(data, dict) else data
    if not isinstance(cases, list) or not cases:
        raise CaseError(f"{path}: expected {{\"cases\": [...]}} with at least one case")
    return [Case(raw, i, str(path)) for i, raw in enumerate(cases)]


# --------------------------------------------------------------------------- scoring


def score_univ2x(case: Case) -> u.StepFlags:
    seg = u.segmentation_of([case.box_arrays(k) for k in range(STEPS)])
    return u.step_flags(case.pred, case.gt, case.mask, seg, case.drivable)


def _cell(v: float) -> int:
    return math.floor((v + DEFAULT_COLLISION_CONFIG.half_extent_m) / DEFAULT_COLLISION_CONFIG.cell_size_m)


def score_time(case: Case) -> u.StepFlags:
    """The time protocol's tests on one case (see the module docstring)."""
    cfg = DEFAULT_COLLISION_CONFIG
    n = cfg.grid_cells
    mask = case.mask.astype(bool)
    agents = [case.agents(k) for k in range(STEPS)]
    labelled = case.frame_valid
    pred_col = collision_flags(case.pred, agents, "univ2x", cfg)
    gt_col = collision_flags(case.gt, agents, "univ2x", cfg, valid=mask)
    l2 = np.where(mask, np.linalg.norm(case.pred - case.gt, axis=1), 0.0)
    counted = mask & labelled
    obj_col = np.zeros(STEPS, dtype=np.int64)
    cells = np.array([[_cell(y), _cell(x)] for x, y in case.pred], dtype=np.int64)
    in_grid = np.all((cells >= 0) & (cells < n), axis=1)
    for k in np.flatnonzero(counted & in_grid & ~gt_col):
        occupancy = rasterize_occupancy(agents[k], cfg)  # indexed [ix, iy]
        obj_col[k] = int(occupancy[cells[k, 1], cells[k, 0]])
    flags = u.StepFlags(
        l2=l2, obj_col=obj_col, obj_box_col=(counted & pred_col & ~gt_col).astype(np.int64),
        gt_box_coll=gt_col, pred_box_coll=pred_col, pred_center_cell=cells, pred_center_in_grid=in_grid,
        pred_fp=(np.zeros((STEPS, 0), np.int64),) * 2, gt_fp=(np.zeros((STEPS, 0), np.int64),) * 2,
    )
    if case.drivable is not None:
        undrivable = 1 - case.drivable

        def box_out(x, y):
            ix0, ix1, iy0, iy1 = ego_cell_window(float(x), float(y), cfg)
            return bool(ix0 < ix1 and iy0 < iy1 and undrivable[iy0:iy1, ix0:ix1].any())

        pred_out = np.array([box_out(x, y) for x, y in case.pred])
        gt_out = np.array([m and box_out(x, y) for (x, y), m in zip(case.gt, mask)])
        flags.obj_box_out = (mask & pred_out & ~gt_out).astype(np.int64)
        flags.obj_out = np.array([int(mask[k] and in_grid[k] and not gt_out[k]
                                      and undrivable[cells[k, 0], cells[k, 1]]) for k in range(STEPS)])
        flags.gt_box_out, flags.pred_box_out = gt_out, pred_out
    return flags


def _ints(values) -> list[int]:
    return [int(v) for v in values]


def aggregate(acc: u.Univ2xAccumulator) -> dict:
    per_step = acc.per_step()
    per_step_f32 = acc.per_step_float32()
    return {
        "n_cases": acc.total, "total": acc.total, "step_times": list(u.STEP_TIMES),
        "counts": {k: _ints(acc.counts[k]) for k in u.Univ2xAccumulator.FLAGS},
        "L2_sum": [float(v) for v in acc.l2_sum],
        "per_step": per_step,
        "per_step_univ2x_float32": per_step_f32,
        "horizons": {key: u.horizon_values(per_step[key]) for key in ("L2", *u.Univ2xAccumulator.FLAGS)},
        "univ2x_printed_table": u.printed_table(per_step_f32),
    }


def _compare(case: Case, out: dict, mismatches: list, counter: dict) -> None:
    exp = case.expected
    for key in ("l2", *_FLAG_KEYS, "gt_box_coll"):
        if key not in exp or out.get(key) is None:
            continue
        for k, (got, want) in enumerate(zip(out[key], exp[key])):
            bad = abs(got - float(want)) > 1e-9 if key == "l2" else int(got) != int(want)
            if bad:
                counter[key] = counter.get(key, 0) + 1
                mismatches.append({"id": case.id, "step": k, "key": key, "got": got, "expected": want})


def score_cases(cases: list[Case], protocol: str) -> dict:
    """Per-case flags and the aggregate of ``cases`` under ``protocol``."""
    if protocol not in PROTOCOLS:
        raise CaseError(f"unknown protocol {protocol!r}; allowed: {', '.join(PROTOCOLS)}")
    score = score_univ2x if protocol == "univ2x" else score_time
    acc = u.Univ2xAccumulator(STEPS)
    rows, mismatches, counter = [], [], {}
    compared = 0
    for case in cases:
        flags = score(case)
        acc.add(flags)
        row = {"id": case.id, "l2": [float(v) for v in flags.l2], "obj_col": _ints(flags.obj_col),
               "obj_box_col": _ints(flags.obj_box_col),
               "obj_out": None if flags.obj_out is None else _ints(flags.obj_out),
               "obj_box_out": None if flags.obj_box_out is None else _ints(flags.obj_box_out),
               "gt_box_coll": _ints(flags.gt_box_coll)}
        rows.append(row)
        if case.expected is not None:
            compared += 1
            _compare(case, row, mismatches, counter)
    result = {"protocol": protocol, "n_cases": len(rows), "cases": rows, "aggregate": aggregate(acc)}
    if protocol == "univ2x":
        result["raster"] = {"opencv": cv2.__version__, "fillpoly": u.PINNED_FILLPOLY}
    if compared:
        result["expected_comparison"] = {
            "cases_with_expected": compared, "mismatching_steps": counter,
            "agrees": not mismatches, "first_mismatches": mismatches[:20]}
    return result


def format_summary(result: dict) -> str:
    """UniV2X's printed table for the aggregate, and the comparison with expected values."""
    table = result["aggregate"]["univ2x_printed_table"]
    lines = [f"{result['n_cases']} cases, protocol {result['protocol']} (per-step means over all cases)", "",
             "| " + " | ".join(table["field_names"]) + " |", "|" + "---|" * len(table["field_names"])]
    lines += ["| " + " | ".join(row) + " |" for row in table["rows"]]
    cmp_ = result.get("expected_comparison")
    if cmp_:
        lines.append("")
        if cmp_["agrees"]:
            lines.append(f"agrees with the expected values of all {cmp_['cases_with_expected']} cases")
        else:
            lines.append(f"DISAGREES with the expected values: {cmp_['mismatching_steps']} (steps per key); "
                         f"first: {cmp_['first_mismatches'][0]}")
    return "\n".join(lines) + "\n"
