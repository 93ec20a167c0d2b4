"""UniV2X planning metrics: single-step horizons, the masked-L2 convention, the collision
rule (pred collides AND GT does not), accounting keys, validation and the Markdown table.

Ground truth in most tests drives straight along x: waypoint k is at ((k + 1) m, 0), so the
scored steps 4 / 6 / 8 are at x = 5 / 7 / 9 m.
"""

import json

import numpy as np
import pytest

from v2x_vlm_ros.data.records import AgentBox
from v2x_vlm_ros.eval.metrics import HORIZONS, PlanningMetrics, format_markdown_table


def car(x, y, length=4.0, width=2.0):
    return AgentBox("c", "Car", x, y, 0.0, length, width, 1.5, 0.0)


def straight_gt():
    return np.column_stack([np.arange(1.0, 11.0), np.zeros(10)])


def no_agents():
    return [[] for _ in range(10)]


ALL_VALID = np.ones(10, dtype=bool)


def test_horizons_are_single_steps():
    assert HORIZONS == {"2.5": 4, "3.5": 6, "4.5": 8}
    gt = straight_gt()
    m = PlanningMetrics()
    pred = gt.copy()
    pred[5] += (3.0, 4.0)  # step 5 (3.0 s) is not a horizon: it must not show anywhere
    pred[7] += (3.0, 4.0)
    m.update(pred, gt, ALL_VALID, no_agents())
    assert m.result()["l2"] == {"2.5": 0.0, "3.5": 0.0, "4.5": 0.0, "avg": 0.0}

    m = PlanningMetrics()
    pred = gt.copy()
    pred[4] += (3.0, 4.0)  # only the 2.5 s step is off, by 5 m
    m.update(pred, gt, ALL_VALID, no_agents())
    l2 = m.result()["l2"]
    assert l2["2.5"] == pytest.approx(5.0)
    assert l2["3.5"] == 0.0 and l2["4.5"] == 0.0
    assert l2["avg"] == pytest.approx(5.0 / 3.0)


def test_masked_steps_count_zero_but_stay_in_n():
    gt = straight_gt()
    m = PlanningMetrics()
    m.update(gt + (3.0, 4.0), gt, ALL_VALID, no_agents(), sample_id="a")  # 5 m everywhere
    gt_b = gt.copy()
    gt_b[6] = np.nan  # masked steps may hold anything
    mask_b = ALL_VALID.copy()
    mask_b[6] = False
    m.update(gt + (0.0, 1.0), gt_b, mask_b, no_agents(), sample_id="b")  # 1 m where valid
    r = m.result()
    assert r["num_samples"] == 2
    # 2.5 s and 4.5 s: (5 + 1) / 2; 3.5 s: (5 + 0) / 2 with sample b counted in N.
    assert r["l2"]["2.5"] == pytest.approx(3.0)
    assert r["l2"]["3.5"] == pytest.approx(2.5)
    assert r["l2"]["4.5"] == pytest.approx(3.0)
    assert r["l2"]["avg"] == pytest.approx(8.5 / 3.0)
    # The valid-only mean divides by the samples valid at that step.
    assert r["l2_valid_only"]["3.5"] == pytest.approx(5.0)
    assert r["l2_valid_only"]["2.5"] == pytest.approx(3.0)
    assert r["l2_valid_only"]["avg"] == pytest.approx(11.0 / 3.0)
    assert r["valid_counts"] == {"2.5": 2, "3.5": 1, "4.5": 2}
    assert "masked" in r["l2_convention"] and "N" in r["l2_convention"]


def test_collision_counts_pred_hits_over_all_samples():
    gt = straight_gt()
    m = PlanningMetrics()
    agents = no_agents()
    agents[4] = [car(5.0, 5.0)]  # spans x [3, 7], y [4, 6]; the GT at (5, 0) stays clear
    pred = gt.copy()
    pred[4] = (5.0, 5.0)  # drives into it at 2.5 s
    m.update(pred, gt, ALL_VALID, agents)
    for _ in range(3):
        m.update(gt, gt, ALL_VALID, no_agents())
    r = m.result()
    assert r["collision"]["2.5"] == pytest.approx(25.0)
    assert r["collision"]["3.5"] == 0.0 and r["collision"]["4.5"] == 0.0
    assert r["collision"]["avg"] == pytest.approx(25.0 / 3.0)
    assert r["collision_counts"] == {"2.5": 1, "3.5": 0, "4.5": 0}
    assert r["collision_method"] == "univ2x"


def test_gt_collisions_are_excluded_and_counted():
    gt = straight_gt()
    agents = no_agents()
    agents[6] = [car(7.0, 0.0)]  # sits on the GT waypoint at 3.5 s
    m = PlanningMetrics()
    m.update(gt, gt, ALL_VALID, agents)  # the prediction hits it too
    r = m.result()
    assert r["collision"]["3.5"] == 0.0
    assert r["gt_collision_excluded"] == {"2.5": 0, "3.5": 1, "4.5": 0}


def test_masked_and_unlabelled_steps_never_count_as_collisions():
    gt = straight_gt()
    agents = no_agents()
    agents[4] = [car(5.0, 5.0)]
    agents[8] = None  # unlabelled
    mask = ALL_VALID.copy()
    mask[4] = False  # the GT does not reach 2.5 s (say a gap)
    pred = gt.copy()
    pred[4] = (5.0, 5.0)  # would collide, but the step is masked
    m = PlanningMetrics()
    m.update(pred, gt, mask, agents)
    r = m.result()
    assert r["collision"] == {"2.5": 0.0, "3.5": 0.0, "4.5": 0.0, "avg": 0.0}
    assert r["unlabelled_steps"] == {"2.5": 0, "3.5": 0, "4.5": 1}
    assert r["valid_counts"] == {"2.5": 0, "3.5": 1, "4.5": 1}


def test_collision_method_changes_the_test():
    # GT drives along y = -10, far from a 1 m car at (3, 0). The prediction's waypoint at
    # 2.5 s is the origin, reached heading +x from (-1, 0). The ego rectangle reaches
    # x = 2.542 and overlaps the car (x from 2.5), but no cell centre lies under both
    # (car cells at 2.75 / 3.25, ego cells up to 2.25): "obb" counts it, "univ2x" does not.
    gt = straight_gt() + (0.0, -10.0)
    pred = gt.copy()
    pred[3] = (-1.0, 0.0)
    pred[4] = (0.0, 0.0)
    agents = no_agents()
    agents[4] = [car(3.0, 0.0, 1.0, 1.0)]
    results = {}
    for method in ("univ2x", "obb"):
        m = PlanningMetrics(collision_method=method)
        m.update(pred, gt, ALL_VALID, agents)
        results[method] = m.result()
    assert results["univ2x"]["collision"]["2.5"] == 0.0
    assert results["obb"]["collision"]["2.5"] == 100.0
    assert results["obb"]["collision_method"] == "obb"


def test_nan_prediction_names_the_sample_and_leaves_state_unchanged():
    gt = straight_gt()
    m = PlanningMetrics()
    m.update(gt, gt, ALL_VALID, no_agents())
    pred = gt.copy()
    pred[2, 1] = np.nan
    with pytest.raises(ValueError, match="000123"):
        m.update(pred, gt, ALL_VALID, no_agents(), sample_id="000123")
    assert m.result()["num_samples"] == 1


@pytest.mark.parametrize(
    "pred_shape, gt_shape, mask_shape, n_agents, match",
    [
        ((9, 2), (10, 2), (10,), 10, "pred_xy"),
        ((10, 2), (10, 3), (10,), 10, "gt_xy"),
        ((10, 2), (10, 2), (9,), 10, "gt_mask"),
        ((10, 2), (10, 2), (10,), 9, "future_agents"),
    ],
)
def test_shapes_are_validated(pred_shape, gt_shape, mask_shape, n_agents, match):
    m = PlanningMetrics()
    with pytest.raises(ValueError, match=match):
        m.update(np.zeros(pred_shape), np.zeros(gt_shape), np.ones(mask_shape, bool), [[]] * n_agents)


def test_nan_ground_truth_at_a_valid_step_is_rejected():
    gt = straight_gt()
    gt[4] = np.nan
    with pytest.raises(ValueError, match="ground truth"):
        PlanningMetrics().update(straight_gt(), gt, ALL_VALID, no_agents(), sample_id="x")


def test_unknown_collision_method_is_rejected():
    with pytest.raises(ValueError, match="univ2x"):
        PlanningMetrics(collision_method="grid")


def test_zero_samples_gives_none_and_serialises():
    r = PlanningMetrics().result()
    assert r["num_samples"] == 0
    assert r["l2"] == {"2.5": None, "3.5": None, "4.5": None, "avg": None}
    assert r["collision"] == {"2.5": None, "3.5": None, "4.5": None, "avg": None}
    assert json.loads(json.dumps(r)) == r


def test_result_is_plain_json():
    gt = straight_gt()
    m = PlanningMetrics(keep_per_sample=True)
    m.update(gt + (0.3, 0.4), gt, ALL_VALID, no_agents(), sample_id="s1")
    r = m.result()
    text = json.dumps(r, allow_nan=False)  # numpy scalars or NaN would fail here
    assert json.loads(text)["l2"]["avg"] == pytest.approx(0.5)
    per = m.per_sample()
    assert per[0]["sample_id"] == "s1"
    assert per[0]["l2_per_step"][9] == pytest.approx(0.5)
    json.dumps(per, allow_nan=False)


def test_markdown_table_layout_and_rounding():
    results = {
        "V2X-VLM": {
            "l2": {"2.5": 1.094, "3.5": 1.118, "4.5": 1.4249, "avg": 1.2113},
            "collision": {"2.5": 0.0214, "3.5": 0.03, "4.5": 0.0349, "avg": 0.0288},
            "transmission": {"formula_bps": 12_441_600.0},
        },
        "no fusion": {
            "l2": {"2.5": 1.45, "3.5": 1.5, "4.5": 1.53, "avg": 1.4933},
            "collision": {"2.5": 0.03, "3.5": 0.03, "4.5": 0.04, "avg": 0.0333},
        },
    }
    lines = format_markdown_table(results).strip().split("\n")
    assert lines[0] == (
        "| method | L2 (m) 2.5 s | 3.5 s | 4.5 s | avg | Col. (%) 2.5 s | 3.5 s | 4.5 s | avg | BPS |"
    )
    assert lines[1].count("---") == 10
    assert lines[2] == "| V2X-VLM | 1.09 | 1.12 | 1.42 | 1.21 | 0.02 | 0.03 | 0.03 | 0.03 | 1.24e+07 |"
    assert lines[3] == "| no fusion | 1.45 | 1.50 | 1.53 | 1.49 | 0.03 | 0.03 | 0.04 | 0.03 | 0 |"


def test_markdown_table_without_transmission_and_with_missing_values():
    table = format_markdown_table({"empty": PlanningMetrics().result()})
    lines = table.strip().split("\n")
    assert "BPS" not in lines[0]
    assert lines[0].split(" | ")[5] == "L2 valid avg"  # next to the UniV2X average
    assert lines[2] == "| empty | " + " | ".join(["n/a"] * 9) + " |"
