"""A small generated V2X-Seq-SPD dataset, checked from the files it wrote.

Poses are read back with the calibration readers (world <- lidar = novatel_to_world @
lidar_to_novatel), so these tests check what a reader of the files would see.
"""

import json
import math
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from v2x_vlm_ros.data.calib import read_intrinsics, read_lidar_to_novatel, read_rigid
from v2x_vlm_ros.data.labels import read_label_file
from v2x_vlm_ros.data.records import DAIR_CLASSES
from v2x_vlm_ros.data.synth import SCENARIOS, SynthConfig, generate, simulate
from v2x_vlm_ros.data.synth.describe import BANNED
from v2x_vlm_ros.geometry import yaw_of

CFG = SynthConfig(num_sequences=9, seed=11, duration_s=12.0, image_size=(128, 72), jpeg_quality=60,
                  conflict_share=1.0)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    summary = generate(root, CFG, progress=False)
    return root, summary


def _json(path: Path):
    return json.loads(path.read_text())


def _vehicle_sequences(root: Path) -> dict:
    seqs = defaultdict(list)
    for rec in _json(root / "vehicle-side/data_info.json"):
        seqs[rec["sequence_id"]].append(rec)
    return {k: sorted(v, key=lambda r: int(r["image_timestamp"])) for k, v in seqs.items()}


def _poses(root: Path, recs) -> tuple[np.ndarray, list]:
    side = root / "vehicle-side"
    t = np.array([int(r["image_timestamp"]) for r in recs]) * 1e-6
    poses = [read_rigid(side / r["calib_novatel_to_world_path"])
             @ read_lidar_to_novatel(side / r["calib_lidar_to_novatel_path"]) for r in recs]
    return t, poses


def _scenarios(root: Path) -> dict:
    return _json(root / "scenarios.json")


def test_summary_and_sidecars(dataset):
    root, summary = dataset
    assert summary["num_sequences"] == 9
    json.dumps(summary, allow_nan=False)  # plain JSON (the CLI may print it)
    occluded = summary["sequences"][0]
    assert occluded["scenario"] == "occluded_crossing" and occluded["hidden_until_s"] >= 2.0
    assert occluded["variant"] == "agent" and occluded["pair"] == "0001"
    assert summary["sequences"][1]["variant"] == "twin" and summary["sequences"][1]["pair"] == "0000"
    assert summary["vehicle_frames"] == 9 * 120
    assert _scenarios(root) == summary["scenarios"]
    assert set(summary["scenarios"].values()) == set(SCENARIOS)
    ids = [f"{i:04d}" for i in range(9)]
    assert summary["split"] == {"train": ids, "val": [], "test": []}
    lines = (root / "descriptions.jsonl").read_text().splitlines()
    assert len(lines) == 1080
    split = _json(root / "split_datas/cooperative-split-data.json")
    assert split["batch_split"]["train"] == ids


def test_timestamps_are_microseconds_at_10_hz_and_roadside_carries_its_clock_offset(dataset):
    root, _ = dataset
    veh = _vehicle_sequences(root)
    inf = defaultdict(list)
    for rec in _json(root / "infrastructure-side/data_info.json"):
        inf[rec["sequence_id"]].append(rec)
    coop = _json(root / "cooperative/data_info.json")
    offsets = {}
    veh_stamp = {r["frame_id"]: int(r["image_timestamp"]) for recs in veh.values() for r in recs}
    inf_stamp = {r["frame_id"]: int(r["image_timestamp"]) for recs in inf.values() for r in recs}
    for seq_id, recs in veh.items():
        stamps = [r["image_timestamp"] for r in recs]
        assert all(re.fullmatch(r"\d{16}", s) for s in stamps)
        us = np.array([int(s) for s in stamps])
        assert 1.6e15 < us[0] < 1.7e15
        assert np.all(np.diff(us) > 0)
        assert np.all(np.abs(np.diff(us) - 100_000) <= 2 * CFG.stamp_jitter_us)
        assert np.any(us % 100_000 != us[0] % 100_000)  # jittered, not a perfect grid
        # roadside stamps = true capture time + a constant clock offset of 20..200 ms
        sim = simulate(CFG, int(seq_id))
        offsets[int(seq_id)] = sim.clock_offset_us
        true_us = sim.start_us + np.round(sim.infra_t * 1e6).astype(np.int64)
        written = np.array([int(r["image_timestamp"]) for r in inf[seq_id]])
        offset = written - true_us
        assert np.all(offset == offset[0]) and 20_000 <= abs(offset[0]) <= 200_000
        assert np.all(np.diff(written) > 0)
    # each cooperative pair is the nearest roadside frame in true time
    for row in coop:
        offset = offsets[int(row["vehicle_sequence"])]
        gap = veh_stamp[row["vehicle_frame"]] - (inf_stamp[row["infrastructure_frame"]] - offset)
        assert abs(gap) <= 50_000 + 2 * CFG.stamp_jitter_us


def test_world_coordinates_are_kilometres_from_the_origin(dataset):
    root, _ = dataset
    for recs in _vehicle_sequences(root).values():
        _, poses = _poses(root, recs[:3])
        for pose in poses:
            assert min(abs(pose[0, 3]), abs(pose[1, 3])) > 1000.0
            assert 15.0 < pose[2, 3] < 35.0  # ground at a non-zero elevation + LiDAR height
            assert np.allclose(pose[:3, :3] @ pose[:3, :3].T, np.eye(3), atol=1e-6)
        nov = read_lidar_to_novatel(root / "vehicle-side" / recs[0]["calib_lidar_to_novatel_path"])
        assert abs(abs(yaw_of(nov)) - math.pi / 2) < 0.05 and 0.5 < np.linalg.norm(nov[:3, 3]) < 1.5


def _finite_differences(t, poses):
    p = np.array([q[:3, 3] for q in poses])
    yaw = np.unwrap([yaw_of(q) for q in poses])
    dt = np.diff(t)
    v = np.linalg.norm(np.diff(p[:, :2], axis=0), axis=1) / dt
    tv = 0.5 * (t[1:] + t[:-1])
    a = np.diff(v) / np.diff(tv)
    ta = 0.5 * (tv[1:] + tv[:-1])
    jerk = np.diff(a) / np.diff(ta)
    yaw_rate = np.diff(yaw) / dt
    return v, a, jerk, yaw_rate, yaw, p


def test_written_ego_motion_respects_the_limits(dataset):
    root, _ = dataset
    kappa_max = math.tan(CFG.max_steer_rad) / CFG.wheelbase_m
    for seq_id, recs in _vehicle_sequences(root).items():
        v, a, jerk, yaw_rate, _, p = _finite_differences(*_poses(root, recs))
        assert 0.0 <= v.min() and v.max() < 14.0, seq_id
        assert np.abs(a).max() <= CFG.accel_limit + 0.05, seq_id
        assert np.abs(jerk).max() <= CFG.jerk_limit + 0.2, seq_id
        assert np.abs(v * yaw_rate).max() <= CFG.lat_accel_limit + 0.1, seq_id
        assert np.all(np.abs(yaw_rate) <= kappa_max * v * 1.05 + 0.01), seq_id
        assert np.ptp(p[:, 2]) < 1e-6  # flat ground, level vehicle


def test_turns_turn_and_the_others_do_not(dataset):
    root, _ = dataset
    scenarios = _scenarios(root)
    for seq_id, recs in _vehicle_sequences(root).items():
        *_, yaw, _ = _finite_differences(*_poses(root, recs))
        turn = math.degrees(yaw[-1] - yaw[0])
        if scenarios[seq_id] == "hidden_queue" and seq_id == "0006":
            # the informed ego stops behind the hidden queue inside the turn
            assert -90.0 - 8.0 < turn < -20.0, turn
            continue
        want = {"left_turn": 90.0, "right_turn": -90.0, "hidden_queue": -90.0}.get(scenarios[seq_id], 0.0)
        assert turn == pytest.approx(want, abs=8.0 if want else 1.0), (scenarios[seq_id], turn)


def test_ego_yields_to_the_hidden_hazard_only_when_it_is_there(dataset):
    """The informed ego slows to (nearly) a stand for the hidden crossing agent, then drives
    on; its twin keeps its speed; at the stop sign the ego stops, waits, drives on."""
    root, summary = dataset
    scenarios = _scenarios(root)
    speeds = {seq_id: _finite_differences(*_poses(root, recs))[0]
              for seq_id, recs in _vehicle_sequences(root).items()}
    agent, twin = speeds["0000"], speeds["0001"]
    low = int(np.argmin(agent))
    assert agent[low] < 2.0 and agent[low:].max() > agent[low] + 2.0  # yield and restart
    assert twin.min() > twin[0] - 1.5  # no hazard: keeps its speed
    onset = summary["sequences"][0]["brake_onset_s"]
    assert 0.0 < onset < 4.0
    k = int(onset * 10) - 2
    assert np.allclose(agent[:k], twin[:k], atol=1e-6)  # the same ego until the informed one brakes
    stop = speeds["0008"]
    assert scenarios["0008"] == "stop_sign"
    stand = np.nonzero(stop < 0.05)[0]
    assert len(stand) >= 5 and stop[stand[-1] + 1:].max() > 1.0


def test_follower_slows(dataset):
    root, _ = dataset
    scenarios = _scenarios(root)
    for seq_id, recs in _vehicle_sequences(root).items():
        v, *_ = _finite_differences(*_poses(root, recs))
        if scenarios[seq_id] == "follow_lead":
            assert v[-1] < v[0] - 2.0
            coop = root / "cooperative/label" / f"{recs[-1]['frame_id']}.json"
            lead = [b for b in read_label_file(coop) if b.track_id == "1"][0]
            assert lead.x > 4.6 and abs(lead.y) < 1.0  # still ahead in our lane


def test_labels(dataset):
    root, _ = dataset
    for recs in _vehicle_sequences(root).values():
        for rec in recs[::17]:
            coop = read_label_file(root / "cooperative/label" / f"{rec['frame_id']}.json")
            assert coop and all(b.category in DAIR_CLASSES for b in coop)
            assert "0" not in {b.track_id for b in coop}  # the ego is not labelled
            assert {b.occluded_state for b in coop} <= {0, 1, 2}
            assert {b.from_side for b in coop} <= {"veh", "inf", "veh_and_inf"}
            cam = read_label_file(root / "vehicle-side" / rec["label_camera_std_path"])
            assert {b.track_id for b in cam} <= {b.track_id for b in coop}
            assert all(b.from_side in ("veh", "veh_and_inf") for b in cam)
    infra = _json(root / "infrastructure-side/data_info.json")
    with_ego = [read_label_file(root / "infrastructure-side" / r["label_lidar_std_path"]) for r in infra[::9]]
    assert any(b.track_id == "0" and b.category == "Car" for labels in with_ego for b in labels)


def test_visible_labels_project_into_the_image(dataset):
    """Camera labels (LiDAR frame) projected with the written calibration land in the
    image, and for unoccluded agents on the agent's own pixels in a re-rendered id mask."""
    root, _ = dataset
    checked = hits = 0
    for seq_id, recs in _vehicle_sequences(root).items():
        sim = simulate(CFG, int(seq_id))
        for k in range(0, len(recs), 11):
            rec = recs[k]
            side = root / "vehicle-side"
            K = read_intrinsics(side / rec["calib_camera_intrinsic_path"]).K
            cam_from_lidar = read_rigid(side / rec["calib_lidar_to_camera_path"])
            labels = [b for b in read_label_file(side / rec["label_camera_std_path"])
                      if b.occluded_state == 0]
            if not labels:
                continue
            _, mask, _ = sim.render_vehicle(k, with_image=False)
            scale = mask.shape[1] / CFG.image_size[0]
            for box in labels:
                pc = cam_from_lidar @ np.array([box.x, box.y, box.z, 1.0])
                if pc[2] <= 0:
                    continue  # passing beside the camera: only its front part is in view
                u, v, _ = K @ (pc[:3] / pc[2])
                if not (0 <= u < CFG.image_size[0] and 0 <= v < CFG.image_size[1]):
                    continue  # truncated at the image border: its centre is outside
                agent = next(a for a in sim.scene.agents if a.track_id == box.track_id)
                mu, mv = int(u * scale), int(v * scale)
                patch = mask[max(mv - 1, 0):mv + 2, max(mu - 1, 0):mu + 2]
                checked += 1
                hits += bool(np.any(patch == sim.ident(agent)))
    assert checked >= 10 and hits >= 0.9 * checked, (checked, hits)


def test_roadside_labels_project_onto_their_agents(dataset):
    """Roadside labels (virtual LiDAR frame) through the written roadside calibration land
    on the agent's pixels of a re-rendered roadside id mask; the written virtual LiDAR pose
    agrees with the world coordinates of the vehicle-side labels."""
    root, _ = dataset
    side = root / "infrastructure-side"
    infra = defaultdict(list)
    for rec in _json(side / "data_info.json"):
        infra[rec["sequence_id"]].append(rec)
    checked = hits = 0
    for seq_id, recs in infra.items():
        sim = simulate(CFG, int(seq_id))
        for j in range(1, len(recs), 13):
            rec = recs[j]
            K = read_intrinsics(side / rec["calib_camera_intrinsic_path"]).K
            cam_from_vl = read_rigid(side / rec["calib_virtuallidar_to_camera_path"])
            world_from_vl = read_rigid(side / rec["calib_virtuallidar_to_world_path"])
            assert np.allclose(world_from_vl, sim.world.world_from_local @ sim.world.local_from_virtuallidar,
                               rtol=0.0, atol=1e-6)
            _, mask, _ = sim.render_infra(j, with_image=False)
            scale = mask.shape[1] / CFG.image_size[0]
            for box in read_label_file(side / rec["label_lidar_std_path"]):
                if box.occluded_state != 0:
                    continue
                pc = cam_from_vl @ np.array([box.x, box.y, box.z, 1.0])
                u, v, _ = K @ (pc[:3] / pc[2])
                if pc[2] <= 0 or not (0 <= u < CFG.image_size[0] and 0 <= v < CFG.image_size[1]):
                    continue
                agent = next(a for a in sim.scene.agents + [sim.scene.ego] if a.track_id == box.track_id)
                mu, mv = int(u * scale), int(v * scale)
                checked += 1
                hits += bool(np.any(mask[max(mv - 1, 0):mv + 2, max(mu - 1, 0):mu + 2] == sim.ident(agent)))
    assert checked >= 10 and hits >= 0.9 * checked, (checked, hits)


def test_descriptions_follow_the_rules(dataset):
    root, _ = dataset
    for line in (root / "descriptions.jsonl").read_text().splitlines():
        text = json.loads(line)["description"]
        low = text.lower()
        assert 20 < len(text) < 300
        assert not any(w in low for w in BANNED)
        for word in ("turn left", "turn right", "yield", "stop", "left_turn", "right_turn",
                     "follow_lead", "occluded", "straight", "forward"):
            assert word not in low
    lines = (root / "descriptions.jsonl").read_text().splitlines()
    texts = {json.loads(line)["description"] for line in lines}
    assert len(texts) > 100  # phrasing varies


def test_dair_v2x_c_layout(tmp_path):
    cfg = SynthConfig(num_sequences=2, seed=4, duration_s=2.0, image_size=(64, 36), layout="c",
                      jpeg_quality=50)
    generate(tmp_path, cfg, progress=False)
    coop = _json(tmp_path / "cooperative/data_info.json")
    assert len(coop) == 40
    for row in coop[::7]:
        for key in ("vehicle_image_path", "infrastructure_image_path", "cooperative_label_path"):
            assert (tmp_path / row[key]).is_file()
        labels = _json(tmp_path / row["cooperative_label_path"])
        assert labels and all(len(obj["world_8_points"]) == 8 for obj in labels)
    veh = _json(tmp_path / "vehicle-side/data_info.json")
    assert {r["batch_id"] for r in veh} == {"0", "1"} and "sequence_id" not in veh[0]
