"""roadside_node: the rclpy adapter over ``runtime.roadside.RoadsideService``.

- in:  ``~/input/image`` (the infrastructure camera; sensor_msgs/Image or CompressedImage,
       ``input_transport``);
- out: ``~/output/image`` (what is sent to the vehicle, with the camera's stamp:
       CompressedImage for jpeg/png, sensor_msgs/Image bgr8 for raw), ``/diagnostics``
       (frames offered / sent / skipped / undecodable / lost before intake, bytes per
       second by formula and measured, silence, link problems, ``output.subscribers``:
       the readers the output's writer has matched).

A frame is decoded only when the rate limit will send it. ``scale``, ``quality``,
``rate_hz``, ``codec`` (between jpeg and png: raw changes the message type) and
``input_silence_warn_s`` can be changed while the node runs (``ros2 param set``).
"""

from __future__ import annotations

import sys
import time

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.node import Node

from v2x_vlm_ros.conversion import messages as conv
from v2x_vlm_ros.preprocessing.image_codec import ImageDecodeError
from v2x_vlm_ros.ros.intake import SilenceMonitor, TransportLosses
from v2x_vlm_ros.ros.node_parameters import LiveParameters
from v2x_vlm_ros.ros.parameters import RoadsideNodeConfig, build, roadside_node_parameters
from v2x_vlm_ros.ros.process import run
from v2x_vlm_ros.ros.qos import LinkProblems, qos
from v2x_vlm_ros.runtime.roadside import RoadsideConfig, RoadsideService

NODE_NAME = "roadside_node"


def _message_family(codec: str) -> str:
    return "sensor_msgs/msg/Image" if codec == "raw" else "sensor_msgs/msg/CompressedImage"


class RoadsideNode(Node):
    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        self.params = LiveParameters(self, roadside_node_parameters(), self.check, self.apply)
        self.cfg, config = self.configs(self.params.values)
        self.service = RoadsideService(config)
        self.types = conv.rclpy_types()
        self.losses = TransportLosses()
        self.links = LinkProblems(self.get_logger())
        self.closing = False
        self.in_type = in_type = _message_family("raw" if self.cfg.input_transport == "raw" else "jpeg")
        self.out_type = _message_family(config.codec)
        intake = MutuallyExclusiveCallbackGroup()
        self.subscription = self.create_subscription(
            self.types(in_type), "~/input/image", self.on_image, qos(self.cfg.qos_images, self.cfg.qos_depth),
            callback_group=intake,
            event_callbacks=self.links.watched_events("image", "~/input/image",
                                                      f"{in_type}, {self.cfg.qos_images}"))
        self.pub = self.create_publisher(self.types(self.out_type), "~/output/image",
                                         qos(self.cfg.qos_outputs, self.cfg.qos_depth))
        self.pub_diag = self.create_publisher(self.types("diagnostic_msgs/msg/DiagnosticArray"),
                                              "/diagnostics", qos("reliable", self.cfg.qos_depth))
        self.silence = SilenceMonitor(("camera_image",), self.cfg.input_silence_warn_s, time.monotonic())
        self.create_timer(1.0, self.on_diagnostics, callback_group=MutuallyExclusiveCallbackGroup(),
                          clock=Clock(clock_type=ClockType.STEADY_TIME))
        c = self.service.config
        self.get_logger().info(
            f"sending s={c.scale} {c.codec} q{c.quality} at {c.rate_hz or 'every frame'} Hz; "
            f"QoS in {self.cfg.qos_images}, out {self.cfg.qos_outputs}")

    @staticmethod
    def configs(values: dict) -> tuple[RoadsideNodeConfig, RoadsideConfig]:
        return build(RoadsideNodeConfig, values), build(RoadsideConfig, values)

    def check(self, values: dict) -> None:
        _, config = self.configs(values)
        current = getattr(self, "out_type", None)
        if current is not None and _message_family(config.codec) != current:
            raise ValueError(f"codec {config.codec!r} would change the message type of ~/output/image "
                             f"({current}); switch between jpeg and png, or restart the node")

    def apply(self, changed: dict) -> None:
        self.cfg, config = self.configs(self.params.values)
        self.service.reconfigure(config)
        self.silence.threshold_s = self.cfg.input_silence_warn_s

    def close(self, timeout_s: float = 4.0) -> None:
        self.closing = True

    def on_image(self, msg, info):  # two parameters: rclpy then passes the MessageInfo
        self.silence.seen("camera_image", time.monotonic())
        self.losses.observe("image", info.get("publication_sequence_number"))
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
            self.service.reject()
            self.get_logger().warning(str(exc), throttle_duration_sec=5.0)
            return
        frame = self.service.encode(stamp, image)
        if self.closing:
            return
        frame_id = msg.header.frame_id
        if frame.codec == "raw":
            pixels = np.frombuffer(frame.data, np.uint8).reshape(frame.height, frame.width, 3)
            self.pub.publish(conv.bgr_to_image_msg(self.types, pixels, stamp, frame_id))
        else:
            self.pub.publish(conv.bgr_to_compressed_msg(self.types, frame.data, stamp, frame_id,
                                                        fmt=frame.codec))

    def diagnostic_values(self) -> tuple[dict, list[str]]:
        now = time.monotonic()
        self.links.check_types(self, {"image": (self.subscription, self.in_type)})
        silent = self.silence.silent_for(now)
        for name, quiet in self.silence.due_warnings(now).items():
            self.get_logger().warning(
                f"no {name} for {quiet:.1f} s (input_silence_warn_s {self.silence.threshold_s:g}): check the "
                f"remapping of ~/input/image and QoS ({self.cfg.qos_images})")
        stats = self.service.stats()
        values = {k: v for k, v in stats.items() if k != "config"}
        values.update({f"config.{k}": v for k, v in stats["config"].items()})
        values["silent_inputs"] = ",".join(sorted(silent))
        values.update({f"lost_before_intake.{k}": v for k, v in self.losses.lost.items()})
        values.update({f"link.{k}": v for k, v in self.links.counts.items()})
        # the readers the output's writer has matched (DDS matches some time after the graph
        # shows a subscription, and a frame sent before is lost to that reader): what a step
        # play waits on before its first frame, as each frame is forwarded once. Counted
        # here rather than from the publisher's matched event, whose handler then fired
        # during teardown, as the other nodes left, on a destroyed handle.
        values["output.subscribers"] = self.pub.get_subscription_count()
        return values, sorted(silent)

    def on_diagnostics(self):
        if self.closing:
            return
        values, silent = self.diagnostic_values()
        level = 1 if silent or self.links.counts or values["input_undecodable"] else 0
        self.pub_diag.publish(conv.diagnostic_array(
            self.types, self.get_clock().now().nanoseconds, f"v2x_vlm_ros: {NODE_NAME}", level,
            "silent" if silent else "sending", values))


def main(args=None, stop=None) -> int:
    return run(RoadsideNode, args, threads=2, name=NODE_NAME, stop=stop)


if __name__ == "__main__":
    sys.exit(main())
