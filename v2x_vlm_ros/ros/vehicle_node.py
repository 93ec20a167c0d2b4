"""vehicle_node: a thin rclpy adapter over ``runtime.vehicle.VehicleService``.

Topics (private, remapped in launch/v2x_vlm.launch.py):
- in:  ``~/input/ego_image`` (sensor_msgs/Image or CompressedImage, ``ego_image_transport``),
       ``~/input/roadside_image`` (as ``roadside_image_transport``), ``~/input/odometry``
       (nav_msgs/Odometry, optional), ``~/input/command`` (std_msgs/String LEFT/RIGHT/FORWARD,
       optional; ``default_command`` until then);
- out: ``~/output/path`` (nav_msgs/Path in ``base_frame``), ``~/output/path_map`` (in
       ``map_frame``, when odometry gives a pose), ``~/output/markers`` (MarkerArray),
       ``~/output/scene_description`` (String), ``~/output/debug_image`` (Image, optional),
       ``/diagnostics`` (mode, drops, latencies).

Callbacks only hand messages to the service; planning runs in a timer at
``planning_rate_hz`` (on the ROS clock, so ``use_sim_time`` works with ``ros2 bag play
--clock``). Every piece of logic lives in the service and the conversion functions, which
are tested without ROS; this file only wires them to rclpy.
"""

from __future__ import annotations

import time

import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

from v2x_vlm_ros.conversion import messages as conv
from v2x_vlm_ros.data.records import EgoMotion
from v2x_vlm_ros.geometry import yaw_of
from v2x_vlm_ros.preprocessing.image_codec import ImageDecodeError
from v2x_vlm_ros.ros.parameters import VehicleNodeConfig, build, vehicle_node_parameters
from v2x_vlm_ros.runtime.describer import DescriptionCache
from v2x_vlm_ros.runtime.refine import RefineConfig
from v2x_vlm_ros.runtime.engine import EngineOptions
from v2x_vlm_ros.runtime.factory import default_model_dir, make_describer, make_engine
from v2x_vlm_ros.runtime.vehicle import VehicleConfig, VehicleService

ODOMETRY_HISTORY_S = 0.1


def qos(kind: str, depth: int) -> QoSProfile:
    if kind == "sensor_data":
        profile = QoSProfile(
            **{k: getattr(qos_profile_sensor_data, k) for k in ("reliability", "durability")},
            history=HistoryPolicy.KEEP_LAST,
            depth=depth,
        )
        return profile
    reliability = ReliabilityPolicy.RELIABLE if kind == "reliable" else ReliabilityPolicy.BEST_EFFORT
    return QoSProfile(reliability=reliability, history=HistoryPolicy.KEEP_LAST, depth=depth)


class VehicleNode(Node):
    def __init__(self):
        super().__init__("vehicle_node")
        specs = vehicle_node_parameters()
        for spec in specs:
            self.declare_parameter(
                spec.name, spec.default, ParameterDescriptor(description=spec.description)
            )
        values = {s.name: self.get_parameter(s.name).value for s in specs}
        self.cfg = build(VehicleNodeConfig, values)
        service_cfg = build(VehicleConfig, values)
        self.types = conv.rclpy_types()

        model_dir = self.cfg.model or default_model_dir()
        engines = EngineOptions(precision=self.cfg.engine_precision)
        if self.cfg.engine_cache_dir:
            engines.cache_dir = self.cfg.engine_cache_dir
        # warm-up runs before the subscriptions exist: the node is ready when they do
        engine, backend_note = make_engine(
            model_dir, self.cfg.device, self.cfg.backend, build(RefineConfig, values, "refine."),
            engines=engines, warm_up=self.cfg.warmup_frames,
        )
        self.get_logger().info(f"model {model_dir} on {self.cfg.device}: {backend_note}")
        cache = DescriptionCache(service_cfg.description_max_age_s)
        describer = (
            make_describer(
                self.cfg.describer_model,
                self.cfg.device,
                cache,
                self.cfg.describer_rate_hz,
                self.cfg.describer_deadline_s,
            )
            if self.cfg.describer_model
            else None
        )
        self.service = VehicleService(engine, service_cfg, describer, cache)
        self.pose = None  # map <- base_link from odometry

        image_qos, out_qos = qos(self.cfg.qos_images, self.cfg.qos_depth), qos(
            self.cfg.qos_outputs, self.cfg.qos_depth
        )
        image_type = {
            "raw": self.types("sensor_msgs/msg/Image"),
            "compressed": self.types("sensor_msgs/msg/CompressedImage"),
        }
        self.create_subscription(
            image_type[self.cfg.ego_image_transport], "~/input/ego_image", self.on_ego, image_qos
        )
        self.create_subscription(
            image_type[self.cfg.roadside_image_transport],
            "~/input/roadside_image",
            self.on_roadside,
            image_qos,
        )
        self.create_subscription(
            self.types("nav_msgs/msg/Odometry"), "~/input/odometry", self.on_odometry, out_qos
        )
        self.create_subscription(
            self.types("std_msgs/msg/String"), "~/input/command", self.on_command, out_qos
        )
        self.pub_path = self.create_publisher(self.types("nav_msgs/msg/Path"), "~/output/path", out_qos)
        self.pub_path_map = self.create_publisher(
            self.types("nav_msgs/msg/Path"), "~/output/path_map", out_qos
        )
        self.pub_markers = self.create_publisher(
            self.types("visualization_msgs/msg/MarkerArray"), "~/output/markers", out_qos
        )
        self.pub_text = self.create_publisher(
            self.types("std_msgs/msg/String"), "~/output/scene_description", out_qos
        )
        self.pub_debug = (
            self.create_publisher(self.types("sensor_msgs/msg/Image"), "~/output/debug_image", out_qos)
            if self.cfg.publish_debug_image
            else None
        )
        self.pub_diag = self.create_publisher(
            self.types("diagnostic_msgs/msg/DiagnosticArray"), "/diagnostics", out_qos
        )
        self.last_seen = {"ego_image": None, "roadside_image": None, "odometry": None}
        self.create_timer(1.0 / service_cfg.planning_rate_hz, self.on_timer)
        self.create_timer(1.0, self.on_diagnostics)
        self.get_logger().info(
            f"QoS: images {self.cfg.qos_images} (depth {self.cfg.qos_depth}), "
            f"outputs {self.cfg.qos_outputs}; "
            f"ego {self.cfg.ego_image_transport}, roadside {self.cfg.roadside_image_transport}; "
            f"planning at {service_cfg.planning_rate_hz} Hz"
        )

    def now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _image(self, msg, transport: str, source: str):
        """(pixels, encoded) for the service; raw images are only reshaped here."""
        if transport == "compressed":
            return None, bytes(msg.data)
        return conv.image_msg_to_bgr(msg, source), None

    def on_ego(self, msg):
        self.last_seen["ego_image"] = self.now_ns()
        try:
            pixels, encoded = self._image(msg, self.cfg.ego_image_transport, "~/input/ego_image")
        except ImageDecodeError:
            self.service.drops["ego_undecodable"] += 1
            return
        self.service.on_ego_image(
            conv.stamp_to_ns(msg.header.stamp), pixels, encoded, "~/input/ego_image", now_ns=self.now_ns()
        )

    def on_roadside(self, msg):
        self.last_seen["roadside_image"] = self.now_ns()
        try:
            pixels, encoded = self._image(msg, self.cfg.roadside_image_transport, "~/input/roadside_image")
        except ImageDecodeError:
            self.service.drops["roadside_undecodable"] += 1
            return
        self.service.on_roadside_image(
            conv.stamp_to_ns(msg.header.stamp),
            pixels,
            encoded,
            "~/input/roadside_image",
            now_ns=self.now_ns(),
        )

    def on_odometry(self, msg):
        self.last_seen["odometry"] = self.now_ns()
        try:
            pose, speed, yaw_rate = conv.odometry_to_state(msg)
        except ValueError as exc:  # NaN pose, broken quaternion: count it, keep the last good one
            self.service.drops["odometry_invalid"] += 1
            self.get_logger().warning(f"odometry refused: {exc}", throttle_duration_sec=5.0)
            return
        self.pose = pose
        # odometry measures the speed itself: a nominal history marks it as known
        self.service.on_motion(
            conv.stamp_to_ns(msg.header.stamp), EgoMotion(speed, yaw_of(pose), yaw_rate, ODOMETRY_HISTORY_S)
        )

    def on_command(self, msg):
        try:
            self.service.on_command(conv.command_from_string(msg.data))
        except ValueError as exc:
            self.service.drops["command_invalid"] += 1
            self.get_logger().warning(str(exc), throttle_duration_sec=5.0)

    def on_timer(self):
        result = self.service.step(self.now_ns())
        if result is None:
            return
        began = time.perf_counter()
        t, base = self.types, self.cfg.base_frame
        self.pub_path.publish(conv.trajectory_to_path(t, result.xy, result.stamp_ns, base))
        if self.pose is not None:
            self.pub_path_map.publish(
                conv.trajectory_to_path(
                    t, result.xy, result.stamp_ns, self.cfg.map_frame, frame_from_ego=self.pose
                )
            )
        if self.cfg.publish_markers:
            rgba = (0.1, 0.8, 0.2, 1.0) if result.mode == "fused" else (0.9, 0.6, 0.1, 1.0)
            self.pub_markers.publish(
                conv.trajectory_markers(t, result.xy, result.stamp_ns, base, "plan", rgba, 0)
            )
        if result.description is not None:
            self.pub_text.publish(conv.string_msg(t, result.description))
        if self.pub_debug is not None and self.service.last_ego is not None:
            from v2x_vlm_ros.tools.draw import debug_view  # only when asked for

            image = debug_view(self.service.last_ego, result.xy, result.mode)
            self.pub_debug.publish(conv.bgr_to_image_msg(t, image, result.stamp_ns, "ego_camera"))
        self.service.record_publish(1000.0 * (time.perf_counter() - began))

    def on_diagnostics(self):
        now = self.now_ns()
        diag = self.service.diagnostics()
        silent = [
            name
            for name, seen in self.last_seen.items()
            if name != "odometry" and (seen is None or now - seen > self.cfg.input_silence_warn_s * 1e9)
        ]
        for name in silent:
            self.get_logger().warning(
                f"no {name} for {self.cfg.input_silence_warn_s:.0f} s: check the topic remapping and "
                f"that the publisher's QoS is compatible with {self.cfg.qos_images}",
                throttle_duration_sec=10.0,
            )
        values = {"mode": diag["mode"], "command": diag["command"], "silent_inputs": ",".join(silent)}
        values.update({f"count.{k}": v for k, v in diag["counts"].items()})
        values.update({f"drop.{k}": v for k, v in diag["drops"].items()})
        for stage, stats in diag["latency_ms"].items():
            values[f"latency_ms.{stage}.p50"] = round(stats["p50"], 2)
            values[f"latency_ms.{stage}.p99"] = round(stats["p99"], 2)
        level = 0 if diag["mode"] == "fused" and not silent else 1  # OK / WARN
        self.pub_diag.publish(
            conv.diagnostic_array(
                self.types,
                now,
                "v2x_vlm_ros: vehicle_node",
                level,
                diag["mode"] or "waiting for frames",
                values,
            )
        )


def main(args=None):
    rclpy.init(args=args)
    node = VehicleNode()
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    finally:
        if node.service.describer is not None:
            node.service.describer.close()
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
