"""UniV2X's planning metric, reproduced operation by operation (the ``univ2x`` protocol).

Source: AIR-THU/UniV2X @ a6e4f6b (Apache-2.0): ``PlanningMetric`` in
``projects/mmdet3d_plugin/univ2x/dense_heads/planning_head_plugin/planning_metrics.py``, the
occupancy labels of ``GenerateOccFlowLabels`` in ``datasets/pipelines/occflow_label.py`` and
mmdetection3d v0.17.1's box corners (``core/bbox/structures/lidar_box3d.py``). The golden
cases in ``test/fixtures/univ2x-golden/`` were computed by that code; this module matches
every per-step flag of them.

The rules, with UniV2X's quirks kept on purpose (they decide the published numbers):

- Grid: 200 x 200 cells of 0.5 m over [-50, 50) m, indexed ``[row, col]`` = ``[y, x]``
  (current LiDAR frame, x forward, y left).
- Segmentation of step k: each box of a vehicle class (``car, truck, construction_vehicle,
  bus, trailer, motorcycle, bicycle``; SPD's Car/Truck/Van/Bus become ``car``, the riders
  ``bicycle``) is drawn with ``cv2.fillPoly`` (edges included) on its 4 bottom corners,
  computed in float32 as mmdet3d does and rounded to vertex indices
  ``np.round((v + 49.75 + 0.25) / 0.5)`` (float32, half to even). A missing future frame is
  255 everywhere, which makes the ground truth "collide" and so excludes the step.
- Ego footprint: a fixed set of 32 cells (rows 98..101, cols 97..104, from
  ``skimage.draw.polygon`` of the 1.85 m x 4.084 m box 0.5 m ahead) shifted by ``2 v``,
  truncated toward zero and clipped onto the border (an ego far outside the grid is tested
  against the border cells). Axis-aligned: the heading is ignored.
- Centre cell: ``trunc((v + 49.75) / 0.5)`` in float32, used only inside the grid (so it
  sits 0.25-0.75 m towards -x/-y of the waypoint).
- ``obj_box_col[k]``: the predicted footprint touches an occupied cell and the ground-truth
  footprint does not; ``obj_col[k]``: the centre cell is occupied, same exclusion;
  ``obj_out`` / ``obj_box_out``: the same against ``1 - drivable``.
  ``l2[k] = sqrt(mask[k] * |pred - gt|^2)``: the mask touches L2 only.
- Aggregates: per step, sums over samples divided by the number of samples.

Numbers: the prediction is float32 (UniV2X's network output), the ground truth float64.
cv2.fillPoly does not fill the same cells in every OpenCV release; the protocol pins the
behaviour of OpenCV >= 4.11 (checked at first use, see ``check_fillpoly_behaviour``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

GRID_CELLS = 200
#: bev_resolution and bev_start_position (= the metric's dx and bx) as UniV2X holds them.
RESOLUTION = np.float32(0.5)
START = np.float32(-49.75)
IGNORE_INDEX = 255
EGO_WIDTH_M = 1.85
EGO_LENGTH_M = 4.084
EGO_FORWARD_M = 0.5
NUM_STEPS = 10
STEP_TIMES = tuple(f"{0.5 * (k + 1):.1f}s" for k in range(NUM_STEPS))

#: tools/spd_data_converter/spd_to_uniad.py ``class_names_nuscenes_mappings``.
NUSCENES_CLASS_OF = {
    "Car": "car", "Truck": "car", "Van": "car", "Bus": "car",
    "Motorcyclist": "bicycle", "Cyclist": "bicycle", "Tricyclist": "bicycle", "Barrowlist": "bicycle",
    "Pedestrian": "pedestrian", "TrafficCone": "traffic_cone",
    "car": "car", "bicycle": "bicycle", "pedestrian": "pedestrian", "traffic_cone": "traffic_cone",
}
#: occflow_label.py ``vehicle_classes`` (only_vehicle=True): what the segmentation draws.
VEHICLE_CLASSES = frozenset({"car", "bus", "construction_vehicle", "bicycle", "motorcycle", "truck",
                             "trailer"})


def nuscenes_class(category: str) -> str:
    """The class UniV2X's converter gives an SPD type; nuScenes names pass through."""
    return NUSCENES_CLASS_OF.get(category, category)


def is_vehicle(category: str) -> bool:
    return nuscenes_class(category) in VEHICLE_CLASSES


# --------------------------------------------------------------------------- ego footprint


def _footprint_offsets() -> tuple[np.ndarray, np.ndarray]:
    """Row and column offsets of the 32 footprint cells, as ``skimage.draw.polygon`` gives
    them for UniV2X's rectangle: integer points strictly inside it (its edges fall between
    integers, checked here, so inclusion on the edge never arises)."""
    half_w, half_h = EGO_WIDTH_M / 2.0, EGO_LENGTH_M / 2.0
    # planning_metrics.py: pts = ([-W/2, H/2 + 0.5], ...) - bx) / dx, columns swapped
    rows = (np.array([-half_w, half_w]) - float(START)) / float(RESOLUTION)  # from y (width)
    cols = (np.array([-half_h + EGO_FORWARD_M, half_h + EGO_FORWARD_M]) - float(START)) / float(RESOLUTION)
    for lo, hi in (rows, cols):
        assert lo != math.floor(lo) and hi != math.floor(hi), "footprint edge on a cell centre"
    return (np.arange(math.ceil(rows[0]), math.floor(rows[1]) + 1),
            np.arange(math.ceil(cols[0]), math.floor(cols[1]) + 1))


FOOTPRINT_ROWS, FOOTPRINT_COLS = _footprint_offsets()
#: (32,) row and column offsets of the footprint cells.
_FP_R = np.repeat(FOOTPRINT_ROWS, len(FOOTPRINT_COLS))
_FP_C = np.tile(FOOTPRINT_COLS, len(FOOTPRINT_ROWS))
# Values past this are clipped before truncation; any such cell is clamped to the border
# anyway, and it keeps the integer conversion defined for absurd inputs.
_FAR = 1.0e6


def footprint_cells(xy, as_float32: bool) -> tuple[np.ndarray, np.ndarray]:
    """(T, 32) rows and columns of the ego footprint at each waypoint: ``trunc(v / 0.5 +
    offset)`` clipped to [0, 199] (``evaluate_single_coll``). ``as_float32``: the waypoints
    are the float32 prediction (else the float64 ground truth); ``v / 0.5`` is exact in
    both and the sum with the integer offset is exact in float64, as in UniV2X."""
    pts = np.asarray(xy, dtype=np.float32 if as_float32 else np.float64)
    scaled = (pts / (RESOLUTION if as_float32 else np.float64(RESOLUTION))).astype(np.float64)
    scaled = np.clip(scaled, -_FAR, _FAR)
    r = np.trunc(scaled[:, 1:2] + _FP_R[None, :]).astype(np.int64)
    c = np.trunc(scaled[:, 0:1] + _FP_C[None, :]).astype(np.int64)
    return np.clip(r, 0, GRID_CELLS - 1), np.clip(c, 0, GRID_CELLS - 1)


def centre_cells(xy) -> tuple[np.ndarray, np.ndarray]:
    """(T,) row and column of the predicted waypoint's cell, ``trunc((v - bx) / dx)`` in
    float32 (``evaluate_coll``); may lie outside the grid."""
    pts = np.asarray(xy, dtype=np.float32)
    scaled = np.clip(((pts - START) / RESOLUTION).astype(np.float64), -_FAR, _FAR)
    return np.trunc(scaled[:, 1]).astype(np.int64), np.trunc(scaled[:, 0]).astype(np.int64)


# --------------------------------------------------------------------------- segmentation


@dataclass(frozen=True)
class BoxArrays:
    """Boxes as UniV2X's label pipeline holds them, float32: bottom centre (x, y), sizes
    ``x_size = width`` and ``y_size = length`` and the mmdet3d<1.0 yaw ``-heading - pi/2``;
    ``vehicle`` marks the boxes that are drawn."""

    centre: np.ndarray  # (N, 2) float32
    size: np.ndarray  # (N, 2) float32: (width, length)
    yaw: np.ndarray  # (N,) float32, mmdet3d yaw
    vehicle: np.ndarray  # (N,) bool

    @staticmethod
    def from_boxes(x, y, length, width, heading, categories) -> BoxArrays:
        """From boxes given by centre, full length / width and the heading of the length axis
        (counter-clockwise from +x); the mmdet3d yaw is formed in float64, as the converter
        does, then stored in float32."""
        heading = np.asarray(heading, dtype=np.float64)
        return BoxArrays(
            centre=np.stack([np.asarray(x, np.float64), np.asarray(y, np.float64)], axis=-1)
            .reshape(-1, 2).astype(np.float32),
            size=np.stack([np.asarray(width, np.float64), np.asarray(length, np.float64)], axis=-1)
            .reshape(-1, 2).astype(np.float32),
            yaw=(-heading - np.pi / 2).reshape(-1).astype(np.float32),
            vehicle=np.array([is_vehicle(c) for c in categories], dtype=bool).reshape(-1),
        )

    @staticmethod
    def from_agents(agents) -> BoxArrays:
        """From ``AgentBox``es (or anything with x, y, length, width, yaw, category)."""
        agents = list(agents)
        return BoxArrays.from_boxes([a.x for a in agents], [a.y for a in agents],
                                    [a.length for a in agents], [a.width for a in agents],
                                    [a.yaw for a in agents], [a.category for a in agents])


def bottom_corners(boxes: BoxArrays) -> np.ndarray:
    """(N, 4, 2) float32 bottom corners in the order UniV2X takes them
    (``corners[:, [0, 3, 7, 4], :2]`` of mmdet3d v0.17.1's ``LiDARInstance3DBoxes``).

    mmdet3d rotates with ``rot_mat_T = [[c, -s], [s, c]]`` applied as ``p @ rot_mat_T``.
    sin and cos are taken in float64 and rounded (numpy's float32 kernels vary between
    CPUs by an ulp; torch's may too, which moves a corner by < 1e-6 m)."""
    half = np.array([[-0.5, -0.5], [-0.5, 0.5], [0.5, 0.5], [0.5, -0.5]], dtype=np.float32)
    local = boxes.size[:, None, :] * half[None, :, :]  # exact: halves of float32 sizes
    yaw = boxes.yaw.astype(np.float64)
    c = np.cos(yaw).astype(np.float32)[:, None]
    s = np.sin(yaw).astype(np.float32)[:, None]
    px, py = local[..., 0], local[..., 1]
    x = px * c + py * s  # float32 products and sum, no fused multiply-add
    y = px * (-s) + py * c
    return np.stack([x + boxes.centre[:, None, 0], y + boxes.centre[:, None, 1]], axis=-1)


def vertex_indices(corners: np.ndarray) -> np.ndarray:
    """(N, 4, 2) int32 ``[col, row]`` vertices: ``np.round((v - start + res / 2) / res)`` in
    float32 and in that order of operations, rounded half to even (occflow_label.py)."""
    c = np.asarray(corners, dtype=np.float32)
    return np.round(((c - START) + RESOLUTION / np.float32(2.0)) / RESOLUTION).astype(np.int32)


def rasterise(boxes: BoxArrays | None) -> np.ndarray:
    """(200, 200) uint8 segmentation of one step: 1 under vehicle boxes, 0 elsewhere;
    ``None`` (a missing frame) gives 255 everywhere. One ``fillPoly`` per box, as UniV2X
    does (a single call with every polygon would cancel overlaps)."""
    if boxes is None:
        return np.full((GRID_CELLS, GRID_CELLS), IGNORE_INDEX, dtype=np.uint8)
    check_fillpoly_behaviour()
    seg = np.zeros((GRID_CELLS, GRID_CELLS), dtype=np.uint8)
    if boxes.vehicle.any():
        keep = BoxArrays(boxes.centre[boxes.vehicle], boxes.size[boxes.vehicle], boxes.yaw[boxes.vehicle],
                         boxes.vehicle[boxes.vehicle])
        for poly in vertex_indices(bottom_corners(keep)):
            cv2.fillPoly(seg, [poly], 1)
    return seg


# --------------------------------------------------------------------------- OpenCV pin

#: Polygons (``[x, y]`` vertices) on which OpenCV releases fill different cells, with the
#: cells ``[row, col]`` the pinned behaviour (OpenCV >= 4.11; recorded with 5.0.0) fills.
#: ``half_way``: the edge (133, 46)-(134, 44) crosses row 45 exactly half-way between two
#: columns; 4.8-4.10 also fill (45, 134). ``outside``: corners beyond the image; 4.10 leaves
#: out (9, 199), 4.7 also (10, 199).
FILLPOLY_PROBES = {
    "half_way": ([[134, 44], [133, 44], [132, 45], [133, 46]],
                 [[44, 133], [44, 134], [45, 132], [45, 133], [46, 133]]),
    "outside": ([[201, 10], [200, 9], [199, 11], [199, 12]],
                [[9, 199], [10, 199], [11, 199], [12, 199]]),
}
PINNED_FILLPOLY = "OpenCV >= 4.11 (fillPoly after opencv issue 26130; recorded with OpenCV 5.0.0)"


class RasterBehaviourError(RuntimeError):
    """The installed OpenCV fills polygons differently from the pinned behaviour."""


def fillpoly_probe_cells() -> dict[str, list[list[int]]]:
    """What the installed ``cv2.fillPoly`` fills for each probe polygon."""
    out = {}
    for name, (poly, _) in FILLPOLY_PROBES.items():
        img = np.zeros((GRID_CELLS, GRID_CELLS), dtype=np.uint8)
        cv2.fillPoly(img, [np.array(poly, dtype=np.int32)], 1)
        out[name] = [[int(r), int(c)] for r, c in zip(*np.nonzero(img))]
    return out


_FILLPOLY_CHECKED = False


def check_fillpoly_behaviour() -> None:
    """Raise ``RasterBehaviourError`` unless the installed OpenCV fills the probe polygons
    exactly as the pinned release does (run once per process)."""
    global _FILLPOLY_CHECKED
    if _FILLPOLY_CHECKED:
        return
    got = fillpoly_probe_cells()
    wrong = [name for name, (_, cells) in FILLPOLY_PROBES.items() if got[name] != cells]
    if wrong:
        raise RasterBehaviourError(
            f"the univ2x protocol pins cv2.fillPoly to {PINNED_FILLPOLY}; the installed OpenCV "
            f"{cv2.__version__} fills the probe polygon(s) {', '.join(wrong)} differently "
            "(4.8-4.10 add cells where an edge crosses a row half-way; <= 4.7 and 4.8-4.10 clip "
            "polygons with corners outside the image differently); install opencv-python-headless>=4.11")
    _FILLPOLY_CHECKED = True


# --------------------------------------------------------------------------- one sample


@dataclass
class StepFlags:
    """Per-step results of one sample (arrays of length T) and what decided them."""

    l2: np.ndarray
    obj_col: np.ndarray
    obj_box_col: np.ndarray
    gt_box_coll: np.ndarray
    pred_box_coll: np.ndarray
    pred_center_cell: np.ndarray  # (T, 2) [row, col], may lie outside the grid
    pred_center_in_grid: np.ndarray
    pred_fp: tuple[np.ndarray, np.ndarray]  # (T, 32) rows, cols
    gt_fp: tuple[np.ndarray, np.ndarray]
    obj_out: np.ndarray | None = None
    obj_box_out: np.ndarray | None = None
    gt_box_out: np.ndarray | None = None
    pred_box_out: np.ndarray | None = None


def _hits(raster: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """(T,) any non-zero cell under each step's footprint; ``raster`` is (T, H, W) or (H, W)."""
    if raster.ndim == 2:
        return raster[rows, cols].any(axis=1)
    steps = np.arange(rows.shape[0])[:, None]
    return raster[steps, rows, cols].any(axis=1)


def _centre_values(raster: np.ndarray, rows: np.ndarray, cols: np.ndarray, use: np.ndarray) -> np.ndarray:
    out = np.zeros(rows.shape[0], dtype=np.int64)
    steps = np.flatnonzero(use)
    if raster.ndim == 2:
        out[steps] = raster[rows[steps], cols[steps]]
    else:
        out[steps] = raster[steps, rows[steps], cols[steps]]
    return out


def step_flags(pred, gt, mask, segmentation: np.ndarray, drivable: np.ndarray | None = None) -> StepFlags:
    """UniV2X's ``PlanningMetric.update`` for one sample (B = 1).

    ``pred``, ``gt``: (T, 2) waypoints (x, y) in the current frame; ``pred`` is taken as
    float32. ``mask``: (T,) 0/1. ``segmentation``: (T, 200, 200) with 0, 1 and 255.
    ``drivable``: (200, 200) 0/1, or None to skip the out-of-drivable flags."""
    p32 = np.asarray(pred, dtype=np.float32)
    g64 = np.asarray(gt, dtype=np.float64)
    m = np.asarray(mask, dtype=np.float64)
    seg = np.asarray(segmentation)
    t = p32.shape[0]
    diff = p32.astype(np.float64) - g64
    l2 = np.sqrt((diff * diff * m[:, None]).sum(axis=-1))

    g_rows, g_cols = footprint_cells(g64, as_float32=False)
    p_rows, p_cols = footprint_cells(p32, as_float32=True)
    yi, xi = centre_cells(p32)
    in_grid = (yi >= 0) & (yi < GRID_CELLS) & (xi >= 0) & (xi < GRID_CELLS)

    gt_coll = _hits(seg, g_rows, g_cols)
    pred_coll = _hits(seg, p_rows, p_cols)
    flags = StepFlags(
        l2=l2,
        obj_col=_centre_values(seg, yi, xi, in_grid & ~gt_coll),
        obj_box_col=(pred_coll & ~gt_coll).astype(np.int64),
        gt_box_coll=gt_coll, pred_box_coll=pred_coll,
        pred_center_cell=np.stack([yi, xi], axis=-1), pred_center_in_grid=in_grid,
        pred_fp=(p_rows, p_cols), gt_fp=(g_rows, g_cols),
    )
    if drivable is not None:
        undrivable = (1 - np.asarray(drivable, dtype=np.int64)).astype(np.int64)
        gt_out = _hits(undrivable, g_rows, g_cols)
        pred_out = _hits(undrivable, p_rows, p_cols)
        flags.obj_out = _centre_values(undrivable, yi, xi, in_grid & ~gt_out)
        flags.obj_box_out = (pred_out & ~gt_out).astype(np.int64)
        flags.gt_box_out, flags.pred_box_out = gt_out, pred_out
    assert flags.l2.shape == (t,)
    return flags


def segmentation_of(steps: Sequence[BoxArrays | None]) -> np.ndarray:
    """(T, 200, 200) uint8 segmentation from per-step boxes (None: missing frame)."""
    return np.stack([rasterise(b) for b in steps])


# --------------------------------------------------------------------------- accumulation


class Univ2xAccumulator:
    """``PlanningMetric``'s state: per-step sums over samples and the sample count.

    Sums are kept exactly (float64, integers) and, beside them, as UniV2X's float32
    accumulators hold them (``self.L2 += L2.sum(0)`` adds in float64 and stores float32),
    so that both the exact means and what UniV2X prints can be reported."""

    FLAGS = ("obj_col", "obj_box_col", "obj_out", "obj_box_out")

    def __init__(self, steps: int = NUM_STEPS):
        self.steps = steps
        self.total = 0
        self.counts = {k: np.zeros(steps, dtype=np.int64) for k in self.FLAGS}
        self.l2_sum = np.zeros(steps, dtype=np.float64)
        self._f32 = {k: np.zeros(steps, dtype=np.float32) for k in (*self.FLAGS, "L2")}

    def add(self, flags: StepFlags) -> None:
        values = {"obj_col": flags.obj_col, "obj_box_col": flags.obj_box_col,
                  "obj_out": flags.obj_out, "obj_box_out": flags.obj_box_out}
        for key, v in values.items():
            if v is None:
                continue
            self.counts[key] += np.asarray(v, dtype=np.int64)
            self._f32[key] = (self._f32[key].astype(np.float64) + v).astype(np.float32)
        self.l2_sum += flags.l2
        self._f32["L2"] = (self._f32["L2"].astype(np.float64) + flags.l2).astype(np.float32)
        self.total += 1

    def per_step(self) -> dict[str, list[float | None]]:
        """Exact means (sum / number of samples)."""
        n = self.total
        out = {"L2": [float(v / n) if n else None for v in self.l2_sum]}
        for key in self.FLAGS:
            out[key] = [float(v / n) if n else None for v in self.counts[key]]
        return out

    def per_step_float32(self) -> dict[str, list[float | None]]:
        """What UniV2X's ``compute()`` returns: float32 sums divided in float32."""
        n = np.float32(self.total)
        return {key: [float(v / n) if self.total else None for v in self._f32[key]]
                for key in ("L2", *self.FLAGS)}


def horizon_values(per_step: Sequence[float | None]) -> dict:
    """The values at 1/2/3 s and 2.5/3.5/4.5 s read off the per-step table, their means,
    and (for comparison only) the ST-P3-style mean over all steps up to each horizon."""
    at = {"1.0s": 1, "2.0s": 3, "3.0s": 5, "2.5s": 4, "3.5s": 6, "4.5s": 8}

    def mean(values):
        return None if any(v is None for v in values) else float(sum(values) / len(values))

    value = {key: per_step[k] for key, k in at.items()}
    value["avg_1.0_2.0_3.0s"] = mean([value["1.0s"], value["2.0s"], value["3.0s"]])
    value["avg_2.5_3.5_4.5s"] = mean([value["2.5s"], value["3.5s"], value["4.5s"]])
    stp3 = {key: mean(list(per_step[: k + 1])) for key, k in at.items()}
    return {"univ2x_value_at_step": value, "stp3_style_mean_up_to_step_NOT_univ2x": stp3}


def printed_table(per_step_f32: dict[str, list[float | None]]) -> dict:
    """The table UniV2X's dataset prints after testing (``'%.4f'`` per step)."""
    rows = []
    for key in ("obj_col", "obj_box_col", "obj_out", "obj_box_out", "L2"):
        rows.append([key] + ["n/a" if v is None else "%.4f" % v for v in per_step_f32[key]])
    return {"field_names": ["metrics", *STEP_TIMES], "rows": rows}
