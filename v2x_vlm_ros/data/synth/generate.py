"""Generate the synthetic cooperative dataset: ``generate(out_dir, config) -> summary``.

Per sequence i (its own generator ``default_rng([seed, i])``): the world, the scenario's
motion, the capture times of both cameras, then every frame is rendered, its occlusion
truth measured in the id masks, labelled and described. The sequences are then written in
the DAIR-V2X layout by ``data.writer.DatasetWriter``, one sequence at a time.

Time: vehicle frames at 10 Hz with a small jitter; the roadside camera at 10 Hz with its
own phase, its stamps on a clock offset from the vehicle's by a constant per sequence.
Everything is sampled at the true capture times; each vehicle frame is paired with the
roadside frame nearest in true time.

Pairs: the twin of a paired scenario (``SynthConfig.cycle``) draws from its partner's
generator, so the two are the same scene; the twin leaves the hidden agents out.

Images are drawn ``SynthConfig.render_scale()`` times larger than written and shrunk by
area averaging, so thin markings keep their share of a pixel at every image size.

Besides the DAIR-V2X files, ``visibility.json`` (``synth.visibility``) records per vehicle
frame which agents the ego camera and the paired roadside frame see, and which agents the
ground-truth ego yields to.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from v2x_vlm_ros.data.records import AgentBox
from v2x_vlm_ros.data.synth.camera import Camera, intrinsics
from v2x_vlm_ros.data.synth.config import SynthConfig, split_of
from v2x_vlm_ros.data.synth.describe import Seen, View, attention, describe
from v2x_vlm_ros.data.synth.render import ViewRenderer
from v2x_vlm_ros.data.synth.scenarios import Scene, build_scene
from v2x_vlm_ros.data.synth.visibility import sequence_entry, write_visibility
from v2x_vlm_ros.data.synth.world import (CAMERA_FROM_LIDAR, HALF_WIDTH, LANE, LIDAR_FROM_CAMERA,
                                          LIDAR_HEIGHT, NOVATEL_FROM_LIDAR, World, build_world)
from v2x_vlm_ros.data.writer import (DatasetWriter, InfraFrameSpec, SequenceSpec,
                                     VehicleFrameSpec, WriteOptions)
from v2x_vlm_ros.geometry import invert_pose, planar_pose, wrap_angle

EGO_IDENT = 999
AGENT_IDENT0 = 1000
HIDDEN_FOR_S = 2.0  # a hidden hazard: hidden from the ego camera (seen by the roadside) this long
OCCLUDER_FRAMES = 5  # ... in at least this many frames by an occluder (truck, building), not the view's edge


@dataclass
class Simulation:
    """One sequence before rendering: world, motion and capture times."""

    config: SynthConfig
    index: int
    world: World
    scene: Scene
    start_us: int
    vehicle_t: np.ndarray  # true capture times, seconds from start_us
    infra_t: np.ndarray  # true capture times of the roadside camera
    clock_offset_us: int  # roadside clock minus vehicle clock
    pairing: np.ndarray  # vehicle frame -> nearest roadside frame in true time
    notes: dict = field(default_factory=dict)

    @property
    def vehicle_stamps_us(self) -> list[int]:
        return [self.start_us + int(round(t * 1e6)) for t in self.vehicle_t]

    @property
    def infra_stamps_us(self) -> list[int]:
        return [self.start_us + int(round(t * 1e6)) + self.clock_offset_us for t in self.infra_t]

    # -- geometry -----------------------------------------------------------------------

    def local_from_lidar(self, t: float) -> np.ndarray:
        x, y, yaw = (float(v) for v in self.scene.ego_body.lidar(t))
        return planar_pose(x, y, yaw, z=LIDAR_HEIGHT)

    def world_from_lidar(self, t: float) -> np.ndarray:
        return self.world.world_from_local @ self.local_from_lidar(t)

    def ident(self, agent) -> int:
        return EGO_IDENT if agent is self.scene.ego else AGENT_IDENT0 + self.scene.agents.index(agent)

    def things(self, t: float, ego: bool, without=()) -> list:
        agents = [a for a in self.scene.agents if a not in without]
        if ego:
            agents.append(self.scene.ego)
        return [a.thing(t, self.ident(a)) for a in agents]

    # -- renderers ----------------------------------------------------------------------

    @property
    def render_size(self) -> tuple[int, int]:
        """Size the images are drawn at before they are shrunk to ``config.image_size``."""
        scale = self.config.render_scale()
        return (self.config.image_size[0] * scale, self.config.image_size[1] * scale)

    def vehicle_renderer(self, size=None) -> ViewRenderer:
        """The ego camera's renderer, drawing at ``size`` (default: the supersampled size)."""
        cam = Camera(self.config.vehicle_hfov_deg, tuple(size or self.render_size),
                     self.local_from_lidar(0.0) @ LIDAR_FROM_CAMERA)
        return ViewRenderer(cam, self.config.mask_size, self.world.ground, self.world.statics,
                            self.world.lighting)

    def infra_renderer(self, size=None) -> ViewRenderer:
        cam = Camera(self.config.infra_hfov_deg, tuple(size or self.render_size),
                     self.world.local_from_infra_camera)
        statics = [s for s in self.world.statics if s.kind != "pole"]
        return ViewRenderer(cam, self.config.mask_size, self.world.ground, statics,
                            self.world.lighting, static_camera=True)

    def shrink(self, image):
        """A supersampled image at ``config.image_size`` (area averaging); other sizes as they are."""
        if image is None or tuple(image.shape[1::-1]) != self.render_size or \
                self.render_size == tuple(self.config.image_size):
            return image
        return cv2.resize(image, tuple(self.config.image_size), interpolation=cv2.INTER_AREA)

    def render_vehicle(self, k: int, renderer=None, with_image=True, without=()):
        r = renderer or self.vehicle_renderer()
        t = float(self.vehicle_t[k])
        r.set_pose(self.local_from_lidar(t) @ LIDAR_FROM_CAMERA)
        dyn = self.things(t, ego=False, without=without)
        img, mask, vis = r.render(dyn, with_image=with_image)
        return self.shrink(img), mask, vis

    def render_infra(self, j: int, renderer=None, with_image=True, without=()):
        r = renderer or self.infra_renderer()
        t = float(self.infra_t[j])
        img, mask, vis = r.render(self.things(t, ego=True, without=without), with_image=with_image)
        return self.shrink(img), mask, vis


def simulate(config: SynthConfig, index: int) -> Simulation:
    """World, motion and capture times of sequence ``index`` (no rendering). The twin of a
    pair draws from its partner's generator: same world, scene and capture times."""
    rng = np.random.default_rng([config.seed, config.draw_index(index)])
    scenario = config.scenario_of(index)
    variant = config.variant_of(index)
    world = build_world(rng)
    period = config.frame_period_us
    n_veh = int(round(config.duration_s * 1e6 / period))
    jit = config.stamp_jitter_us
    veh_us = np.arange(n_veh) * period + rng.integers(-jit, jit + 1, size=n_veh)
    phase = int(rng.integers(0, period))
    inf_us = (np.arange(n_veh + 1) - 1) * period + phase + rng.integers(-jit, jit + 1, size=n_veh + 1)
    offset = int(round(rng.uniform(*config.clock_offset_ms) * 1000)) * (1 if rng.random() < 0.5 else -1)
    start = config.start_timestamp_us + index * config.sequence_spacing_us + int(rng.integers(0, 50)) * 1000
    pairing = np.abs(veh_us[:, None] - inf_us[None, :]).argmin(axis=1)

    def make(scene):
        return Simulation(config, index, world, scene, start, veh_us * 1e-6, inf_us * 1e-6, offset,
                          pairing, dict(scene.notes))

    def accept(trial) -> bool:
        span = _hidden_span(make(trial), trial.key_agent)
        early = int(np.sum(veh_us * 1e-6 <= HIDDEN_FOR_S))
        occluder_frames = OCCLUDER_FRAMES if scenario == "occluded_crossing" else 0
        return (span["hidden_frames"] >= early and span["hidden_frames_seen_by_infra"] >= early
                and span["hidden_frames_by_occluder"] >= occluder_frames)

    scene = build_scene(rng, world, scenario, config, variant=variant, accept=accept)
    sim = make(scene)
    sim.notes["variant"] = variant
    partner = config.partner_of(index)
    sim.notes["pair"] = None if partner is None else partner
    if scene.conflict:
        sim.notes.update(_hidden_span(sim, scene.conflict[0]))
    return sim


def _hidden_span(sim: Simulation, key) -> dict:
    """How long agent ``key`` stays hidden from the ego camera from the first frame, in how
    many of those frames the roadside camera sees it, and in how many the ego camera would
    see it if nothing stood in the way (hidden by an occluder, a building or a parked
    vehicle, not by the field of view). Drawn at the mask size (no image)."""
    ident = sim.ident(key)
    vr, ir = sim.vehicle_renderer(sim.config.mask_size), sim.infra_renderer(sim.config.mask_size)
    bare = ViewRenderer(vr.cam, sim.config.mask_size, [], [], sim.world.lighting)
    hidden_until, seen_by_infra, by_occluder, frames = 0.0, 0, 0, 0
    for k, t in enumerate(sim.vehicle_t):
        pose = sim.local_from_lidar(float(t)) @ LIDAR_FROM_CAMERA
        vr.set_pose(pose)
        thing = key.thing(float(t), ident)
        others = [a.thing(float(t), sim.ident(a)) for a in sim.scene.agents if a is not key]
        if vr.render([thing, *others], with_image=False)[2][ident][0] > 0:
            break
        hidden_until = float(t)
        frames += 1
        bare.set_pose(pose)
        by_occluder += bare.render([thing], with_image=False)[2][ident][0] > 0
        ivis = ir.render([key.thing(float(sim.infra_t[sim.pairing[k]]), ident)], with_image=False)[2]
        seen_by_infra += ivis[ident][0] >= sim.config.min_visible_pixels
    return {"hidden_until_s": round(hidden_until, 3), "hidden_frames": frames,
            "hidden_frames_seen_by_infra": int(seen_by_infra),
            "hidden_frames_by_occluder": int(by_occluder)}


# -- per-frame truth -----------------------------------------------------------------------


def _occluded_state(visible: int, alone: int, min_pixels: int) -> int:
    if visible < min_pixels or alone == 0:
        return 2
    frac = visible / alone
    return 0 if frac >= 0.75 else (1 if frac >= 0.25 else 2)


def _world_box(sim: Simulation, agent, t: float, occluded: int, side: str) -> AgentBox:
    x, y, yaw, _ = (float(v) for v in agent.pose(t))
    p = sim.world.world_from_local @ np.array([x, y, agent.height / 2, 1.0])
    yaw_w = float(wrap_angle(yaw + math.atan2(sim.world.world_from_local[1, 0],
                                              sim.world.world_from_local[0, 0])))
    return AgentBox(agent.track_id, agent.category, float(p[0]), float(p[1]), float(p[2]),
                    agent.length, agent.width, agent.height, yaw_w, occluded, side)


def _view(sim: Simulation, t: float, vis: dict, cam: Camera) -> View:
    """What the ego camera shows at ``t`` (for the description)."""
    cfg = sim.config
    lidar_from_local = invert_pose(sim.local_from_lidar(t))
    ego_yaw = float(sim.scene.ego_body.lidar(t)[2])
    seen = []
    for agent in sim.scene.agents:
        visible, _ = vis.get(sim.ident(agent), (0, 0))
        if visible < cfg.min_visible_pixels:
            continue
        seen.append(_seen(agent, t, lidar_from_local, ego_yaw))
    b_left = b_right = 0
    trees = pole = sign = False
    for thing in sim.world.statics:
        visible = vis.get(thing.ident, (0, 0))[0]
        if visible < (cfg.min_visible_pixels if thing.kind == "sign" else 4 * cfg.min_visible_pixels):
            continue
        c = thing.footprint.mean(axis=0)
        side_y = (lidar_from_local @ np.array([c[0], c[1], 0.0, 1.0]))[1]
        if thing.kind == "building":
            b_left += side_y > 0
            b_right += side_y <= 0
        trees |= thing.kind == "tree"
        pole |= thing.kind == "pole"
        sign |= thing.kind == "sign"
    centre = lidar_from_local @ np.array([0.0, 0.0, 0.0, 1.0])
    ego_xy = sim.local_from_lidar(t)[:2, 3]
    inner = HALF_WIDTH + sim.world.curb_radius
    pc = cam.to_camera(np.array([[0.0, 0.0, 0.0]]))[0]
    in_image = pc[2] > 1.0 and abs(pc[0] / pc[2]) < cam.half_x and abs(pc[1] / pc[2]) < cam.half_y
    if max(abs(ego_xy[0]), abs(ego_xy[1])) < inner:
        junction, dist = "inside", 0.0
    elif in_image and centre[0] > 0:
        junction, dist = "ahead", float(max(centre[0] - sim.world.crosswalk[1], 0.0))
    else:
        junction, dist = "none", 0.0
    return View(sim.world.lighting.name, junction, dist, tuple(seen), b_left, b_right, trees, pole, sign)


def _seen(agent, t: float, lidar_from_local: np.ndarray, ego_yaw: float) -> Seen:
    """An agent as the descriptions see it: class, colour, place in the ego frame."""
    x, y, yaw, v = (float(a) for a in agent.pose(t))
    p = lidar_from_local @ np.array([x, y, 0.0, 1.0])
    lateral = min(abs(x), abs(y))  # distance from the nearer road axis
    return Seen(agent.category, agent.colors[0], float(p[0]), float(p[1]), float(yaw) - ego_yaw,
                v > 0.2, on_sidewalk=lateral > HALF_WIDTH, on_shoulder=LANE < lateral <= HALF_WIDTH)


def _attention_view(sim: Simulation, t: float, roadside_seen: list) -> list[Seen]:
    """Road users the roadside camera sees near the junction that the ego camera does not:
    what a careful driver, told by the roadside unit, would look out for."""
    lidar_from_local = invert_pose(sim.local_from_lidar(t))
    ego_yaw = float(sim.scene.ego_body.lidar(t)[2])
    reach = sim.world.stop_line + 25.0
    out = []
    for agent in roadside_seen:
        x, y, _, _ = (float(a) for a in agent.pose(t))
        if min(abs(x), abs(y)) <= HALF_WIDTH + 3.0 and max(abs(x), abs(y)) <= reach:
            out.append(_seen(agent, t, lidar_from_local, ego_yaw))
    return out


def _encode(img: np.ndarray, quality: int) -> bytes:
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality), cv2.IMWRITE_JPEG_OPTIMIZE, 1]
    ok, buf = cv2.imencode(".jpg", img, params)
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def _mask_boxes(mask: np.ndarray, idents: dict[str, int]) -> dict[str, list[float]]:
    """{track id: [x0, y0, x1, y1]}: the box around each agent's visible pixels in an id
    mask, as fractions of the image's width and height (x1, y1 exclusive), so it holds at
    any image size."""
    h, w = mask.shape
    out = {}
    for track, ident in idents.items():
        ys, xs = np.nonzero(mask == ident)
        if len(xs):
            out[track] = [round(float(xs.min()) / w, 4), round(float(ys.min()) / h, 4),
                          round(float(xs.max() + 1) / w, 4), round(float(ys.max() + 1) / h, 4)]
    return out


def render_sequence(sim: Simulation) -> tuple[SequenceSpec, list[dict]]:
    """Render, label and describe every frame of a simulated sequence; also returns, per
    vehicle frame, the track ids the ego camera and the paired roadside frame see."""
    cfg, world, scene = sim.config, sim.world, sim.scene
    min_px = cfg.min_visible_pixels
    # a twin describes its frames with its partner's phrasing while they look the same
    text_rng = np.random.default_rng([cfg.seed, cfg.draw_index(sim.index), 7])
    everyone = scene.agents + [scene.ego]
    ir = sim.infra_renderer()
    infra_frames, infra_vis = [], []
    infra_boxes = []
    for j, t in enumerate(sim.infra_t):
        img, mask, vis = sim.render_infra(j, ir)
        infra_vis.append(vis)
        infra_boxes.append(_mask_boxes(mask, {a.track_id: sim.ident(a) for a in scene.agents
                                              if vis.get(sim.ident(a), (0, 0))[0] >= min_px}))
        labels = None
        if cfg.infra_labels:
            pole = world.local_from_virtuallidar[:2, 3]
            labels = []
            for agent in everyone:
                v, alone = vis.get(sim.ident(agent), (0, 0))
                near = np.hypot(*(np.array(agent.pose(float(t))[:2]) - pole)) <= cfg.label_range_m
                if v >= min_px or near:
                    labels.append(_world_box(sim, agent, float(t), _occluded_state(v, alone, min_px), "inf"))
        infra_frames.append(InfraFrameSpec(sim.infra_stamps_us[j], _encode(img, cfg.jpeg_quality), labels))

    vr = sim.vehicle_renderer()
    vehicle_frames, visibility = [], []
    for k, t in enumerate(sim.vehicle_t):
        t = float(t)
        img, mask, vis = sim.render_vehicle(k, vr)
        counts = np.bincount(mask.ravel())
        ivis = infra_vis[sim.pairing[k]]
        lidar = sim.local_from_lidar(t)[:2, 3]
        agents, camera_agents = [], []
        seen_ego, seen_road = [], []
        for agent in scene.agents:
            v, alone = vis.get(sim.ident(agent), (0, 0))
            by_veh = v >= min_px
            by_inf = ivis.get(sim.ident(agent), (0, 0))[0] >= min_px
            if by_veh:
                seen_ego.append(agent)
            if by_inf:
                seen_road.append(agent)
            far = np.hypot(*(np.array(agent.pose(t)[:2]) - lidar)) > cfg.label_range_m
            if far and not (by_veh or by_inf):
                continue
            side = "veh_and_inf" if by_veh and by_inf else ("inf" if by_inf else "veh")
            box = _world_box(sim, agent, t, _occluded_state(v, alone, min_px), side)
            agents.append(box)
            if by_veh:
                camera_agents.append(box)
        visibility.append({"ego": [a.track_id for a in seen_ego],
                           "roadside": [a.track_id for a in seen_road],
                           "roadside_boxes": infra_boxes[sim.pairing[k]]})
        static_vis = {s.ident: (int(counts[s.ident]) if s.ident < len(counts) else 0, 0)
                      for s in world.statics}
        view = _view(sim, t, {**vis, **static_vis}, vr.cam)
        text = describe(view, text_rng)
        if cfg.attention_text:
            only_road = [a for a in seen_road if a not in seen_ego]
            text = attention(view, _attention_view(sim, t, only_road), text)
        vehicle_frames.append(VehicleFrameSpec(
            timestamp_us=sim.vehicle_stamps_us[k], world_from_lidar=sim.world_from_lidar(t),
            image=_encode(img, cfg.jpeg_quality), agents=agents, infra_index=int(sim.pairing[k]),
            description=text, camera_agents=camera_agents))

    world_from_vl = world.world_from_local @ world.local_from_virtuallidar
    vl_from_cam = invert_pose(world.local_from_virtuallidar) @ world.local_from_infra_camera
    spec = SequenceSpec(
        vehicle_frames=vehicle_frames, infra_frames=infra_frames,
        novatel_from_lidar=NOVATEL_FROM_LIDAR, camera_from_lidar=CAMERA_FROM_LIDAR,
        vehicle_K=intrinsics(cfg.vehicle_hfov_deg, cfg.image_size), world_from_virtuallidar=world_from_vl,
        camera_from_virtuallidar=invert_pose(vl_from_cam),
        infra_K=intrinsics(cfg.infra_hfov_deg, cfg.image_size),
        intersection_loc=world.intersection_loc, system_error_offset=(0.0, 0.0),
        scenario=scene.scenario)
    return spec, visibility


def _plain(value):
    """JSON-friendly summary values (non-finite floats become None)."""
    if isinstance(value, (float, np.floating)):
        return round(float(value), 4) if math.isfinite(value) else None
    return value.item() if isinstance(value, np.generic) else value


def _build(args) -> tuple[SequenceSpec, dict, dict]:
    config, index = args
    sim = simulate(config, index)
    notes = {key: _plain(value) for key, value in sim.notes.items()}
    spec, frames = render_sequence(sim)
    scene = sim.scene
    agents = {a.track_id: {"category": a.category, "role": a.role} for a in scene.agents}
    return spec, {"scenario": scene.scenario, **notes}, {
        "scenario": scene.scenario, "variant": scene.variant, "agents": agents,
        "conflict": [a.track_id for a in scene.conflict],
        "hidden": [a.track_id for a in scene.hidden], "frames": frames}


def generate(out_dir, config: SynthConfig | None = None, progress: bool = True) -> dict:
    """Write ``config.num_sequences`` synthetic sequences under ``out_dir``; returns a
    summary (see the module docs of ``v2x_vlm_ros.data.synth``)."""
    cfg = config or SynthConfig()
    began = time.perf_counter()
    jobs = [(cfg, i) for i in range(cfg.num_sequences)]
    bar = dict(total=len(jobs), desc="synth sequences", unit="seq", disable=not progress)
    options = WriteOptions(layout=cfg.layout, jpeg_quality=cfg.jpeg_quality, side_labels=cfg.side_labels)
    writer = DatasetWriter(Path(out_dir), options)
    infos, entries = [], []

    def add(spec, info, seen) -> None:
        written = writer.add(spec)
        infos.append(info)
        entries.append((written, seen))

    # Sequences are written as they come so that a large world never sits in memory.
    if cfg.workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=cfg.workers) as pool:
            for spec, info, seen in tqdm(pool.map(_build, jobs), **bar):
                add(spec, info, seen)
    else:
        for job in tqdm(jobs, **bar):
            add(*_build(job))
    split = split_of(cfg)
    written = writer.close(split)
    for info in infos:  # a pair by sequence id, as written
        if info.get("pair") is not None:
            info["pair"] = written[info["pair"]].sequence_id
    write_visibility(Path(out_dir), cfg, [sequence_entry(w, info.get("pair"), seen)
                                          for (w, seen), info in zip(entries, infos)])
    return {
        "out_dir": str(out_dir),
        "layout": cfg.layout,
        "num_sequences": len(written),
        "scenarios": {w.sequence_id: info["scenario"] for w, info in zip(written, infos)},
        "split": {name: [written[i].sequence_id for i in idx] for name, idx in split.items()},
        "vehicle_frames": sum(len(w.vehicle_frames) for w in written),
        "infra_frames": sum(len(w.infra_frames) for w in written),
        "sequences": [{"sequence_id": w.sequence_id, **info} for w, info in zip(written, infos)],
        "seconds": round(time.perf_counter() - began, 2),
    }
