"""roadside_node: a thin rclpy adapter over ``runtime.roadside.RoadsideService``.

- in:  ``~/input/image`` (the infrastructure camera; sensor_msgs/Image or CompressedImage,
       ``input_transport``);
- out: ``~/output/image`` (what is sent to the vehicle, with the camera's stamp:
       CompressedImage for jpeg/png, sensor_msgs/Image bgr8 for raw), ``/diagnostics``
       (frames offered / sent / skipped, bytes per second by formula and measured).

A frame is decoded only when the rate limit will send it.
"""

from __future__ import annotations

import numpy as np
import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node

from v2x_vlm_ros.conversion import messages as conv
from v2x_vlm_ros.preprocessing.image_codec import ImageDecodeError
from v2x_vlm_ros.ros.parameters import RoadsideNodeConfig, build, roadside_node_parameters
from v2x_vlm_ros.ros.vehicle_node import qos
from v2x_vlm_ros.runtime.roadside import RoadsideConfig, RoadsideService


class RoadsideNode(Node):
    def __init__(self):
        super().__init__("roadside_node")
        specs = roadside_node_parameters()
        for spec in specs:
            self.declare_parameter(
                spec.name, spec.default, ParameterDescriptor(description=spec.description)
            )
        values = {s.name: self.get_parameter(s.name).value for s in specs}
        self.cfg = build(RoadsideNodeConfig, values)
        self.service = RoadsideService(build(RoadsideConfig, values))
        self.types = conv.rclpy_types()
        in_type = self.types(
            "sensor_msgs/msg/Image"
            if self.cfg.input_transport == "raw"
            else "sensor_msgs/msg/CompressedImage"
        )
        out_type = self.types(
            "sensor_msgs/msg/Image"
            if self.service.config.codec == "raw"
            else "sensor_msgs/msg/CompressedImage"
        )
        self.create_subscription(
            in_type, "~/input/image", self.on_image, qos(self.cfg.qos_images, self.cfg.qos_depth)
        )
        self.pub = self.create_publisher(
            out_type, "~/output/image", qos(self.cfg.qos_outputs, self.cfg.qos_depth)
        )
        self.pub_diag = self.create_publisher(
            self.types("diagnostic_msgs/msg/DiagnosticArray"),
            "/diagnostics",
            qos("reliable", self.cfg.qos_depth),
        )
        self.last_seen = None
        self.create_timer(1.0, self.on_diagnostics)
        c = self.service.config
        self.get_logger().info(
            f"sending s={c.scale} {c.codec} q{c.quality} at {c.rate_hz or 'every frame'} Hz; "
            f"QoS in {self.cfg.qos_images}, out {self.cfg.qos_outputs}"
        )

    def on_image(self, msg):
        self.last_seen = self.get_clock().now().nanoseconds
        stamp = conv.stamp_to_ns(msg.header.stamp)
        if not self.service.admit(stamp):
            return
        try:
            image = (
                conv.image_msg_to_bgr(msg, "~/input/image")
                if self.cfg.input_transport == "raw"
                else conv.compressed_msg_to_bgr(msg, "~/input/image")
            )
        except ImageDecodeError as exc:
            self.service.counts["input_undecodable"] += 1
            self.get_logger().warning(str(exc), throttle_duration_sec=5.0)
            return
        frame = self.service.encode(stamp, image)
        frame_id = msg.header.frame_id
        if frame.codec == "raw":
            pixels = np.frombuffer(frame.data, np.uint8).reshape(frame.height, frame.width, 3)
            self.pub.publish(conv.bgr_to_image_msg(self.types, pixels, stamp, frame_id))
        else:
            self.pub.publish(
                conv.bgr_to_compressed_msg(self.types, frame.data, stamp, frame_id, fmt=frame.codec)
            )

    def on_diagnostics(self):
        now = self.get_clock().now().nanoseconds
        silent = self.last_seen is None or now - self.last_seen > self.cfg.input_silence_warn_s * 1e9
        if silent:
            self.get_logger().warning(
                f"no camera image for {self.cfg.input_silence_warn_s:.0f} s: check the "
                f"remapping and QoS ({self.cfg.qos_images})",
                throttle_duration_sec=10.0,
            )
        stats = self.service.stats()
        values = {k: v for k, v in stats.items() if k != "config"}
        self.pub_diag.publish(
            conv.diagnostic_array(
                self.types,
                now,
                "v2x_vlm_ros: roadside_node",
                int(silent),
                "silent" if silent else "sending",
                values,
            )
        )


def main(args=None):
    rclpy.init(args=args)
    node = RoadsideNode()
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
