"""Bad input to the reader: each case is a clear error naming file and field, or a counted
skip that names them."""

import json

import numpy as np
import pytest

from builders import TINY_JPEG, line, sequence, write
from v2x_vlm_ros.data.dair import DairV2XDataset, DatasetConfig
from v2x_vlm_ros.data.errors import DatasetError


@pytest.fixture()
def root(tmp_path):
    return write(tmp_path, [sequence(line(10.0), n_frames=40, agents=lambda t: [])])


def edit_json(path, fn):
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def only_skip(ds, code):
    assert ds.skips.counts == {code: 1}, ds.skips.items
    return ds.skips.items[0]


@pytest.mark.parametrize("rel", ["vehicle-side/data_info.json", "infrastructure-side/data_info.json",
                                 "cooperative/data_info.json"])
def test_missing_data_info_is_an_error_naming_the_file(root, rel):
    (root / rel).unlink()
    with pytest.raises(DatasetError, match=rel.replace("/", ".") + ": file not found"):
        DairV2XDataset(root)


def test_malformed_data_info_is_an_error_naming_the_file(root):
    (root / "cooperative/data_info.json").write_text('[{"vehicle_frame": "000000",')
    with pytest.raises(DatasetError, match="cooperative.data_info.json: malformed JSON"):
        DairV2XDataset(root)
    (root / "cooperative/data_info.json").write_text('{"not": "a list"}')
    with pytest.raises(DatasetError, match="expected a list of records"):
        DairV2XDataset(root)


def test_unknown_layout_is_an_error(root):
    (root / "cooperative/data_info.json").write_text('[{"something": 1}]')
    with pytest.raises(DatasetError, match="neither V2X-Seq-SPD"):
        DairV2XDataset(root)


def test_missing_key_skips_the_record_and_its_sample(root):
    edit_json(root / "vehicle-side/data_info.json", lambda d: d[3].pop("calib_novatel_to_world_path"))
    ds = DairV2XDataset(root)
    skips = ds.skips.counts
    assert skips == {"record_invalid": 1, "vehicle_frame_unavailable": 1}
    expected = "vehicle-side/data_info.json: [3].calib_novatel_to_world_path: missing key"
    assert expected in str(ds.skips.items[0])
    assert len(ds) == 39 and "000003" not in {s.sample_id for s in ds}


def test_non_numeric_timestamp_is_a_named_skip(root):
    edit_json(root / "vehicle-side/data_info.json", lambda d: d[5].update(image_timestamp="16261551xx"))
    ds = DairV2XDataset(root)
    item = ds.skips.items[0]
    assert item.code == "timestamp_invalid" and item.field == "[5].image_timestamp"
    assert "16261551xx" in item.reason


def test_out_of_order_timestamp_costs_one_frame_and_masks_its_waypoint(root):
    def jump(d):
        d[10]["image_timestamp"] = str(int(d[30]["image_timestamp"]) + 7)
    edit_json(root / "vehicle-side/data_info.json", jump)
    ds = DairV2XDataset(root)
    assert ds.skips.counts == {"timestamp_out_of_order": 1, "vehicle_frame_unavailable": 1}
    assert "frame 000010" in ds.skips.items[0].reason
    s = {x.sample_id: x for x in ds}["000005"]
    assert list(s.future_mask[:3]) == [False, True, True]  # waypoint 1 was frame 10


def test_duplicate_timestamp_is_skipped(root):
    edit_json(root / "vehicle-side/data_info.json",
              lambda d: d[12].update(image_timestamp=d[11]["image_timestamp"]))
    ds = DairV2XDataset(root)
    assert ds.skips.counts["timestamp_out_of_order"] == 1 and len(ds) == 39


def test_nan_in_calib_is_a_named_skip(root):
    path = root / "vehicle-side/calib/novatel_to_world/000007.json"
    edit_json(path, lambda d: d["translation"][1].__setitem__(0, float("nan")))
    assert "NaN" in path.read_text()
    ds = DairV2XDataset(root)
    item = ds.skips.items[0]
    assert item.code == "calib_invalid" and item.path.endswith("novatel_to_world/000007.json")
    assert item.field == "translation" and "NaN" in item.reason
    assert all(np.isfinite(s.future_xy).all() for s in ds)


def test_calib_not_a_rotation_and_missing_or_malformed_files(root):
    edit_json(root / "vehicle-side/calib/lidar_to_novatel/000001.json",
              lambda d: d["transform"].update(rotation=[[2, 0, 0], [0, 1, 0], [0, 0, 1]]))
    (root / "vehicle-side/calib/novatel_to_world/000002.json").unlink()
    (root / "vehicle-side/calib/novatel_to_world/000003.json").write_text("{rotation")
    ds = DairV2XDataset(root)
    reasons = sorted((s.field or "", s.reason) for s in ds.skips.items if s.code == "calib_invalid")
    assert reasons[0][1] == "file not found"
    assert ("transform.rotation", "not a rotation matrix") in reasons
    assert any(r.startswith("malformed JSON") for _, r in reasons)


@pytest.mark.parametrize("content,reason", [
    (b"", "empty file"),
    (TINY_JPEG[: len(TINY_JPEG) // 2], "truncated JPEG"),
    (b"GIF89a-not-an-image", "not a JPEG or PNG"),
])
def test_corrupt_or_empty_jpeg_is_a_named_skip(root, content, reason):
    (root / "vehicle-side/image/000004.jpg").write_bytes(content)
    ds = DairV2XDataset(root)
    item = only_skip(ds, "image_invalid")
    assert item.path == "vehicle-side/image/000004.jpg" and reason in item.reason
    assert len(ds) == 39


def test_missing_roadside_image_is_a_named_skip(root):
    (root / "infrastructure-side/image/000008.jpg").unlink()
    item = only_skip(DairV2XDataset(root), "image_missing")
    assert item.path == "infrastructure-side/image/000008.jpg"


def test_full_decode_catches_garbage_between_valid_markers(root):
    bad = TINY_JPEG[:2] + bytes(range(256)) * 4 + b"\xff\xd9"
    (root / "vehicle-side/image/000006.jpg").write_bytes(bad)
    assert len(DairV2XDataset(root).skips) == 0  # the cheap check cannot see it
    ds = DairV2XDataset(root, config=DatasetConfig(check_images=True))
    only_skip(ds, "image_invalid")


def test_unknown_roadside_frame_is_a_named_skip(root):
    edit_json(root / "cooperative/data_info.json", lambda d: d[2].update(infrastructure_frame="999999"))
    item = only_skip(DairV2XDataset(root), "infrastructure_frame_unavailable")
    assert item.field == "[2].infrastructure_frame" and "999999" in item.reason


def test_malformed_label_counts_once_and_leaves_the_step_unlabelled(root):
    (root / "cooperative/label/000010.json").write_text('[{"type": "Car", "3d_dimensions": {}}]')
    (root / "vehicle-side/label/lidar/000010.json").unlink()
    ds = DairV2XDataset(root)
    summary = ds.summary()
    assert summary["skipped"] == {"label_invalid": 1}
    s = {x.sample_id: x for x in ds}["000005"]
    assert s.future_agents[0] is None and s.future_agents[1] == []


def test_strict_mode_raises_on_the_first_problem(root):
    (root / "vehicle-side/image/000004.jpg").write_bytes(b"")
    with pytest.raises(DatasetError, match="000004.jpg: empty file"):
        DairV2XDataset(root, config=DatasetConfig(strict=True))


def test_scenario_filter_needs_a_known_scenario(root):
    with pytest.raises(DatasetError, match="no sequence has scenario 'left_turn'"):
        DairV2XDataset(root, scenario="left_turn")
