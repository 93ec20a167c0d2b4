"""The DAIR-V2X reader on datasets written in the real layouts, with known motion."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

import builders
from builders import arc, braking, line, local_to_world, sequence, world_agent, write
from v2x_vlm_ros.data.dair import DairV2XDataset
from v2x_vlm_ros.data.errors import DatasetError
from v2x_vlm_ros.data.records import Command
from v2x_vlm_ros.geometry import invert_pose

# Real split files from AIR-THU/DAIR-V2X (Apache-2.0), copied unchanged; see SOURCES.md there.
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "dair-v2x-splits"


def by_id(ds):
    return {s.sample_id: s for s in ds}


def test_spd_line_pose_ground_truth_and_motion(tmp_path):
    write(tmp_path, [sequence(line(10.0), n_frames=70)])
    ds = DairV2XDataset(tmp_path)
    assert ds.layout == "spd" and len(ds) == 70 and len(ds.skips) == 0
    s = ds[15]
    assert s.sample_id == "000015" and s.sequence_id == "0000"
    # pose composed from novatel_to_world and lidar_to_novatel equals the written pose
    np.testing.assert_allclose(s.world_from_ego, local_to_world(15.0, 0.0, 0.0), atol=1e-6)
    assert abs(s.world_from_ego[0, 3]) > 1000  # kilometres from the origin, kept in float64
    np.testing.assert_allclose(s.future_xy[:, 0], 5.0 * np.arange(1, 11), atol=1e-5)
    np.testing.assert_allclose(s.future_xy[:, 1], 0.0, atol=1e-5)
    assert s.future_mask.all() and s.command is Command.FORWARD
    assert s.motion.speed_mps == pytest.approx(10.0, abs=1e-5)
    assert s.motion.heading_rad == pytest.approx(builders.HEADING, abs=1e-6)
    assert s.ego_timestamp_us == builders.START_US + 15 * builders.DT_US
    assert s.roadside_timestamp_us == s.ego_timestamp_us + 40_000
    assert s.ego_image_path.name == "000015.jpg" and s.ego_image_path.is_file()
    assert s.roadside_image_path.parent.parent.name == "infrastructure-side"


def test_spd_arc_and_braking_sequences(tmp_path):
    write(tmp_path, [sequence(arc(8.0, -0.25), n_frames=80), sequence(braking(12.0, 2.0), n_frames=80)])
    ds = by_id(DairV2XDataset(tmp_path))
    turning = ds["000010"]
    tau = 0.5 * np.arange(1, 11)
    r = 8.0 / -0.25
    np.testing.assert_allclose(turning.future_xy[:, 0], r * np.sin(-0.25 * tau), atol=1e-5)
    np.testing.assert_allclose(turning.future_xy[:, 1], r * (1 - np.cos(-0.25 * tau)), atol=1e-5)
    assert turning.command is Command.RIGHT
    assert turning.motion.yaw_rate_rps == pytest.approx(-0.25, abs=1e-6)
    stopping = ds["000080"]  # first frame of the braking sequence
    assert stopping.sequence_id == "0001" and stopping.motion.speed_mps == 0.0
    t = 0.5 * np.arange(1, 11)
    np.testing.assert_allclose(stopping.future_xy[:, 0], np.where(t < 6, 12 * t - t * t, 36.0),
                               atol=1e-5)


def test_masks_at_the_sequence_end(tmp_path):
    write(tmp_path, [sequence(line(5.0), n_frames=60)])
    ds = by_id(DairV2XDataset(tmp_path))
    assert list(ds["000034"].future_mask) == [True] * 5 + [False] * 5
    assert not ds["000059"].future_mask.any()
    assert ds["000059"].future_agents == [None] * 10


def test_agent_boxes_are_moved_into_the_current_ego_frame(tmp_path):
    # A static car 60 m ahead in the local frame, rotated 90 degrees, and a pedestrian.
    def agents(t):
        return [world_agent(60.0, 3.0, math.pi / 2), world_agent(20.0, -4.0, 0.0, "Pedestrian", "2")]
    write(tmp_path, [sequence(line(10.0), n_frames=80, agents=agents)])
    s = by_id(DairV2XDataset(tmp_path))["000010"]  # ego at x = 10 m
    for k in range(10):
        boxes = {b.track_id: b for b in s.future_agents[k]}
        car = boxes["1"]
        assert car.x == pytest.approx(50.0, abs=1e-3) and car.y == pytest.approx(3.0, abs=1e-3)
        assert car.yaw == pytest.approx(math.pi / 2, abs=1e-5)
        assert boxes["2"].category == "Pedestrian" and not boxes["2"].occupies_road
    # an agent that moves with the ego stays put relative to the future ego positions
    root = tmp_path / "moving"
    write(root, [sequence(arc(8.0, 0.2), n_frames=80,
                          agents=lambda t: [world_agent(*_ahead(arc(8.0, 0.2)(t), 12.0))])])
    s = by_id(DairV2XDataset(root))["000005"]
    for k in range(10):
        (car,) = s.future_agents[k]
        ego_then = np.linalg.inv(s.world_from_ego) @ local_to_world(*arc(8.0, 0.2)(0.5 + 0.5 * (k + 1)))
        expected = ego_then @ np.array([12.0, 0.0, 0.0, 1.0])
        assert car.x == pytest.approx(expected[0], abs=1e-3)
        assert car.y == pytest.approx(expected[1], abs=1e-3)


def _ahead(pose, dist):
    x, y, yaw = pose
    return (x + dist * math.cos(yaw), y + dist * math.sin(yaw), yaw)


@pytest.mark.parametrize("label_key", ["label_lidar_std_path", "label_lidar_path"])
def test_dair_v2x_c_layout_both_label_keys_and_empty_offset(tmp_path, label_key):
    agents = lambda t: [world_agent(40.0, 0.0)]  # noqa: E731
    paired = set(range(0, 60, 10))  # DAIR-V2X-C pairs only some vehicle frames
    write(tmp_path, [sequence(line(10.0), n_frames=60, agents=agents, offset=None, paired=paired)],
          layout="c", label_key=label_key)
    info = json.loads((tmp_path / "vehicle-side/data_info.json").read_text())
    assert label_key in info[0] and "batch_id" in info[0] and "frame_id" not in info[0]
    coop = json.loads((tmp_path / "cooperative/data_info.json").read_text())
    assert coop[0]["system_error_offset"] == ""
    ds = DairV2XDataset(tmp_path)
    assert ds.layout == "c" and len(ds) == 6 and len(ds.skips) == 0
    s = by_id(ds)["000000"]
    assert s.system_error_offset is None and s.sequence_id == "0"
    # future frames 10, 20, ... have cooperative world labels (world_8_points); 5, 15, ...
    # are not cooperative samples and are reached through the vehicle-side labels
    for k in range(10):
        (car,) = s.future_agents[k]
        assert car.x == pytest.approx(40.0, abs=1e-3) and car.y == pytest.approx(0.0, abs=1e-3)
        # world_8_points fix the footprint, so the heading is known up to a half turn
        assert math.sin(car.yaw) == pytest.approx(0.0, abs=1e-3)  # corners are in mm
        assert car.length == pytest.approx(4.5, abs=1e-3) and car.width == pytest.approx(1.8, abs=1e-3)
    np.testing.assert_allclose(s.future_xy[:, 0], 5.0 * np.arange(1, 11), atol=1e-5)


def test_spd_system_error_offset_is_carried(tmp_path):
    write(tmp_path, [sequence(line(1.0), n_frames=5, offset=(0.25, -1.5))])
    assert DairV2XDataset(tmp_path)[0].system_error_offset == (0.25, -1.5)


def test_real_split_fixtures_select_sequences_and_frames(tmp_path):
    write(tmp_path, [sequence(line(5.0), n_frames=10), sequence(line(5.0), n_frames=10)])
    coop_split = FIXTURES / "dair-v2x_example-cooperative-split-data.json"
    train = DairV2XDataset(tmp_path, split="train", split_file=coop_split)
    # the real file lists batch "0", which is sequence "0000"
    assert {s.sequence_id for s in train} == {"0000"} and len(train) == 10
    assert len(DairV2XDataset(tmp_path, split="val", split_file=coop_split)) == 0
    single = FIXTURES / "dair-v2x_example-single-vehicle-split-data.json"
    frames = json.loads(single.read_text())["train"]
    picked = DairV2XDataset(tmp_path, split="train", split_file=single)
    assert {s.sample_id for s in picked} == {f for f in frames if int(f) < 20}
    with pytest.raises(DatasetError, match="batch_split.holdout"):
        DairV2XDataset(tmp_path, split="holdout", split_file=coop_split)


def test_default_split_file_under_root(tmp_path):
    write(tmp_path, [sequence(line(5.0), n_frames=10), sequence(line(5.0), n_frames=12)])
    assert {s.sequence_id for s in DairV2XDataset(tmp_path, split="val")} == {"0001"}
    assert len(DairV2XDataset(tmp_path)) == 22  # no split: everything


def test_pose_matches_inverse_roundtrip(tmp_path):
    write(tmp_path, [sequence(arc(6.0, 0.1), n_frames=20)])
    s = DairV2XDataset(tmp_path)[7]
    np.testing.assert_allclose(invert_pose(s.world_from_ego) @ s.world_from_ego, np.eye(4), atol=1e-12)
