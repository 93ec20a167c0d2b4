"""ROS 2 messages <-> numpy, without ROS 2.

Every function here works on any object that has a ROS 2 message's fields: rclpy's
generated classes in a node, rosbags' dataclasses in tests and bag tools. Builders take a
type resolver ``types(name) -> class`` for names like ``"sensor_msgs/msg/Image"``:
``rosbags_types("humble")`` (rosbags' typestore, usable anywhere) or ``rclpy_types()``
(the installed ROS 2 packages, in a node). Messages are always built with every field as
a keyword: rosbags' dataclasses require all of them and rclpy accepts them, so one code
path serves both.

Two fields differ between the two worlds and are handled here: ``uint8[]`` data is a
numpy array in rosbags and an ``array.array`` in rclpy (readers accept any buffer), and
the ``byte`` field ``DiagnosticStatus.level`` is an int in rosbags and a 1-byte ``bytes``
in rclpy (builders use the class constants OK/WARN/ERROR/STALE, readers accept both).

Raw images are converted here instead of with cv_bridge, whose compiled module breaks
with NumPy 2 (REFERENCE §6). Frames follow REP-103/105: x forward, y left, z up;
``map`` -> ``base_link`` (base_link is the vehicle LiDAR frame, the dataset's ego frame).

Map frame: DAIR-V2X world coordinates are thousands of metres from their origin and
RViz renders in float32 (centimetre steps there), so poses are published in a ``map``
frame whose axes are the world's and whose origin is a chosen ego pose's position (x, y
only; z stays the world's): ``MapFrame``. The bag tool takes the bag's first ego pose.
"""

from __future__ import annotations

import importlib
import math
import zlib
from functools import lru_cache

import cv2
import numpy as np

from v2x_vlm_ros.data.records import Command
from v2x_vlm_ros.preprocessing.image_codec import (
    DEFAULT_MAX_PIXELS,
    ImageDecodeError,
    decode_image,
    encode_image,
)

NS_PER_S = 1_000_000_000
_INT32 = (-(2**31), 2**31 - 1)

# --------------------------------------------------------------------------- type resolvers


class RosbagsTypes:
    """``types(name) -> class`` backed by a rosbags typestore; also (de)serialises CDR."""

    DISTROS = ("humble", "jazzy")

    def __init__(self, distro: str = "humble"):
        from rosbags.typesys import Stores, get_typestore

        if distro not in self.DISTROS:
            raise ValueError(f"unknown ROS 2 distro {distro!r}; allowed: {', '.join(self.DISTROS)}")
        self.distro = distro
        self.typestore = get_typestore(Stores.ROS2_HUMBLE if distro == "humble" else Stores.ROS2_JAZZY)

    def __call__(self, name: str):
        try:
            return self.typestore.types[name]
        except KeyError:
            raise KeyError(f"message type {name!r} is not in the rosbags {self.distro} typestore") from None

    def serialize(self, msg) -> bytes:
        return bytes(self.typestore.serialize_cdr(msg, msg.__msgtype__))

    def deserialize(self, data, name: str):
        return self.typestore.deserialize_cdr(bytes(data), name)


def rosbags_types(distro: str = "humble") -> RosbagsTypes:
    """Resolver over rosbags' real ROS 2 message classes ("humble" or "jazzy")."""
    return RosbagsTypes(distro)


def rclpy_types():
    """Resolver over the installed ROS 2 Python message packages (only in a ROS 2 install)."""

    @lru_cache(maxsize=None)
    def resolve(name: str):
        package, kind, cls = name.split("/")
        return getattr(importlib.import_module(f"{package}.{kind}"), cls)

    return resolve


# --------------------------------------------------------------------------- small helpers


def _u8(data) -> np.ndarray:
    """A message's uint8[] field (numpy array, array.array, bytes, list) as a flat uint8 array."""
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            raise TypeError(f"expected uint8 data, got {data.dtype}")
        return data.reshape(-1)
    try:
        return np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
    except TypeError:
        return np.asarray(list(data), dtype=np.uint8)


def _bytes_field(data) -> np.ndarray:
    """Bytes for a uint8[] field: a uint8 numpy array (rosbags needs it; rclpy accepts it)."""
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data, dtype=np.uint8).reshape(-1)
    return np.frombuffer(bytes(data), dtype=np.uint8)


def stamp_to_ns(stamp) -> int:
    """builtin_interfaces/Time (or anything with sec, nanosec) -> integer nanoseconds."""
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def ns_to_stamp(types, ns: int):
    """Integer nanoseconds -> builtin_interfaces/Time (sec floors, nanosec in [0, 1e9))."""
    if isinstance(ns, bool) or not isinstance(ns, (int, np.integer)):
        raise TypeError(f"stamp must be integer nanoseconds, got {type(ns).__name__}")
    sec, nanosec = divmod(int(ns), NS_PER_S)
    if not _INT32[0] <= sec <= _INT32[1]:
        raise ValueError(f"stamp {ns} ns does not fit builtin_interfaces/Time (int32 seconds)")
    return types("builtin_interfaces/msg/Time")(sec=sec, nanosec=nanosec)


def header(types, ns: int, frame_id: str):
    return types("std_msgs/msg/Header")(stamp=ns_to_stamp(types, ns), frame_id=str(frame_id))


# --------------------------------------------------------------------------- rotations


def quaternion_from_yaw(yaw: float) -> tuple[float, float, float, float]:
    """(x, y, z, w) of a rotation by ``yaw`` about z."""
    return 0.0, 0.0, math.sin(yaw / 2.0), math.cos(yaw / 2.0)


def quaternion_from_matrix(matrix) -> tuple[float, float, float, float]:
    """(x, y, z, w), w >= 0, of the rotation part of a 3x3 or 4x4 matrix (Shepperd's method)."""
    m = np.asarray(matrix, dtype=np.float64)[:3, :3]
    t = m[0, 0] + m[1, 1] + m[2, 2]
    if t > 0:
        s = math.sqrt(t + 1.0) * 2.0
        q = ((m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, s / 4.0)
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2]) * 2.0
        q = (s / 4.0, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s)
    elif m[1, 1] > m[2, 2]:
        s = math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2]) * 2.0
        q = ((m[0, 1] + m[1, 0]) / s, s / 4.0, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s)
    else:
        s = math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1]) * 2.0
        q = ((m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, s / 4.0, (m[1, 0] - m[0, 1]) / s)
    v = np.array(q)
    v /= np.linalg.norm(v)
    if v[3] < 0:
        v = -v
    return float(v[0]), float(v[1]), float(v[2]), float(v[3])


def matrix_from_quaternion(q) -> np.ndarray:
    """3x3 rotation of a geometry_msgs/Quaternion (or (x, y, z, w)); normalised first."""
    x, y, z, w = (float(q.x), float(q.y), float(q.z), float(q.w)) if hasattr(q, "w") else map(float, q)
    n = math.sqrt(x * x + y * y + z * z + w * w)
    if not (n > 1e-9 and math.isfinite(n)):
        raise ValueError(f"quaternion ({x}, {y}, {z}, {w}) is zero or not finite")
    x, y, z, w = x / n, y / n, z / n, w / n
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def _quaternion(types, q):
    return types("geometry_msgs/msg/Quaternion")(x=q[0], y=q[1], z=q[2], w=q[3])


def _point(types, x, y, z):
    return types("geometry_msgs/msg/Point")(x=float(x), y=float(y), z=float(z))


def _vector3(types, x=0.0, y=0.0, z=0.0):
    return types("geometry_msgs/msg/Vector3")(x=float(x), y=float(y), z=float(z))


def pose_msg(types, pose_4x4):
    """geometry_msgs/Pose of a 4x4 transform."""
    p = np.asarray(pose_4x4, dtype=np.float64)
    return types("geometry_msgs/msg/Pose")(position=_point(types, *p[:3, 3]),
                                           orientation=_quaternion(types, quaternion_from_matrix(p)))


def _finite_xyz(v, what: str) -> tuple[float, float, float]:
    xyz = (float(v.x), float(v.y), float(v.z))
    if not all(math.isfinite(c) for c in xyz):
        raise ValueError(f"{what} is not finite: {xyz}")
    return xyz


def pose_to_matrix(pose) -> np.ndarray:
    """4x4 of a geometry_msgs/Pose (ValueError for a non-finite position or orientation)."""
    out = np.eye(4)
    out[:3, :3] = matrix_from_quaternion(pose.orientation)
    out[:3, 3] = _finite_xyz(pose.position, "pose position")
    return out


def transform_to_matrix(transform) -> np.ndarray:
    """4x4 of a geometry_msgs/Transform (ValueError when not finite)."""
    out = np.eye(4)
    out[:3, :3] = matrix_from_quaternion(transform.rotation)
    out[:3, 3] = _finite_xyz(transform.translation, "transform translation")
    return out


# --------------------------------------------------------------------------- map frame


class MapFrame:
    """A ``map`` frame for one drive: the world's axes, origin at ``origin_world_from_ego``'s
    x, y (its z and rotation are ignored), so map coordinates stay within float32 range for
    RViz. ``map_from_world`` is a pure planar translation; tf and the stored poses keep
    float64, so nothing is lost going back with ``world_from_map``."""

    def __init__(self, origin_world_from_ego):
        origin = np.asarray(origin_world_from_ego, dtype=np.float64)
        if origin.shape != (4, 4) or not np.all(np.isfinite(origin)):
            raise ValueError("origin_world_from_ego must be a finite 4x4 pose")
        self.origin_xy = origin[:2, 3].copy()
        self.map_from_world = np.eye(4)
        self.map_from_world[:2, 3] = -self.origin_xy
        self.world_from_map = np.eye(4)
        self.world_from_map[:2, 3] = self.origin_xy

    def map_from_ego(self, world_from_ego) -> np.ndarray:
        out = np.array(world_from_ego, dtype=np.float64)
        out[:2, 3] -= self.origin_xy
        return out

    def world_from_ego(self, map_from_ego) -> np.ndarray:
        out = np.array(map_from_ego, dtype=np.float64)
        out[:2, 3] += self.origin_xy
        return out


# --------------------------------------------------------------------------- images

#: Supported raw encodings: channels and the OpenCV conversion to BGR (None: already BGR).
_RAW_ENCODINGS = {
    "bgr8": (3, None),
    "rgb8": (3, cv2.COLOR_RGB2BGR),
    "bgra8": (4, cv2.COLOR_BGRA2BGR),
    "rgba8": (4, cv2.COLOR_RGBA2BGR),
    "mono8": (1, cv2.COLOR_GRAY2BGR),
    "8UC1": (1, cv2.COLOR_GRAY2BGR),
    "8UC3": (3, None),
}
_FROM_BGR = {
    "bgr8": None, "rgb8": cv2.COLOR_BGR2RGB, "bgra8": cv2.COLOR_BGR2BGRA,
    "rgba8": cv2.COLOR_BGR2RGBA, "mono8": cv2.COLOR_BGR2GRAY,
}


def image_msg_to_bgr(msg, source: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """sensor_msgs/Image -> (H, W, 3) uint8 BGR (a new array). Encodings: bgr8, rgb8, bgra8,
    rgba8, mono8 (and 8UC1 / 8UC3 as mono8 / bgr8); alpha is dropped, mono is replicated.
    Row padding (``step`` > width * channels) is honoured. Anything else raises
    ``ImageDecodeError(source, reason)``, checked before any pixel is touched."""
    encoding = str(msg.encoding)
    if encoding not in _RAW_ENCODINGS:
        bits16 = "16" in encoding or "32" in encoding or "64" in encoding
        kind = "16/32/64-bit encodings are not supported" if bits16 else "unsupported encoding"
        raise ImageDecodeError(source, f"{kind}: {encoding!r} (allowed: {', '.join(_RAW_ENCODINGS)})")
    channels, conversion = _RAW_ENCODINGS[encoding]
    width, height, step = int(msg.width), int(msg.height), int(msg.step)
    if width <= 0 or height <= 0:
        raise ImageDecodeError(source, f"empty image ({width}x{height})")
    if width * height > max_pixels:
        raise ImageDecodeError(source, f"declares {width}x{height} = {width * height} pixels, "
                                       f"more than {max_pixels}")
    row = width * channels
    if step < row:
        raise ImageDecodeError(source, f"step {step} is less than width * channels = {row}")
    data = _u8(msg.data)
    if data.size < step * height:
        raise ImageDecodeError(source, f"data has {data.size} bytes, step * height needs {step * height}")
    pixels = data[: step * height].reshape(height, step)[:, :row].reshape(height, width, channels)
    if conversion is None:
        return np.ascontiguousarray(pixels).copy()
    return cv2.cvtColor(np.ascontiguousarray(pixels), conversion)


def compressed_msg_to_bgr(msg, source: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """sensor_msgs/CompressedImage (JPEG or PNG) -> (H, W, 3) uint8 BGR. The ``format``
    string is checked loosely ("jpeg", "png", image_transport's "bgr8; jpeg compressed
    bgr8", or empty); the bytes themselves decide (``decode_image``)."""
    fmt = str(msg.format).lower()
    if "compresseddepth" in fmt:
        raise ImageDecodeError(source, f"depth images are not supported (format {msg.format!r})")
    if fmt.strip() and not any(k in fmt for k in ("jpeg", "jpg", "png")):
        raise ImageDecodeError(source, f"unsupported compressed format {msg.format!r} (JPEG or PNG only)")
    return decode_image(_u8(msg.data), source, max_pixels=max_pixels)


def bgr_to_image_msg(types, image: np.ndarray, ns: int, frame_id: str, encoding: str = "bgr8"):
    """(H, W, 3) uint8 BGR (or (H, W) for mono8) -> sensor_msgs/Image, unpadded rows."""
    if encoding not in _FROM_BGR:
        raise ValueError(f"unsupported encoding {encoding!r}; allowed: {', '.join(_FROM_BGR)}")
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.size == 0 or not (
            (img.ndim == 3 and img.shape[2] == 3) or (img.ndim == 2 and encoding == "mono8")):
        raise ValueError(f"image must be a non-empty (H, W, 3) uint8 BGR array, got {img.dtype} {img.shape}")
    if img.ndim == 3 and _FROM_BGR[encoding] is not None:
        img = cv2.cvtColor(img, _FROM_BGR[encoding])
    img = np.ascontiguousarray(img)
    height, width = img.shape[:2]
    channels = 1 if img.ndim == 2 else img.shape[2]
    return types("sensor_msgs/msg/Image")(
        header=header(types, ns, frame_id), height=height, width=width, encoding=encoding,
        is_bigendian=0, step=width * channels, data=img.reshape(-1))


def bgr_to_compressed_msg(types, image, ns: int, frame_id: str, fmt: str = "jpeg", quality: int = 90):
    """sensor_msgs/CompressedImage from a BGR array (encoded with ``fmt``: jpeg / png) or from
    already encoded JPEG / PNG bytes (kept as they are; ``format`` follows the bytes)."""
    if isinstance(image, np.ndarray) and image.ndim >= 2:
        if fmt not in ("jpeg", "png"):
            raise ValueError(f"fmt must be 'jpeg' or 'png', got {fmt!r}")
        data = encode_image(image, fmt, quality)
    else:
        data = bytes(image)
        if data.startswith(b"\xff\xd8"):
            fmt = "jpeg"
        elif data.startswith(b"\x89PNG\r\n\x1a\n"):
            fmt = "png"
        else:
            raise ValueError("encoded image bytes are neither JPEG nor PNG")
    return types("sensor_msgs/msg/CompressedImage")(
        header=header(types, ns, frame_id), format=fmt, data=_bytes_field(data))


# --------------------------------------------------------------------------- trajectories


def _as_xy(xy) -> np.ndarray:
    arr = np.asarray(xy, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 2))
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"trajectory must be (T, 2), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("trajectory contains NaN or infinity")
    return arr


def _points_in_frame(xy: np.ndarray, frame_from_ego) -> np.ndarray:
    """(T, 3) points of a (T, 2) ego-frame trajectory (z = 0), in the target frame."""
    pts = np.column_stack([xy, np.zeros(len(xy))])
    if frame_from_ego is None:
        return pts
    f = np.asarray(frame_from_ego, dtype=np.float64)
    return pts @ f[:3, :3].T + f[:3, 3]


def _tangent_yaws(pts: np.ndarray, start_yaw: float) -> list[float]:
    """Yaw of each point: the segment arriving at it, the first point the first segment's;
    a zero-length segment keeps the previous yaw (``start_yaw`` before any)."""
    segments = [pts[i, :2] - pts[i - 1, :2] for i in range(1, len(pts))]
    if segments:
        segments.insert(0, segments[0])
    yaws, yaw = [], start_yaw
    for d in segments or [None] * len(pts):
        if d is not None and math.hypot(d[0], d[1]) > 1e-9:
            yaw = math.atan2(d[1], d[0])
        yaws.append(yaw)
    return yaws


def trajectory_to_path(types, xy, ns: int, frame_id: str = "base_link", frame_from_ego=None):
    """nav_msgs/Path of a (T, 2) ego-frame trajectory. With ``frame_from_ego`` (e.g. map <-
    base_link) the points are moved into ``frame_id``; otherwise ``frame_id`` is the ego
    frame. Orientations are yaw-only along the path's tangent (see ``_tangent_yaws``; a
    stationary path points along the ego's heading). Every pose carries the path's header."""
    arr = _as_xy(xy)
    pts = _points_in_frame(arr, frame_from_ego)
    heading = 0.0 if frame_from_ego is None else math.atan2(frame_from_ego[1][0], frame_from_ego[0][0])
    poses = []
    for p, yaw in zip(pts, _tangent_yaws(pts, heading)):
        pose = types("geometry_msgs/msg/Pose")(position=_point(types, *p),
                                               orientation=_quaternion(types, quaternion_from_yaw(yaw)))
        poses.append(types("geometry_msgs/msg/PoseStamped")(header=header(types, ns, frame_id), pose=pose))
    return types("nav_msgs/msg/Path")(header=header(types, ns, frame_id), poses=poses)


def path_to_xy(msg, ego_from_frame=None) -> np.ndarray:
    """(T, 2) float64 of a nav_msgs/Path, in its frame, or moved by ``ego_from_frame``."""
    pts = np.array([(p.pose.position.x, p.pose.position.y, p.pose.position.z) for p in msg.poses],
                   dtype=np.float64).reshape(-1, 3)
    if ego_from_frame is not None:
        e = np.asarray(ego_from_frame, dtype=np.float64)
        pts = pts @ e[:3, :3].T + e[:3, 3]
    return pts[:, :2].copy()


def _color(types, rgba):
    r, g, b, a = (float(v) for v in rgba)
    return types("std_msgs/msg/ColorRGBA")(r=r, g=g, b=b, a=a)


def _marker(types, ns: int, frame_id: str, namespace: str, marker_id: int, kind: int, action: int,
            points=(), scale=(1.0, 1.0, 1.0), rgba=(1.0, 1.0, 1.0, 1.0)):
    """visualization_msgs/Marker with every field given (identity pose, lives forever)."""
    cls = types("visualization_msgs/msg/Marker")
    no_texture = types("sensor_msgs/msg/CompressedImage")(
        header=header(types, 0, ""), format="", data=np.zeros(0, dtype=np.uint8))
    no_mesh = types("visualization_msgs/msg/MeshFile")(filename="", data=np.zeros(0, dtype=np.uint8))
    identity = types("geometry_msgs/msg/Pose")(position=_point(types, 0, 0, 0),
                                               orientation=_quaternion(types, (0.0, 0.0, 0.0, 1.0)))
    return cls(
        header=header(types, ns, frame_id), ns=str(namespace), id=int(marker_id), type=int(kind),
        action=int(action), pose=identity, scale=_vector3(types, *scale), color=_color(types, rgba),
        lifetime=types("builtin_interfaces/msg/Duration")(sec=0, nanosec=0), frame_locked=False,
        points=[_point(types, *p) for p in points], colors=[], texture_resource="", texture=no_texture,
        uv_coordinates=[], text="", mesh_resource="", mesh_file=no_mesh, mesh_use_embedded_materials=False)


def trajectory_markers(types, xy, ns: int, frame_id: str, namespace: str, rgba=(0.1, 0.8, 0.2, 1.0),
                       marker_id: int = 0, frame_from_ego=None, width: float = 0.3, z: float = 0.0):
    """visualization_msgs/MarkerArray: a LINE_STRIP (id ``marker_id``) and a SPHERE_LIST of
    the waypoints (id ``marker_id + 1``), in ``frame_id`` (moved by ``frame_from_ego`` if
    given), lifted by ``z``. A marker without enough points (2 for the line, 1 for the
    spheres) is sent as DELETE so that an older one does not linger."""
    pts = _points_in_frame(_as_xy(xy), frame_from_ego)
    pts[:, 2] += z
    cls = types("visualization_msgs/msg/Marker")
    line_action = cls.ADD if len(pts) >= 2 else cls.DELETE
    dots_action = cls.ADD if len(pts) >= 1 else cls.DELETE
    line = _marker(types, ns, frame_id, namespace, marker_id, cls.LINE_STRIP, line_action,
                   pts if len(pts) >= 2 else (), (width, 0.0, 0.0), rgba)
    dots = _marker(types, ns, frame_id, namespace, marker_id + 1, cls.SPHERE_LIST, dots_action,
                   pts, (2 * width, 2 * width, 2 * width), rgba)
    return types("visualization_msgs/msg/MarkerArray")(markers=[line, dots])


def delete_all_markers(types, ns: int, frame_id: str, namespace: str = ""):
    """visualization_msgs/MarkerArray holding one DELETEALL marker."""
    cls = types("visualization_msgs/msg/Marker")
    return types("visualization_msgs/msg/MarkerArray")(
        markers=[_marker(types, ns, frame_id, namespace, 0, cls.LINE_STRIP, cls.DELETEALL)])


# --------------------------------------------------------------------------- odometry and tf


def odometry_msg(types, map_from_ego, speed_mps: float, yaw_rate_rps: float, ns: int,
                 frame_id: str = "map", child_frame_id: str = "base_link"):
    """nav_msgs/Odometry: pose ``frame_id`` <- ``child_frame_id``; twist in the child frame
    (linear.x = speed, angular.z = yaw rate). Covariances are zero (unknown)."""
    twist = types("geometry_msgs/msg/Twist")(linear=_vector3(types, speed_mps),
                                             angular=_vector3(types, 0.0, 0.0, yaw_rate_rps))
    return types("nav_msgs/msg/Odometry")(
        header=header(types, ns, frame_id), child_frame_id=str(child_frame_id),
        pose=types("geometry_msgs/msg/PoseWithCovariance")(pose=pose_msg(types, map_from_ego),
                                                           covariance=np.zeros(36)),
        twist=types("geometry_msgs/msg/TwistWithCovariance")(twist=twist, covariance=np.zeros(36)))


def odometry_to_state(msg) -> tuple[np.ndarray, float, float]:
    """(4x4 pose frame <- child, speed m/s, yaw rate rad/s) of a nav_msgs/Odometry. The
    speed is the planar twist's magnitude with the sign of linear.x (reversing is negative)."""
    lin, ang = msg.twist.twist.linear, msg.twist.twist.angular
    speed = math.copysign(math.hypot(float(lin.x), float(lin.y)), float(lin.x))
    return pose_to_matrix(msg.pose.pose), speed, float(ang.z)


def transform_stamped(types, parent: str, child: str, parent_from_child, ns: int):
    """geometry_msgs/TransformStamped ``parent`` <- ``child``."""
    p = np.asarray(parent_from_child, dtype=np.float64)
    transform = types("geometry_msgs/msg/Transform")(translation=_vector3(types, *p[:3, 3]),
                                                     rotation=_quaternion(types, quaternion_from_matrix(p)))
    return types("geometry_msgs/msg/TransformStamped")(header=header(types, ns, parent),
                                                       child_frame_id=str(child), transform=transform)


def tf_message(types, transforms):
    """tf2_msgs/TFMessage (for /tf and /tf_static)."""
    return types("tf2_msgs/msg/TFMessage")(transforms=list(transforms))


def tf_to_matrices(msg) -> dict[tuple[str, str], tuple[int, np.ndarray]]:
    """{(parent, child): (stamp ns, 4x4 parent <- child)} of a tf2_msgs/TFMessage."""
    return {(t.header.frame_id, t.child_frame_id):
            (stamp_to_ns(t.header.stamp), transform_to_matrix(t.transform)) for t in msg.transforms}


# --------------------------------------------------------------------------- diagnostics, strings

_LEVELS = ("OK", "WARN", "ERROR", "STALE")


def level_to_int(level) -> int:
    """DiagnosticStatus.level as an int (rclpy gives 1-byte bytes, rosbags an int)."""
    return level[0] if isinstance(level, (bytes, bytearray)) else int(level)


def diagnostic_array(types, ns: int, name: str, level: int, message: str, values: dict,
                     hardware_id: str = ""):
    """diagnostic_msgs/DiagnosticArray with one DiagnosticStatus; values become KeyValue
    strings (``str(value)``). ``level`` is 0 OK, 1 WARN, 2 ERROR, 3 STALE."""
    if isinstance(level, bool) or int(level) not in range(len(_LEVELS)):
        raise ValueError(f"level must be 0 (OK), 1 (WARN), 2 (ERROR) or 3 (STALE), got {level!r}")
    status_cls = types("diagnostic_msgs/msg/DiagnosticStatus")
    kv = types("diagnostic_msgs/msg/KeyValue")
    status = status_cls(level=getattr(status_cls, _LEVELS[int(level)]), name=str(name), message=str(message),
                        hardware_id=str(hardware_id),
                        values=[kv(key=str(k), value=str(v)) for k, v in values.items()])
    return types("diagnostic_msgs/msg/DiagnosticArray")(header=header(types, ns, ""), status=[status])


def diagnostic_to_dict(msg) -> dict[str, dict]:
    """{status name: {"level", "message", "hardware_id", "values": {key: value}}}."""
    return {s.name: {"level": level_to_int(s.level), "message": s.message, "hardware_id": s.hardware_id,
                     "values": {kv.key: kv.value for kv in s.values}} for s in msg.status}


def text_digest(text: str) -> str:
    """A short identity of a text (CRC-32, 8 hex digits): vehicle_node reports the last
    scene description it took in this way, so a player can tell whether the one it sent is
    in without the whole text in every status."""
    return f"{zlib.crc32(str(text).encode('utf-8', 'surrogatepass')):08x}"


def string_msg(types, text: str):
    return types("std_msgs/msg/String")(data=str(text))


_COMMAND_ALIASES = {"straight": Command.FORWARD}


def command_from_string(text: str) -> Command:
    """LEFT / RIGHT / FORWARD (any case, surrounding blanks ignored; "straight" = FORWARD)."""
    key = str(text).strip()
    if key.lower() in _COMMAND_ALIASES:
        return _COMMAND_ALIASES[key.lower()]
    try:
        return Command[key.upper()]
    except KeyError:
        raise ValueError(f"unknown command {text!r}; expected LEFT, RIGHT or FORWARD") from None


__all__ = [
    "MapFrame", "RosbagsTypes", "bgr_to_compressed_msg", "bgr_to_image_msg", "command_from_string",
    "compressed_msg_to_bgr", "delete_all_markers", "diagnostic_array", "diagnostic_to_dict", "header",
    "image_msg_to_bgr", "level_to_int", "matrix_from_quaternion", "ns_to_stamp", "odometry_msg",
    "odometry_to_state", "path_to_xy", "pose_msg", "pose_to_matrix", "quaternion_from_matrix",
    "quaternion_from_yaw", "rclpy_types", "rosbags_types", "stamp_to_ns", "string_msg", "text_digest",
    "tf_message", "tf_to_matrices", "trajectory_markers", "trajectory_to_path", "transform_stamped",
    "transform_to_matrix",
]
