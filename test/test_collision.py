"""Collision tests: the UniV2X raster test and the oriented-box (SAT) test.

Expected values are worked out by hand from the default geometry: ego box 4.084 m x 1.85 m,
centre 0.5 m ahead of the waypoint, so at waypoint (x, y) the axis-aligned box spans
x in [x - 1.542, x + 2.542] and y in [y - 0.925, y + 0.925]. Grid cell centres sit at
-49.75 + 0.5 * i.
"""

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from v2x_vlm_ros.data.records import AgentBox
from v2x_vlm_ros.eval.collision import (
    CollisionConfig,
    collision_flags,
    ego_cell_window,
    obb_overlaps,
    rasterize_occupancy,
    trajectory_headings,
    univ2x_collides,
)


def box(x, y, length=1.0, width=1.0, yaw=0.0, category="Car"):
    return AgentBox("t", category, x, y, 0.0, length, width, 1.5, yaw)


def flags(xy, agents, method):
    """Collision flags for waypoints that all see the same agents."""
    xy = np.asarray(xy, dtype=float).reshape(-1, 2)
    return collision_flags(xy, [agents] * len(xy), method=method)


# --------------------------------------------------------------------------- raster


def test_ego_window_at_origin_is_8_by_4_cells():
    # x in [-1.542, 2.542] holds centres -1.25 .. 2.25 (8 cells, indices 97..104);
    # y in [-0.925, 0.925] holds -0.75 .. 0.75 (4 cells, indices 98..101).
    assert ego_cell_window(0.0, 0.0) == (97, 105, 98, 102)


def test_cell_centre_on_box_edge_is_occupied():
    # Box spans x [2.75, 3.25], y [-0.25, 0.25]: four cell centres lie exactly on its corners.
    grid = rasterize_occupancy([box(3.0, 0.0, length=0.5, width=0.5)])
    assert grid.sum() == 4
    assert grid[105:107, 99:101].all()


def test_rotated_box_occupies_only_cells_inside_it():
    # A square rotated 45 deg with half-diagonal 0.6 centred on cell (120, 120) (centre
    # 10.25, 10.25): the diamond |dx| + |dy| <= 0.6 holds the centre cell and its 4
    # neighbours; the diagonal neighbours (|dx| + |dy| = 1) are inside its bounding box only.
    side = 0.6 * math.sqrt(2.0)
    grid = rasterize_occupancy([box(10.25, 10.25, side, side, yaw=math.pi / 4)])
    expected = {(120, 120), (119, 120), (121, 120), (120, 119), (120, 121)}
    assert set(zip(*np.nonzero(grid))) == expected


def test_pedestrians_and_cones_never_occupy():
    agents = [box(1.0, 0.0, 2.0, 2.0, category="Pedestrian"), box(1.0, 0.0, 2.0, 2.0, category="TrafficCone")]
    assert not rasterize_occupancy(agents).any()
    assert not flags([0.0, 0.0], agents, "univ2x").any()
    assert not flags([0.0, 0.0], agents, "obb").any()
    assert flags([0.0, 0.0], [box(1.0, 0.0, 2.0, 2.0, category="Cyclist")], "univ2x").all()


def test_raster_needs_a_cell_centre_inside_both_boxes():
    # Agent spans x [2.5, 3.5]: its cell centres are 2.75 and 3.25. From waypoint (0, 0) the
    # ego's last cell centre is 2.25, so the rectangles overlap (2.5 < 2.542) yet no shared
    # cell exists; one step of 0.5 m forward brings cell 2.75 under the ego.
    car = [box(3.0, 0.0)]
    assert flags([[0.0, 0.0], [0.5, 0.0]], car, "univ2x").tolist() == [False, True]
    # The oriented test sees the 0.042 m rectangle overlap at the first waypoint.
    assert flags([[0.0, 0.0], [0.5, 0.0]], car, "obb").tolist() == [True, True]


def test_raster_ego_is_not_rotated_by_heading():
    # Driving left: waypoint (0, 1) has heading +90 deg. A car at x [1, 2], y [1, 2] is
    # under the axis-aligned UniV2X box (x up to 2.542, y [0.075, 1.925]) but beside the
    # rotated ego (x within +-0.925).
    car = [box(1.5, 1.5)]
    assert flags([0.0, 1.0], car, "univ2x").tolist() == [True]
    assert flags([0.0, 1.0], car, "obb").tolist() == [False]


def test_cells_outside_grid_are_ignored():
    # The ego at waypoint (48, 0) reaches x = 50.542, past the grid edge at 50 m; a car at
    # x [50.1, 50.5] lies off the grid, so the raster test cannot see it.
    car = [box(50.3, 0.0, length=0.4)]
    assert not rasterize_occupancy(car).any()
    assert flags([48.0, 0.0], car, "univ2x").tolist() == [False]
    assert flags([48.0, 0.0], car, "obb").tolist() == [True]
    # An ego box entirely off the grid never collides, whatever is there.
    assert flags([70.0, 0.0], [box(70.5, 0.0, 5.0, 5.0)], "univ2x").tolist() == [False]


def test_custom_config_changes_the_ego_box():
    # With no forward offset the ego spans x [-2.042, 2.042]: the car whose cells are at
    # 2.75 / 3.25 is then out of reach even from waypoint (0.5, 0) (front edge 2.542).
    cfg = CollisionConfig(ego_forward_offset_m=0.0)
    assert not univ2x_collides(0.5, 0.0, [box(3.0, 0.0)], cfg)
    assert univ2x_collides(0.5, 0.0, [box(3.0, 0.0)])


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="cell_size_m"):
        CollisionConfig(cell_size_m=0.0)
    with pytest.raises(ValueError, match="grid_cells"):
        CollisionConfig(grid_cells=0)
    assert CollisionConfig().half_extent_m == 50.0


# --------------------------------------------------------------------------- oriented


def test_headings_from_displacements_and_short_moves():
    xy = np.array([[1.0, 0.0], [1.0, 0.0005], [1.0, 1.0], [0.0, 1.0]])
    # 0: from the origin along +x; 1: a 0.5 mm move keeps 0; 2: +y; 3: -x.
    np.testing.assert_allclose(trajectory_headings(xy), [0.0, 0.0, math.pi / 2, math.pi])


def test_heading_starts_at_zero_when_standing_still():
    xy = np.array([[0.0, 0.0], [0.0, 0.0], [-1.0, 0.0]])
    np.testing.assert_allclose(trajectory_headings(xy), [0.0, 0.0, math.pi])


def test_headings_skip_invalid_waypoints():
    xy = np.array([[1.0, 0.0], [np.nan, np.nan], [1.0, 1.0]])
    # Step 2 is measured from step 0 (the last valid waypoint): straight up the y axis.
    np.testing.assert_allclose(
        trajectory_headings(xy, valid=[True, False, True]), [0.0, 0.0, math.pi / 2]
    )


def test_touching_edges_are_not_a_collision():
    # Ego front edge at x = 2.542; a 1 m car centred at 3.042 starts exactly there.
    assert flags([0.0, 0.0], [box(3.042, 0.0)], "obb").tolist() == [False]
    assert flags([0.0, 0.0], [box(3.040, 0.0)], "obb").tolist() == [True]


def test_rotated_agent_uses_its_edges_not_its_bounding_box():
    # Diamond (square at 45 deg) of half-diagonal 0.7. Centred at (3.2, 1.6), its edge
    # x + y = 4.1 separates it from the ego's front-left corner (2.542, 0.925), although
    # its bounding box overlaps the ego. Centred at (2.8, 1.2) that corner is inside it
    # (|dx| + |dy| = 0.258 + 0.275 <= 0.7).
    side = 0.7 * math.sqrt(2.0)
    assert flags([0.0, 0.0], [box(3.2, 1.6, side, side, yaw=math.pi / 4)], "obb").tolist() == [False]
    assert flags([0.0, 0.0], [box(2.8, 1.2, side, side, yaw=math.pi / 4)], "obb").tolist() == [True]


def test_obb_ego_offset_follows_heading():
    # Heading +90 deg at waypoint (0, 1): the ego centre is (0, 1.5) and it spans
    # y [-0.542, 3.542]. A car at y [3.5, 4.5] overlaps it by 0.042 m; one at y [3.6, 4.6] does not.
    assert flags([0.0, 1.0], [box(0.0, 4.0)], "obb").tolist() == [True]
    assert flags([0.0, 1.0], [box(0.0, 4.1)], "obb").tolist() == [False]


def test_zero_area_and_nan_agents_are_ignored():
    # A zero-width label lying across the ego has no area to overlap, and a NaN box no
    # position; both tests skip them rather than report a collision or crash.
    bad = [box(1.0, 0.0, length=3.0, width=0.0), box(float("nan"), 0.0)]
    for method in ("univ2x", "obb"):
        assert flags([0.0, 0.0], bad, method).tolist() == [False]
    assert not rasterize_occupancy(bad).any()


# --------------------------------------------------------------------------- entry point


def test_none_and_empty_steps_give_false():
    xy = np.zeros((3, 2))
    car = [box(1.0, 0.0, 2.0, 2.0)]
    for method in ("univ2x", "obb"):
        assert collision_flags(xy, [None, [], car], method).tolist() == [False, False, True]


def test_invalid_steps_give_false_and_may_hold_nan():
    xy = np.array([[np.nan, np.nan], [0.0, 0.0]])
    car = [box(1.0, 0.0, 2.0, 2.0)]
    for method in ("univ2x", "obb"):
        out = collision_flags(xy, [car, car], method, valid=[False, True])
        assert out.tolist() == [False, True]


def test_unknown_method_names_the_allowed_ones():
    with pytest.raises(ValueError, match="univ2x.*obb"):
        collision_flags(np.zeros((1, 2)), [None], method="raster")


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="entries"):
        collision_flags(np.zeros((2, 2)), [None])
    with pytest.raises(ValueError, match="shape"):
        collision_flags(np.zeros((2, 3)), [None, None])
    with pytest.raises(ValueError, match="non-finite"):
        collision_flags(np.array([[np.nan, 0.0]]), [None])


# --------------------------------------------------------------------------- properties

coord = st.floats(-55.0, 55.0, allow_nan=False)
size = st.floats(0.2, 12.0, allow_nan=False)
angle = st.floats(-math.pi, math.pi, allow_nan=False)


def _inside_polygon(points, corners):
    """Point-in-convex-polygon by cross products (corners counter-clockwise): an oracle
    independent of the projection test in the module."""
    inside = np.ones(len(points), dtype=bool)
    for a, b in zip(corners, np.roll(corners, -1, axis=0)):
        edge = b - a
        rel = points - a
        # Signed distance to the edge's line; the module's 1 nm edge tolerance applies.
        inside &= (edge[0] * rel[:, 1] - edge[1] * rel[:, 0]) / np.hypot(*edge) >= -1e-9
    return inside


@settings(max_examples=300, deadline=None)
@given(x=coord, y=coord, length=size, width=size, yaw=angle)
def test_rasterisation_matches_brute_force(x, y, length, width, yaw):
    agent = box(x, y, length, width, yaw)
    c = CollisionConfig().cell_centres()
    gx, gy = np.meshgrid(c, c, indexing="ij")
    pts = np.column_stack([gx.ravel(), gy.ravel()])
    expected = _inside_polygon(pts, agent.corners_xy()).reshape(gx.shape)
    np.testing.assert_array_equal(rasterize_occupancy([agent]), expected)


@settings(max_examples=80, deadline=None)
@given(
    wx=coord, wy=coord,
    agents=st.lists(st.tuples(coord, coord, size, size, angle), min_size=1, max_size=4),
)
def test_windowed_raster_collision_matches_full_grid(wx, wy, agents):
    boxes = [box(*a[:4], yaw=a[4]) for a in agents]
    ix0, ix1, iy0, iy1 = ego_cell_window(wx, wy)
    grid = rasterize_occupancy(boxes)
    expected = bool(grid[ix0:ix1, iy0:iy1].any()) if ix0 < ix1 and iy0 < iy1 else False
    assert univ2x_collides(wx, wy, boxes) == expected


def _clip_area(subject, clip):
    """Area of the intersection of two convex counter-clockwise polygons (Sutherland-Hodgman)."""
    poly = [tuple(p) for p in subject]
    for a, b in zip(clip, np.roll(clip, -1, axis=0)):
        if not poly:
            break
        side = lambda p: (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])  # noqa: E731
        out = []
        for p, q in zip(poly, poly[1:] + poly[:1]):
            sp, sq = side(p), side(q)
            if sp >= 0:
                out.append(p)
            if (sp >= 0) != (sq >= 0):
                t = sp / (sp - sq)
                out.append((p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1])))
        poly = out
    if len(poly) < 3:
        return 0.0
    xs, ys = np.array(poly).T
    return 0.5 * abs(np.dot(xs, np.roll(ys, -1)) - np.dot(ys, np.roll(xs, -1)))


@settings(max_examples=150, deadline=None)
@given(
    ex=st.floats(-8, 8), ey=st.floats(-8, 8), eyaw=angle,
    ax=st.floats(-8, 8), ay=st.floats(-8, 8), alen=size, awid=size, ayaw=angle,
)
def test_sat_matches_intersection_area(ex, ey, eyaw, ax, ay, alen, awid, ayaw):
    from v2x_vlm_ros.geometry import box_corners_xy

    ego = box_corners_xy(ex, ey, eyaw, 4.084, 1.85)
    agent = box(ax, ay, alen, awid, ayaw)
    area = _clip_area(ego, agent.corners_xy())
    assume(area > 1e-6 or area == 0.0)  # leave out near-touching cases the oracle cannot settle
    assert bool(obb_overlaps((ex, ey), eyaw, 4.084, 1.85, [agent])[0]) == (area > 0.0)
