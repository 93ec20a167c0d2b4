"""Collision tests for a planned trajectory, in the current ego frame (x forward, y left, m).

Two tests, because the literature uses two and a report must say which one it used
(REFERENCE §3):

- ``"univ2x"`` (default): UniV2X / UniAD's raster test. Agent boxes of the occupancy classes
  are rasterised on a 200 x 200 grid of 0.5 m cells over [-50, 50] m; the ego box at a
  waypoint is NOT rotated by heading and its centre sits 0.5 m ahead of the waypoint; the
  step collides when any cell under the ego box is occupied. A cell belongs to a box when
  its centre lies inside the box or on its edge. Cells outside the grid are ignored, so an
  ego box that leaves the grid never collides there.
  One deliberate difference from UniAD's code: UniAD clips out-of-grid ego cells onto the
  border row/column (so an ego far outside the grid can "hit" a border cell); we drop them,
  which is what the protocol means.
- ``"obb"``: the oriented-box overlap the V2X-VLM paper describes. The ego rectangle is
  rotated by the trajectory heading and collides when it overlaps an occupancy-class box
  with positive area (separating-axis theorem; touching edges do not count).

Only the cells near each box are ever looked at: the raster test intersects each agent's
bounding window with the ego's window first, so a step costs O(agents) plus a few dozen
cells, not 40 000 cells per box.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from v2x_vlm_ros.data.records import AgentBox

#: Names accepted by ``collision_flags(method=...)``.
COLLISION_METHODS = ("univ2x", "obb")

# Inclusive-edge tolerance. Coordinates here are at most ~100 m, where float64 rounding is
# ~1e-14 m; a nanometre absorbs that without changing any real answer.
_EDGE_EPS_M = 1e-9


@dataclass(frozen=True)
class CollisionConfig:
    """Geometry of both collision tests. Defaults are UniV2X's (REFERENCE §3)."""

    grid_cells: int = 200  # cells per side of the square occupancy grid
    cell_size_m: float = 0.5  # so the grid covers [-50, 50] m in x and y, centred on the ego
    ego_length_m: float = 4.084  # along the ego x axis (or along the heading for "obb")
    ego_width_m: float = 1.85
    ego_forward_offset_m: float = 0.5  # box centre ahead of the waypoint (rear-axle reference)
    min_heading_step_m: float = 1e-3  # "obb": shorter moves keep the previous heading

    def __post_init__(self):
        if int(self.grid_cells) != self.grid_cells or self.grid_cells <= 0:
            raise ValueError(f"grid_cells must be a positive integer, got {self.grid_cells!r}")
        for name in ("cell_size_m", "ego_length_m", "ego_width_m"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")
        for name in ("ego_forward_offset_m", "min_heading_step_m"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite, got {getattr(self, name)!r}")

    @property
    def half_extent_m(self) -> float:
        """The grid covers [-half_extent_m, half_extent_m] in x and in y."""
        return self.grid_cells * self.cell_size_m / 2.0

    def cell_centres(self) -> np.ndarray:
        """(grid_cells,) coordinates of the cell centres along either axis."""
        return -self.half_extent_m + (np.arange(self.grid_cells) + 0.5) * self.cell_size_m


DEFAULT_COLLISION_CONFIG = CollisionConfig()


# --------------------------------------------------------------------------- raster test


def _cell_range(lo: float, hi: float, config: CollisionConfig) -> tuple[int, int]:
    """Half-open index range [i0, i1) of the cells whose centres lie in [lo, hi], clipped
    to the grid (the range is empty when i0 >= i1)."""
    res, ext = config.cell_size_m, config.half_extent_m
    # centre(i) = -ext + (i + 0.5) * res  =>  i = (c + ext) / res - 0.5
    i0 = math.ceil((lo + ext) / res - 0.5 - _EDGE_EPS_M / res)
    i1 = math.floor((hi + ext) / res - 0.5 + _EDGE_EPS_M / res) + 1
    return max(i0, 0), min(i1, config.grid_cells)


def _agent_extent(agent: AgentBox) -> tuple[float, float]:
    """Half sizes of the axis-aligned bounding box of an oriented agent box."""
    c, s = abs(math.cos(agent.yaw)), abs(math.sin(agent.yaw))
    hl, hw = agent.length / 2.0, agent.width / 2.0
    return hl * c + hw * s, hl * s + hw * c


def _is_usable(agent: AgentBox) -> bool:
    """Occupancy class with finite geometry and positive area. A NaN box would poison every
    comparison; a zero-area box (a bad label) has no area to overlap, and both tests ignore
    it so that they agree on what an obstacle is."""
    return (
        agent.occupies_road
        and all(math.isfinite(v) for v in (agent.x, agent.y, agent.yaw, agent.length, agent.width))
        and agent.length > 0
        and agent.width > 0
    )


def _agent_cells(agent: AgentBox, window: tuple[int, int, int, int], config: CollisionConfig):
    """Cells of ``agent`` inside ``window`` = (ix0, ix1, iy0, iy1), half-open.

    Returns (ix0, iy0, mask) with mask[i, j] True when the centre of cell (ix0+i, iy0+j)
    lies in the box (edges included), or None when the window and the box's bounding
    window do not meet."""
    ex, ey = _agent_extent(agent)
    bx0, bx1 = _cell_range(agent.x - ex, agent.x + ex, config)
    by0, by1 = _cell_range(agent.y - ey, agent.y + ey, config)
    ix0, ix1 = max(bx0, window[0]), min(bx1, window[1])
    iy0, iy1 = max(by0, window[2]), min(by1, window[3])
    if ix0 >= ix1 or iy0 >= iy1:
        return None
    centres = config.cell_centres()
    dx = centres[ix0:ix1, None] - agent.x
    dy = centres[None, iy0:iy1] - agent.y
    c, s = math.cos(agent.yaw), math.sin(agent.yaw)
    along = dx * c + dy * s  # coordinates of the cell centre in the box frame
    across = -dx * s + dy * c
    mask = (np.abs(along) <= agent.length / 2.0 + _EDGE_EPS_M) & (
        np.abs(across) <= agent.width / 2.0 + _EDGE_EPS_M
    )
    return ix0, iy0, mask


def rasterize_occupancy(
    agents: Sequence[AgentBox], config: CollisionConfig = DEFAULT_COLLISION_CONFIG
) -> np.ndarray:
    """(grid_cells, grid_cells) bool occupancy grid indexed ``grid[ix, iy]``: cell ix spans
    x, cell iy spans y, centre = -half_extent + (index + 0.5) * cell_size. Only occupancy
    classes are drawn. Meant for inspection and tests; the collision test itself never
    builds the full grid."""
    n = config.grid_cells
    grid = np.zeros((n, n), dtype=bool)
    for agent in agents:
        if not _is_usable(agent):
            continue
        cells = _agent_cells(agent, (0, n, 0, n), config)
        if cells is not None:
            ix0, iy0, mask = cells
            grid[ix0 : ix0 + mask.shape[0], iy0 : iy0 + mask.shape[1]] |= mask
    return grid


def ego_cell_window(
    x: float, y: float, config: CollisionConfig = DEFAULT_COLLISION_CONFIG
) -> tuple[int, int, int, int]:
    """Half-open cell window (ix0, ix1, iy0, iy1) under the axis-aligned UniV2X ego box at
    waypoint (x, y). Because the box is axis-aligned, every cell in the window is inside it.
    Empty (ix0 >= ix1 or iy0 >= iy1) when the box misses the grid."""
    cx = x + config.ego_forward_offset_m
    hl, hw = config.ego_length_m / 2.0, config.ego_width_m / 2.0
    ix0, ix1 = _cell_range(cx - hl, cx + hl, config)
    iy0, iy1 = _cell_range(y - hw, y + hw, config)
    return ix0, ix1, iy0, iy1


def univ2x_collides(
    x: float, y: float, agents: Sequence[AgentBox], config: CollisionConfig = DEFAULT_COLLISION_CONFIG
) -> bool:
    """Raster test at one waypoint: does any cell under the ego box hold an agent?"""
    window = ego_cell_window(x, y, config)
    if window[0] >= window[1] or window[2] >= window[3]:
        return False
    for agent in agents:
        if not _is_usable(agent):
            continue
        cells = _agent_cells(agent, window, config)
        if cells is not None and cells[2].any():
            return True
    return False


# --------------------------------------------------------------------------- oriented test


def trajectory_headings(
    xy: np.ndarray, valid: np.ndarray | None = None, min_step_m: float = 1e-3
) -> np.ndarray:
    """(T,) heading of each step: the direction from the previous waypoint (the origin
    before the first) to this one. A move shorter than ``min_step_m`` says nothing about
    direction (a stopped car), so it keeps the previous heading; the initial heading is 0
    (the ego x axis). Invalid steps (``valid`` False) are skipped: the next valid step is
    measured from the last valid waypoint, and an invalid step reports the heading held."""
    pts = np.asarray(xy, dtype=np.float64)
    ok = np.ones(len(pts), dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    headings = np.zeros(len(pts))
    prev = np.zeros(2)
    heading = 0.0
    for k, p in enumerate(pts):
        if ok[k]:
            d = p - prev
            if math.hypot(d[0], d[1]) >= min_step_m:
                heading = math.atan2(d[1], d[0])
            prev = p
        headings[k] = heading
    return headings


def obb_overlaps(
    centre_xy, yaw: float, length: float, width: float, agents: Sequence[AgentBox]
) -> np.ndarray:
    """(len(agents),) bool: does the rectangle (centre, yaw, length, width) overlap each
    agent's rectangle with positive area? Separating-axis theorem on the 4 face normals
    (2 per rectangle); an overlap of the projections of at most a nanometre on any axis
    counts as touching, not as a collision. Pure geometry: the caller filters classes and
    degenerate (zero-area) boxes, which SAT alone would report as overlapping."""
    if len(agents) == 0:
        return np.zeros(0, dtype=bool)
    a = np.array([[g.x, g.y, g.yaw, g.length / 2.0, g.width / 2.0] for g in agents], dtype=np.float64)
    ego_u = np.array([math.cos(yaw), math.sin(yaw)])
    ego_v = np.array([-ego_u[1], ego_u[0]])
    ag_u = np.stack([np.cos(a[:, 2]), np.sin(a[:, 2])], axis=-1)  # (M, 2)
    ag_v = np.stack([-ag_u[:, 1], ag_u[:, 0]], axis=-1)
    m = len(agents)
    axes = np.stack([np.broadcast_to(ego_u, (m, 2)), np.broadcast_to(ego_v, (m, 2)), ag_u, ag_v], axis=1)
    # Projected half-extents of both rectangles and of the centre offset on each axis.
    r_ego = length / 2.0 * np.abs(axes @ ego_u) + width / 2.0 * np.abs(axes @ ego_v)  # (M, 4)
    r_ag = a[:, 3:4] * np.abs(np.einsum("mad,md->ma", axes, ag_u)) + a[:, 4:5] * np.abs(
        np.einsum("mad,md->ma", axes, ag_v)
    )
    offset = a[:, :2] - np.asarray(centre_xy, dtype=np.float64)
    dist = np.abs(np.einsum("mad,md->ma", axes, offset))
    return np.all(dist < r_ego + r_ag - _EDGE_EPS_M, axis=1)


def obb_collides(
    x: float, y: float, heading: float, agents: Sequence[AgentBox],
    config: CollisionConfig = DEFAULT_COLLISION_CONFIG,
) -> bool:
    """Oriented test at one waypoint whose heading is already known."""
    usable = [g for g in agents if _is_usable(g)]
    if not usable:
        return False
    off = config.ego_forward_offset_m
    centre = (x + off * math.cos(heading), y + off * math.sin(heading))
    return bool(obb_overlaps(centre, heading, config.ego_length_m, config.ego_width_m, usable).any())


# --------------------------------------------------------------------------- entry point


def collision_flags(
    xy,
    agents_per_step: Sequence[Sequence[AgentBox] | None],
    method: str = "univ2x",
    config: CollisionConfig = DEFAULT_COLLISION_CONFIG,
    valid=None,
) -> np.ndarray:
    """(T,) bool: does the ego box at waypoint k collide with the agents of step k?

    ``xy`` is (T, 2) in the current ego frame; ``agents_per_step[k]`` holds the boxes at
    step k in that same frame, or None when step k is unlabelled (None and [] give False).
    ``valid`` (optional, (T,) bool) marks waypoints that exist (ground truth past the end
    of a sequence does not): invalid steps give False, may hold NaN, and the "obb" heading
    skips them. ``method`` is "univ2x" (raster, axis-aligned ego) or "obb" (oriented)."""
    if method not in COLLISION_METHODS:
        raise ValueError(f"unknown collision method {method!r}; allowed: {', '.join(COLLISION_METHODS)}")
    pts = np.asarray(xy, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"xy must have shape (T, 2), got {pts.shape}")
    t = pts.shape[0]
    if len(agents_per_step) != t:
        raise ValueError(f"agents_per_step has {len(agents_per_step)} entries for {t} waypoints")
    ok = np.ones(t, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    if ok.shape != (t,):
        raise ValueError(f"valid must have shape ({t},), got {ok.shape}")
    if not np.all(np.isfinite(pts[ok])):
        raise ValueError("xy holds non-finite values at valid steps")

    flags = np.zeros(t, dtype=bool)
    headings = (
        trajectory_headings(pts, ok, config.min_heading_step_m) if method == "obb" else None
    )
    for k in range(t):
        agents = agents_per_step[k]
        if not ok[k] or not agents:
            continue
        x, y = float(pts[k, 0]), float(pts[k, 1])
        if method == "univ2x":
            flags[k] = univ2x_collides(x, y, agents, config)
        else:
            flags[k] = obb_collides(x, y, float(headings[k]), agents, config)
    return flags
