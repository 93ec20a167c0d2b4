"""``v2x-vlm bag``: a DAIR-V2X dataset as a rosbag2, read back with rosbags and with mcap."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from builders import CAMERA_FROM_LIDAR, line, sequence, write
from v2x_vlm_ros.cli import main
from v2x_vlm_ros.conversion import messages as m
from v2x_vlm_ros.data.calib import read_rigid
from v2x_vlm_ros.data.dair import DairV2XDataset
from v2x_vlm_ros.geometry import invert_pose
from v2x_vlm_ros.tools import bag as bagtool

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"
SCENARIO = "occluded_crossing"  # two sequences (the pair 0000, 0001), 120 samples

PER_SAMPLE = [bagtool.EGO_IMAGE, bagtool.ROADSIDE_IMAGE, bagtool.ODOMETRY, bagtool.GROUND_TRUTH_PATH,
              bagtool.COMMAND, bagtool.DESCRIPTION, bagtool.TF]


@pytest.fixture(scope="module")
def samples():
    ds = DairV2XDataset(SAMPLE, scenario=SCENARIO)
    out = sorted(ds, key=lambda s: (s.sequence_id, s.frame_index))
    assert len(out) == 120 and len({s.sequence_id for s in out}) == 2
    return out


@pytest.fixture(scope="module", params=["sqlite3", "mcap"])
def written(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(request.param) / "bag"
    assert main(["bag", str(SAMPLE), str(out), "--storage", request.param, "--scenario", SCENARIO,
                 "--quiet"]) == 0
    return request.param, out, bagtool.read_bag(out)


def metadata(out):
    return yaml.safe_load((out / "metadata.yaml").read_text())["rosbag2_bagfile_information"]


def test_every_topic_has_one_message_per_sample(written, samples):
    _, _, topics = written
    assert {t: len(v) for t, v in topics.items()} == {**{t: len(samples) for t in PER_SAMPLE},
                                                      bagtool.TF_STATIC: 1}


def test_stamps_are_the_datasets_and_images_are_the_stored_bytes(written, samples):
    _, _, topics = written
    for s, (t_ego, ego), (t_rs, rs) in zip(samples, topics[bagtool.EGO_IMAGE],
                                           topics[bagtool.ROADSIDE_IMAGE]):
        assert t_ego == t_rs == s.ego_timestamp_us * 1000  # one sample's messages log together
        assert m.stamp_to_ns(ego.header.stamp) == s.ego_timestamp_us * 1000
        assert m.stamp_to_ns(rs.header.stamp) == s.roadside_timestamp_us * 1000
        assert (ego.header.frame_id, rs.header.frame_id) == ("ego_camera", "roadside_camera")
        assert ego.format == rs.format == "jpeg"
        assert bytes(ego.data) == Path(s.ego_image_path).read_bytes()
        assert bytes(rs.data) == Path(s.roadside_image_path).read_bytes()
    assert m.compressed_msg_to_bgr(topics[bagtool.EGO_IMAGE][0][1], "bag").shape == (81, 144, 3)


def test_ground_truth_command_and_description(written, samples):
    _, _, topics = written
    rows = zip(samples, topics[bagtool.GROUND_TRUTH_PATH], topics[bagtool.COMMAND],
               topics[bagtool.DESCRIPTION])
    for s, (_, path), (_, command), (_, description) in rows:
        assert path.header.frame_id == "base_link"
        assert m.stamp_to_ns(path.header.stamp) == s.ego_timestamp_us * 1000
        assert np.array_equal(m.path_to_xy(path), s.future_xy[s.future_mask])
        assert m.command_from_string(command.data) is s.command
        assert description.data == s.description
    assert any(not s.future_mask.all() for s in samples)  # sequence ends: shorter paths were written


def test_odometry_and_tf_are_the_world_pose_minus_the_map_origin(written, samples):
    _, out, topics = written
    origin_xy = samples[0].world_from_ego[:2, 3]
    assert json.loads(metadata(out)["custom_data"][bagtool.MAP_ORIGIN_KEY]) == list(origin_xy)
    for s, (_, odom), (_, tf) in zip(samples, topics[bagtool.ODOMETRY], topics[bagtool.TF]):
        expected = s.world_from_ego.copy()
        expected[:2, 3] -= origin_xy
        pose, speed, yaw_rate = m.odometry_to_state(odom)
        assert (odom.header.frame_id, odom.child_frame_id) == ("map", "base_link")
        assert m.stamp_to_ns(odom.header.stamp) == s.ego_timestamp_us * 1000
        assert np.array_equal(pose[:3, 3], expected[:3, 3]) and np.allclose(pose, expected, atol=1e-9)
        assert (speed, yaw_rate) == (s.motion.speed_mps, s.motion.yaw_rate_rps)
        (key, (stamp, matrix)), = m.tf_to_matrices(tf).items()
        assert key == ("map", "base_link") and stamp == s.ego_timestamp_us * 1000
        assert np.allclose(matrix, expected, atol=1e-9)
    assert np.abs(pose[:2, 3]).max() > 10  # the second sequence is elsewhere in the map


def test_tf_static_is_the_camera_calibration_with_latched_qos(written, samples):
    _, out, topics = written
    (t, msg), = topics[bagtool.TF_STATIC]
    assert t == samples[0].ego_timestamp_us * 1000
    (key, (_, matrix)), = m.tf_to_matrices(msg).items()
    calib = SAMPLE / "vehicle-side/calib/lidar_to_camera" / f"{samples[0].vehicle_frame}.json"
    assert key == ("base_link", "ego_camera")
    assert np.allclose(matrix, invert_pose(read_rigid(calib)), atol=1e-12)

    from rosbags.highlevel import AnyReader
    from rosbags.interfaces import QosDurability, QosReliability

    with AnyReader([out]) as reader:
        qos = {c.topic: c.ext.offered_qos_profiles for c in reader.connections}
    (static,) = qos[bagtool.TF_STATIC]
    assert (static.durability, static.reliability, static.depth) == (
        QosDurability.TRANSIENT_LOCAL, QosReliability.RELIABLE, 1)
    assert all(q[0].durability == QosDurability.VOLATILE for t, q in qos.items() if t != bagtool.TF_STATIC)


def test_metadata_version_storage_and_type_hashes(written):
    storage, out, _ = written
    meta = metadata(out)
    version, distro = {"sqlite3": (8, "humble"), "mcap": (9, "jazzy")}[storage]
    assert (meta["version"], meta["storage_identifier"]) == (version, storage)
    assert meta["relative_file_paths"] == [f"bag.{'db3' if storage == 'sqlite3' else 'mcap'}"]
    store = m.rosbags_types(distro).typestore
    for row in meta["topics_with_message_count"]:
        topic = row["topic_metadata"]
        assert topic["type"] == bagtool.TOPIC_TYPES[topic["name"]]
        assert topic["type_description_hash"] == store.hash_rihs01(topic["type"])
    qos = meta["topics_with_message_count"][0]["topic_metadata"]["offered_qos_profiles"]
    assert isinstance(qos, str if version == 8 else list)  # Humble's string form, Jazzy's list


@pytest.mark.parametrize("written", ["mcap"], indirect=True)
def test_mcap_reads_independently_with_mcap_ros2(written, samples):
    _, out, _ = written
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    counts, odometry, image = {}, None, None
    with open(out / "bag.mcap", "rb") as f:
        for _, channel, message, decoded in make_reader(f, decoder_factories=[DecoderFactory()]) \
                .iter_decoded_messages():
            counts[channel.topic] = counts.get(channel.topic, 0) + 1
            if channel.topic == bagtool.ODOMETRY and odometry is None:
                odometry = (message.log_time, decoded)
            if channel.topic == bagtool.EGO_IMAGE and image is None:
                image = decoded
    assert counts == {**{t: len(samples) for t in PER_SAMPLE}, bagtool.TF_STATIC: 1}
    t, odom = odometry
    assert t == samples[0].ego_timestamp_us * 1000
    assert odom.child_frame_id == "base_link" and odom.header.frame_id == "map"
    assert (odom.pose.pose.position.x, odom.pose.pose.position.y) == (0.0, 0.0)
    assert odom.pose.pose.position.z == samples[0].world_from_ego[2, 3]
    assert odom.twist.twist.linear.x == samples[0].motion.speed_mps
    assert bytes(image.data) == Path(samples[0].ego_image_path).read_bytes()


def test_cli_refuses_an_existing_output(tmp_path, capsys):
    out = tmp_path / "exists"
    out.mkdir()
    assert main(["bag", str(SAMPLE), str(out), "--storage", "mcap", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert str(out) in err and "exists" in err
    assert list(out.iterdir()) == []
    ds = DairV2XDataset(SAMPLE, scenario=SCENARIO)
    with pytest.raises(FileExistsError, match="exists"):
        bagtool.write_bag(ds, out, "sqlite3", progress=False)


def test_dair_v2x_c_layout_distro_override_and_missing_calibration(tmp_path):
    root = write(tmp_path / "c", [sequence(line(6.0), n_frames=12)], layout="c")
    ds = DairV2XDataset(root)
    summary = bagtool.write_bag(ds, tmp_path / "with_calib", "mcap", distro="humble", progress=False)
    assert (summary["version"], summary["distro"], summary["samples"]) == (9, "humble", 12)
    assert summary["topics"][bagtool.TF_STATIC] == 1 and summary["notes"] == []
    (_, tf), = bagtool.read_bag(tmp_path / "with_calib", topics=[bagtool.TF_STATIC])[bagtool.TF_STATIC]
    assert np.allclose(m.tf_to_matrices(tf)[("base_link", "ego_camera")][1], invert_pose(CAMERA_FROM_LIDAR),
                       atol=1e-6)
    meta = metadata(tmp_path / "with_calib")
    humble = m.rosbags_types("humble").typestore
    assert all(r["topic_metadata"]["type_description_hash"] == humble.hash_rihs01(r["topic_metadata"]["type"])
               for r in meta["topics_with_message_count"])

    for f in (root / "vehicle-side/calib/lidar_to_camera").iterdir():
        f.unlink()
    summary = bagtool.write_bag(ds, tmp_path / "no_calib", "sqlite3", progress=False)
    assert bagtool.TF_STATIC not in summary["topics"] and "file not found" in summary["notes"][0]
    assert bagtool.TF_STATIC not in bagtool.read_bag(tmp_path / "no_calib")


def test_empty_selection_is_refused_and_leaves_nothing(tmp_path, capsys):
    out = tmp_path / "bag"
    assert main(["bag", str(SAMPLE), str(out), "--storage", "mcap", "--split", "test", "--quiet"]) == 2
    assert "no samples" in capsys.readouterr().err
    assert not out.exists()


def test_a_failure_while_writing_leaves_no_half_bag(tmp_path):
    root = write(tmp_path / "ds", [sequence(line(6.0), n_frames=12)])
    ds = DairV2XDataset(root)
    ds[11].ego_image_path.unlink()  # indexed, then gone
    with pytest.raises(FileNotFoundError):
        bagtool.write_bag(ds, tmp_path / "bag", "sqlite3", progress=False)
    assert not (tmp_path / "bag").exists()
