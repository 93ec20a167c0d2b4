"""ROS 2 message conversions, checked with real ROS 2 classes and CDR round trips: rosbags'
(Humble and Jazzy definitions, what bags hold) and rclpy's generated classes (what the
nodes build and DDS carries; rclpy's own serialisation)."""

import math

import numpy as np
import pytest

from v2x_vlm_ros.conversion import messages as m
from v2x_vlm_ros.data.records import Command
from v2x_vlm_ros.geometry import rotation_zyx
from v2x_vlm_ros.preprocessing.image_codec import ImageDecodeError, encode_image

NS = 1_626_155_123_028_768_123  # > 1.6e18, odd nanoseconds


class RclpyTypes:
    """rclpy's generated classes, with rclpy's CDR round trip (what goes over DDS)."""

    def __init__(self):
        self.resolve = m.rclpy_types()

    def __call__(self, name):
        return self.resolve(name)

    def round_trip(self, msg):
        from rclpy.serialization import deserialize_message, serialize_message

        return deserialize_message(serialize_message(msg), type(msg))


@pytest.fixture(scope="module", params=["humble", "jazzy", "rclpy"])
def types(request):
    if request.param == "rclpy":
        from ros_support import require

        require("rclpy")
        return RclpyTypes()
    return m.rosbags_types(request.param)


@pytest.fixture(scope="module", params=["humble", "jazzy"])
def bag_types(request):
    """rosbags only: tf2_msgs (/tf in bags) is not installable with rclpy from the package index."""
    return m.rosbags_types(request.param)


@pytest.fixture(scope="module")
def humble():
    return m.rosbags_types("humble")


def cdr(types, msg):
    """Serialise and deserialise (what goes over the wire / into a bag)."""
    if isinstance(types, RclpyTypes):
        return types.round_trip(msg)
    return types.deserialize(types.serialize(msg), msg.__msgtype__)


def image(h=5, w=7, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def pose(x, y, z, yaw, pitch=0.0, roll=0.0):
    p = np.eye(4)
    p[:3, :3] = rotation_zyx(yaw, pitch, roll)
    p[:3, 3] = (x, y, z)
    return p


# -- stamps ----------------------------------------------------------------------------------


@pytest.mark.parametrize("ns", [0, 1, 999_999_999, 1_000_000_000, NS, 1_600_000_000_000_000_000, -1])
def test_stamps_round_trip_to_the_nanosecond(types, ns):
    stamp = cdr(types, m.header(types, ns, "map")).stamp
    assert m.stamp_to_ns(stamp) == ns
    assert 0 <= stamp.nanosec < 1_000_000_000


def test_stamp_out_of_int32_seconds_or_not_integer_is_refused(humble):
    with pytest.raises(ValueError, match="int32"):
        m.ns_to_stamp(humble, 2**31 * 1_000_000_000)
    with pytest.raises(TypeError):
        m.ns_to_stamp(humble, 1.6e18)


# -- raw images ------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["bgr8", "rgb8", "bgra8", "rgba8"])
def test_raw_image_round_trip_is_pixel_exact(types, encoding):
    img = image()
    msg = cdr(types, m.bgr_to_image_msg(types, img, NS, "cam", encoding))
    assert (msg.encoding, msg.width, msg.height, m.stamp_to_ns(msg.header.stamp)) == (encoding, 7, 5, NS)
    assert msg.header.frame_id == "cam"
    out = m.image_msg_to_bgr(msg, "/cam/image")
    assert out.dtype == np.uint8 and out.shape == (5, 7, 3) and np.array_equal(out, img)


def test_rgb_and_bgr_are_not_confused(humble):
    img = np.zeros((2, 3, 3), np.uint8)
    img[..., 2] = 200  # red in BGR
    msg = m.bgr_to_image_msg(humble, img, 0, "cam", "rgb8")
    assert msg.data[0] == 200 and msg.data[2] == 0  # stored R first
    msg.encoding = "bgr8"  # same bytes read as BGR: red becomes blue
    assert m.image_msg_to_bgr(msg, "t")[0, 0, 0] == 200


def test_mono_is_replicated_to_three_channels(types):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    msg = cdr(types, m.bgr_to_image_msg(types, gray, 0, "cam", "mono8"))
    assert msg.step == 4
    out = m.image_msg_to_bgr(msg, "t")
    assert out.shape == (3, 4, 3) and all(np.array_equal(out[..., c], gray) for c in range(3))
    bgr = np.repeat(gray[..., None], 3, axis=2)
    assert np.array_equal(m.image_msg_to_bgr(m.bgr_to_image_msg(types, bgr, 0, "c", "mono8"), "t"), bgr)


def raw_msg(types, encoding="bgr8", width=4, height=3, step=None, data=None):
    ch = {"bgr8": 3, "rgb8": 3, "mono8": 1, "rgba8": 4, "bgra8": 4}.get(encoding, 2)
    step = width * ch if step is None else step
    if data is None:
        data = np.zeros(step * height, np.uint8)
    return types("sensor_msgs/msg/Image")(header=m.header(types, 0, "c"), height=height, width=width,
                                          encoding=encoding, is_bigendian=0, step=step, data=data)


def test_row_padding_is_honoured(types):
    img = image(3, 4)
    step = 4 * 3 + 5
    padded = np.full((3, step), 77, np.uint8)
    padded[:, :12] = img.reshape(3, 12)
    msg = cdr(types, raw_msg(types, "bgr8", 4, 3, step, padded.reshape(-1)))
    assert np.array_equal(m.image_msg_to_bgr(msg, "t"), img)


def test_image_data_as_bytes_or_array_array_like_rclpy(humble):
    import array

    img = image(2, 2)
    for data in (img.tobytes(), array.array("B", img.tobytes()), bytearray(img.tobytes())):
        msg = raw_msg(humble, "bgr8", 2, 2)
        msg.data = data
        assert np.array_equal(m.image_msg_to_bgr(msg, "t"), img)


@pytest.mark.parametrize("kwargs, reason", [
    ({"encoding": "mono16"}, "16/32/64-bit"),
    ({"encoding": "16UC1"}, "16/32/64-bit"),
    ({"encoding": "yuv422"}, "unsupported encoding"),
    ({"encoding": "BGR8"}, "unsupported encoding"),
    ({"width": 0}, "empty image"),
    ({"height": 0}, "empty image"),
    ({"step": 11}, "step 11 is less than"),
    ({"data": np.zeros(35, np.uint8)}, "data has 35 bytes"),
    ({"width": 100_000, "height": 100_000, "data": np.zeros(10, np.uint8)}, "more than"),
])
def test_bad_raw_images_raise_naming_the_source(types, kwargs, reason):
    msg = raw_msg(types, **{"encoding": "bgr8", "width": 4, "height": 3, **kwargs})
    with pytest.raises(ImageDecodeError, match=reason) as info:
        m.image_msg_to_bgr(msg, "/v2x/ego/image_raw")
    assert info.value.source == "/v2x/ego/image_raw"


def test_builder_refuses_non_bgr_arrays(humble):
    with pytest.raises(ValueError):
        m.bgr_to_image_msg(humble, np.zeros((2, 2), np.uint8), 0, "c", "bgr8")
    with pytest.raises(ValueError):
        m.bgr_to_image_msg(humble, np.zeros((2, 2, 3), np.float32), 0, "c")
    with pytest.raises(ValueError):
        m.bgr_to_image_msg(humble, image(), 0, "c", "mono16")


# -- compressed images -----------------------------------------------------------------------


def smooth_image(h=48, w=64):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 4, y * 5, (x + y) * 2], axis=-1).astype(np.uint8)


def test_jpeg_round_trip_within_tolerance(types):
    img = smooth_image()
    msg = cdr(types, m.bgr_to_compressed_msg(types, img, NS, "ego_camera", "jpeg", 95))
    assert msg.format == "jpeg" and m.stamp_to_ns(msg.header.stamp) == NS
    out = m.compressed_msg_to_bgr(msg, "t")
    assert out.shape == img.shape and np.abs(out.astype(int) - img).mean() < 3


def test_png_round_trip_is_exact_and_encoded_bytes_are_kept(types):
    img = image(6, 9)
    data = encode_image(img, "png")
    msg = cdr(types, m.bgr_to_compressed_msg(types, data, 0, "c"))
    assert msg.format == "png" and bytes(msg.data) == data
    assert np.array_equal(m.compressed_msg_to_bgr(msg, "t"), img)
    jpeg = encode_image(img, "jpeg", 90)
    assert bytes(m.bgr_to_compressed_msg(types, jpeg, 0, "c", fmt="png").data) == jpeg  # bytes decide


@pytest.mark.parametrize("fmt", ["jpeg", "JPEG", "bgr8; jpeg compressed bgr8", "jpg", ""])
def test_compressed_format_is_checked_loosely(humble, fmt):
    msg = m.bgr_to_compressed_msg(humble, smooth_image(), 0, "c")
    msg.format = fmt
    assert m.compressed_msg_to_bgr(msg, "t").shape == (48, 64, 3)


@pytest.mark.parametrize("fmt", ["tiff", "16UC1; compressedDepth png"])
def test_unsupported_compressed_formats(humble, fmt):
    msg = m.bgr_to_compressed_msg(humble, smooth_image(), 0, "c")
    msg.format = fmt
    with pytest.raises(ImageDecodeError) as info:
        m.compressed_msg_to_bgr(msg, "/roadside")
    assert info.value.source == "/roadside"


def test_truncated_jpeg_message_raises(humble):
    data = encode_image(smooth_image(), "jpeg", 90)
    msg = m.bgr_to_compressed_msg(humble, data, 0, "c")
    msg.data = msg.data[: len(data) // 2]
    with pytest.raises(ImageDecodeError, match="truncated"):
        m.compressed_msg_to_bgr(msg, "/roadside")
    with pytest.raises(ValueError, match="neither JPEG nor PNG"):
        m.bgr_to_compressed_msg(humble, b"GIF89a", 0, "c")


# -- trajectories ----------------------------------------------------------------------------


XY = np.array([[1.0, 0.0], [2.0, 0.1], [3.0, 0.3], [3.0, 0.3], [3.5, 1.2]]) * 1.123456789


def test_path_round_trip_is_exact_in_base_link(types):
    msg = cdr(types, m.trajectory_to_path(types, XY, NS))
    assert msg.header.frame_id == "base_link" and m.stamp_to_ns(msg.header.stamp) == NS
    assert all(p.header.frame_id == "base_link" and m.stamp_to_ns(p.header.stamp) == NS for p in msg.poses)
    out = m.path_to_xy(msg)
    assert out.dtype == np.float64 and np.array_equal(out, XY)


def test_path_orientation_follows_the_tangent(humble):
    msg = m.trajectory_to_path(humble, XY, 0)
    yaws = [2 * math.atan2(p.pose.orientation.z, p.pose.orientation.w) for p in msg.poses]
    d = np.diff(XY, axis=0)
    expected = np.arctan2(d[:, 1], d[:, 0])
    assert yaws[0] == pytest.approx(expected[0])  # first pose: first segment
    assert yaws[1:3] == pytest.approx(list(expected[:2]))
    assert yaws[3] == pytest.approx(yaws[2])  # zero-length segment keeps the yaw
    assert yaws[4] == pytest.approx(expected[3])
    for p in msg.poses:
        o = p.pose.orientation
        assert (o.x, o.y) == (0.0, 0.0) and o.x ** 2 + o.y ** 2 + o.z ** 2 + o.w ** 2 == pytest.approx(1.0)


def test_path_in_map_frame(types):
    map_from_ego = pose(120.5, -33.25, 2.0, 2.0)
    msg = cdr(types, m.trajectory_to_path(types, XY, NS, "map", map_from_ego))
    assert msg.header.frame_id == "map"
    expected = XY @ map_from_ego[:2, :2].T + map_from_ego[:2, 3]
    assert np.allclose(m.path_to_xy(msg), expected, atol=1e-9)
    assert np.allclose(m.path_to_xy(msg, np.linalg.inv(map_from_ego)), XY, atol=1e-9)
    assert msg.poses[0].pose.position.z == pytest.approx(2.0)
    single = m.trajectory_to_path(types, XY[:1], 0, "map", map_from_ego)  # one point: ego heading
    o = single.poses[0].pose.orientation
    assert 2 * math.atan2(o.z, o.w) == pytest.approx(2.0)


def test_empty_and_bad_paths(humble):
    msg = cdr(humble, m.trajectory_to_path(humble, np.zeros((0, 2)), 0))
    assert msg.poses == [] and m.path_to_xy(msg).shape == (0, 2)
    with pytest.raises(ValueError):
        m.trajectory_to_path(humble, np.zeros((3, 3)), 0)
    with pytest.raises(ValueError):
        m.trajectory_to_path(humble, [[0.0, np.nan]], 0)


def test_markers(types):
    arr = cdr(types, m.trajectory_markers(types, XY, NS, "map", "plan", (1.0, 0.0, 0.0, 0.8), 7, z=0.5))
    marker = types("visualization_msgs/msg/Marker")
    line, dots = arr.markers
    assert (line.type, line.id, dots.type, dots.id) == (marker.LINE_STRIP, 7, marker.SPHERE_LIST, 8)
    assert line.action == dots.action == marker.ADD and line.ns == "plan" and line.header.frame_id == "map"
    assert np.array_equal([[p.x, p.y] for p in line.points], XY) and all(p.z == 0.5 for p in dots.points)
    assert (line.color.r, line.color.a) == (1.0, pytest.approx(0.8)) and line.pose.orientation.w == 1.0
    short = m.trajectory_markers(types, XY[:1], 0, "map", "plan")
    assert short.markers[0].action == marker.DELETE and short.markers[1].action == marker.ADD
    clear = cdr(types, m.delete_all_markers(types, 0, "map"))
    assert [x.action for x in clear.markers] == [marker.DELETEALL]


# -- odometry and tf -------------------------------------------------------------------------


@pytest.mark.parametrize("yaw", [0.0, 1.0, math.pi, -2.9])
def test_odometry_round_trip(types, yaw):
    map_from_ego = pose(12.345678901234, -987.654321, 1.5, yaw, 0.02, -0.01)
    msg = cdr(types, m.odometry_msg(types, map_from_ego, 8.25, -0.125, NS))
    assert (msg.header.frame_id, msg.child_frame_id) == ("map", "base_link")
    assert m.stamp_to_ns(msg.header.stamp) == NS
    out, speed, yaw_rate = m.odometry_to_state(msg)
    assert np.array_equal(out[:3, 3], map_from_ego[:3, 3])
    assert np.allclose(out, map_from_ego, atol=1e-12)
    assert (speed, yaw_rate) == (8.25, -0.125)
    reversing = m.odometry_msg(types, map_from_ego, -1.5, 0.0, 0)
    assert m.odometry_to_state(reversing)[1:] == (-1.5, 0.0)


def test_quaternions_cover_every_branch():
    rng = np.random.default_rng(3)
    for _ in range(200):
        r = rotation_zyx(*rng.uniform(-math.pi, math.pi, 3))
        q = m.quaternion_from_matrix(r)
        assert q[3] >= 0 and np.allclose(m.matrix_from_quaternion(q), r, atol=1e-12)
    for r in (np.diag([1.0, -1, -1]), np.diag([-1.0, 1, -1]), np.diag([-1.0, -1, 1])):  # 180 deg turns
        assert np.allclose(m.matrix_from_quaternion(m.quaternion_from_matrix(r)), r)
    with pytest.raises(ValueError, match="zero"):
        m.matrix_from_quaternion((0, 0, 0, 0))


def test_tf_round_trip(bag_types):
    types = bag_types
    a = pose(3.0, 4.0, 5.0, 0.3, 0.1, 0.2)
    b = pose(-1.0, 0.5, 0.0, -1.2)
    msg = cdr(types, m.tf_message(types, [m.transform_stamped(types, "map", "base_link", a, NS),
                                          m.transform_stamped(types, "base_link", "ego_camera", b, NS + 1)]))
    out = m.tf_to_matrices(msg)
    assert set(out) == {("map", "base_link"), ("base_link", "ego_camera")}
    assert out[("map", "base_link")][0] == NS and out[("base_link", "ego_camera")][0] == NS + 1
    assert np.allclose(out[("map", "base_link")][1], a, atol=1e-12)
    assert np.allclose(out[("base_link", "ego_camera")][1], b, atol=1e-12)


def test_map_frame_is_a_planar_translation_to_the_origin():
    origin = pose(3693.841806997, -1651.876108584, 25.9, 2.59)
    mf = m.MapFrame(origin)
    assert np.allclose(mf.map_from_ego(origin)[:3, 3], [0.0, 0.0, 25.9])
    assert np.array_equal(mf.map_from_ego(origin)[:3, :3], origin[:3, :3])
    other = pose(3700.5, -1600.25, 26.0, 0.1)
    assert np.allclose(mf.world_from_ego(mf.map_from_ego(other)), other, atol=1e-9)
    assert np.allclose(mf.map_from_world @ other, mf.map_from_ego(other))
    assert np.allclose(mf.world_from_map @ mf.map_from_world, np.eye(4))
    with pytest.raises(ValueError):
        m.MapFrame(np.eye(3))


# -- diagnostics, strings, commands ----------------------------------------------------------


def test_diagnostics_round_trip(types):
    msg = cdr(types, m.diagnostic_array(types, NS, "v2x_planner", 1, "roadside image stale",
                                        {"latency_ms": 12.5, "frames": 3, "ok": True, "topic": "/v2x"}))
    assert m.stamp_to_ns(msg.header.stamp) == NS
    status = m.diagnostic_to_dict(msg)["v2x_planner"]
    assert status["level"] == 1 and status["message"] == "roadside image stale"
    assert status["values"] == {"latency_ms": "12.5", "frames": "3", "ok": "True", "topic": "/v2x"}
    assert m.level_to_int(b"\x02") == 2
    with pytest.raises(ValueError):
        m.diagnostic_array(types, 0, "x", 4, "", {})


def test_strings_and_commands(types):
    assert cdr(types, m.string_msg(types, "FORWARD")).data == "FORWARD"
    assert m.command_from_string("left") is Command.LEFT
    assert m.command_from_string(" Right ") is Command.RIGHT
    assert m.command_from_string("FORWARD") is Command.FORWARD
    assert m.command_from_string("Straight") is Command.FORWARD
    for bad in ("", "back", "2"):
        with pytest.raises(ValueError, match="LEFT, RIGHT or FORWARD"):
            m.command_from_string(bad)


def test_text_digest_is_the_standard_crc32():
    # CRC-32's published check value (the CRC of "123456789"), as 8 hex digits
    assert m.text_digest("123456789") == "cbf43926"
    assert m.text_digest("") == "00000000"
    assert m.text_digest("A bus stops.") != m.text_digest("A bus stops")
    assert len(m.text_digest("\ud800 lone surrogate")) == 8  # a text ROS could not carry still has one


def test_resolvers():
    types = m.rosbags_types("jazzy")
    assert types("std_msgs/msg/String").__msgtype__ == "std_msgs/msg/String"
    with pytest.raises(KeyError):
        types("nope_msgs/msg/Nothing")
    with pytest.raises(ValueError):
        m.rosbags_types("rolling")


def test_rclpy_resolver_gives_the_generated_classes():
    from ros_support import require

    require("rclpy")
    from nav_msgs.msg import Path
    from sensor_msgs.msg import CompressedImage

    resolve = m.rclpy_types()
    assert resolve("sensor_msgs/msg/CompressedImage") is CompressedImage
    assert resolve("nav_msgs/msg/Path") is Path
    with pytest.raises(ImportError, match="nope_msgs"):
        resolve("nope_msgs/msg/Nothing")
