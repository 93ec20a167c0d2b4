"""Non-learned planners to compare against.

``ConstantVelocityPlanner`` is defined exactly so that results are comparable across
projects: the speed is the planar distance between the current pose and the pose 0.5 s
earlier (the oldest pose of the sequence when there is less history) divided by the time
between them, zero at a sequence's first frame (``ground_truth.ego_motion``); the ego
keeps that speed along its current heading, the x axis of the current ego frame.
"""

from __future__ import annotations

import numpy as np

from v2x_vlm_ros.data.records import NUM_WAYPOINTS, WAYPOINT_DT_S, CooperativeSample


class ConstantVelocityPlanner:
    name = "constant-velocity"
    uses_roadside = False

    def __init__(self, num_waypoints: int = NUM_WAYPOINTS, dt_s: float = WAYPOINT_DT_S):
        self._times = dt_s * np.arange(1, num_waypoints + 1)

    def plan(self, sample: CooperativeSample) -> np.ndarray:
        return self.plan_from_speed(sample.motion.speed_mps)

    def plan_from_speed(self, speed_mps: float) -> np.ndarray:
        return np.column_stack([speed_mps * self._times, np.zeros_like(self._times)])


#: Planners ``v2x-vlm eval --planner`` knows, by name.
PLANNERS = {ConstantVelocityPlanner.name: ConstantVelocityPlanner}
