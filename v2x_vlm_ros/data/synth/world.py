"""The static world of one sequence: a four-way intersection and its surroundings, the
light, where it sits on Earth, and the two sensor rigs.

Local frame: origin at the intersection centre on the ground, x east along the ego's road,
y north along the crossing road, z up. The ego always approaches from the west (-x) in the
eastbound lane (y = -1.75, right-hand traffic). Two roads of one 3.5 m lane per direction
plus a 2.5 m shoulder cross at right angles; the kerb corners are rounded; 3 m sidewalks,
then grass with buildings and trees. Every quadrant draws its buildings from the same
distribution in every scenario, so the ego image alone does not give a scenario away. The
roadside camera stands on a pole at the north-east corner, diagonally across from the
ego's approach, looking over the intersection at the end of the west arm (beyond the
parked truck) and down the south arm: where the hidden hazards are.
``world_from_local`` puts the intersection kilometres from the world origin, rotated by a
random yaw, on ground at a non-zero elevation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from v2x_vlm_ros.data.synth.agents import boxes_overlap
from v2x_vlm_ros.data.synth.camera import optical_pose
from v2x_vlm_ros.data.synth.render import GroundLayer, Lighting, Solid, Thing
from v2x_vlm_ros.geometry import box_corners_xy, invert_pose, make_pose, planar_pose, rotation_zyx

LANE = 3.5  # lane width
SHOULDER = 2.5  # between the lane edge line and the kerb
HALF_WIDTH = LANE + SHOULDER  # road centre line to kerb
SIDEWALK = 3.0
ARM = 300.0  # length of each road arm drawn
EGO_LANE_Y = -0.5 * LANE

# -- the ego vehicle and its sensors (fixed: one vehicle for the whole dataset) ----------
LIDAR_HEIGHT = 1.9  # LiDAR origin above the ground
LIDAR_AHEAD_OF_REAR_AXLE = 0.9
BODY_AHEAD_OF_LIDAR = 0.5  # ego box centre ahead of the LiDAR origin
EGO_SIZE = (4.6, 1.9, 1.6)  # length, width, height
FRONT_AHEAD_OF_REAR_AXLE = LIDAR_AHEAD_OF_REAR_AXLE + BODY_AHEAD_OF_LIDAR + 0.5 * EGO_SIZE[0]
LIDAR_FROM_CAMERA = optical_pose((0.6, 0.0, -0.4), yaw=0.008, pitch_down=0.05)
CAMERA_FROM_LIDAR = invert_pose(LIDAR_FROM_CAMERA)
NOVATEL_FROM_LIDAR = make_pose(rotation_zyx(math.pi / 2, 0.006, -0.004), (0.55, -0.35, -0.6))

WHITE, YELLOW = (228, 228, 228), (40, 185, 225)


@dataclass
class World:
    curb_radius: float  # radius of the rounded kerb corners
    world_from_local: np.ndarray
    ground: list  # GroundLayer, drawn in order
    statics: list  # Thing: buildings, trees, the roadside pole
    lighting: Lighting
    local_from_virtuallidar: np.ndarray  # roadside pole base, z up
    local_from_infra_camera: np.ndarray
    intersection_loc: str

    @property
    def stop_line(self) -> float:
        """Distance from the centre to the near edge of each arm's stop line."""
        return HALF_WIDTH + self.curb_radius + 4.5

    @property
    def crosswalk(self) -> tuple[float, float]:
        return HALF_WIDTH + self.curb_radius + 0.5, HALF_WIDTH + self.curb_radius + 3.5

    @property
    def ground_z(self) -> float:
        return float(self.world_from_local[2, 3])

    @property
    def pole_ident(self) -> int:
        return next(t.ident for t in self.statics if t.kind == "pole")


def rounded_cross(half: float, radius: float, arm: float, steps: int = 10) -> np.ndarray:
    """Outline of two perpendicular strips of half width ``half`` whose inner corners are
    rounded with ``radius`` (counter-clockwise)."""
    pts = []
    theta = np.linspace(0.0, math.pi / 2, steps)
    # (quadrant signs, arc direction): traversal goes x-arm -> y-arm in (+,+) and (-,-)
    for sx, sy, forward in ((1, 1, True), (-1, 1, False), (-1, -1, True), (1, -1, False)):
        if (sx, sy) == (1, 1):
            pts += [(arm, -half), (arm, half)]
        elif (sx, sy) == (-1, 1):
            pts += [(half, arm), (-half, arm)]
        elif (sx, sy) == (-1, -1):
            pts += [(-arm, half), (-arm, -half)]
        else:
            pts += [(-half, -arm), (half, -arm)]
        cx, cy = sx * (half + radius), sy * (half + radius)
        arc = [(cx - sx * radius * math.sin(t), cy - sy * radius * math.cos(t)) for t in theta]
        pts += arc if forward else arc[::-1]
    return np.array(pts)


def _arm_rect(direction: int, u0: float, u1: float, w0: float, w1: float) -> np.ndarray:
    """Rectangle on arm ``direction`` (0 east, 1 north, 2 west, 3 south): ``u`` outward
    from the centre, ``w`` to the left of the outward direction rotated +90 degrees (the
    side of the lane that drives towards the centre)."""
    ang = direction * math.pi / 2
    d = np.array([math.cos(ang), math.sin(ang)])
    n = np.array([-d[1], d[0]])
    return np.array([u0 * d + w0 * n, u1 * d + w0 * n, u1 * d + w1 * n, u0 * d + w1 * n])


def markings(stop: float, crosswalk: tuple[float, float]):
    """(white polygons, yellow polygons) of all four arms."""
    white, yellow = [], []
    for arm in range(4):
        white.append(_arm_rect(arm, stop, stop + 0.4, 0.1, LANE))  # stop line, incoming lane
        for w in (LANE, -LANE):  # lane edge lines
            white.append(_arm_rect(arm, stop, ARM, w - 0.075, w + 0.075))
        n_stripes = int((2 * HALF_WIDTH - 0.6) // 1.0)
        w = -HALF_WIDTH + 0.5
        for _ in range(n_stripes):  # zebra crossing
            white.append(_arm_rect(arm, crosswalk[0], crosswalk[1], w, w + 0.5))
            w += 1.0
        yellow.append(_arm_rect(arm, stop, stop + 20.0, -0.08, 0.08))  # solid near the junction
        u = stop + 24.0
        while u < ARM:
            yellow.append(_arm_rect(arm, u, min(u + 3.0, ARM), -0.08, 0.08))
            u += 7.0
    return white, yellow


LIGHTS = {
    "clear": dict(ambient=0.42, sky_top=(205, 150, 95), sky_horizon=(235, 215, 190), elev=(40, 65)),
    "hazy": dict(ambient=0.6, sky_top=(210, 195, 180), sky_horizon=(228, 226, 222), elev=(35, 60)),
    "overcast": dict(ambient=0.85, sky_top=(172, 170, 168), sky_horizon=(200, 200, 198), elev=(40, 60)),
    "low_sun": dict(ambient=0.38, sky_top=(200, 160, 120), sky_horizon=(160, 200, 238), elev=(10, 22)),
}

BUILDING_COLORS = [(175, 180, 185), (150, 175, 200), (80, 95, 150), (215, 215, 210), (160, 140, 120),
                   (120, 125, 130), (110, 140, 170)]


def _building(rng, ident: int, sx: int, sy: int, near_x: float, near_y: float) -> Thing:
    lx, ly = rng.uniform(10.0, 38.0), rng.uniform(10.0, 38.0)
    height = float(rng.uniform(7.0, 36.0))
    cx, cy = sx * (near_x + lx / 2), sy * (near_y + ly / 2)
    color = BUILDING_COLORS[rng.integers(len(BUILDING_COLORS))]
    roof = tuple(int(0.8 * c) for c in color)
    glass = (95, 85, 70) if rng.random() < 0.7 else (150, 120, 90)
    solid = Solid(cx, cy, 0.0, lx, ly, 0.0, height, color, roof, (3.2, 1.5, glass))
    return Thing(ident, [solid], box_corners_xy(cx, cy, 0.0, lx, ly), height, True, "building")


def _tree(rng, ident: int, x: float, y: float) -> Thing:
    crown = float(rng.uniform(2.4, 3.6))
    trunk_h = float(rng.uniform(1.8, 2.6))
    top = trunk_h + float(rng.uniform(2.5, 4.0))
    yaw = float(rng.uniform(0, math.pi / 2))
    green = (int(rng.integers(40, 70)), int(rng.integers(95, 135)), int(rng.integers(50, 80)))
    solids = [Solid(x, y, yaw, 0.3, 0.3, 0.0, trunk_h + 0.3, (50, 70, 95)),
              Solid(x, y, yaw, crown, crown, trunk_h, top, green)]
    return Thing(ident, solids, box_corners_xy(x, y, yaw, crown, crown), top, True, "tree")


def build_world(rng: np.random.Generator) -> World:
    """Draw one sequence's static world (the first draws of the sequence's generator)."""
    radius = float(rng.uniform(5.0, 7.0))
    # -- where on Earth, and the light ----------------------------------------------------
    cx = float(rng.uniform(1500.0, 9500.0)) * (1 if rng.random() < 0.5 else -1)
    cy = float(rng.uniform(1500.0, 9500.0)) * (1 if rng.random() < 0.5 else -1)
    world_from_local = planar_pose(cx, cy, float(rng.uniform(-math.pi, math.pi)),
                                   z=float(rng.uniform(15.0, 30.0)))
    light_name = ("clear", "hazy", "overcast", "low_sun")[int(rng.choice(4, p=[0.4, 0.25, 0.2, 0.15]))]
    spec = LIGHTS[light_name]
    elev = math.radians(rng.uniform(*spec["elev"]))
    azim = rng.uniform(-math.pi, math.pi)
    sun = (math.cos(elev) * math.cos(azim), math.cos(elev) * math.sin(azim), math.sin(elev))
    grass = ((int(rng.integers(60, 80)), int(rng.integers(115, 140)), int(rng.integers(85, 105)))
             if rng.random() < 0.6 else
             (int(rng.integers(95, 115)), int(rng.integers(135, 150)), int(rng.integers(150, 165))))
    far = tuple(int(0.7 * g + 0.3 * h) for g, h in zip(grass, spec["sky_horizon"]))
    lighting = Lighting(light_name, sun, spec["ambient"], spec["sky_top"], spec["sky_horizon"], far)
    if light_name == "overcast":
        grass = tuple(int(0.85 * g) for g in grass)

    # -- ground ---------------------------------------------------------------------------
    g = int(rng.integers(68, 92))
    asphalt = (g + 4, g + 2, g)
    p = int(rng.integers(150, 178))
    paving = (p - int(rng.integers(0, 14)), p, p + int(rng.integers(0, 10)))  # grey to beige
    stop, crosswalk = HALF_WIDTH + radius + 4.5, (HALF_WIDTH + radius + 0.5, HALF_WIDTH + radius + 3.5)
    white, yellow = markings(stop, crosswalk)
    ground = [
        GroundLayer(grass, [np.array([(-ARM, -ARM), (ARM, -ARM), (ARM, ARM), (-ARM, ARM)])]),
        GroundLayer(paving, [rounded_cross(HALF_WIDTH + SIDEWALK, radius - SIDEWALK, ARM)]),
        GroundLayer((190, 192, 192), [rounded_cross(HALF_WIDTH + 0.2, radius - 0.2, ARM)]),
        GroundLayer(asphalt, [rounded_cross(HALF_WIDTH, radius, ARM)]),
        GroundLayer(WHITE, white, antialias=True),
        GroundLayer(YELLOW, yellow, antialias=True),
    ]

    # -- the roadside pole at the north-east corner ----------------------------------------
    # Its camera, on an arm reaching over the junction, looks at what the ego cannot see: the
    # kerb and the zebra beyond the parked truck on the west arm and the south arm (crossing
    # traffic, the exit of a right turn); a narrow field of view (SynthConfig.infra_hfov_deg)
    # keeps them large in its image.
    pole_xy = np.array([11.0, 11.0]) + rng.uniform(-0.6, 0.6, size=2)
    cam_h = float(rng.uniform(6.0, 8.0))
    bearings = [math.atan2(p[1] - pole_xy[1], p[0] - pole_xy[0])
                for p in ((-18.0, -4.0), (2.0, -45.0))]
    yaw = float(np.mean(np.unwrap(bearings))) + math.radians(rng.uniform(-2.0, 2.0))
    arm = 3.0
    cam_pos = (pole_xy[0] + arm * math.cos(yaw), pole_xy[1] + arm * math.sin(yaw), cam_h)
    local_from_cam = optical_pose(cam_pos, yaw, math.radians(rng.uniform(14.0, 19.0)),
                                  roll=math.radians(rng.uniform(-1.0, 1.0)))
    local_from_vl = planar_pose(pole_xy[0], pole_xy[1], yaw + float(rng.uniform(-0.3, 0.3)))
    c, s = math.cos(yaw), math.sin(yaw)
    grey = (150, 150, 155)
    pole = Thing(1, [Solid(pole_xy[0], pole_xy[1], yaw, 0.35, 0.35, 0.0, cam_h + 0.4, grey),
                     Solid(pole_xy[0] + 0.5 * arm * c, pole_xy[1] + 0.5 * arm * s, yaw, arm, 0.18,
                           cam_h + 0.2, cam_h + 0.4, grey),
                     Solid(cam_pos[0], cam_pos[1], yaw, 0.45, 0.3, cam_h - 0.3, cam_h + 0.2,
                           (60, 60, 60))],
                 box_corners_xy(pole_xy[0] + 0.5 * arm * c, pole_xy[1] + 0.5 * arm * s, yaw,
                                arm + 0.6, 0.6), cam_h + 0.4, True, "pole")

    # -- buildings and trees: the same distribution in every scenario ---------------------
    statics = [pole]
    base = HALF_WIDTH + SIDEWALK
    for sx, sy in ((1, 1), (-1, 1), (-1, -1), (1, -1)):
        lo = 0.5 if (sx, sy) != (1, 1) else pole_xy.max() + 2.5 - base
        # the corner block (always there: it hides the cross street's approaches)
        _add_building(statics, _building(rng, len(statics) + 1, sx, sy, base + rng.uniform(lo, lo + 3.0),
                                         base + rng.uniform(lo, lo + 3.0)))
        for along_x in (True, False):  # further out along each arm
            if rng.random() < 0.6:
                far_u = base + rng.uniform(45.0, 70.0)
                near_w = base + rng.uniform(0.5, 8.0)
                nx, ny = (far_u, near_w) if along_x else (near_w, far_u)
                _add_building(statics, _building(rng, len(statics) + 1, sx, sy, nx, ny))
    for _ in range(int(rng.integers(4, 12))):  # street trees on the grass beside sidewalks
        arm_dir = int(rng.integers(4))
        side = 1 if rng.random() < 0.5 else -1
        u = float(rng.uniform(radius + HALF_WIDTH + 6.0, 90.0))
        w = side * (base + 1.8)
        ang = arm_dir * math.pi / 2
        x, y = u * math.cos(ang) - w * math.sin(ang), u * math.sin(ang) + w * math.cos(ang)
        tree = _tree(rng, len(statics) + 1, x, y)
        if not any(_overlaps(tree.footprint, t.footprint) for t in statics):
            statics.append(tree)
    loc = f"yizhuang{int(rng.integers(1, 13)):02d}"
    return World(radius, world_from_local, ground, statics, lighting, local_from_vl, local_from_cam, loc)


def _overlaps(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(boxes_overlap(a[None], b[None])[0])


def _add_building(statics: list, building: Thing) -> None:
    if not any(_overlaps(building.footprint, t.footprint) for t in statics):
        statics.append(building)
