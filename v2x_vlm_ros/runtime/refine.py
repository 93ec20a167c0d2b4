"""Kinematic refinement of a decoded trajectory: reject atypical waypoints, repair, smooth.

The paper refines the decoded waypoints into "a smoothed trajectory not skewed by atypical
points" without giving an algorithm; this one is ours. Input: (T, 2) waypoints, one every
``dt_s`` seconds, in the current ego frame (x forward, y left, metres). The ego is at the
origin at t = 0 heading along +x, so waypoint i is at time (i + 1) * dt_s and "waypoint -1"
is the origin. Output: (T, 2) float64, always finite; the input is never modified.

Checks. Segment j runs from waypoint j - 1 to waypoint j. The speed, acceleration and
curvature checks fail when their value exceeds the limit by more than the fraction
``tolerance``:

- speed: segment length / dt_s <= max_speed_mps.
- acceleration: (speed_j - speed_{j-1}) / dt_s within [-max_decel_mps2, max_accel_mps2]. At
  j = 0 the previous speed is the current speed, which is instantaneous at t = 0 while segment
  0's speed is its mean at t = dt_s / 2, so that change is over dt_s / 2; with the current
  speed unknown there is no check at j = 0.
- curvature: the heading change from segment j - 1 to segment j per metre of arc, measured as
  2 sin(turn / 2) / mean chord length (exact for points on a circle), at most
  max_curvature_per_m and at most max_lateral_accel_mps2 / v^2, v the mean speed of the two
  segments. At j = 0 the previous heading is the ego's +x axis, and the tangent-chord form
  2 sin(turn) / chord applies. Only measured when both segments are at least
  ``min_heading_step_m`` long: shorter steps are standstill noise and have no heading.
- out_of_order: segment j projected onto the latest heading (that of the most recent segment
  at least ``min_heading_step_m`` long, else +x) must be >= min_progress_m. Reversing plans
  are therefore rejected: this planner only drives forward.

Algorithm:

1. Non-finite waypoints are rejected ("non_finite"), and so are waypoints farther from the
   origin than the speed limit can reach by their time ("speed"): no placement of the others
   could make them valid. (This also keeps huge values out of the arithmetic.)
2. Repair: kept waypoints and the origin stay fixed; rejected ones are placed to minimise the
   squared third differences (jerk) of the sequence (origin, p_0 .. p_{T-1}) plus
   ``repair_straightness`` times their squared distance from the straight repair (linear in
   time between kept neighbours; after the last kept waypoint, its velocity continued). So a
   gap in an arc is filled along the arc, not by a chord, and a trailing gap continues the
   motion, held near constant velocity.
3. Outlier rejection, greedy, at most ``max_iterations`` rounds while the repaired trajectory
   fails a check. Each round tries rejecting every kept waypoint alone and every two
   consecutive kept waypoints, repairs each try and checks it. If some tries pass every check,
   the eligible ones are those rejecting the fewest waypoints; otherwise the single rejections
   with the least total violation (the sum over failing checks of the excess as a fraction of
   the limit; for out_of_order, of the farthest one step may go, max_speed_mps * dt_s). Of
   the eligible, the one whose repair is smoothest (least squared jerk) wins. A single spike
   spoils the segments on both of its sides: rejecting it clears both, rejecting a neighbour
   clears neither. Two swapped waypoints are rejected together: rejecting either alone leaves
   a jump. The reason recorded is the first of speed, out_of_order, curvature, acceleration
   (gross misplacement first) whose violation the round reduced. Tries are judged after
   repair, so the result of this step passes every check.
4. Fallback, when every waypoint was rejected or violations remain after max_iterations
   rounds: brake along +x at max_decel_mps2 from the current speed to a stop, or stay at the
   origin when the speed is unknown. (If the current speed already exceeds the speed limit the
   fallback cannot satisfy it either; that is the only case where the output breaks a limit.)
5. Smoothing: p = argmin |p - q|^2 + smoothing * |J p|^2, J the third differences of
   (origin, p), the origin fixed; the matrix (I + smoothing J^T J)^-1 is cached per
   (T, smoothing). Third differences vanish at constant speed and constant acceleration, so
   cruising and braking plans barely move: at most 3 cm on the clean plans of
   ``test/test_refine.py`` (an arc of radius 20 m, braking to a stop, a turn at the curvature
   limit), while a 25 degree kink at 5 m/s is rounded to 17 degrees. The smoothed trajectory
   is used only if it still passes every check.

Known limits: swapping the last two waypoints looks like hard braking and is repaired as such;
a plan that breaks a limit throughout (say accelerating at 5 m/s^2) is not an outlier, and
ends in the fallback.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np

REASONS = ("non_finite", "speed", "acceleration", "curvature", "out_of_order")

# Kinematic checks in the order a rejection's reason is chosen: from gross misplacement of a
# waypoint to subtle shape errors (any displaced waypoint also changes speeds, so acceleration
# says least about what was wrong).
_CHECKS = ("speed", "out_of_order", "curvature", "acceleration")


@dataclass(frozen=True)
class RefineConfig:
    """Limits and knobs of ``refine``; YAML overrides load through ``config.from_dict``."""

    # Time between waypoints; waypoint i is at (i + 1) * dt_s.
    dt_s: float = 0.5
    # Fastest segment speed.
    max_speed_mps: float = 25.0
    # Largest speed increase per second.
    max_accel_mps2: float = 4.0
    # Largest speed decrease per second: braking can be harder than accelerating.
    max_decel_mps2: float = 8.0
    # Tightest turn: 0.25 / m is a 4 m turn radius.
    max_curvature_per_m: float = 0.25
    # Largest lateral acceleration (speed^2 * curvature): at speed the curvature limit is
    # max_lateral_accel_mps2 / speed^2, which is what rejects a sideways jump at 10 m/s that
    # the 4 m turn radius alone would allow.
    max_lateral_accel_mps2: float = 6.0
    # How far a waypoint may fall back along the latest heading before it is out of order;
    # a small negative value tolerates standstill noise. Must be <= 0.
    min_progress_m: float = -0.5
    # Fractional slack on the speed, acceleration, deceleration and curvature limits, so that
    # plans at a limit and decoding round-off are not rejected.
    tolerance: float = 0.1
    # Segments shorter than this have no heading (standstill noise): no curvature check
    # touches them and they do not update the heading used for out_of_order.
    min_heading_step_m: float = 0.5
    # Weight of the jerk (third difference) penalty in the smoother; 0 disables smoothing.
    smoothing: float = 0.05
    # Pull of repaired waypoints toward straight-line interpolation / constant-velocity
    # extrapolation, relative to the jerk penalty: small values let them follow the curve
    # of their kept neighbours (and continue braking or turning past the last one), large
    # values give straight chords. > 0.
    repair_straightness: float = 0.1
    # Rejection rounds (one waypoint, or two in a row, each) before the plan is deemed
    # unusable and the fallback is used.
    max_iterations: int = 10
    # False returns a copy of the input untouched (NaN included).
    enabled: bool = True

    def __post_init__(self):
        for name in ("dt_s", "max_speed_mps", "max_accel_mps2", "max_decel_mps2",
                     "max_curvature_per_m", "max_lateral_accel_mps2", "min_heading_step_m"):
            self._require(name, lambda v: v > 0, "a finite number > 0")
        self._require("min_progress_m", lambda v: v <= 0, "a finite number <= 0")
        self._require("tolerance", lambda v: v >= 0, "a finite number >= 0")
        self._require("smoothing", lambda v: v >= 0, "a finite number >= 0")
        self._require("repair_straightness", lambda v: v > 0, "a finite number > 0")
        if type(self.max_iterations) is not int or self.max_iterations < 1:
            raise ValueError(f"RefineConfig.max_iterations must be an integer >= 1, "
                             f"got {self.max_iterations!r}")
        if not isinstance(self.enabled, bool):
            raise ValueError(f"RefineConfig.enabled must be true or false, got {self.enabled!r}")

    def _require(self, name: str, ok, expected: str):
        value = getattr(self, name)
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not (number and math.isfinite(value) and ok(value)):
            raise ValueError(f"RefineConfig.{name} must be {expected}, got {value!r}")


@dataclass
class RefineReport:
    """What ``refine`` changed, for logs and metrics."""

    # Rejected waypoint index -> reason (one of REASONS), in the order of rejection.
    rejected: dict[int, str] = field(default_factory=dict)
    # True when the output is the fallback stop, not a repair of the model's plan.
    fallback: bool = False
    # Largest distance between an output waypoint and the finite input waypoint it replaces.
    max_displacement_m: float = 0.0
    # Greedy rejection rounds run (0 when the repaired input already passed every check).
    iterations: int = 0

    @property
    def counts(self) -> dict[str, int]:
        """Number of rejected waypoints per reason, every reason present."""
        counts = dict.fromkeys(REASONS, 0)
        for reason in self.rejected.values():
            counts[reason] += 1
        return counts


def refine(xy, current_speed_mps: float | None = None,
           config: RefineConfig = RefineConfig()) -> tuple[np.ndarray, RefineReport]:
    """Refined copy of ``xy`` (T, 2) and a report; see the module docstring.

    ``current_speed_mps``: the ego's speed at t = 0, or None when unknown (a non-finite value
    counts as unknown; the sign is ignored, speed being a magnitude).
    """
    q = np.array(xy, dtype=np.float64)  # a copy: the caller's array is never modified
    if q.ndim != 2 or q.shape[1] != 2:
        raise ValueError(f"xy must have shape (T, 2), got {q.shape}")
    report = RefineReport()
    if not config.enabled or len(q) == 0:
        return q, report
    speed = None
    if current_speed_mps is not None and math.isfinite(current_speed_mps):
        speed = abs(float(current_speed_mps))
    n = len(q)

    finite = np.isfinite(q).all(axis=1)
    reach = config.max_speed_mps * (1 + config.tolerance) * config.dt_s * np.arange(1, n + 1)
    distance = np.hypot(q[:, 0], q[:, 1])
    reachable = np.where(finite, distance, np.inf) <= reach
    for i in np.flatnonzero(~finite):
        report.rejected[int(i)] = "non_finite"
    for i in np.flatnonzero(finite & ~reachable):
        report.rejected[int(i)] = "speed"
    keep = finite & reachable
    points = np.where(keep[:, None], q, 0.0)  # rejected values are never read, but keep them finite
    fallback = _fallback_plan(n, speed, config)

    repaired, violation = _evaluate(points, keep[None], speed, fallback, config)
    repaired, violation = repaired[0], violation[0]
    while violation.any() and keep.any() and report.iterations < config.max_iterations:
        report.iterations += 1
        removed, repaired, after = _reject_once(points, keep, speed, fallback, config)
        reduced = after < violation
        reason = _CHECKS[int(np.argmax(reduced if reduced.any() else violation > 0))]
        for i in np.flatnonzero(removed):
            report.rejected[int(i)] = reason
        keep, violation = keep & ~removed, after

    report.fallback = bool(violation.any() or not keep.any())
    out = fallback if report.fallback else repaired
    if not report.fallback and config.smoothing > 0:
        smooth = _smoother(n, config.smoothing) @ repaired
        if not _violation(smooth[None], speed, config).any():
            out = smooth
    if finite.any():
        report.max_displacement_m = float(np.hypot(*(out - q)[finite].T).max())
    return out, report


class Refiner:
    """``refine`` bound to one config: ``refiner(xy, current_speed_mps) -> (xy, report)``."""

    def __init__(self, config: RefineConfig = RefineConfig()):
        self.config = config

    def __call__(self, xy, current_speed_mps: float | None = None):
        return refine(xy, current_speed_mps, self.config)


def _reject_once(points, keep, speed, fallback, config):
    """One greedy round (module docstring, step 3): the waypoints to reject (T,) bool, the
    repaired trajectory without them and its violation per check."""
    kept = np.flatnonzero(keep)
    singles = np.arange(len(kept))
    pairs = np.arange(len(kept) - 1)
    removals = np.zeros((len(singles) + len(pairs), len(keep)), dtype=bool)
    removals[singles, kept] = True
    removals[len(singles) + pairs, kept[:-1]] = True  # two kept waypoints in a row
    removals[len(singles) + pairs, kept[1:]] = True
    trial_xy, trial_violation = _evaluate(points, keep & ~removals, speed, fallback, config)
    score = trial_violation.sum(axis=1)
    size = removals.sum(axis=1)
    clears = score == 0
    if clears.any():
        eligible = clears & (size == size[clears].min())
    else:
        eligible = (size == 1) & (score <= score[size == 1].min() + 1e-9)
    # Among the eligible, the one that leaves the smoothest trajectory (least squared jerk).
    jerk = np.diff(trial_xy, 3, axis=1, prepend=np.zeros((len(removals), 1, 2)))
    best = int(np.argmin(np.where(eligible, (jerk**2).sum(axis=(1, 2)), np.inf)))
    return removals[best], trial_xy[best], trial_violation[best]


def _evaluate(points, keep, speed, fallback, config):
    """Repair ``points`` once per row of ``keep`` (C, T); return the trajectories (C, T, 2)
    and their total violation per check (C, 4)."""
    paths = _repair(points, keep, config.repair_straightness)
    paths[~keep.any(axis=1)] = fallback
    return paths, _violation(paths, speed, config)


def _repair(points, keep, straightness: float):
    """Trajectories (C, T, 2) that keep ``points`` where ``keep`` (C, T) is True and fill the
    rest (module docstring, step 2); rows that keep nothing stay at the origin."""
    rows, count = keep.shape
    size = count + 1  # with the origin at index 0
    anchored = np.concatenate([np.zeros((1, 2)), points])
    kept = np.concatenate([np.ones((rows, 1), dtype=bool), keep], axis=1)
    index = np.arange(size)
    before = np.maximum.accumulate(np.where(kept, index, 0), axis=1)
    after = np.minimum.accumulate(np.where(kept, index, size)[:, ::-1], axis=1)[:, ::-1]
    inside = after < size
    after = np.where(inside, after, before)
    weight = ((index - before) / np.maximum(after - before, 1))[..., None]
    line = anchored[before] * (1 - weight) + anchored[after] * weight
    row = np.arange(rows)
    last = before[:, -1]
    velocity = line[row, last] - line[row, np.maximum(last - 1, 0)]
    steps = (index - last[:, None])[..., None]
    ahead = line[row, last][:, None] + steps * velocity[:, None]
    straight = np.where(inside[..., None], line, ahead)[:, 1:]
    # Minimum-jerk fill: kept rows are the identity (p_k = q_k); repaired rows minimise the
    # jerk of the whole sequence plus straightness * their distance from the straight repair.
    fixed = keep[:, :, None]
    eye = np.eye(count)
    system = np.where(fixed, eye, straightness * eye + _jerk_gram(count))
    target = np.where(fixed, points, straightness * straight)
    return np.linalg.solve(system, target)


def _violation(paths, speed, config):
    """Total excess of each check in ``_CHECKS`` over each path (C, T, 2): (C, 4), all zero
    when a path passes. Definitions in the module docstring."""
    rows = len(paths)
    dt, slack = config.dt_s, 1 + config.tolerance

    def excess(value, limit):
        return np.maximum(value / limit - slack, 0.0)

    seg = np.diff(paths, axis=1, prepend=np.zeros((rows, 1, 2)))
    length = np.hypot(seg[..., 0], seg[..., 1])
    seg_speed = length / dt

    if speed is None:
        accel = np.diff(seg_speed, axis=1, prepend=seg_speed[:, :1]) / dt  # 0 at j = 0
    else:
        accel = np.diff(seg_speed, axis=1, prepend=speed) / dt
        accel[:, 0] *= 2  # instantaneous speed at t = 0 to segment 0's mean at dt / 2
    over_accel = np.maximum(excess(accel, config.max_accel_mps2),
                            excess(-accel, config.max_decel_mps2))

    step = config.min_heading_step_m
    moving = length >= step
    # Entry 0 is the ego's heading, entry j + 1 segment j's (meaningful where moving).
    tangent = np.concatenate([np.broadcast_to([1.0, 0.0], (rows, 1, 2)),
                              seg / np.maximum(length, step)[..., None]], axis=1)
    has_heading = np.concatenate([np.ones((rows, 1), dtype=bool), moving], axis=1)
    a, b = tangent[:, :-1], tangent[:, 1:]
    turn = np.arctan2(np.abs(a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]), (a * b).sum(-1))
    chord = np.maximum(length, step)
    curvature = np.empty_like(turn)
    curvature[:, 0] = 2 * np.sin(np.minimum(turn[:, 0], np.pi / 2)) / chord[:, 0]
    curvature[:, 1:] = 2 * np.sin(turn[:, 1:] / 2) / ((chord[:, :-1] + chord[:, 1:]) / 2)
    # At speed v a curve of curvature k needs lateral acceleration v^2 k: the limit tightens.
    joint_speed = seg_speed.copy()
    joint_speed[:, 1:] = (seg_speed[:, :-1] + seg_speed[:, 1:]) / 2
    limit = np.minimum(config.max_curvature_per_m,
                       config.max_lateral_accel_mps2 / np.maximum(joint_speed, 1e-6) ** 2)
    over_curvature = np.where(moving & has_heading[:, :-1], excess(curvature, limit), 0.0)

    # The latest heading before segment j: the last entry <= j of ``tangent`` that has one.
    source = np.maximum.accumulate(np.where(has_heading, np.arange(len(has_heading[0])), 0), axis=1)
    heading = np.take_along_axis(tangent, source[:, :-1, None], axis=1)
    progress = (seg * heading).sum(-1)
    over_progress = np.maximum((config.min_progress_m - progress) / (config.max_speed_mps * dt), 0.0)

    over_speed = excess(seg_speed, config.max_speed_mps)
    return np.stack([over_speed.sum(1), over_progress.sum(1), over_curvature.sum(1),
                     over_accel.sum(1)], axis=1)


def _fallback_plan(count: int, speed, config) -> np.ndarray:
    """Brake along +x at max_decel_mps2 from ``speed`` to a stop (stay put when unknown)."""
    v = 0.0 if speed is None else speed
    t = np.minimum(config.dt_s * np.arange(1, count + 1), v / config.max_decel_mps2)
    return np.column_stack([v * t - 0.5 * config.max_decel_mps2 * t**2, np.zeros(count)])


@functools.lru_cache(maxsize=64)
def _jerk_gram(count: int) -> np.ndarray:
    """Read-only J^T J for T waypoints, J the third differences of (origin, p_0 .. p_{T-1}).

    The origin is fixed at zero, so its column of J drops out and every least-squares problem
    here stays linear in the waypoints."""
    jerk = np.diff(np.eye(count + 1), 3, axis=0)[:, 1:]  # no rows when T < 3
    gram = jerk.T @ jerk
    gram.flags.writeable = False
    return gram


@functools.lru_cache(maxsize=64)
def _smoother(count: int, strength: float) -> np.ndarray:
    """Read-only S = (I + strength * J^T J)^-1: S @ q minimises |p - q|^2 + strength |J p|^2."""
    matrix = np.linalg.inv(np.eye(count) + strength * _jerk_gram(count))
    matrix.flags.writeable = False
    return matrix
