"""roadside_node under real rclpy and Fast DDS, in this process."""

from __future__ import annotations

import os

import numpy as np
import pytest

from ros_support import Collector, require, ros_session, wait_until

require("rclpy")

from rclpy.qos import qos_profile_sensor_data  # noqa: E402

from v2x_vlm_ros.conversion import messages as conv  # noqa: E402
from v2x_vlm_ros.ros import roadside_node as rn  # noqa: E402
from test_ros_vehicle_node import launch_module  # noqa: E402

pytestmark = pytest.mark.ros_node


def roadside(session, *overrides):
    args = ["--ros-args"]
    for item in overrides:
        args += ["-p", item]
    return session.add(rn.RoadsideNode(context=session.context, cli_args=args))


def camera_image(seed=0):
    return np.random.default_rng(seed).integers(0, 255, (60, 100, 3), np.uint8)


def values_of(diagnostics) -> dict:
    return conv.diagnostic_to_dict(diagnostics)["v2x_vlm_ros: roadside_node"]["values"]


def test_the_node_creates_exactly_the_topics_the_launch_file_remaps():
    remaps = launch_module("v2x_vlm.launch").ROADSIDE_REMAPS
    # A name of its own: the graph is asked by node name, and a roadside_node of another test
    # (in this process or a launched one) on the same ROS_DOMAIN_ID must not answer instead.
    name = f"roadside_node_{os.getpid()}"
    with ros_session() as session:
        args = ["--ros-args", "-r", f"__node:={name}"]
        node = session.add(rn.RoadsideNode(context=session.context, cli_args=args))
        assert node.get_name() == name
        expected = {topic.replace("~", f"/{name}") for topic, _ in remaps}

        def graph():  # the ROS graph learns of the node's own topics asynchronously
            subs = dict(node.get_subscriber_names_and_types_by_node(name, "/"))
            pubs = dict(node.get_publisher_names_and_types_by_node(name, "/"))
            return subs, pubs, {topic for topic in {**subs, **pubs} if topic.startswith(f"/{name}/")}

        try:
            wait_until(lambda: graph()[2] >= expected, 20, what="the node's topics in the graph")
        except AssertionError as timeout:
            seen = node.get_node_names_and_namespaces()
            raise AssertionError(f"{timeout}; nodes in the graph: {seen}; ours: {graph()}") from None
        subs, pubs, ours = graph()
    assert ours == expected
    assert subs[f"/{name}/input/image"] == ["sensor_msgs/msg/CompressedImage"]
    assert pubs[f"/{name}/output/image"] == ["sensor_msgs/msg/CompressedImage"]


def test_undecodable_frames_are_counted_and_published_in_the_diagnostics():
    """roadside_node counted input_undecodable but never published it."""
    t = conv.rclpy_types()
    with ros_session() as session:
        node = roadside(session, "rate_hz:=0")
        camera = session.node("camera")
        pub = camera.create_publisher(t("sensor_msgs/msg/CompressedImage"), "/roadside_node/input/image", 10)
        sent = Collector(camera, t("sensor_msgs/msg/CompressedImage"), "/roadside_node/output/image",
                         qos_profile_sensor_data)
        diags = Collector(camera, t("diagnostic_msgs/msg/DiagnosticArray"), "/diagnostics", 10)
        wait_until(lambda: pub.get_subscription_count() > 0 and node.subscription.get_publisher_count() > 0
                   and node.pub.get_subscription_count() > 0, 10,
                   what="matching")
        good = conv.bgr_to_compressed_msg(t, camera_image(), 1_000_000_000, "roadside_camera")
        broken = conv.bgr_to_compressed_msg(t, camera_image(), 1_100_000_000, "roadside_camera")
        broken.data = broken.data[: len(broken.data) // 3]  # a truncated JPEG
        pub.publish(broken)
        pub.publish(good)
        wait_until(lambda: len(sent) == 1, 10, what="the good frame sent")

        def reported():
            values = [values_of(d) for d in diags.messages]
            return any(v.get("input_undecodable") == "1" for v in values)

        wait_until(reported, 5, what="input_undecodable in the diagnostics")
    assert node.service.counts["offered"] == 2 and node.service.counts["sent"] == 1
    assert conv.stamp_to_ns(sent.messages[0].header.stamp) == 1_000_000_000
    status = conv.diagnostic_to_dict(diags.messages[-1])["v2x_vlm_ros: roadside_node"]
    assert status["level"] == 1  # WARN while frames are undecodable


def test_raw_codec_sends_raw_images_at_the_scale():
    t = conv.rclpy_types()
    with ros_session() as session:
        node = roadside(session, "codec:=raw", "scale:=0.5", "rate_hz:=0")
        camera = session.node("camera")
        pub = camera.create_publisher(t("sensor_msgs/msg/CompressedImage"), "/roadside_node/input/image", 10)
        sent = Collector(camera, t("sensor_msgs/msg/Image"), "/roadside_node/output/image",
                         qos_profile_sensor_data)
        wait_until(lambda: pub.get_subscription_count() > 0 and node.subscription.get_publisher_count() > 0
                   and node.pub.get_subscription_count() > 0, 10,
                   what="matching")
        image = camera_image()
        pub.publish(conv.bgr_to_compressed_msg(t, image, 5, "roadside_camera", fmt="png"))
        wait_until(lambda: len(sent) == 1, 10, what="the raw frame")
    msg = sent.messages[0]
    assert (msg.height, msg.width, msg.encoding) == (30, 50, "bgr8")
    assert conv.image_msg_to_bgr(msg, "sent").shape == (30, 50, 3)


def test_the_diagnostics_report_how_many_readers_the_output_has_matched():
    """``output.subscribers``: what a step play waits on before its first frame (the node
    forwards each frame once; one sent before a vehicle's subscription is matched is lost)."""
    t = conv.rclpy_types()
    with ros_session() as session:
        roadside(session)
        listener = session.node("listener")
        diags = Collector(listener, t("diagnostic_msgs/msg/DiagnosticArray"), "/diagnostics", 10)

        def last_reported():
            statuses = [values_of(d) for d in diags.messages[-1:]]
            return statuses[0].get("output.subscribers") if statuses else None

        wait_until(lambda: last_reported() == "0", 10, what="a status with no reader")
        nodes = [session.node(name) for name in ("vehicle", "recorder")]
        readers = [Collector(node, t("sensor_msgs/msg/CompressedImage"), "/roadside_node/output/image",
                             qos_profile_sensor_data) for node in nodes]
        wait_until(lambda: last_reported() == "2", 10, what="a status with both readers")
        nodes[1].destroy_subscription(readers[1].subscription)
        wait_until(lambda: last_reported() == "1", 10, what="a status after the recorder left")
