"""The univ2x protocol's samples and ground truth on datasets written in the real
V2X-Seq-SPD layout, against expectations worked out by hand from UniV2X's code
(AIR-THU/UniV2X @ a6e4f6b): gen_example_data.py (2 Hz resampling, --update-label),
spd_to_uniad.py (interpolation of hidden boxes), spd_trajectory_api.py (waypoints, mask,
command) and spd_vehicle_e2e_dataset.py (the occupancy labels' future frames).

The motions are analytic (builders.py): on a line at v m/s with 10 Hz frame ids, the k-th
next 2 Hz sample sits v * (its time - t0) metres ahead. UniV2X moves boxes in float32 with
world coordinates kilometres from the origin (as here), so positions carry float32 rounding
(about 5e-4 m at 4 km); the tolerances below are a few of those ulps.
"""

import dataclasses
import gzip
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

import builders
from builders import DT_US, START_US, line, sequence, world_agent, write
from v2x_vlm_ros.cli import main
from v2x_vlm_ros.data import ground_truth as gt
from v2x_vlm_ros.data.dair import ALL_SEQUENCES, DairV2XDataset, DatasetConfig
from v2x_vlm_ros.data.errors import DatasetError
from v2x_vlm_ros.data.labels import LabelUpdate, rot_linear_interpolation
from v2x_vlm_ros.data.splits import UNIV2X_LABEL_UPDATE_FILE, UNIV2X_SPLIT_FILE, load_split
from v2x_vlm_ros.eval.metrics import PlanningMetrics
from v2x_vlm_ros.eval.protocols import COMPARABLE, NOT_COMPARABLE
from v2x_vlm_ros.geometry import planar_pose

F32_TOL = 3e-3  # metres: float32 at 4 km world coordinates, a few operations deep
UNIV2X = DatasetConfig(protocol="univ2x")
SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"


def ids(*numbers):
    return [f"{n:06d}" for n in numbers]


def edit(root, rel, fn):
    path = Path(root) / rel
    path.write_text(json.dumps(fn(json.loads(path.read_text()))))


def rename_sequences(root, mapping):
    """Give the written sequences other ids (e.g. ones in UniV2X's val split)."""
    for rel in ("vehicle-side/data_info.json", "infrastructure-side/data_info.json"):
        edit(root, rel, lambda rows: [{**r, "sequence_id": mapping.get(r["sequence_id"], r["sequence_id"])}
                                      for r in rows])
    edit(root, "cooperative/data_info.json", lambda rows: [
        {**r, "vehicle_sequence": mapping.get(r["vehicle_sequence"], r["vehicle_sequence"]),
         "infrastructure_sequence": mapping.get(r["infrastructure_sequence"], r["infrastructure_sequence"])}
        for r in rows])


def drop_vehicle_frames(root, frame_ids):
    """Frames that never made it into the dataset: frame-id gaps on the vehicle side."""
    gone = set(frame_ids)
    edit(root, "vehicle-side/data_info.json", lambda rows: [r for r in rows if r["frame_id"] not in gone])
    edit(root, "cooperative/data_info.json", lambda rows: [r for r in rows if r["vehicle_frame"] not in gone])


def by_id(ds):
    return {s.sample_id: s for s in ds}


# --------------------------------------------------------------------------- 2 Hz resampling


def test_resampling_keeps_the_first_frame_of_every_bucket_of_five_ids():
    # buckets from the first id: [0,5) [5,10) [10,15) [15,20) [20,25) [25,30) [30,35) ...
    frames = ids(*[i for i in range(60) if i not in (5, 6, 7) and not 20 <= i < 30])
    assert gt.resample_frames(frames) == ids(0, 8, 10, 15, 30, 35, 40, 45, 50, 55)
    # buckets start at the sequence's first id, not at a multiple of 5
    assert gt.resample_frames(ids(*range(3, 15))) == ids(3, 8, 13)
    # ids are sorted (as strings) first; a repeated id is one frame
    assert gt.resample_frames(ids(14, 2, 1, 1, 9)) == ids(1, 9, 14)
    assert gt.resample_frames([]) == []


def test_gaps_and_dropped_frames_resampling_and_kth_next_waypoints(tmp_path):
    v = 10.0
    paired = set(range(60)) - {5, 6, 7}  # no cooperative row: dropped from the cooperative set
    write(tmp_path, [sequence(line(v), n_frames=60, paired=paired)])
    drop_vehicle_frames(tmp_path, ids(*range(20, 30)))  # a one-second hole in the frame ids
    rename_sequences(tmp_path, {"0000": "0003"})  # a sequence of UniV2X's val split
    ds = DairV2XDataset(tmp_path, config=UNIV2X)
    assert ds.protocol == "univ2x" and ds.split.name == "val" and ds.split.path == str(UNIV2X_SPLIT_FILE)
    samples = by_id(ds)
    kept = ids(0, 8, 10, 15, 30, 35, 40, 45, 50, 55)
    assert [s.sample_id for s in ds] == kept
    # waypoint k is the k-th next 2 Hz sample whatever time passed: 0.8 s, 1.0 s, 1.5 s, 3.0 s ...
    first = samples["000000"]
    t = np.array([0.8, 1.0, 1.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5])
    np.testing.assert_allclose(first.future_xy[:9, 0], v * t, atol=F32_TOL)
    np.testing.assert_allclose(first.future_xy[:, 1], 0.0, atol=F32_TOL)
    assert first.future_mask.tolist() == [True] * 9 + [False]  # only the sequence's end masks
    assert first.future_xy[9].tolist() == [0.0, 0.0]
    # float32 values: UniV2X's ego box goes through mmdet3d's float32 transforms
    assert np.array_equal(first.future_xy, first.future_xy.astype(np.float32).astype(np.float64))
    near_end = samples["000045"]
    np.testing.assert_allclose(near_end.future_xy[:2, 0], [5.0, 10.0], atol=F32_TOL)
    assert near_end.future_mask.tolist() == [True, True] + [False] * 8
    # occupancy frames follow the same samples here (one sequence, time order = id order)
    assert [a is not None for a in first.future_agents] == [True] * 9 + [False]
    assert ds.univ2x_info()["counts"]["samples_2hz"] == 10

    # the time protocol on the same files: every cooperative row, waypoints by time, the
    # hole masks the waypoints at 2.0 s and 2.5 s (frames 20 and 25 do not exist)
    timed = by_id(DairV2XDataset(tmp_path))
    assert len(timed) == 60 - 3 - 10
    assert timed["000000"].future_mask.tolist() == [True] * 3 + [False, False] + [True] * 5
    np.testing.assert_allclose(timed["000000"].future_xy[:3, 0], [5.0, 10.0, 15.0], atol=1e-5)


def test_a_sequence_whose_cooperative_and_vehicle_sequences_differ(tmp_path):
    """Resampling and waypoints follow the cooperative ``vehicle_sequence``; the split and
    the occupancy frames follow the vehicle-side ``sequence_id`` (UniV2X's scene token)."""
    write(tmp_path, [sequence(line(10.0), n_frames=60)])
    rename_sequences(tmp_path, {"0000": "0003"})
    second_half = set(ids(*range(30, 60)))
    moved = {"vehicle_sequence": "0004", "infrastructure_sequence": "0004"}
    edit(tmp_path, "cooperative/data_info.json",
         lambda rows: [{**r, **moved} if r["vehicle_frame"] in second_half else r for r in rows])
    ds = DairV2XDataset(tmp_path, config=UNIV2X)
    # two cooperative sequences, each resampled from its own first id; both are scene 0003 (val)
    assert [s.sample_id for s in ds] == ids(*range(0, 60, 5))
    samples = by_id(ds)
    last_of_first_half = samples["000020"]
    np.testing.assert_allclose(last_of_first_half.future_xy[0], [5.0, 0.0], atol=F32_TOL)
    # its cooperative sequence ends at 25
    assert last_of_first_half.future_mask.tolist() == [True] + [False] * 9
    # ... while its occupancy frames run on through the scene: 25, 30, ..., 55 (7 frames)
    assert [a is not None for a in last_of_first_half.future_agents] == [True] * 7 + [False] * 3
    start_of_second = samples["000030"]
    np.testing.assert_allclose(start_of_second.future_xy[:5, 0], [5, 10, 15, 20, 25], atol=F32_TOL)
    assert start_of_second.future_mask.tolist() == [True] * 5 + [False] * 5


def test_occupancy_frames_are_the_next_evaluated_samples_in_point_cloud_time(tmp_path):
    """spd_vehicle_e2e_dataset.py sorts the evaluated samples by time and takes sample
    index + k when it is of the same scene: with two interleaved sequences every other
    future frame belongs to the other one and is missing, and the k-th occupancy frame is
    not the k-th waypoint's."""
    agents = lambda t: [world_agent(30.0 + 10.0 * t, 3.0, track_id="7")]  # noqa: E731
    a = sequence(line(5.0), n_frames=30, agents=agents)
    b = sequence(line(5.0), n_frames=30, stamps_us=[START_US + 250_000 + i * DT_US for i in range(30)])
    write(tmp_path, [a, b])
    rename_sequences(tmp_path, {"0000": "0003", "0001": "0007"})  # both in UniV2X's val split
    ds = DairV2XDataset(tmp_path, config=UNIV2X)
    first = by_id(ds)["000000"]
    # time order: A0 (0 s), B30 (0.25 s), A5 (0.5 s), B35, A10, B40, A15, B45, A20, B50, A25, B55
    assert [x is not None for x in first.future_agents] == [False, True] * 5
    # the occupancy of step 2 is sample A5 (0.5 s): the car at 30 + 10 * 0.5 m, not at 1.0 s
    (car,) = first.future_agents[1]
    assert car.track_id == "7"
    assert car.x == pytest.approx(35.0, abs=F32_TOL) and car.y == pytest.approx(3.0, abs=F32_TOL)
    (car,) = first.future_agents[9]  # sample A25, 2.5 s
    assert car.x == pytest.approx(55.0, abs=F32_TOL)
    # the waypoints follow A's own samples: 0.5 s each, five of them
    np.testing.assert_allclose(first.future_xy[:5, 0], 2.5 * np.arange(1, 6), atol=F32_TOL)
    assert first.future_mask.tolist() == [True] * 5 + [False] * 5


def test_pointcloud_timestamps_order_the_occupancy_frames(tmp_path):
    """UniV2X's sample time is the point cloud's stamp, not the image's."""
    write(tmp_path, [sequence(line(5.0), n_frames=30), sequence(line(5.0), n_frames=30)])
    rename_sequences(tmp_path, {"0000": "0003", "0001": "0007"})

    def later(r):  # image stamps identical for both sequences; B's point clouds 0.25 s later
        shift = 250_000 if r["sequence_id"] == "0007" else 0
        return {**r, "pointcloud_timestamp": str(int(r["image_timestamp"]) + shift)}

    edit(tmp_path, "vehicle-side/data_info.json", lambda rows: [later(r) for r in rows])
    first = by_id(DairV2XDataset(tmp_path, config=UNIV2X))["000000"]
    assert [x is not None for x in first.future_agents] == [False, True] * 5


def test_planning_labels_use_the_first_converted_sample_s_lidar_calibration(tmp_path):
    """UniV2X's nuScenes-style converter writes one LiDAR calibration (the first sample's)
    for every planning label, while the occupancy labels use each frame's own. With the
    second sequence's LiDAR turned by 0.1 rad on the novatel, its waypoints turn by 0.1 rad
    (inv(L0) L1 = Rz(0.1)) and its boxes do not."""
    agents = lambda t: [world_agent(130.0, 0.0, track_id="5")]  # noqa: E731 (the ego starts at 100 m)
    first = sequence(line(10.0), n_frames=30)
    later = [START_US + 10_000_000 + i * DT_US for i in range(30)]  # after the first sequence
    turned = sequence(line(10.0), n_frames=30, agents=agents, stamps_us=later)
    tilted = builders.NOVATEL_FROM_LIDAR @ planar_pose(0, 0, 0.1)
    turned = dataclasses.replace(turned, novatel_from_lidar=tilted)
    write(tmp_path, [first, turned])
    rename_sequences(tmp_path, {"0000": "0003", "0001": "0007"})
    ds = DairV2XDataset(tmp_path, config=UNIV2X)
    s = by_id(ds)["000030"]  # the first frame of the turned sequence
    d = 5.0 * np.arange(1, 6)
    np.testing.assert_allclose(s.future_xy[:5, 0], d * math.cos(0.1), atol=F32_TOL)
    np.testing.assert_allclose(s.future_xy[:5, 1], d * math.sin(0.1), atol=F32_TOL)
    (car,) = s.future_agents[0]  # the parked car, 30 m ahead of the current frame, not turned
    assert car.x == pytest.approx(30.0, abs=F32_TOL) and car.y == pytest.approx(0.0, abs=F32_TOL)
    counts = ds.univ2x_info()["counts"]
    assert counts["frames_whose_lidar_to_novatel_differs_from_the_first"] == 6
    # the first sequence, whose calibration is the first sample's, plans straight ahead
    np.testing.assert_allclose(by_id(ds)["000000"].future_xy[:5, 1], 0.0, atol=F32_TOL)


# --------------------------------------------------------------------------- labels


def tokenise_labels(root):
    """Give every cooperative box a token ``<frame>-<track>`` (real SPD labels carry one)."""
    for path in (Path(root) / "cooperative/label").glob("*.json"):
        objs = json.loads(path.read_text())
        path.write_text(json.dumps([{**o, "token": f"{path.stem}-{o['track_id']}"} for o in objs]))


def ghost_and_hidden_car(tmp_path, v=8.0):
    """One val sequence: the ego seen from the roadside (a box at the ego itself, track 99,
    in every frame) and car 1 driving at 4 m/s, hidden from 2.0 s to 3.4 s."""
    def agents(t):
        out = [world_agent(v * t, 0.0, track_id="99")]
        if not 2.0 <= t <= 3.45:
            out.append(world_agent(20.0 + 4.0 * t, -3.5, track_id="1"))
        return out

    write(tmp_path, [sequence(line(v), n_frames=60, agents=agents)])
    rename_sequences(tmp_path, {"0000": "0003"})
    tokenise_labels(tmp_path)
    update = tmp_path / "update.json"
    update.write_text(json.dumps({"vehicle-side": [], "infrastructure-side": [], "cooperative": [
        {"frame": fid, "token": f"{fid}-99", "operation": []} for fid in ids(*range(60))]}))
    return update


def test_label_update_deletes_the_ego_box_that_hides_every_collision(tmp_path):
    update = ghost_and_hidden_car(tmp_path)
    updated = DairV2XDataset(tmp_path, config=DatasetConfig(protocol="univ2x", label_update_file=str(update)))
    raw = DairV2XDataset(tmp_path, config=DatasetConfig(protocol="univ2x", label_update_file=None))
    for ds, ghost in ((updated, False), (raw, True)):
        s = ds[0]
        tracks = {a.track_id for step in s.future_agents if step for a in step}
        assert ("99" in tracks) is ghost
        metrics = PlanningMetrics(protocol="univ2x")
        for sample in ds:
            metrics.update(sample.future_xy, sample.future_xy, sample.future_mask, sample.future_agents)
        result = metrics.result()
        labelled = {h: sum(x.future_agents[k] is not None for x in ds) for h, k in (("2.5", 4), ("3.5", 6))}
        # with the ego's own box in the labels, the ground truth "collides" at every labelled
        # step, so no step could ever count as a collision
        expected = labelled if ghost else {"2.5": 0, "3.5": 0}
        assert {h: result["gt_collision_excluded"][h] for h in ("2.5", "3.5")} == expected
    counts = updated.univ2x_info()["counts"]
    assert counts["label_update_applied"] == 12  # one per 2 Hz sample; other frames are not converted
    assert counts["label_update_token_not_found"] == 0


def test_hidden_object_is_interpolated_between_its_sightings(tmp_path):
    update = ghost_and_hidden_car(tmp_path)
    ds = DairV2XDataset(tmp_path, config=DatasetConfig(protocol="univ2x", label_update_file=str(update)))
    first = ds[0]  # frame 0: the current frame is the local frame at t = 0
    for k, t in enumerate(0.5 * np.arange(1, 11)):
        if first.future_agents[k] is None:
            continue
        (car,) = [a for a in first.future_agents[k] if a.track_id == "1"]
        # sightings at 1.5 s and 3.5 s; constant velocity, so the interpolation is the truth
        assert car.x == pytest.approx(20.0 + 4.0 * t, abs=F32_TOL), t
        assert car.y == pytest.approx(-3.5, abs=F32_TOL)
        # mmdet3d's rotate() reads the yaw change off the matrix it multiplies by (the
        # transposed rotation), which with the builders' tilted novatel frame (pitch 0.01,
        # roll -0.02) leaves UniV2X's boxes 1.6e-4 rad off the road's heading
        assert math.sin(car.yaw) == pytest.approx(0.0, abs=1e-3)
        assert car.occluded_state == (3 if 2.0 <= t <= 3.0 else 0)  # UniV2X marks them occluded_state 3
    assert ds.univ2x_info()["counts"]["interpolated_boxes"] == 3  # samples 20, 25, 30
    # the time protocol uses the labels as written: the car is simply absent at 2.0-3.0 s
    timed = by_id(DairV2XDataset(tmp_path))["000000"]
    assert not any(a.track_id == "1" for a in timed.future_agents[3])


def test_rotation_interpolation_keeps_univ2x_s_wrap_rule():
    t0, t1, half = 0, 1_000_000, 500_000
    # across +-pi: 3 -> -3 goes the short way, through pi (not wrapped back to -pi)
    assert rot_linear_interpolation(3.0, -3.0, t0, t1, half) == pytest.approx(math.pi)
    assert rot_linear_interpolation(-3.0, 3.0, t0, t1, half) == pytest.approx(-math.pi)
    # a difference above pi is taken the other way round
    assert rot_linear_interpolation(2.0, 6.0, t0, t1, half) == pytest.approx(4.0 - math.pi)
    # results between pi and 2 pi are not folded (only below -pi or above 2 pi)
    assert rot_linear_interpolation(3.0, 3.3, t0, t1, half) == pytest.approx(3.15)
    assert rot_linear_interpolation(0.0, 1.0, t0, 4_000_000, 1_000_000) == pytest.approx(0.25)


def test_label_update_entries_apply_in_order_to_the_first_token():
    update = LabelUpdate("mem", {"000001": [("a", ()), ("b", ("Car", "77")), ("zz", ())]})
    objs = [{"token": "a", "type": "Car"}, {"token": "a", "type": "Truck"},
            {"token": "b", "type": "Pedestrian", "track_id": "5"}]
    out, applied, missing = update.apply("000001", objs)
    assert out == [{"token": "a", "type": "Truck"}, {"token": "b", "type": "Car", "track_id": "77"}]
    assert (applied, missing) == (2, 1)
    assert update.apply("000002", objs) == (objs, 0, 0)


# --------------------------------------------------------------------------- shipped files


def test_shipped_univ2x_files_are_the_originals():
    def sha(path):
        return hashlib.sha256(gzip.decompress(path.read_bytes())).hexdigest()

    assert sha(UNIV2X_SPLIT_FILE) == "0a59332221f3618639f34fb70678d03c5221ab80fd69f2cf41acffca0d8859fd"
    assert sha(UNIV2X_LABEL_UPDATE_FILE) == "a97d52fa9222d62eb396199e9bfaa4dc84da2d7dde734eed3feba5b0ea911667"
    val = load_split(UNIV2X_SPLIT_FILE, "val")
    assert len(val.sequences) == 21 and "3" in val.sequences and "92" in val.sequences
    update = LabelUpdate.load(UNIV2X_LABEL_UPDATE_FILE)
    frames = sorted(int(f) for f in update.entries)
    assert update.size == len(frames) == 6963  # one box per frame
    assert 1 + sum(b != a + 1 for a, b in zip(frames, frames[1:])) == 188  # in 188 runs of frames
    assert all(op == () for entries in update.entries.values() for _, op in entries)  # all deletions


def test_univ2x_protocol_refuses_dair_v2x_c(tmp_path):
    write(tmp_path, [sequence(line(5.0), n_frames=10)], layout="c")
    with pytest.raises(DatasetError, match="DAIR-V2X-C"):
        DairV2XDataset(tmp_path, config=UNIV2X)


# --------------------------------------------------------------------------- eval and labels


def test_eval_on_the_sample_runs_both_protocols_and_says_which(tmp_path, capsys):
    outs = {}
    for protocol in ("univ2x", "time"):
        out = tmp_path / f"{protocol}.json"
        md = tmp_path / f"{protocol}.md"
        assert main(["eval", str(SAMPLE), "--planner", "constant-velocity", "--protocol", protocol,
                     "--json", str(out), "--markdown", str(md), "--quiet"]) == 0
        outs[protocol] = json.loads(out.read_text())
        result = outs[protocol]
        assert result["protocol"] == protocol and result["dataset"]["protocol"] == protocol
        assert NOT_COMPARABLE in result["comparability"]
        for key in ("l2", "collision"):
            assert set(result[key]) >= {"2.5", "3.5", "4.5", "avg"}
        n = result["num_samples"]
        assert result["samples_per_horizon"] == {"2.5": n, "3.5": n, "4.5": n}
        assert set(result["gt_collision_excluded"]) == {"2.5", "3.5", "4.5"}
        assert all(sub["protocol"] == protocol for sub in result["by_scenario"].values())
        table = md.read_text()
        assert f"Protocol {protocol}" in table and NOT_COMPARABLE in table
        assert "GT collides 2.5 s" in table and f"| {protocol} | {n} |" in table
    # the sample has 9 sequences of 60 frames; UniV2X's val split (batch_split) holds two (0003, 0007)
    assert outs["time"]["num_samples"] == 540 and outs["univ2x"]["num_samples"] == 24
    assert outs["univ2x"]["dataset"]["split"] == "val"
    assert "synthetic" in outs["univ2x"]["comparability"]
    assert outs["univ2x"]["protocol_details"]["fillpoly"].startswith("OpenCV >= 4.11")


def test_default_protocol_is_time_on_the_synthetic_sample_and_univ2x_on_spd(tmp_path):
    out = tmp_path / "auto.json"
    assert main(["eval", str(SAMPLE), "--planner", "constant-velocity", "--json", str(out), "--quiet"]) == 0
    assert json.loads(out.read_text())["protocol"] == "time"
    write(tmp_path / "spd", [sequence(line(5.0), n_frames=20)])
    rename_sequences(tmp_path / "spd", {"0000": "0003"})
    assert main(["eval", str(tmp_path / "spd"), "--planner", "constant-velocity", "--json", str(out),
                 "--quiet"]) == 0
    result = json.loads(out.read_text())
    assert result["protocol"] == "univ2x" and result["num_samples"] == 4
    assert result["comparability"].startswith(NOT_COMPARABLE)  # 1 of the 21 val sequences
    assert "1 of the split's 21 sequences" in result["comparability"]
    assert main(["eval", str(tmp_path / "spd"), "--planner", "constant-velocity", "--collision", "obb",
                 "--quiet"]) == 2


def test_all_21_val_sequences_make_a_comparable_result(tmp_path):
    val = sorted(load_split(UNIV2X_SPLIT_FILE, "val").sequences, key=int)
    write(tmp_path, [sequence(line(5.0), n_frames=10) for _ in val])
    rename_sequences(tmp_path, {f"{i:04d}": f"{int(s):04d}" for i, s in enumerate(val)})
    out = tmp_path / "eval.json"
    assert main(["eval", str(tmp_path), "--planner", "constant-velocity", "--json", str(out), "--quiet"]) == 0
    result = json.loads(out.read_text())
    assert result["num_samples"] == 2 * 21
    assert result["comparability"].startswith(COMPARABLE)
    out_all = tmp_path / "all.json"
    assert main(["eval", str(tmp_path), "--planner", "constant-velocity", "--split", ALL_SEQUENCES,
                 "--json", str(out_all), "--quiet"]) == 0
    assert json.loads(out_all.read_text())["comparability"].startswith(NOT_COMPARABLE)


def test_univ2x_metric_counts_missing_frames_and_the_mask_touches_l2_only():
    from v2x_vlm_ros.data.records import AgentBox

    m = PlanningMetrics(protocol="univ2x")
    gt_xy = np.stack([np.arange(1, 11) * 2.0, np.zeros(10)], axis=1)
    pred = gt_xy.copy()
    pred[4] = [10.0, 5.0]  # 5 m to the left at 2.5 s
    # a 1 m box at the predicted waypoint: vertices round((v + 50) / 0.5) -> rows 109..111,
    # cols 119..121; footprints trunc(2 v + offset): pred rows 108..111, GT rows 98..101;
    # the predicted centre cell trunc((v + 49.75) / 0.5) = (109, 119) is inside the box
    car = AgentBox("1", "Car", 10.0, 5.0, 0.0, 1.0, 1.0, 1.0, 0.0)
    agents = [[] for _ in range(10)]
    agents[4] = [car]
    agents[6] = None  # a missing future frame: that step is excluded, labelled nowhere
    mask = np.ones(10, bool)
    mask[8] = False
    m.update(pred, gt_xy, mask, agents)
    r = m.result()
    assert r["l2"]["2.5"] == pytest.approx(5.0) and r["l2"]["4.5"] == 0.0
    assert r["collision"]["2.5"] == 100.0 and r["collision"]["3.5"] == 0.0
    assert r["unlabelled_steps"] == {"2.5": 0, "3.5": 1, "4.5": 0}
    assert r["valid_counts"] == {"2.5": 1, "3.5": 1, "4.5": 0}
    assert r["per_step"]["obj_box_col"][4] == 1.0 and r["per_step"]["obj_col"][4] == 1.0
    with pytest.raises(ValueError, match="time protocol"):
        PlanningMetrics("obb", protocol="univ2x")


def test_dair_training_configs_validate_with_univ2x():
    from v2x_vlm_ros.config import load_section
    from v2x_vlm_ros.training.config import TrainConfig

    config_dir = Path(__file__).resolve().parents[1] / "config"
    for name in ("train_dair_student.yaml", "train_dair_teacher.yaml"):
        cfg = load_section(TrainConfig, config_dir / name, "train")
        assert cfg.val_protocol == "univ2x" and cfg.split_file == "univ2x" and cfg.val_split == "val"
    synthetic = load_section(TrainConfig, config_dir / "train_synthetic_student.yaml", "train")
    assert synthetic.val_protocol == "auto"  # time on a synthetic world


def test_experiments_read_the_samples_with_the_protocol_given():
    from v2x_vlm_ros.eval.experiments import ExperimentError, ExperimentOptions, Experiments

    ex = Experiments(ExperimentOptions(root=str(SAMPLE), model="unused", protocol="univ2x"), progress=False)
    ex.open()
    assert ex.dataset.protocol == "univ2x" and len(ex.samples) == 24
    assert ex.dataset_info["protocol"] == "univ2x" and ex.dataset_info["split"] == "val"
    assert ex.protocol_report()["name"] == "univ2x"
    with pytest.raises(ExperimentError, match="protocol"):
        ExperimentOptions(root=str(SAMPLE), model="unused", protocol="exact")


def test_a_sample_with_a_broken_image_still_serves_as_a_future_frame(tmp_path, capsys):
    write(tmp_path, [sequence(line(10.0), n_frames=30)])
    rename_sequences(tmp_path, {"0000": "0003"})
    (tmp_path / "vehicle-side/image/000005.jpg").write_bytes(b"")
    out = tmp_path / "summary.json"
    argv = ["dataset", "summary", str(tmp_path), "--protocol", "univ2x", "--json", str(out), "--quiet"]
    assert main(argv) == 0
    summary = json.loads(out.read_text())
    assert summary["protocol"] == "univ2x" and summary["samples"] == 5  # 6 at 2 Hz, one skipped
    assert summary["skipped"] == {"image_invalid": 1}
    assert summary["univ2x"]["counts"]["samples_2hz"] == 6
    first = by_id(DairV2XDataset(tmp_path, config=UNIV2X))["000000"]
    np.testing.assert_allclose(first.future_xy[:5, 0], [5, 10, 15, 20, 25], atol=F32_TOL)
    assert first.future_agents[0] == []  # frame 5's labels are still the first step's occupancy
