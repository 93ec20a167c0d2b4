"""The univ2x protocol against UniV2X's own metric code: 400 golden cases computed by
AIR-THU/UniV2X's PlanningMetric and label rasteriser (test/fixtures/univ2x-golden/, see
SOURCES.md and README.md there), scored through ``v2x-vlm metric-cases`` (the contract
outside checks call) and through the library."""

import hashlib
import json
import lzma
from pathlib import Path

import cv2
import numpy as np
import pytest

from v2x_vlm_ros.cli import main
from v2x_vlm_ros.eval import univ2x as u
from v2x_vlm_ros.eval.metric_cases import load_cases, score_cases

GOLDEN = Path(__file__).resolve().parent / "fixtures" / "univ2x-golden" / "planning_metric_cases.json.xz"
GOLDEN_SHA256 = "c3576fc6c7671b225d2aa06d5877d445e5b264882b82ead35061b6e552b70903"
FLAGS = ("obj_col", "obj_box_col", "obj_out", "obj_box_out")


@pytest.fixture(scope="module")
def golden():
    raw = lzma.decompress(GOLDEN.read_bytes())
    assert hashlib.sha256(raw).hexdigest() == GOLDEN_SHA256, "the fixture is not the original file"
    return json.loads(raw)


@pytest.fixture(scope="module")
def cli_univ2x(tmp_path_factory, golden):
    out = tmp_path_factory.mktemp("mc") / "univ2x.json"
    assert main(["metric-cases", str(GOLDEN), "--protocol", "univ2x", "--json", str(out), "--check"]) == 0
    return json.loads(out.read_text())


def test_every_golden_step_matches_through_the_cli(golden, cli_univ2x):
    got = {c["id"]: c for c in cli_univ2x["cases"]}
    assert cli_univ2x["protocol"] == "univ2x" and len(got) == len(golden["cases"]) == 400
    wrong = []
    for case in golden["cases"]:
        exp, mine = case["expected"], got[case["id"]]
        for k in range(10):
            if abs(mine["l2"][k] - exp["l2"][k]) > 1e-9:
                wrong.append((case["id"], k, "l2", mine["l2"][k], exp["l2"][k]))
            for key in FLAGS:
                if mine[key][k] != exp[key][k]:
                    wrong.append((case["id"], k, key, mine[key][k], exp[key][k]))
            if mine["gt_box_coll"][k] != int(exp["gt_box_coll"][k]):
                wrong.append((case["id"], k, "gt_box_coll", mine["gt_box_coll"][k], exp["gt_box_coll"][k]))
    assert not wrong, f"{len(wrong)} disagreeing steps, first: {wrong[:5]}"
    assert cli_univ2x["expected_comparison"]["agrees"] is True


def test_aggregates_match_univ2x_to_1e_6(golden, cli_univ2x):
    exp, mine = golden["aggregate"], cli_univ2x["aggregate"]
    assert set(exp) <= set(mine)
    assert mine["n_cases"] == mine["total"] == 400 and mine["step_times"] == exp["step_times"]
    assert mine["counts"] == exp["counts"]
    np.testing.assert_allclose(mine["L2_sum"], exp["L2_sum"], rtol=0, atol=1e-6)
    for key, values in exp["per_step"].items():
        np.testing.assert_allclose(mine["per_step"][key], values, rtol=0, atol=1e-6, err_msg=key)
        # what UniV2X's float32 accumulators return, in file order: reproduced exactly
        assert mine["per_step_univ2x_float32"][key] == exp["per_step_univ2x_float32"][key], key
    for metric, conventions in exp["horizons"].items():
        for convention, values in conventions.items():
            for horizon, value in values.items():
                assert mine["horizons"][metric][convention][horizon] == pytest.approx(value, abs=1e-6), \
                    (metric, convention, horizon)
    assert mine["univ2x_printed_table"] == exp["univ2x_printed_table"]


def test_rasteriser_and_every_intermediate_match(golden):
    """The label raster (rounded vertices, fillPoly cells) and the metric's intermediates
    (centre cell, footprint rows and columns, flags before exclusion) per case and step."""
    wrong = []
    for raw, case in zip(golden["cases"], load_cases(GOLDEN)):
        seg = []
        for k in range(10):
            boxes = case.box_arrays(k)
            raster = u.rasterise(boxes)
            seg.append(raster)
            if raw["raster"]["occ_runs"][k] is None:
                assert boxes is None and (raster == 255).all()
                continue
            ref = np.zeros((200, 200), np.uint8)
            for r, c0, c1 in raw["raster"]["occ_runs"][k]:
                ref[r, c0:c1 + 1] = 1
            if not np.array_equal(raster, ref):
                wrong.append((case.id, k, "occ"))
            assert int(raster.sum()) == raw["raster"]["occ_count"][k]
            vertices = u.vertex_indices(u.bottom_corners(boxes))
            for j, px in enumerate(raw["raster"]["box_px"][k]):
                if px is not None and vertices[j].tolist() != px:
                    wrong.append((case.id, k, f"box_px[{j}]"))
        flags = u.step_flags(case.pred, case.gt, case.mask, np.stack(seg), case.drivable)
        exp = raw["expected"]
        for key in ("gt_box_coll", "pred_box_coll", "gt_box_out", "pred_box_out", "pred_center_in_grid"):
            if [int(v) for v in getattr(flags, key)] != [int(v) for v in exp[key]]:
                wrong.append((case.id, key))
        if flags.pred_center_cell.tolist() != exp["pred_center_cell"]:
            wrong.append((case.id, "pred_center_cell"))
        for name, (rows, cols) in (("pred", flags.pred_fp), ("gt", flags.gt_fp)):
            for k in range(10):
                if sorted(set(rows[k].tolist())) != exp[f"{name}_fp_rows"][k] or \
                        sorted(set(cols[k].tolist())) != exp[f"{name}_fp_cols"][k]:
                    wrong.append((case.id, k, f"{name}_fp"))
    assert not wrong, f"{len(wrong)} mismatches, first: {wrong[:5]}"


def test_footprint_offsets_are_univ2x_s_32_cells(golden):
    offsets = golden["meta"]["ego_footprint_rc_offsets"]
    assert u.FOOTPRINT_ROWS.tolist() == offsets["rows"] and u.FOOTPRINT_COLS.tolist() == offsets["cols"]
    assert sorted(u.VEHICLE_CLASSES) == golden["meta"]["vehicle_classes"]


# Steps where, per the fixture's README, the ego waypoint lies outside the grid: UniV2X
# clamps the footprint onto the border row / column, where a box sits; the time protocol
# drops out-of-grid cells, so its ego box (wholly outside the grid) cannot collide there.
CLAMPED = [
    ("s1_0216", 6),  # pred y = -51.2: ego box y in [-52.1, -50.3]
    ("s1_0156", 8),  # pred x = 63.4: ego box x in [61.4, 65.5]
]


def _score_one(raw, protocol, tmp_path):
    path = tmp_path / "one.json"
    path.write_text(json.dumps({"cases": [raw]}))
    out = tmp_path / f"out_{protocol}.json"
    assert main(["metric-cases", str(path), "--protocol", protocol, "--json", str(out)]) == 0
    return json.loads(out.read_text()), path


@pytest.mark.parametrize("case_id, step", CLAMPED)
def test_time_protocol_drops_what_univ2x_clamps(golden, tmp_path, case_id, step):
    raw = next(c for c in golden["cases"] if c["id"] == case_id)
    assert raw["expected"]["obj_box_col"][step] == 1
    time, path = _score_one(raw, "time", tmp_path)
    assert time["protocol"] == "time" and time["cases"][0]["obj_box_col"][step] == 0
    assert time["expected_comparison"]["agrees"] is False
    assert main(["metric-cases", str(path), "--protocol", "time", "--check"]) == 1
    univ2x, _ = _score_one(raw, "univ2x", tmp_path)
    assert univ2x["cases"][0]["obj_box_col"][step] == 1


def test_the_mask_touches_only_l2_in_univ2x_but_every_flag_in_time(golden, tmp_path):
    """UniV2X: a masked step still counts its collision (its GT is at the origin then); the
    time protocol never scores a masked step."""
    raw = json.loads(json.dumps(next(c for c in golden["cases"]
                                     if c["expected"]["obj_box_col"][3] == 1 and c["inputs"]["mask"][3] == 1
                                     and c["inputs"]["gt"][3] != [0.0, 0.0])))
    before_univ2x, _ = _score_one(raw, "univ2x", tmp_path)
    before_time, _ = _score_one(raw, "time", tmp_path)
    raw["inputs"]["mask"][3] = 0
    univ2x, _ = _score_one(raw, "univ2x", tmp_path)
    time, _ = _score_one(raw, "time", tmp_path)
    assert univ2x["cases"][0]["l2"][3] == 0.0 and time["cases"][0]["l2"][3] == 0.0
    assert before_univ2x["cases"][0]["l2"][3] > 0 and before_time["cases"][0]["l2"][3] > 0
    assert univ2x["cases"][0]["obj_box_col"][3] == 1
    assert time["cases"][0]["obj_box_col"][3] == 0


def test_time_protocol_l2_is_the_same_formula(golden):
    cases = load_cases(GOLDEN)[:50]
    a = score_cases(cases, "time")["aggregate"]["L2_sum"]
    b = score_cases(cases, "univ2x")["aggregate"]["L2_sum"]
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-9)  # the golden coordinates are float32-exact


@pytest.mark.parametrize("mutate, message", [
    (lambda c: c["inputs"].pop("pred"), "inputs.pred"),
    (lambda c: c["inputs"].__setitem__("mask", [1] * 9), "inputs.mask"),
    (lambda c: c["inputs"]["boxes"][3][0].__setitem__("yaw", "north"), "inputs.boxes[3][0].yaw"),
    (lambda c: c["inputs"]["gt"].__setitem__(2, [float("nan"), 0.0]), "inputs.gt"),
    (lambda c: c["inputs"].__setitem__("drivable_rects", [[0, 250, 0, 10]]), "drivable_rects[0]"),
])
def test_bad_cases_are_clear_errors(golden, tmp_path, capsys, mutate, message):
    raw = json.loads(json.dumps(golden["cases"][0]))
    mutate(raw)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"cases": [raw]}))
    assert main(["metric-cases", str(path)]) == 2
    err = capsys.readouterr().err
    assert "case s1_0001" in err and message in err


# --------------------------------------------------------------------------- OpenCV pin

# What other releases fill for the probe polygons (recorded with opencv-python-headless
# 4.10.0.84 and 4.7.0.72): the probes tell the three behaviours apart.
OTHER_RELEASES = {
    "4.10.0": {"half_way": [[44, 133], [44, 134], [45, 132], [45, 133], [45, 134], [46, 133]],
               "outside": [[10, 199], [11, 199], [12, 199]]},
    "4.7.0": {"half_way": [[44, 133], [44, 134], [45, 132], [45, 133], [46, 133]],
              "outside": [[11, 199], [12, 199]]},
}


def test_installed_opencv_fills_as_the_pinned_release():
    pinned = {name: cells for name, (_, cells) in u.FILLPOLY_PROBES.items()}
    assert u.fillpoly_probe_cells() == pinned, f"OpenCV {cv2.__version__} is not the pinned behaviour"
    for release, cells in OTHER_RELEASES.items():
        assert cells != pinned, release
    # the half-way probe by hand: the edge (133, 46)-(134, 44) crosses row 45 at x = 133.5,
    # and the pinned fill stops at column 133 on that row
    assert [45, 134] not in pinned["half_way"] and [45, 133] in pinned["half_way"]


def test_another_fill_behaviour_is_refused(monkeypatch):
    real = cv2.fillPoly

    def like_4_10(img, pts, color):  # 4.8-4.10 add the half-way cell
        real(img, pts, color)
        if np.array_equal(pts[0], np.array(u.FILLPOLY_PROBES["half_way"][0], np.int32)):
            img[45, 134] = color

    monkeypatch.setattr(u.cv2, "fillPoly", like_4_10)
    monkeypatch.setattr(u, "_FILLPOLY_CHECKED", False)
    with pytest.raises(u.RasterBehaviourError, match="half_way"):
        u.rasterise(u.BoxArrays.from_boxes([10.0], [0.0], [4.0], [2.0], [0.0], ["car"]))
