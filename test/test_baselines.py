"""The constant-velocity baseline, exactly as defined, and the evaluation loop around it."""

import numpy as np
import pytest

from builders import arc, braking, line, sequence, world_agent, write
from v2x_vlm_ros.data.dair import DairV2XDataset
from v2x_vlm_ros.eval.evaluate import evaluate
from v2x_vlm_ros.runtime.baselines import ConstantVelocityPlanner


def test_plan_is_past_half_second_speed_along_current_heading(tmp_path):
    write(tmp_path, [sequence(braking(12.0, 2.0), n_frames=80)])
    ds = {s.sample_id: s for s in DairV2XDataset(tmp_path)}
    planner = ConstantVelocityPlanner()
    # frame 20 (t = 2 s): 0.5 s earlier x = 15.75, now 20 -> 8.5 m/s
    plan = planner.plan(ds["000020"])
    np.testing.assert_allclose(plan[:, 0], 8.5 * 0.5 * np.arange(1, 11), atol=1e-5)
    np.testing.assert_allclose(plan[:, 1], 0.0)
    # frame 3 (t = 0.3 s): less history, the oldest pose: x(0.3) = 3.6 - 0.09 over 0.3 s
    np.testing.assert_allclose(planner.plan(ds["000003"])[0, 0], 0.5 * (3.51 / 0.3), atol=1e-5)
    assert not planner.plan(ds["000000"]).any()  # first frame: zero speed


def test_constant_velocity_is_exact_on_a_line_and_not_on_an_arc(tmp_path):
    write(tmp_path / "line", [sequence(line(9.0), n_frames=80)])
    write(tmp_path / "arc", [sequence(arc(9.0, 0.3), n_frames=80)])
    on_line = evaluate(DairV2XDataset(tmp_path / "line"), ConstantVelocityPlanner(), progress=False)
    on_arc = evaluate(DairV2XDataset(tmp_path / "arc"), ConstantVelocityPlanner(), progress=False)
    assert on_line["num_samples"] == 80
    # exact everywhere but at the first frame, where the speed is 0 by definition:
    # its errors 9 m/s x 2.5 / 3.5 / 4.5 s are divided by all 80 samples
    for h in ("2.5", "3.5", "4.5"):
        assert on_line["l2"][h] == pytest.approx(9.0 * float(h) / 80, abs=1e-4)
    assert on_arc["l2"]["4.5"] > on_arc["l2"]["2.5"] > 1.0
    assert on_line["transmission"] == {"uses_roadside": False, "formula_bps": 0.0, "measured_bps": 0.0}


def test_constant_velocity_collides_with_a_stopped_car_the_ground_truth_avoids(tmp_path):
    # The ego brakes to a stop at x = 36 m behind a car standing at x = 42 m (its rear at 39.75 m).
    agents = lambda t: [world_agent(42.0, 0.0)]  # noqa: E731
    write(tmp_path, [sequence(braking(12.0, 2.0), n_frames=100, agents=agents)])
    result = evaluate(DairV2XDataset(tmp_path), ConstantVelocityPlanner(), progress=False)
    assert result["gt_collision_excluded"]["4.5"] == 0  # the ground truth never hits it
    assert result["collision"]["4.5"] > 0.0
