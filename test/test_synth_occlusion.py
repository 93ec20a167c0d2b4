"""Occlusion truth: the painter's algorithm, near-plane clipping, and the hidden crossing
agent (car, cyclist or pedestrian) that only the roadside camera sees."""

import numpy as np
import pytest

from v2x_vlm_ros.data.synth import SynthConfig, simulate
from v2x_vlm_ros.data.synth.config import HIDDEN_AGENTS
from v2x_vlm_ros.data.synth.camera import Camera, optical_pose
from v2x_vlm_ros.data.synth.generate import HIDDEN_FOR_S, _view
from v2x_vlm_ros.data.synth.render import GroundLayer, Lighting, Solid, Thing, ViewRenderer
from v2x_vlm_ros.geometry import box_corners_xy

CFG = SynthConfig(num_sequences=40, seed=2, duration_s=10.0, image_size=(160, 90), conflict_share=1.0)
LIGHT = Lighting("clear", (0.3, 0.2, 0.93), 0.5, (200, 150, 100), (230, 210, 190), (80, 120, 90))


def _box(ident, x, y, length=4.0, width=2.0, height=1.5, static=False, color=(0, 0, 200)):
    solid = Solid(x, y, 0.0, length, width, 0.0, height, color)
    return Thing(ident, [solid], box_corners_xy(x, y, 0.0, length, width), height, static)


def _renderer(static=()):
    cam = Camera(60.0, (160, 90), optical_pose((0.0, 0.0, 1.5), 0.0, 0.0))
    square = np.array([(-50.0, -50.0), (200.0, -50.0), (200.0, 50.0), (-50.0, 50.0)])
    ground = [GroundLayer((90, 90, 90), [square])]
    return ViewRenderer(cam, (160, 90), ground, list(static), LIGHT)


def test_painter_draws_near_boxes_over_far_ones_in_any_input_order():
    near, far = _box(11, 10.0, 0.0), _box(12, 25.0, 0.0, height=1.2)
    for order in ([near, far], [far, near]):
        _, mask, vis = _renderer().render(order)
        assert vis[12][0] == 0 and vis[12][1] > 0  # far box fully behind the near one
        assert vis[11][0] == vis[11][1] > 0
    tall_far = _box(12, 25.0, 0.0, height=6.0)
    _, _, vis = _renderer().render([tall_far, near])
    assert 0 < vis[12][0] < vis[12][1]  # its top shows above the near box: partly occluded


def test_geometry_behind_the_camera_is_clipped_not_mirrored():
    # a box around the camera position and one behind it: nothing may wrap into the image
    behind = _box(21, -10.0, 0.0)
    beside = _box(22, 0.5, 3.0, length=8.0)  # straddles the near plane
    img, mask, vis = _renderer().render([behind, beside])
    assert vis[21] == (0, 0)
    assert vis[22][0] > 0
    cols = np.nonzero((mask == 22).any(axis=0))[0]
    assert cols.min() < 5  # seen on the left edge only, not mirrored to the right
    assert cols.max() < 80


def test_static_cache_gives_the_pixels_of_a_full_redraw():
    wall = _box(1, 15.0, 4.0, length=10.0, width=1.0, height=5.0, static=True, color=(150, 150, 150))
    car = _box(31, 25.0, 6.0)
    cached = ViewRenderer(_renderer().cam, (160, 90), _renderer().ground, [wall], LIGHT, static_camera=True)
    plain = _renderer(static=[wall])
    for x in (8.0, 20.0, 30.0):
        moved = _box(31, x, 6.0)
        a = cached.render([moved])
        b = plain.render([moved])
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert car.ident == 31


@pytest.mark.parametrize("index", [0, 9, 18])
def test_crossing_agent_is_hidden_from_the_ego_but_seen_by_the_roadside(index):
    sim = simulate(CFG, index)
    assert sim.scene.scenario == "occluded_crossing" and sim.scene.variant == "agent"
    key = sim.scene.key_agent
    assert key.category in HIDDEN_AGENTS and key.role == "crossing" and sim.scene.conflict == [key]
    ident = sim.ident(key)
    assert sim.notes["hidden_until_s"] >= HIDDEN_FOR_S
    assert sim.notes["hidden_frames_by_occluder"] >= 5  # the parked truck, not only the view's edge
    mask_size = CFG.mask_size
    vr, ir = sim.vehicle_renderer(size=mask_size), sim.infra_renderer(size=mask_size)
    early = [k for k, t in enumerate(sim.vehicle_t) if t <= HIDDEN_FOR_S]
    assert len(early) >= 20
    for k in early:
        with_car, mask, vis = sim.render_vehicle(k, vr)
        without, _, _ = sim.render_vehicle(k, vr, without=[key])
        assert np.array_equal(with_car, without)  # the ego image does not change
        assert not np.any(mask == ident) and vis[ident][0] == 0
        view = _view(sim, float(sim.vehicle_t[k]), vis, vr.cam)  # what the description uses
        assert len(view.seen) == sum(vis.get(sim.ident(a), (0, 0))[0] >= CFG.min_visible_pixels
                                     for a in sim.scene.agents if a is not key)
        j = sim.pairing[k]
        road_with, _, ivis = sim.render_infra(j, ir)
        road_without, _, _ = sim.render_infra(j, ir, without=[key])
        assert not np.array_equal(road_with, road_without)  # the roadside camera sees it
        assert ivis[ident][0] >= CFG.min_visible_pixels
    # after the hidden span the ego camera does see it (it crosses in front of the ego)
    later = [k for k, t in enumerate(sim.vehicle_t) if t > sim.notes["hidden_until_s"]]
    assert any(sim.render_vehicle(k, vr)[2][ident][0] > 0 for k in later)
    # its twin is the same scene without it
    twin = simulate(CFG, index + 1)
    assert twin.scene.variant == "twin" and twin.scene.conflict == [] and twin.scene.key_agent is None
    assert [a.track_id for a in twin.scene.agents] == [a.track_id for a in sim.scene.agents if a is not key]


def test_all_three_kinds_of_hidden_agent_occur():
    kinds = {simulate(CFG, i).scene.key_agent.category for i in range(0, 36, 9)}
    assert len(kinds) >= 2  # four draws of three kinds (the full mix: test_synth_pairs)


def test_corner_buildings_do_not_depend_on_the_scenario():
    """Every quadrant has its corner block in every scenario (no shortcut from the image)."""
    for index in range(9):
        sim = simulate(CFG, index)
        corners = set()
        for thing in sim.world.statics:
            if thing.kind == "building":
                c = thing.footprint.mean(axis=0)
                if np.abs(c).max() < 60:
                    corners.add((int(np.sign(c[0])), int(np.sign(c[1]))))
        assert corners == {(1, 1), (1, -1), (-1, 1), (-1, -1)}, sim.scene.scenario


def test_parked_occluder_is_in_every_scenario():
    """The truck or bus that hides the crossing car stands on the ego's right shoulder before
    the junction in every scenario, so seeing it says nothing about what is behind it."""
    for index in range(9):
        sim = simulate(CFG, index)
        parked = [a for a in sim.scene.agents if a.role == "parked" and a.category in ("Truck", "Bus")]
        assert parked, sim.scene.scenario
        x, y, _, v = parked[0].pose(0.0)
        assert v == 0.0 and y < 0 and -(sim.world.stop_line + 20.0) < x < -sim.world.stop_line
