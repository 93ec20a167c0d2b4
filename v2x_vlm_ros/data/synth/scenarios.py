"""The five scenarios: the ego's route and speed control, the agents that make each
scenario what it is, and background traffic common to all of them.

Every scenario starts the same way (same distributions of start speed and distance to the
junction, same world and background traffic); only the ego's route, the lead car
(``follow_lead``) and the crossing car (``occluded_crossing``) differ:

- ``straight``: through the junction, cruising with a mild speed change;
- ``left_turn`` / ``right_turn``: slows for the arc (lateral acceleration bounded);
- ``follow_lead``: a slower car ahead in the ego's lane; IDM-style following;
- ``occluded_crossing``: a car comes from the right along the crossing road, hidden from the
  ego camera (corner buildings, field of view) but seen by the roadside camera; the ego
  stops before the stop line, waits until it has passed, then drives on.

Background traffic (oncoming and crossing cars, parked vehicles, pedestrians, cyclists) is
drawn agent by agent and redrawn when it would come near the ego or another agent, so the
scripted world is collision-free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from v2x_vlm_ros.data.synth.agents import Agent, boxes_overlap, inflate, sample_look
from v2x_vlm_ros.data.synth.config import SynthConfig
from v2x_vlm_ros.data.synth.kinematics import (ConstantSpeed, Limits, Route, Trajectory,
                                               curve_speed_profile, drive, follow_accel,
                                               stop_accel, track_profile)
from v2x_vlm_ros.data.synth.world import (BODY_AHEAD_OF_LIDAR, EGO_LANE_Y, EGO_SIZE,
                                          FRONT_AHEAD_OF_REAR_AXLE, HALF_WIDTH, LANE,
                                          LIDAR_AHEAD_OF_REAR_AXLE, World)

PLAN_LAT_ACCEL = 2.5  # the controller's lateral budget (the hard limit is the config's)
CROSSING_TRIES = 12  # draws of the occluded crossing car before giving up on the checks


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
    key_agent: Agent | None = None  # the lead or the crossing car
    route: Route | None = None
    notes: dict = field(default_factory=dict)  # timing facts for tests and summaries

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


def build_scene(rng: np.random.Generator, world: World, scenario: str, cfg: SynthConfig,
                accept=None) -> Scene:
    """The ego's motion and the scenario's agents, then background traffic. ``accept(scene)``
    may veto a draw of the crossing car (``occluded_crossing``: hidden from the ego camera
    but seen by the roadside one); it is redrawn up to ``CROSSING_TRIES`` times."""
    T = cfg.duration_s
    t0, t1 = -0.6, T + 0.6
    limits = _limits(cfg)
    v0 = float(rng.uniform(7.5, 11.5))
    comfort = float(rng.uniform(1.2, 2.0))  # acceleration the driver uses to regain speed
    onset = float(rng.uniform(1.0, 1.6))  # deceleration at which braking starts
    # front bumper this far before the stop line at t = 0 (same in all scenarios)
    # (2.5 to 4 s at cruise speed, whatever the sequence's duration)
    gap0 = max(v0 * float(rng.uniform(1.8, 3.2)), v0 * v0 / (2 * 2.0) + 4.0)
    x_start = -(world.stop_line + 0.4) - gap0 - FRONT_AHEAD_OF_REAR_AXLE
    kind = {"left_turn": "left", "right_turn": "right"}.get(scenario, "straight")
    route = _ego_route(kind, x_start, rng, world)
    profile = curve_speed_profile(route, PLAN_LAT_ACCEL, onset, preview_m=6.0, v_cap=30.0)
    cruise_change = (float(rng.uniform(0.3, 0.8)) * T, float(rng.uniform(-1.5, 1.5)))

    def cruise(t, v):
        target = v0 + (cruise_change[1] if (scenario == "straight" and t > cruise_change[0]) else 0.0)
        return min(0.5 * (target - v), comfort)

    def base_policy(t, s, v):
        return min(cruise(t, v), track_profile(profile, s, v, 1.0))

    look = sample_look(rng, "Car")
    notes = {"v0": v0}
    occluder = _parked_occluder(rng, world)
    s_stop = -(world.stop_line + 0.4 + 1.0) - FRONT_AHEAD_OF_REAR_AXLE - x_start
    key = None
    agents = []

    if scenario == "follow_lead":
        cat = "Car" if rng.random() < 0.8 else "Van"
        ln, wd, ht, colors = sample_look(rng, cat)
        v_lead = float(rng.uniform(4.0, min(6.5, v0 - 2.0)))
        # initial gap at which following asks for a moderate deceleration (IDM term)
        decel0 = float(rng.uniform(0.7, 1.3))
        gap0 = (4.0 + 1.4 * v0 + v0 * (v0 - v_lead) / (2 * math.sqrt(3.0))) / math.sqrt(1 + decel0 / 1.5)
        lead_s0 = FRONT_AHEAD_OF_REAR_AXLE + gap0 + ln / 2 + 0.6 * v_lead  # at t = -0.6

        def policy(t, s, v):
            gap = lead_s0 + v_lead * t - ln / 2 - (s + FRONT_AHEAD_OF_REAR_AXLE)
            return min(base_policy(t, s, v), follow_accel(gap, v, v_lead))

        traj = drive(route, v0, t0, t1, policy, limits, cfg.sim_dt_s)
        key = Agent("1", cat, ln, wd, ht, colors, ConstantSpeed(route, lead_s0, v_lead), "lead")
        notes.update(v_lead=v_lead, gap0=gap0)
    elif scenario == "occluded_crossing":
        def policy_until(release):
            def policy(t, s, v):
                a = base_policy(t, s, v)
                if t < release:
                    a = min(a, stop_accel(s_stop - s, v, onset))
                return a
            return policy

        # The hazard is real: the crossing car reaches the ego's lane when the ego would get
        # there if it did not yield, so a planner that cannot see the car (ego camera only,
        # constant velocity) drives into it; the ego of the ground truth stops before the line.
        free = drive(route, v0, t0, t1, base_policy, limits, cfg.sim_dt_s)
        centre_x = free.x + (LIDAR_AHEAD_OF_REAR_AXLE + BODY_AHEAD_OF_LIDAR) * np.cos(free.yaw)
        reach = np.nonzero(centre_x >= -EGO_LANE_Y)[0]
        t_meet = float(free.t[reach[0]]) if len(reach) else T
        ln, wd, ht, colors = sample_look(rng, "Car")
        for attempt in range(CROSSING_TRIES):
            key, info = _crossing_car(rng, world, cfg, ln, wd, ht, colors, t_meet, limits)
            traj = drive(route, v0, t0, t1, policy_until(info["release"]), limits, cfg.sim_dt_s)
            info.update(t_meet=t_meet, attempts=attempt + 1)
            trial = Scene(scenario, Agent("0", "Car", *EGO_SIZE, look[3],
                                          BodyMotion(traj, LIDAR_AHEAD_OF_REAR_AXLE + BODY_AHEAD_OF_LIDAR),
                                          "ego"), [key, occluder], key, route, dict(info))
            if accept is None or accept(trial):
                info["accepted"] = True
                break
            info["accepted"] = False
        notes.update(info)
    else:
        traj = drive(route, v0, t0, t1, base_policy, limits, cfg.sim_dt_s)

    ego = Agent("0", "Car", *EGO_SIZE, look[3],
                BodyMotion(traj, LIDAR_AHEAD_OF_REAR_AXLE + BODY_AHEAD_OF_LIDAR), "ego")
    if key is not None:
        agents.append(key)
    agents.append(occluder)
    occluder.track_id = str(len(agents))
    scene = Scene(scenario, ego, agents, key, route, notes)
    add_background(rng, scene, world, cfg)
    return scene


def _crossing_car(rng, world: World, cfg: SynthConfig, ln, wd, ht, colors, t_meet: float,
                  limits: Limits):
    """The car that comes from the ego's right along the south arm and drives north across
    the ego's lane. It reaches the ego's lane within 0.3 s of ``t_meet``, the time the ego
    would be there if it did not yield, so not yielding is a collision. It rolls towards the
    junction at a low, steady speed (a driver creeping up to the junction), which keeps it
    behind the parked truck (and the corner block) as seen from the approaching ego."""
    overhang = 0.9
    cross = Route(-EGO_LANE_Y, -400.0, math.pi / 2, [(800.0, 0.0)])  # rear axle, northbound
    cruise = float(rng.uniform(3.0, 6.0))
    centre = ln / 2 - overhang
    s_conflict = 400.0 + EGO_LANE_Y - centre  # rear-axle s with the centre on the ego's lane
    t0, t1 = -0.6, cfg.duration_s + 0.6
    t_conflict = t_meet + float(rng.uniform(-0.3, 0.3))
    traj = drive(cross, cruise, t0, t1, lambda t, s, v: 0.0, limits, cfg.sim_dt_s,
                 s0=s_conflict - cruise * (t_conflict - t0))
    y_rear = traj.y + centre - ln / 2
    cleared = traj.t[np.argmax(y_rear >= LANE + 0.5)] if np.any(y_rear >= LANE + 0.5) else math.inf
    release = float(cleared) + float(rng.uniform(0.2, 0.7))
    agent = Agent("1", "Car", ln, wd, ht, colors, BodyMotion(traj, centre), "crossing")
    return agent, {"t_conflict": t_conflict, "release": release, "crossing_speed": cruise}


def _parked_occluder(rng, world: World) -> Agent:
    """A truck or bus parked on the ego's right shoulder just before the junction. It is
    there in every scenario (same distribution), so its presence says nothing about what
    hides behind it; in ``occluded_crossing`` it hides the crossing car from the ego camera
    while the roadside camera, high on its pole, sees over it."""
    cat = "Truck" if rng.random() < 0.75 else "Bus"
    ln, wd, ht, colors = sample_look(rng, cat)
    front = world.stop_line + float(rng.uniform(2.0, 5.0))  # its front this far from the centre
    route = _arm_route(2, LANE + 1.2, True, front + ln / 2)  # west arm, south shoulder, eastbound
    return Agent("occluder", cat, ln, wd, max(ht, 3.0), colors, ConstantSpeed(route, 0.0, 0.0), "parked")


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


def add_background(rng, scene: Scene, world: World, cfg: SynthConfig) -> None:
    T = cfg.duration_s
    times = np.arange(-0.6, T + 0.6, 0.1)
    ego_fp = inflate(scene.ego.corners(times), 3.0, 0.7)
    accepted: list[tuple[Agent, np.ndarray]] = [(a, a.corners(times)) for a in scene.agents]
    next_id = [len(scene.agents) + 1]

    def try_add(make, tries: int = 10, margin=(1.5, 0.4), vs_ego: bool = True) -> None:
        for _ in range(tries):
            agent = make(str(next_id[0]))
            fp = agent.corners(times)
            grown = inflate(fp, *margin)
            if vs_ego and boxes_overlap(grown, ego_fp).any():
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
