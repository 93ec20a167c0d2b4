"""Small DAIR-V2X datasets with known analytic motion, written through the real writer.

World coordinates sit kilometres from the origin and the LiDAR is mounted on the novatel
with a non-trivial rotation, as in the real data, so the reader's pose composition and
float64 handling are exercised.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from v2x_vlm_ros.data.records import AgentBox
from v2x_vlm_ros.data.writer import (InfraFrameSpec, SequenceSpec, VehicleFrameSpec,
                                     WriteOptions, write_dataset)
from v2x_vlm_ros.geometry import make_pose, planar_pose, rotation_zyx

ORIGIN = (4321.5, -2876.25)  # kilometres from the world origin, like DAIR-V2X
HEADING = 0.7  # world yaw of the ego at t = 0
START_US = 1_626_155_123_061_000
DT_US = 100_000

# a camera frame has texture (a one-colour frame is a dead camera: preprocessing.blank_image)
_checker = (100 + 40 * (np.indices((8, 16)).sum(axis=0) % 2)).astype(np.uint8)
_ok, _jpg = cv2.imencode(".jpg", np.repeat(_checker[..., None], 3, axis=2))
TINY_JPEG = _jpg.tobytes()

NOVATEL_FROM_LIDAR = make_pose(rotation_zyx(math.pi / 2, 0.01, -0.02), (0.3, -0.8, 1.1))
CAMERA_FROM_LIDAR = make_pose(np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]]),
                              (0.0, 0.4, -0.5))
K = np.array([[500.0, 0.0, 8.0], [0.0, 500.0, 4.0], [0.0, 0.0, 1.0]])


def line(speed: float):
    """Constant speed along the initial heading: t -> (x, y, yaw) in the local frame."""
    return lambda t: (speed * t, 0.0, 0.0)


def arc(speed: float, yaw_rate: float):
    """Constant speed and yaw rate (a circle of radius speed / yaw_rate)."""
    def f(t):
        r = speed / yaw_rate
        return (r * math.sin(yaw_rate * t), r * (1.0 - math.cos(yaw_rate * t)), yaw_rate * t)
    return f


def braking(v0: float, decel: float):
    """Constant deceleration until standstill."""
    t_stop = v0 / decel

    def f(t):
        tt = min(t, t_stop)
        return (v0 * tt - 0.5 * decel * tt * tt, 0.0, 0.0)
    return f


def local_to_world(x: float, y: float, yaw: float) -> np.ndarray:
    c, s = math.cos(HEADING), math.sin(HEADING)
    return planar_pose(ORIGIN[0] + c * x - s * y, ORIGIN[1] + s * x + c * y, HEADING + yaw, z=21.0)


def sequence(motion, n_frames: int = 80, stamps_us=None, agents=None,
             offset=(0.0, 0.0), paired=None, image=TINY_JPEG) -> SequenceSpec:
    """A sequence sampled from ``motion(t) -> (x, y, yaw)`` (local frame, t in seconds).

    ``agents(t) -> list[AgentBox]`` gives world-frame labels; ``paired`` lists which vehicle
    frames get a cooperative row (default all)."""
    stamps = stamps_us if stamps_us is not None else [START_US + i * DT_US for i in range(n_frames)]
    frames = []
    for i, stamp in enumerate(stamps):
        t = (stamp - START_US) * 1e-6
        frames.append(VehicleFrameSpec(
            timestamp_us=int(stamp), world_from_lidar=local_to_world(*motion(t)), image=image,
            agents=agents(t) if agents else [],
            infra_index=i if paired is None or i in paired else None,
        ))
    infra = [InfraFrameSpec(timestamp_us=int(s) + 40_000, image=image) for s in stamps]
    return SequenceSpec(
        vehicle_frames=frames, infra_frames=infra, novatel_from_lidar=NOVATEL_FROM_LIDAR,
        camera_from_lidar=CAMERA_FROM_LIDAR, vehicle_K=K,
        world_from_virtuallidar=planar_pose(ORIGIN[0] + 30, ORIGIN[1] + 5, 2.0, z=21.0),
        camera_from_virtuallidar=CAMERA_FROM_LIDAR, infra_K=K, system_error_offset=offset,
    )


def world_agent(x_local: float, y_local: float, yaw_local: float = 0.0, category="Car",
                track_id="1") -> AgentBox:
    pose = local_to_world(x_local, y_local, yaw_local)
    return AgentBox(track_id, category, float(pose[0, 3]), float(pose[1, 3]), 21.0, 4.5, 1.8, 1.5,
                    HEADING + yaw_local)


def write(root, sequences, layout="spd", **options):
    split = {"train": [0], "val": list(range(1, len(sequences)))} if len(sequences) > 1 else None
    write_dataset(root, sequences, split=split, options=WriteOptions(layout=layout, **options))
    return root
