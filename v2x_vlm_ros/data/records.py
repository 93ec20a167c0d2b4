"""The in-memory records the data layer hands to training, evaluation and replay.

They hold geometry and paths, never decoded images: images are decoded on demand
(``data.images``) so that indexing a whole dataset stays cheap.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from v2x_vlm_ros.geometry import box_corners_xy

#: Planning horizon shared by the ground truth, the codec and the metrics (UniV2X: 10 x 0.5 s).
NUM_WAYPOINTS = 10
WAYPOINT_DT_S = 0.5

#: DAIR-V2X object classes (REFERENCE §2).
DAIR_CLASSES = (
    "Car", "Truck", "Van", "Bus", "Pedestrian", "Cyclist", "Tricyclist",
    "Motorcyclist", "Barrowlist", "TrafficCone",
)
#: Classes that occupy the road for the collision test. UniV2X maps SPD classes to nuScenes
#: ``car`` (Car, Truck, Van, Bus) and ``bicycle`` (the riders), and UniAD's occupancy holds
#: the vehicle categories, riders included; pedestrians and cones are left out.
OCCUPANCY_CLASSES = frozenset(
    {"Car", "Truck", "Van", "Bus", "Cyclist", "Tricyclist", "Motorcyclist", "Barrowlist"}
)


class Command(enum.IntEnum):
    """High-level navigation command (UniV2X's numbering: RIGHT 0, LEFT 1, FORWARD 2)."""

    RIGHT = 0
    LEFT = 1
    FORWARD = 2

    @property
    def opposite(self) -> "Command":
        """The other turn (LEFT <-> RIGHT); FORWARD is its own."""
        return {Command.LEFT: Command.RIGHT, Command.RIGHT: Command.LEFT}.get(self, self)


@dataclass(frozen=True)
class AgentBox:
    """One labelled object, expressed in whichever frame the holder says (usually the
    current ego LiDAR frame: x forward, y left)."""

    track_id: str
    category: str
    x: float
    y: float
    z: float
    length: float
    width: float
    height: float
    yaw: float
    occluded_state: int | None = None
    from_side: str | None = None

    def corners_xy(self) -> np.ndarray:
        return box_corners_xy(self.x, self.y, self.yaw, self.length, self.width)

    @property
    def occupies_road(self) -> bool:
        return self.category in OCCUPANCY_CLASSES


@dataclass(frozen=True)
class EgoMotion:
    """The ego's recent motion, from past poses only (see ``ground_truth.ego_motion``)."""

    speed_mps: float
    heading_rad: float  # world yaw of the ego x axis
    yaw_rate_rps: float
    history_s: float  # time span the speed was measured over (0 at a sequence's first frame)


@dataclass
class CooperativeSample:
    """One vehicle frame listed in cooperative/data_info.json, with everything a planner
    and the metrics need. Trajectory arrays are in the current ego LiDAR frame."""

    sample_id: str  # the vehicle frame id
    sequence_id: str  # vehicle sequence (SPD) or batch id (DAIR-V2X-C)
    layout: str  # "spd" or "c"
    vehicle_frame: str
    infrastructure_frame: str
    ego_image_path: Path
    roadside_image_path: Path
    ego_timestamp_us: int
    roadside_timestamp_us: int
    world_from_ego: np.ndarray  # (4, 4) world <- vehicle LiDAR
    motion: EgoMotion
    future_xy: np.ndarray  # (NUM_WAYPOINTS, 2)
    future_mask: np.ndarray  # (NUM_WAYPOINTS,) bool, False past the sequence's end or at gaps
    future_agents: list[list[AgentBox] | None]  # per step; None where masked or unlabelled
    command: Command
    system_error_offset: tuple[float, float] | None = None
    description: str | None = None
    scenario: str | None = None
    frame_index: int = 0  # position of the frame in its sequence
    ego_lidar_to_camera_path: Path | None = None  # calibration, for drawing on the ego image
    ego_intrinsics_path: Path | None = None
    #: The roadside camera's earlier frames of the same infrastructure sequence, (stamp in
    #: microseconds, path) in time order, the last ``ROADSIDE_HISTORY_S`` before this sample's
    #: roadside frame (empty where the dataset has no roadside sequences): what a planner that
    #: reads motion from two roadside frames (``roadside_before``) picks its earlier one from.
    roadside_history: tuple[tuple[int, Path], ...] = ()


#: How far back ``CooperativeSample.roadside_history`` reaches: the longest
#: ``ModelSettings.roadside_motion_s`` (2 s) and ``roadside_before``'s tolerance, with room.
ROADSIDE_HISTORY_S = 2.5


#: How far from the asked time an earlier roadside frame may have been taken: the dataset's
#: (``roadside_before``) and the vehicle service's rule, under half a 10 Hz camera's period.
ROADSIDE_PREVIOUS_TOLERANCE_S = 0.1


def roadside_before(sample: CooperativeSample, seconds: float,
                    tolerance_s: float = ROADSIDE_PREVIOUS_TOLERANCE_S) -> tuple[int, Path] | None:
    """The roadside frame of ``sample.roadside_history`` taken nearest ``seconds`` before its
    roadside frame, as (stamp us, path), or None when none lies within ``tolerance_s`` of that
    time (the sequence's start, a gap)."""
    target = int(sample.roadside_timestamp_us) - seconds * 1e6
    best = min(sample.roadside_history, key=lambda entry: abs(entry[0] - target), default=None)
    if best is None or abs(best[0] - target) > tolerance_s * 1e6:
        return None
    return best
