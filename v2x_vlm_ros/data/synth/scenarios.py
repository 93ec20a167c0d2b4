"""The scenarios: the ego's route and speed control, the agents that make each scenario
what it is, and background traffic common to all of them.

Every scenario starts the same way (same distributions of start speed and of distance to
the junction, same world, the same parked truck or bus on the ego's right shoulder, same
background traffic), so that the ego's own view and speed say nothing about what is
hidden. The ground-truth ego is a driver who also sees what the roadside camera sees.

- ``straight``: through the junction at cruise; in ``slowdown_share`` of them a gentle
  slow-down of no visible cause (the ego brakes without any hazard).
- ``left_turn`` / ``right_turn``: slows for the arc (lateral acceleration bounded).
- ``follow_lead``: a visible slower car ahead in the ego's lane; IDM-style following.
- ``stop_sign``: a red sign at the junction (visible from the ego); the ego stops at the
  line, waits, then drives on (braking towards the junction without a hidden hazard).
- ``occluded_crossing`` (paired): a car, cyclist or pedestrian hidden from the ego camera
  behind the parked truck / bus (and the corner block) but seen by the roadside camera. In
  ``conflict_share`` of the scenes it crosses the ego's path when the ego would be there,
  and the informed ego brakes (from the moment it needs to for a comfortable stop), waits
  and drives on; otherwise it waits at its own stop line / at the kerb and the ego keeps
  its speed, or (``early_cross_share`` of those) crosses the ego's road early enough to be
  clear of it 1-3 s before the ego gets there, so that a crossing agent in the roadside view
  does not by itself mean "yield" (its time does). Its twin is the same scene without that
  agent (the ego keeps its speed).
- ``hidden_queue`` (paired): a right turn into a queue of stopped cars that the corner
  block hides from the ego until it is in the turn; the informed ego follows the queue's
  tail from the moment the gap asks for it and drives on when the queue moves. Its twin is
  the same right turn without the queue.

Timing: the distance to the stop line at t = 0 is drawn as ``v0 * t_cruise`` plus the
braking distance at the braking onset deceleration, so a stop (sign, hidden hazard) starts
``t_cruise`` (0.5 to 3.5 s) into the sequence, in every scenario alike.

Background traffic (oncoming and crossing cars, parked vehicles, pedestrians, cyclists) is
drawn agent by agent and redrawn when it would come near the ego or another agent, so the
scripted world is collision-free. In a pair, background traffic is drawn against both egos
(braking and not) and against the hidden agents in both twins, so that the two draw the
same background.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from v2x_vlm_ros.data.synth.agents import Agent, boxes_overlap, inflate, sample_look
from v2x_vlm_ros.data.synth.config import HIDDEN_AGENTS, SynthConfig
from v2x_vlm_ros.data.synth.kinematics import (ConstantSpeed, Limits, Route, Trajectory,
                                               curve_speed_profile, drive, follow_accel,
                                               stop_accel, track_profile)
from v2x_vlm_ros.data.synth.render import Solid, Thing
from v2x_vlm_ros.data.synth.world import (BODY_AHEAD_OF_LIDAR, EGO_LANE_Y, EGO_SIZE,
                                          FRONT_AHEAD_OF_REAR_AXLE, HALF_WIDTH, LANE,
                                          LIDAR_AHEAD_OF_REAR_AXLE, World)
from v2x_vlm_ros.geometry import box_corners_xy

PLAN_LAT_ACCEL = 2.5  # the controller's lateral budget (the hard limit is the config's)
HIDDEN_TRIES = 12  # draws of a hidden agent (or queue) before giving up on the checks
SIGN_RED = (38, 38, 196)  # BGR of the sign plate
T_START = -0.6  # motion is simulated from here (the ground truth looks back 0.5 s)
# how far other road users keep from the ego (along, beside it) and from each other, in metres
EGO_CLEARANCE = (3.0, 0.7)
AGENT_CLEARANCE = (1.5, 0.4)
EARLY_CLEAR_S = (1.0, 3.0)  # an early crosser has left the ego's lane this long before the ego is there


class BodyMotion:
    """A vehicle's box centre over time, ``offset`` metres ahead of the rear axle whose
    trajectory the bicycle model produced."""

    def __init__(self, traj: Trajectory, offset: float):
        self.traj, self.offset = traj, offset

    def at(self, t):
        x, y, yaw, v = self.traj.at(t)
        return x + self.offset * np.cos(yaw), y + self.offset * np.sin(yaw), yaw, v

    def lidar(self, t):
        """(x, y, yaw) of the ego LiDAR origin (local frame; z is ``LIDAR_HEIGHT``)."""
        x, y, yaw, _ = self.traj.at(t)
        return (x + LIDAR_AHEAD_OF_REAR_AXLE * np.cos(yaw),
                y + LIDAR_AHEAD_OF_REAR_AXLE * np.sin(yaw), yaw)


@dataclass
class Scene:
    scenario: str
    ego: Agent  # category Car, track "0", motion: BodyMotion of the ego
    agents: list = field(default_factory=list)  # everyone else
    key_agent: Agent | None = None  # the lead, the hidden crossing agent or the queue's tail
    route: Route | None = None
    notes: dict = field(default_factory=dict)  # timing facts for tests and summaries
    variant: str | None = None  # "agent" / "twin" in a pair, None otherwise
    conflict: list = field(default_factory=list)  # agents the ground-truth ego yields to
    hidden: list = field(default_factory=list)  # the agents a twin leaves out

    @property
    def ego_body(self) -> BodyMotion:
        return self.ego.motion


def _limits(cfg: SynthConfig) -> Limits:
    # stay a little inside the configured bounds: the jerk limiter lags the target
    return Limits(cfg.wheelbase_m, cfg.max_steer_rad, 0.7, 0.9 * cfg.accel_limit,
                  0.9 * cfg.jerk_limit)


def _ego_route(kind: str, x_start: float, rng, world: World) -> Route:
    """Rear-axle route in the eastbound lane from ``x_start``; arcs join the exit lanes."""
    y = EGO_LANE_Y
    if kind == "left":
        r = float(rng.uniform(9.5, 11.0))
        x_arc = -EGO_LANE_Y - r
        return Route(x_start, y, 0.0, [(x_arc - x_start, 0.0), (0.5 * math.pi * r, 1.0 / r), (300.0, 0.0)])
    if kind == "right":
        # the arc starts within the crosswalk and keeps ~2 m from the rounded kerb
        r = float(HALF_WIDTH + world.curb_radius + EGO_LANE_Y + rng.uniform(0.0, 2.5))
        x_arc = EGO_LANE_Y - r
        return Route(x_start, y, 0.0, [(x_arc - x_start, 0.0), (0.5 * math.pi * r, -1.0 / r), (300.0, 0.0)])
    return Route(x_start, y, 0.0, [(400.0 - x_start, 0.0)])


def _body(traj: Trajectory) -> BodyMotion:
    return BodyMotion(traj, LIDAR_AHEAD_OF_REAR_AXLE + BODY_AHEAD_OF_LIDAR)


def _front_x(traj: Trajectory) -> np.ndarray:
    return traj.x + FRONT_AHEAD_OF_REAR_AXLE * np.cos(traj.yaw)


def _first_time(traj: Trajectory, condition: np.ndarray, default: float) -> float:
    hits = np.nonzero(condition)[0]
    return float(traj.t[hits[0]]) if len(hits) else default


def _policy_until(base, s_stop: float, onset: float, release: float):
    """``base``, and a stop at route progress ``s_stop`` until ``release``."""
    def policy(t, s, v):
        a = base(t, s, v)
        if t < release:
            a = min(a, stop_accel(s_stop - s, v, onset))
        return a
    return policy


def build_scene(rng: np.random.Generator, world: World, scenario: str, cfg: SynthConfig,
                variant: str | None = None, accept=None) -> Scene:
    """The ego's motion and the scenario's agents, then background traffic.

    ``variant`` is "agent" or "twin" for the two sequences of a pair (the draws are the
    same; the twin leaves the hidden agents out and its ego does not yield to them).
    ``accept(scene)`` may veto a draw of the hidden agents (hidden from the ego camera but
    seen by the roadside one); they are redrawn up to ``HIDDEN_TRIES`` times."""
    T = cfg.duration_s
    t0, t1 = T_START, T + 0.6
    limits = _limits(cfg)
    v0 = float(rng.uniform(7.5, 11.5))
    comfort = float(rng.uniform(1.2, 2.0))  # acceleration the driver uses to regain speed
    onset = float(rng.uniform(1.3, 2.0))  # deceleration at which braking for a stop starts
    t_cruise = float(rng.uniform(0.5, 3.5))  # a stop at the line would start braking then
    # front bumper this far before the stop line at t = 0 (same in all scenarios)
    gap0 = v0 * t_cruise + v0 * v0 / (2.0 * onset) + 1.4
    kind = {"left_turn": "left", "right_turn": "right", "hidden_queue": "right"}.get(scenario, "straight")
    if kind == "right":  # the arc slows the ego anyway: closer, so the turn is well inside the sequence
        gap0 = v0 * float(rng.uniform(0.0, 1.5)) + 6.0
    x_start = -(world.stop_line + 0.4) - gap0 - FRONT_AHEAD_OF_REAR_AXLE
    route = _ego_route(kind, x_start, rng, world)
    profile = curve_speed_profile(route, PLAN_LAT_ACCEL, onset, preview_m=6.0, v_cap=30.0)
    slowdown = (float(rng.uniform(0.5, 6.0)), float(rng.uniform(2.0, 3.5)), float(rng.uniform(2.0, 4.0)))
    slows = scenario == "straight" and rng.random() < cfg.slowdown_share

    def cruise(t, v):
        target = v0
        if slows and slowdown[0] <= t < slowdown[0] + slowdown[2]:
            target = v0 - slowdown[1]
        return min(0.5 * (target - v), comfort)

    def base_policy(t, s, v):
        return min(cruise(t, v), track_profile(profile, s, v, 1.0))

    look = sample_look(rng, "Car")
    notes = {"v0": v0, "t_cruise": t_cruise}
    if slows:
        notes.update(slowdown_start_s=slowdown[0], slowdown_mps=slowdown[1], slowdown_s=slowdown[2])
    occluder = _parked_occluder(rng, world)
    s_line = -(world.stop_line + 0.4 + 1.0) - FRONT_AHEAD_OF_REAR_AXLE - x_start  # rear axle at the stop
    key, hidden, conflict = None, [], []
    ego_paths: list[Trajectory] = []

    def ego_agent(traj: Trajectory) -> Agent:
        return Agent("0", "Car", *EGO_SIZE, look[3], _body(traj), "ego")

    if scenario == "follow_lead":
        cat = "Car" if rng.random() < 0.8 else "Van"
        ln, wd, ht, colors = sample_look(rng, cat)
        v_lead = float(rng.uniform(4.0, min(6.5, v0 - 2.0)))
        # initial gap at which following asks for a moderate deceleration (IDM term)
        decel0 = float(rng.uniform(0.7, 1.3))
        gap_lead = (4.0 + 1.4 * v0 + v0 * (v0 - v_lead) / (2 * math.sqrt(3.0))) / math.sqrt(1 + decel0 / 1.5)
        lead_s0 = FRONT_AHEAD_OF_REAR_AXLE + gap_lead + ln / 2 + 0.6 * v_lead  # at t = -0.6

        def policy(t, s, v):
            gap = lead_s0 + v_lead * t - ln / 2 - (s + FRONT_AHEAD_OF_REAR_AXLE)
            return min(base_policy(t, s, v), follow_accel(gap, v, v_lead))

        traj = drive(route, v0, t0, t1, policy, limits, cfg.sim_dt_s)
        key = Agent("1", cat, ln, wd, ht, colors, ConstantSpeed(route, lead_s0, v_lead), "lead")
        notes.update(v_lead=v_lead, gap0=gap_lead)
    elif scenario == "stop_sign":
        dwell = float(rng.uniform(1.0, 2.5))
        stopping = drive(route, v0, t0, t1, _policy_until(base_policy, s_line, onset, math.inf),
                         limits, cfg.sim_dt_s)
        t_stop = _first_time(stopping, (stopping.t > 0) & (stopping.v < 0.05), math.inf)
        release = t_stop + dwell
        traj = drive(route, v0, t0, t1, _policy_until(base_policy, s_line, onset, release), limits,
                     cfg.sim_dt_s)
        world.statics.append(_stop_sign(len(world.statics) + 1, world))
        notes.update(t_stop=t_stop, release=release)
    elif scenario == "occluded_crossing":
        free = drive(route, v0, t0, t1, base_policy, limits, cfg.sim_dt_s)
        category = str(rng.choice(list(HIDDEN_AGENTS), p=list(HIDDEN_AGENTS.values())))
        crosses = bool(rng.random() < cfg.conflict_share)
        # drawn only when asked for, so that worlds without early crossers keep their draws
        early = (not crosses and cfg.early_cross_share > 0.0
                 and bool(rng.random() < cfg.early_cross_share))
        ln, wd, ht, colors = sample_look(rng, category)
        info: dict = {}
        traj = free
        for attempt in range(HIDDEN_TRIES):
            key, info, s_stop = _hidden_agent(rng, world, cfg, category, crosses, (ln, wd, ht, colors),
                                              free, occluder, x_start, limits, early=early)
            if early and _comes_near(ego_agent(free), key, cfg):
                info["attempts"] = attempt + 1
                info["accepted"] = False
                continue
            if crosses:
                traj = drive(route, v0, t0, t1, _policy_until(base_policy, s_stop, onset, info["release"]),
                             limits, cfg.sim_dt_s)
            trial = Scene(scenario, ego_agent(traj), [key, occluder], key, route, dict(info), variant,
                          [key] if crosses else [], [key])
            info["attempts"] = attempt + 1
            if accept is None or not crosses or accept(trial):
                info["accepted"] = True
                break
            info["accepted"] = False
        if early and not info.get("accepted", False):  # no early crossing clear of the ego: it waits
            key, info, s_stop = _hidden_agent(rng, world, cfg, category, False, (ln, wd, ht, colors),
                                              free, occluder, x_start, limits)
            info.update(attempts=HIDDEN_TRIES + 1, accepted=True)
            early = False
        notes.update(info, hidden_category=category, crosses=crosses, crosses_early=early)
        hidden = [key]
        conflict = [key] if crosses else []
        ego_paths = [free, traj]
        if variant == "twin":
            traj = free
    elif scenario == "hidden_queue":
        free = drive(route, v0, t0, t1, base_policy, limits, cfg.sim_dt_s)
        info = {}
        queue: list[Agent] = []
        traj = free
        for attempt in range(HIDDEN_TRIES):
            queue, info, policy = _queue(rng, cfg, route, base_policy, limits, free)
            traj = drive(route, v0, t0, t1, policy, limits, cfg.sim_dt_s)
            trial = Scene(scenario, ego_agent(traj), [*queue, occluder], queue[0], route, dict(info),
                          variant, [queue[0]], list(queue))
            info["attempts"] = attempt + 1
            if accept is None or accept(trial):
                info["accepted"] = True
                break
            info["accepted"] = False
        notes.update(info)
        key, hidden, conflict = queue[0], queue, [queue[0]]
        ego_paths = [free, traj]
        if variant == "twin":
            traj = free
    else:
        traj = drive(route, v0, t0, t1, base_policy, limits, cfg.sim_dt_s)

    ego = ego_agent(traj)
    agents = list(hidden) if hidden else ([key] if key is not None else [])
    for i, agent in enumerate(agents):
        agent.track_id = str(i + 1)
    agents.append(occluder)
    occluder.track_id = str(len(agents))
    scene = Scene(scenario, ego, agents, key, route, notes, variant, list(conflict), list(hidden))
    add_background(rng, scene, world, cfg, [ego_agent(p) for p in ego_paths] or [ego])
    if variant == "twin":
        scene.agents = [a for a in scene.agents if a not in hidden]
        scene.conflict = []
        scene.key_agent = None
    t_brake = _first_time(traj, (traj.t > 0) & (traj.accel < -0.3), math.inf)
    scene.notes["brake_onset_s"] = t_brake
    if len(ego_paths) == 2:  # a pair: when the informed ego starts to differ from the other
        free, informed = ego_paths
        scene.notes["yield_onset_s"] = _first_time(informed, np.abs(informed.v - free.v) > 0.01, math.inf)
    return scene


def _hidden_agent(rng, world: World, cfg: SynthConfig, category: str, crosses: bool, looks,
                  free: Trajectory, occluder: Agent, x_start: float, limits: Limits,
                  early: bool = False):
    """The agent hidden behind the parked truck / the corner block: (agent, timing facts,
    rear-axle route progress where the informed ego stops).

    Cars and cyclists come from the ego's right along the south arm and drive north across
    the ego's lane; they reach it within 0.3 s of the time the ego would be there if it did
    not yield, so not yielding is a collision. A pedestrian waits on the sidewalk right
    beside the parked truck (hidden by it), walks along the kerb to the zebra and crosses
    the ego's road there when the ego would reach it. Without a conflict the car / cyclist
    waits at its own stop line and the pedestrian at the kerb by the zebra; ``early``: it
    crosses all the same, but has left the ego's lane ``EARLY_CLEAR_S`` before the ego would
    reach it (so it does not conflict)."""
    ln, wd, ht, colors = looks
    t0, t1 = T_START, cfg.duration_s + 0.6
    release = math.inf
    facts: dict = {}
    if category in ("Car", "Cyclist"):
        lane_x = -EGO_LANE_Y + (0.0 if category == "Car" else 1.0)
        overhang = 0.9 if category == "Car" else 0.3
        centre = ln / 2 - overhang  # box centre ahead of the route's reference point
        cross = Route(lane_x, -400.0, math.pi / 2, [(800.0, 0.0)])  # northbound
        # the ego's body reaches the crossing lane
        centre_x = free.x + (LIDAR_AHEAD_OF_REAR_AXLE + BODY_AHEAD_OF_LIDAR) * np.cos(free.yaw)
        t_meet = _first_time(free, centre_x >= lane_x - 0.5, cfg.duration_s)
        if crosses:
            speed = float(rng.uniform(3.0, 6.0)) * (1.0 if category == "Car" else 0.85)
            s_conflict = 400.0 + EGO_LANE_Y - centre  # its centre on the ego's lane
            t_conflict = t_meet + float(rng.uniform(-0.3, 0.3))
            traj = drive(cross, speed, t0, t1, lambda t, s, v: 0.0, limits, cfg.sim_dt_s,
                         s0=s_conflict - speed * (t_conflict - t0))
            y_rear = traj.y + centre - ln / 2
            release = _first_time(traj, y_rear >= LANE + 0.5, math.inf) + float(rng.uniform(0.2, 0.7))
            motion = BodyMotion(traj, centre)
            facts = {"t_conflict": t_conflict, "speed": speed}
        elif early:  # its rear beyond the ego's road's lane that long before the ego is there
            speed = float(rng.uniform(3.0, 6.0)) * (1.0 if category == "Car" else 0.85)
            s_centre = 400.0 + EGO_LANE_Y - centre  # its centre on the ego's lane
            t_clear = t_meet - float(rng.uniform(*EARLY_CLEAR_S))
            t_centre = t_clear - (LANE + 0.5 - EGO_LANE_Y + ln / 2) / speed
            traj = drive(cross, speed, t0, t1, lambda t, s, v: 0.0, limits, cfg.sim_dt_s,
                         s0=s_centre - speed * (t_centre - t0))
            motion = BodyMotion(traj, centre)
            facts = {"t_clear": t_clear, "speed": speed}
        else:  # waiting at its own stop line (its front just behind the line)
            s_line = 400.0 - (world.stop_line + 0.4) - ln / 2 - centre
            motion = ConstantSpeed(cross, s_line - float(rng.uniform(0.2, 1.5)) + centre, 0.0)
        s_stop = -(world.stop_line + 0.4 + 1.0) - FRONT_AHEAD_OF_REAR_AXLE - x_start
    else:  # a pedestrian: beside the parked truck, along the kerb, then over the zebra
        front = _occluder_front_x(occluder)
        x_path = -(world.crosswalk[0] + world.crosswalk[1]) / 2 + float(rng.uniform(-0.8, 0.8))
        t_meet = _first_time(free, _front_x(free) >= x_path - 1.8, cfg.duration_s)
        y_walk = -(HALF_WIDTH + float(rng.uniform(0.25, 0.45)))  # along the kerb, eastbound
        radius = 0.6
        along = 40.0
        path = Route(x_path - radius - along, y_walk, 0.0,
                     [(along, 0.0), (0.5 * math.pi * radius, 1.0 / radius), (40.0, 0.0)])
        s_turned = along + 0.5 * math.pi * radius
        x_wait = front - float(rng.uniform(0.8, 2.0))  # beside the truck, hidden by it
        s_wait = along - (x_path - radius - x_wait)
        if crosses:
            speed = float(rng.uniform(1.1, 1.6))
            s_conflict = s_turned + (EGO_LANE_Y - (y_walk + radius))
            t_conflict = t_meet + float(rng.uniform(-0.3, 0.3))
            t_walk = t_conflict - (s_conflict - s_wait) / speed
            motion = WaitThenWalk(path, max(s_wait, s_conflict - speed * (t_conflict - t0)),
                                  max(t_walk, t0), speed)
            release = t_conflict + (0.5 - EGO_LANE_Y) / speed + float(rng.uniform(0.2, 0.7))
            facts = {"t_conflict": t_conflict, "speed": speed}
        elif early:  # off the ego's lane (northwards) that long before the ego reaches the zebra
            speed = float(rng.uniform(1.1, 1.6))
            s_clear = s_turned + (EGO_LANE_Y + 0.5 * LANE + 0.5 - (y_walk + radius))
            t_clear = t_meet - float(rng.uniform(*EARLY_CLEAR_S))
            t_walk = t_clear - (s_clear - s_wait) / speed
            motion = WaitThenWalk(path, max(s_wait, s_clear - speed * (t_clear - t0)),
                                  max(t_walk, t0), speed)
            facts = {"t_clear": t_clear, "speed": speed}
        else:  # standing at the kerb by the zebra
            kerb = s_turned + (-(HALF_WIDTH + 0.3) - (y_walk + radius))
            motion = ConstantSpeed(path, kerb - float(rng.uniform(0.0, 0.4)), 0.0)
        s_stop = -(world.stop_line + 0.4 + 1.0) - FRONT_AHEAD_OF_REAR_AXLE - x_start
    facts.update(t_meet=t_meet, release=release)
    role = "crossing" if crosses else ("passing" if early else "waiting")
    agent = Agent("1", category, ln, wd, ht, colors, motion, role)
    return agent, facts, s_stop


def _comes_near(ego: Agent, agent: Agent, cfg: SynthConfig) -> bool:
    """Does ``agent`` come near the (uninformed) ego at any time of the sequence? The margins
    of the background traffic's check (``add_background``)."""
    times = np.arange(T_START, cfg.duration_s + 0.6, 0.1)
    grown = inflate(agent.corners(times), *AGENT_CLEARANCE)
    return bool(boxes_overlap(grown, inflate(ego.corners(times), *EGO_CLEARANCE)).any())


@dataclass(frozen=True)
class WaitThenWalk:
    """Standing at route progress ``s_wait`` until ``t_start``, then walking at ``speed``."""

    route: Route
    s_wait: float
    t_start: float
    speed: float

    def at(self, t):
        t = np.asarray(t, dtype=np.float64)
        moving = t > self.t_start
        x, y, h, _ = self.route.sample(self.s_wait + self.speed * np.maximum(t - self.t_start, 0.0))
        return x, y, h, np.where(moving, self.speed, 0.0)


def _occluder_front_x(occluder: Agent) -> float:
    """x of the parked occluder's front (it faces east, towards the junction)."""
    x, _, _, _ = (float(v) for v in occluder.pose(0.0))
    return x + occluder.length / 2


def _queue(rng, cfg: SynthConfig, route: Route, base_policy, limits: Limits, free: Trajectory):
    """Stopped cars in the exit lane of the ego's right turn, beyond the corner block: (cars,
    facts, the informed ego's policy). The informed ego follows the tail (IDM); the queue
    moves off together a little after the ego has come to a stand (possibly after the end
    of the sequence)."""
    t0, t1 = T_START, cfg.duration_s + 0.6
    arc_end = route.pieces[0][0] + route.pieces[1][0]
    x_exit, y_exit, _, _ = (float(v[0]) for v in route.sample(np.array([arc_end])))
    n = int(rng.integers(2, 4))
    tail_gap = float(rng.uniform(5.0, 14.0))  # tail's rear this far beyond the end of the arc
    looks = []
    for _ in range(n):
        cat = "Car" if rng.random() < 0.8 else "Van"
        looks.append((cat, *sample_look(rng, cat)))
    spacing = [float(rng.uniform(1.5, 3.0)) for _ in range(n)]
    go_delay = float(rng.uniform(0.5, 2.0))
    v_go = float(rng.uniform(5.0, 7.0))
    lane = Route(x_exit, 0.0, -math.pi / 2, [(800.0, 0.0)])  # southbound, s = -y
    y_rear = y_exit - tail_gap
    tail_ln = looks[0][1]

    def make_policy(tail: Trajectory | None):
        def policy(t, s, v):
            if tail is None:
                rear, lead_v = y_rear, 0.0
            else:
                cy, lead_v = (float(a) for a in (-np.interp(t, tail.t, tail.s), np.interp(t, tail.t, tail.v)))
                rear = cy + tail_ln / 2
            gap = arc_end + (y_exit - rear) - (s + FRONT_AHEAD_OF_REAR_AXLE)
            return min(base_policy(t, s, v), follow_accel(gap, v, lead_v))
        return policy

    waiting = drive(route, free.v[0], t0, t1, make_policy(None), limits, cfg.sim_dt_s)
    t_stop = _first_time(waiting, (waiting.t > 0) & (waiting.v < 0.05), math.inf)
    t_go = t_stop + go_delay
    cars, y = [], y_rear
    for i, (cat, ln, wd, ht, colors) in enumerate(looks):
        centre_y = y - ln / 2
        traj = drive(lane, 0.0, t0, t1, _go_policy(t_go, v_go), limits, cfg.sim_dt_s, s0=-centre_y)
        cars.append(Agent(str(i + 1), cat, ln, wd, ht, colors, BodyMotion(traj, 0.0), "queue"))
        y = centre_y - ln / 2 - spacing[i]
    facts = {"queue_cars": n, "tail_gap_m": tail_gap, "t_stop": t_stop, "t_go": t_go}
    return cars, facts, make_policy(cars[0].motion.traj)


def _go_policy(t_go: float, v_go: float):
    def policy(t, s, v):
        return 0.0 if t < t_go else min(1.2, 0.8 * (v_go - v))
    return policy


def _parked_occluder(rng, world: World) -> Agent:
    """A truck or bus parked on the ego's right shoulder just before the junction. It is
    there in every scenario (same distribution), so its presence says nothing about what
    hides behind it; in ``occluded_crossing`` it hides the crossing agent from the ego
    camera while the roadside camera, high on its pole, sees over it."""
    cat = "Truck" if rng.random() < 0.75 else "Bus"
    ln, wd, ht, colors = sample_look(rng, cat)
    front = world.stop_line + float(rng.uniform(2.0, 5.0))  # its front this far from the centre
    route = _arm_route(2, LANE + 1.2, True, front + ln / 2)  # west arm, south shoulder, eastbound
    return Agent("occluder", cat, ln, wd, max(ht, 3.0), colors, ConstantSpeed(route, 0.0, 0.0), "parked")


def _stop_sign(ident: int, world: World) -> Thing:
    """A red sign on a pole at the left kerb of the ego's arm, at the stop line, facing the
    ego (on the left, so that the parked truck on the right never hides it)."""
    x, y = -(world.stop_line + 0.3), HALF_WIDTH + 0.6
    grey = (150, 150, 155)
    solids = [Solid(x, y, 0.0, 0.09, 0.09, 0.0, 2.0, grey),
              Solid(x - 0.06, y, 0.0, 0.05, 0.9, 2.0, 2.9, SIGN_RED)]
    return Thing(ident, solids, box_corners_xy(x - 0.03, y, 0.0, 0.2, 0.95), 2.9, True, "sign")


# -- background traffic ----------------------------------------------------------------


def _arm_route(arm: int, w: float, inbound: bool, u_start: float) -> Route:
    """A straight path parallel to arm ``arm`` (0 east, 1 north, 2 west, 3 south) at lateral
    offset ``w`` (left of the outward direction), heading inwards or outwards, starting at
    distance ``u_start`` from the centre; it continues across the junction."""
    ang = arm * math.pi / 2
    d = np.array([math.cos(ang), math.sin(ang)])
    n = np.array([-d[1], d[0]])
    p = u_start * d + w * n
    heading = ang + math.pi if inbound else ang
    return Route(float(p[0]), float(p[1]), heading, [(700.0, 0.0)])


def _vehicle_category(rng) -> str:
    return str(rng.choice(["Car", "Van", "Truck", "Bus"], p=[0.72, 0.12, 0.1, 0.06]))


def add_background(rng, scene: Scene, world: World, cfg: SynthConfig, egos=None) -> None:
    """Background agents appended to ``scene.agents``, kept clear of every ego in ``egos``
    (default: the scene's) and of the agents already there."""
    T = cfg.duration_s
    times = np.arange(-0.6, T + 0.6, 0.1)
    ego_fps = [inflate(e.corners(times), *EGO_CLEARANCE) for e in (egos or [scene.ego])]
    accepted: list[tuple[Agent, np.ndarray]] = [(a, a.corners(times)) for a in scene.agents]
    next_id = [len(scene.agents) + 1]

    def try_add(make, tries: int = 10, margin=AGENT_CLEARANCE, vs_ego: bool = True) -> None:
        for _ in range(tries):
            agent = make(str(next_id[0]))
            fp = agent.corners(times)
            grown = inflate(fp, *margin)
            if vs_ego and any(boxes_overlap(grown, e).any() for e in ego_fps):
                continue
            if any(boxes_overlap(grown, other).any() for _, other in accepted):
                continue
            accepted.append((agent, fp))
            scene.agents.append(agent)
            next_id[0] += 1
            return

    def moving_vehicle(track):
        cat = _vehicle_category(rng)
        ln, wd, ht, colors = sample_look(rng, cat)
        speed = float(rng.uniform(6.5, 12.0)) * (0.8 if cat in ("Truck", "Bus") else 1.0)
        kind = rng.choice(["oncoming", "cross", "ahead"], p=[0.45, 0.4, 0.15])
        if kind == "oncoming":  # westbound in the opposite lane, coming from the east
            route = _arm_route(0, LANE / 2, True, float(rng.uniform(10.0, 160.0)))
        elif kind == "cross":
            arm = 1 if rng.random() < 0.5 else 3
            route = _arm_route(arm, LANE / 2, True, float(rng.uniform(15.0, 140.0)))
        else:  # eastbound beyond the junction, moving away
            route = _arm_route(0, -LANE / 2, False, float(rng.uniform(25.0, 90.0)))
        return Agent(track, cat, ln, wd, ht, colors, ConstantSpeed(route, 0.0, speed), str(kind))

    def parked(track):
        cat = str(rng.choice(["Car", "Van", "Truck"], p=[0.7, 0.2, 0.1]))
        ln, wd, ht, colors = sample_look(rng, cat)
        arm = int(rng.integers(4))
        inbound = rng.random() < 0.5
        w = (LANE + 1.2) * (1 if inbound else -1)
        route = _arm_route(arm, w, inbound, float(rng.uniform(world.stop_line + 6.0, 90.0)))
        return Agent(track, cat, ln, wd, ht, colors, ConstantSpeed(route, 0.0, 0.0), "parked")

    def pedestrian(track):
        ln, wd, ht, colors = sample_look(rng, "Pedestrian")
        speed = 0.0 if rng.random() < 0.15 else float(rng.uniform(0.9, 1.6))
        arm = int(rng.integers(4))
        w = (HALF_WIDTH + float(rng.uniform(0.7, 2.3))) * (1 if rng.random() < 0.5 else -1)
        u_min = HALF_WIDTH + world.curb_radius + 1.0
        inbound = rng.random() < 0.5
        lo = u_min + (speed * (T + 0.6) if inbound else 0.0)
        u0 = float(rng.uniform(lo, lo + 45.0))
        return Agent(track, "Pedestrian", ln, wd, ht, colors,
                     ConstantSpeed(_arm_route(arm, w, inbound, u0), 0.6 * speed, speed), "pedestrian")

    def cyclist(track):
        ln, wd, ht, colors = sample_look(rng, "Cyclist")
        arm = int(rng.integers(4))
        inbound = rng.random() < 0.5
        w = (LANE + 1.0) * (1 if inbound else -1)
        route = _arm_route(arm, w, inbound, float(rng.uniform(world.stop_line + 10.0, 80.0)))
        return Agent(track, "Cyclist", ln, wd, ht, colors,
                     ConstantSpeed(route, 0.0, float(rng.uniform(3.0, 5.5))), "cyclist")

    for _ in range(int(rng.integers(cfg.background_vehicles[0], cfg.background_vehicles[1] + 1))):
        try_add(moving_vehicle)
    for _ in range(int(rng.integers(cfg.parked_vehicles[0], cfg.parked_vehicles[1] + 1))):
        try_add(parked, margin=(0.8, 0.3))
    for _ in range(int(rng.integers(cfg.cyclists[0], cfg.cyclists[1] + 1))):
        try_add(cyclist, margin=(1.0, 0.3))
    for _ in range(int(rng.integers(cfg.pedestrians[0], cfg.pedestrians[1] + 1))):
        try_add(pedestrian, margin=(0.3, 0.2), vs_ego=False)
