"""Motion of the synthetic world: routes, a kinematic bicycle that follows them, and
jerk-limited longitudinal control.

- A ``Route`` is a planar path of straight lines and circular arcs parameterised by arc
  length ``s`` (it extends as straight lines before its start and after its end).
- ``drive`` integrates a kinematic bicycle (reference point: the rear axle) at a fine step:
  pure-pursuit steering with bounded steering angle and rate, and an acceleration that
  tracks a policy's target through an acceleration clip and a jerk (rate) limit.
- A ``Trajectory`` holds the result on its time grid and is evaluated at any time by cubic
  Hermite interpolation (positions with their velocities), so sampling at jittered camera
  stamps stays consistent with the dynamics.
- Helpers build the policy terms: curve speed limits, stopping, and car following.

All quantities are SI (m, s, rad) in the intersection's local frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np


class Route:
    """Lines (curvature 0) and arcs (curvature k, positive = left) joined tangentially."""

    def __init__(self, x0: float, y0: float, heading0: float, pieces):
        self.pieces = tuple((float(length), float(k)) for length, k in pieces)
        n = len(self.pieces)
        self._starts = np.zeros(n)
        self._x = np.zeros(n)
        self._y = np.zeros(n)
        self._h = np.zeros(n)
        self._k = np.array([k for _, k in self.pieces])
        x, y, h, s = float(x0), float(y0), float(heading0), 0.0
        for i, (length, _) in enumerate(self.pieces):
            self._starts[i], self._x[i], self._y[i], self._h[i] = s, x, y, h
            xe, ye, he, _ = self._piece(i, np.array([length]))
            x, y, h, s = float(xe[0]), float(ye[0]), float(he[0]), s + length
        self.length = s

    def _piece(self, idx, ds):
        idx = np.broadcast_to(idx, np.shape(ds))
        k, h0 = self._k[idx], self._h[idx]
        straight = np.abs(k) < 1e-12
        ksafe = np.where(straight, 1.0, k)
        h = h0 + k * ds
        x = np.where(straight, ds * np.cos(h0), (np.sin(h) - np.sin(h0)) / ksafe)
        y = np.where(straight, ds * np.sin(h0), -(np.cos(h) - np.cos(h0)) / ksafe)
        return self._x[idx] + x, self._y[idx] + y, h, k

    def sample(self, s):
        """(x, y, heading, curvature) at arc length(s) ``s`` (extrapolated as lines)."""
        s = np.asarray(s, dtype=np.float64)
        idx = np.clip(np.searchsorted(self._starts, s, side="right") - 1, 0, len(self.pieces) - 1)
        ds = s - self._starts[idx]
        x, y, h, k = self._piece(idx, ds)
        # beyond the last piece: continue straight along the end heading
        last = len(self.pieces) - 1
        beyond = s > self.length
        if np.any(beyond) and abs(self._k[last]) > 1e-12:
            xe, ye, he, _ = self._piece(np.array(last), np.array([self.pieces[last][0]]))
            extra = s - self.length
            x = np.where(beyond, xe[0] + extra * np.cos(he[0]), x)
            y = np.where(beyond, ye[0] + extra * np.sin(he[0]), y)
            h = np.where(beyond, he[0], h)
            k = np.where(beyond, 0.0, k)
        return x, y, h, k


@dataclass
class Trajectory:
    """A reference point's motion on a uniform time grid ``t0 + i * dt``."""

    t0: float
    dt: float
    x: np.ndarray
    y: np.ndarray
    yaw: np.ndarray
    v: np.ndarray  # speed along the heading (>= 0)
    yaw_rate: np.ndarray
    accel: np.ndarray
    s: np.ndarray  # progress along the followed route

    @property
    def t(self) -> np.ndarray:
        return self.t0 + self.dt * np.arange(len(self.x))

    def at(self, t):
        """(x, y, yaw, v) at time(s) ``t`` (cubic Hermite in position and yaw)."""
        t = np.asarray(t, dtype=np.float64)
        f = np.clip((t - self.t0) / self.dt, 0.0, len(self.x) - 1.000001)
        i = np.floor(f).astype(int)
        u = f - i
        h00, h10 = 2 * u**3 - 3 * u**2 + 1, u**3 - 2 * u**2 + u
        h01, h11 = -2 * u**3 + 3 * u**2, u**3 - u**2

        def herm(p, m):
            return h00 * p[i] + h10 * self.dt * m[i] + h01 * p[i + 1] + h11 * self.dt * m[i + 1]

        vx, vy = self.v * np.cos(self.yaw), self.v * np.sin(self.yaw)
        v = self.v[i] + u * (self.v[i + 1] - self.v[i])
        return herm(self.x, vx), herm(self.y, vy), herm(self.yaw, self.yaw_rate), v


@dataclass(frozen=True)
class Limits:
    """What the simulated vehicle can do (the controller stays inside these)."""

    wheelbase: float = 2.8
    max_steer: float = 0.55
    max_steer_rate: float = 0.7  # rad/s
    accel: float = 2.8  # |a| clip, m/s^2
    jerk: float = 3.8  # |da/dt| clip, m/s^3


Policy = Callable[[float, float, float], float]  # (t, s, v) -> target acceleration


def drive(route: Route, v0: float, t0: float, t1: float, policy: Policy, limits: Limits,
          dt: float = 0.01, s0: float = 0.0) -> Trajectory:
    """Integrate the bicycle from route progress ``s0`` at speed ``v0`` over [t0, t1]."""
    n = int(math.ceil((t1 - t0) / dt)) + 2
    grid_s = np.arange(s0 - 5.0, s0 + 800.0, 0.05)  # dense route samples for projection
    gx, gy, _, _ = route.sample(grid_s)
    x, y, yaw, _ = (float(a) for a in route.sample(s0))
    v, a, steer, hint = float(v0), 0.0, 0.0, int(round(5.0 / 0.05))
    out = np.zeros((7, n))
    for k in range(n):
        t = t0 + k * dt
        lo, hi = max(hint - 20, 0), min(hint + 200, len(grid_s))
        hint = lo + int(np.argmin((gx[lo:hi] - x) ** 2 + (gy[lo:hi] - y) ** 2))
        s = float(grid_s[hint])
        # pure pursuit towards a point ahead on the route
        look = 3.0 + 0.35 * v
        ahead = min(hint + int(round(look / 0.05)), len(grid_s) - 1)
        alpha = math.atan2(float(gy[ahead]) - y, float(gx[ahead]) - x) - yaw
        target = math.atan2(2.0 * limits.wheelbase * math.sin(alpha), look)
        target = max(-limits.max_steer, min(limits.max_steer, target))
        step = limits.max_steer_rate * dt
        steer += max(-step, min(step, target - steer))
        # longitudinal: clip the target, then limit its rate of change (jerk)
        a_target = max(-limits.accel, min(limits.accel, policy(t, s, v)))
        if v <= 0.0 and a_target <= 0.0:
            a = 0.0
        else:
            jstep = limits.jerk * dt
            a += max(-jstep, min(jstep, a_target - a))
        yaw_rate = v * math.tan(steer) / limits.wheelbase
        out[:, k] = (x, y, yaw, v, yaw_rate, a, s)
        # midpoint integration of the bicycle
        v_new = v + a * dt
        if v_new < 0.012 and a <= 0.0:
            v_new, a = 0.0, 0.0
        v_mid = 0.5 * (v + v_new)
        yaw_mid = yaw + 0.5 * dt * v_mid * math.tan(steer) / limits.wheelbase
        x += v_mid * math.cos(yaw_mid) * dt
        y += v_mid * math.sin(yaw_mid) * dt
        yaw += v_mid * math.tan(steer) / limits.wheelbase * dt
        v = v_new
    return Trajectory(t0, dt, *out)


# -- policy terms ------------------------------------------------------------------------


def curve_speed_profile(route: Route, lat_accel: float, decel: float, preview_m: float,
                        v_cap: float, step: float = 0.25):
    """(s grid, v_max, dv_max/ds): the fastest speed profile with v^2 |k| <= lat_accel
    (limits moved ``preview_m`` earlier, as the steering starts before an arc does) that
    is reached by decelerating at ``decel``."""
    s = np.arange(-10.0, route.length + 10.0, step)
    _, _, _, k = route.sample(s)
    v_lim = np.minimum(np.sqrt(lat_accel / np.maximum(np.abs(k), 1e-9)), v_cap)
    shift = int(round(preview_m / step))
    padded = np.concatenate([v_lim, np.full(shift, v_lim[-1])])
    v_lim = np.lib.stride_tricks.sliding_window_view(padded, shift + 1).min(axis=1)
    v_max = v_lim.copy()
    for i in range(len(s) - 2, -1, -1):  # backward pass: reachable by braking at ``decel``
        v_max[i] = min(v_lim[i], math.sqrt(v_max[i + 1] ** 2 + 2.0 * decel * step))
    return s, v_max, np.gradient(v_max, step)


def track_profile(profile, s: float, v: float, gain: float) -> float:
    """Acceleration that tracks a speed profile: feedback plus the profile's own rate of
    change along the path (feed-forward)."""
    grid, v_max, slope = profile
    target = float(np.interp(s, grid, v_max))
    return gain * (target - v) + v * float(np.interp(s, grid, slope))


def stop_accel(distance: float, v: float, onset: float, creep_gain: float = 2.0) -> float:
    """Constant deceleration to stand still after ``distance`` metres, starting once it
    reaches ``onset``; the last metre fades out proportionally to speed so that the
    deceleration returns to zero smoothly (bounded jerk) as the vehicle stops."""
    if distance <= 0.05:
        return -creep_gain * v
    need = v * v / (2.0 * distance)
    if need < onset and distance > 2.0:
        return math.inf
    return max(-need, -creep_gain * v)


def follow_accel(gap: float, v: float, v_lead: float, a_max: float = 1.5, b: float = 2.0,
                 s0: float = 4.0, headway: float = 1.4) -> float:
    """The interaction term of the Intelligent Driver Model (bumper-to-bumper ``gap``)."""
    desired = s0 + v * headway + v * (v - v_lead) / (2.0 * math.sqrt(a_max * b))
    return a_max * (1.0 - (max(desired, 0.0) / max(gap, 0.5)) ** 2)


@dataclass(frozen=True)
class ConstantSpeed:
    """An agent moving along ``route`` at constant speed: s(t) = s0 + speed * t."""

    route: Route
    s0: float
    speed: float

    def at(self, t):
        x, y, h, _ = self.route.sample(self.s0 + self.speed * np.asarray(t, dtype=np.float64))
        return x, y, h, np.full(np.shape(x), self.speed)
