"""vehicle_node under real rclpy and Fast DDS, in this process: real publishers and
subscriptions, rclpy's generated message classes, the shipped demo model."""

from __future__ import annotations

import importlib.util
import os
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from ros_support import ROOT, Collector, require, ros_session, wait_until

require("rclpy")

from rclpy.clock import Clock, ClockType  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data  # noqa: E402

from v2x_vlm_ros.conversion import messages as conv  # noqa: E402
from v2x_vlm_ros.data.images import load_image  # noqa: E402
from v2x_vlm_ros.ros import vehicle_node as vn  # noqa: E402
from service_checks import EGO_DROPS, check_accounting  # noqa: E402

pytestmark = pytest.mark.ros_node

EGO = sorted((ROOT / "data/sample/vehicle-side/image").glob("*.jpg"))
ROAD = sorted((ROOT / "data/sample/infrastructure-side/image").glob("*.jpg"))
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def launch_module(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "launch" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def vehicle(session, *ros_args: str):
    """A VehicleNode in ``session`` with ``-p name:=value`` overrides (as a launch file gives them)."""
    args = ["--ros-args", "-p", "warmup_frames:=0"]
    for item in ros_args:
        args += ["-p", item]
    return session.add(vn.VehicleNode(context=session.context, cli_args=args))


def compressed(types, path: Path, stamp_ns: int, frame: str = "camera"):
    return conv.bgr_to_compressed_msg(types, path.read_bytes(), stamp_ns, frame)


def now_ns() -> int:
    return Clock(clock_type=ClockType.SYSTEM_TIME).now().nanoseconds


class Feeder:
    """A node publishing ego / roadside images, odometry, a command and a description."""

    def __init__(self, session, ego_qos=RELIABLE, road_qos=qos_profile_sensor_data, ego_type=None):
        self.session = session
        self.node = session.node("feeder")
        self.types = conv.rclpy_types()
        t = self.types
        self.ego = self.node.create_publisher(ego_type or t("sensor_msgs/msg/CompressedImage"),
                                              "/vehicle_node/input/ego_image", ego_qos)
        self.road = self.node.create_publisher(t("sensor_msgs/msg/CompressedImage"),
                                               "/vehicle_node/input/roadside_image", road_qos)
        self.odom = self.node.create_publisher(t("nav_msgs/msg/Odometry"), "/vehicle_node/input/odometry", 10)
        self.command = self.node.create_publisher(t("std_msgs/msg/String"), "/vehicle_node/input/command", 10)
        self.text = self.node.create_publisher(t("std_msgs/msg/String"),
                                               "/vehicle_node/input/scene_description", 10)

    def matched(self, publisher=None):
        pubs = [publisher] if publisher else [self.ego, self.road, self.odom]
        wait_until(lambda: all(p.get_subscription_count() > 0 for p in pubs), 10,
                   what="subscriptions to match")
        # Matching is learnt by each side on its own: a best-effort message sent before the
        # subscriber's side has matched is lost (seen once under a loaded CI machine).
        topics = {p.topic_name for p in pubs}
        subs = [sub for node in self.session.nodes if node is not self.node
                for sub in node.subscriptions if sub.topic_name in topics]
        wait_until(lambda: all(sub.get_publisher_count() > 0 for sub in subs), 10,
                   what="the node's subscriptions to see the publishers")

    def frame(self, stamp_ns: int, k: int = 0, roadside: bool = True):
        t = self.types
        if roadside:
            self.road.publish(compressed(t, ROAD[k], stamp_ns - 50_000_000, "roadside_camera"))
        pose = np.eye(4)
        pose[0, 3] = 2.0 * k
        self.odom.publish(conv.odometry_msg(t, pose, 6.0, 0.0, stamp_ns))
        self.ego.publish(compressed(t, EGO[k], stamp_ns, "ego_camera"))


def test_the_node_creates_exactly_the_topics_the_launch_file_remaps():
    remaps = launch_module("v2x_vlm.launch").VEHICLE_REMAPS
    # a namespace of its own: a vehicle_node of an earlier test can linger in the graph
    # until DDS notices it left, and a lookup by name may find that one
    ns = f"/graph_{os.getpid()}_{time.monotonic_ns() % 10**6}"
    with ros_session() as session:
        node = session.add(vn.VehicleNode(context=session.context, cli_args=[
            "--ros-args", "-p", "warmup_frames:=0", "-r", f"__ns:={ns}"]))
        expected = {name.replace("~", f"{ns}/vehicle_node") for name, _ in remaps}

        def graph():  # the ROS graph learns of the node's own topics asynchronously
            subs = dict(node.get_subscriber_names_and_types_by_node("vehicle_node", ns))
            pubs = dict(node.get_publisher_names_and_types_by_node("vehicle_node", ns))
            return subs, pubs, {name for name in {**subs, **pubs} if name.startswith(f"{ns}/vehicle_node/")}

        wait_until(lambda: graph()[2] >= expected, 30, what="the node's topics in the graph")
        subs, pubs, ours = graph()
    assert ours == expected
    assert subs[f"{ns}/vehicle_node/input/ego_image"] == ["sensor_msgs/msg/CompressedImage"]
    assert subs[f"{ns}/vehicle_node/input/odometry"] == ["nav_msgs/msg/Odometry"]
    assert pubs[f"{ns}/vehicle_node/output/path"] == ["nav_msgs/msg/Path"]
    assert pubs[f"{ns}/vehicle_node/output/markers"] == ["visualization_msgs/msg/MarkerArray"]
    assert pubs["/diagnostics"] == ["diagnostic_msgs/msg/DiagnosticArray"]


def test_frames_in_plans_out_over_dds_with_rclpy_messages():
    with ros_session() as session:
        vehicle(session, "base_frame:=test_base", "map_frame:=test_map")
        feed = Feeder(session)
        t = feed.types
        listen = session.node("listener")
        paths = Collector(listen, t("nav_msgs/msg/Path"), "/vehicle_node/output/path", RELIABLE)
        paths_map = Collector(listen, t("nav_msgs/msg/Path"), "/vehicle_node/output/path_map", RELIABLE)
        markers = Collector(listen, t("visualization_msgs/msg/MarkerArray"), "/vehicle_node/output/markers",
                            RELIABLE)
        texts = Collector(listen, t("std_msgs/msg/String"), "/vehicle_node/output/scene_description",
                          RELIABLE)
        diags = Collector(listen, t("diagnostic_msgs/msg/DiagnosticArray"), "/diagnostics", RELIABLE)
        feed.matched()
        feed.command.publish(conv.string_msg(t, "LEFT"))
        feed.text.publish(conv.string_msg(t, "A car waits at the junction."))
        time.sleep(0.3)
        stamp = now_ns()
        feed.frame(stamp, 3)
        wait_until(lambda: len(paths) and len(paths_map) and len(markers) and len(texts), 10, what="outputs")

        def status():  # a status sent before the plan went out has no count.plans_out yet
            return conv.diagnostic_to_dict(diags.messages[-1])["v2x_vlm_ros: vehicle_node"]["values"] \
                if diags.messages else {}
        wait_until(lambda: "count.plans_out" in status(), 5, what="a status counting the plan")
        path = paths.messages[0]
        assert type(path).__module__.startswith("nav_msgs.msg")  # rclpy's generated class
        assert conv.stamp_to_ns(path.header.stamp) == stamp and path.header.frame_id == "test_base"
        assert len(path.poses) == 10 and np.isfinite(conv.path_to_xy(path)).all()
        assert paths_map.messages[0].header.frame_id == "test_map"
        assert markers.messages[0].markers[0].header.frame_id == "test_base"
        assert texts.messages[0].data == "A car waits at the junction."
        values = status()
        assert values["mode"] == "fused" and values["command"] == "LEFT"
        assert values["count.ego_frames_in"] == "1" and values["count.plans_out"] == "1"


def test_every_input_is_counted_in_once_stored_and_statuses_follow_diagnostics_period():
    """What `v2x-vlm play --step` relies on: count.<input>_in in a status means the input
    is in (refused ones counted too, with their drop), statuses every diagnostics_period_s."""
    with ros_session() as session:
        node = vehicle(session, "diagnostics_period_s:=0.1")
        feed = Feeder(session)
        t = feed.types
        diags = Collector(session.node("listener"), t("diagnostic_msgs/msg/DiagnosticArray"), "/diagnostics",
                          RELIABLE)
        feed.matched(feed.odom)
        feed.matched(feed.command)
        feed.matched(feed.text)
        stamp = now_ns()
        bad_pose = np.eye(4)
        bad_pose[0, 3] = float("nan")
        feed.odom.publish(conv.odometry_msg(t, np.eye(4), 5.0, 0.0, stamp))
        feed.odom.publish(conv.odometry_msg(t, bad_pose, 5.0, 0.0, stamp + 1))
        feed.command.publish(conv.string_msg(t, "RIGHT"))
        feed.command.publish(conv.string_msg(t, "UPWARDS"))
        feed.text.publish(conv.string_msg(t, "A bus stops."))

        def values():
            return [conv.diagnostic_to_dict(m)["v2x_vlm_ros: vehicle_node"]["values"] for m in diags.messages]

        wait_until(lambda: any(v.get("count.descriptions_in") == "1" and v.get("count.odometry_in") == "2"
                               and v.get("count.commands_in") == "2" for v in values()), 10, what="counts")
        last = values()[-1]
        assert last["drop.odometry_invalid"] == "1" and last["drop.command_invalid"] == "1"
        assert last["command"] == "RIGHT"
        # what the last odometry and description taken in were (the refused odometry too):
        # the player's check that the sample's own messages are in, not late copies
        assert last["last_in.odometry_stamp"] == str(stamp + 1)
        assert last["last_in.description_digest"] == f"{zlib.crc32(b'A bus stops.'):08x}"
        service = node.planning.service
        assert service.motion[0] == stamp and service.motion[1].speed_mps == 5.0  # the NaN one refused
        assert service.descriptions.get(now_ns())[0] == "A bus stops."
        before = len(diags)
        time.sleep(1.0)
        assert 6 <= len(diags) - before <= 12  # 10 a second, not 1


def test_planning_never_stops_intake_and_every_frame_is_accounted(monkeypatch):
    """A plan takes 0.4 s while 60 best-effort frames come at 30 Hz: with planning in the
    intake thread (before), a third of them were lost in DDS, uncounted."""
    slow, make_engine = [], vn.make_engine

    def slow_engine(*args, **kwargs):
        engine, note = make_engine(*args, **kwargs)
        plan = engine.plan

        def slowly(inputs):
            slow.append(time.monotonic())
            time.sleep(0.4)
            return plan(inputs)

        engine.plan = slowly
        return engine, note

    monkeypatch.setattr(vn, "make_engine", slow_engine)
    with ros_session() as session:
        node = vehicle(session, "qos_depth:=5")
        feed = Feeder(session, ego_qos=qos_profile_sensor_data)
        feed.matched()
        for k in range(60):
            feed.frame(now_ns(), k % len(EGO), roadside=k % 5 == 0)
            time.sleep(1 / 30)
        service = node.planning.service
        losses = node.planning.losses

        def accounted():  # taken in, or seen missing from the publisher's sequence numbers
            return service.counts["ego_frames_in"] + losses.lost["ego"] == 60

        wait_until(accounted, 10, what="all 60 frames in or counted as lost")

        def settled():  # nothing queued, no plan in progress
            return not service.ego.frames and node.planning.is_idle()

        wait_until(settled, 10, what="the last frame planned")
        diag = node.planning.diagnostic_values()[0]
    assert len(slow) >= 2 and service.counts["plans_out"] >= 2, diag
    assert service.drops["ego_superseded"] > 0  # skipped while a plan ran, and counted
    # the publisher's sequence numbers reach the node: with planning in the intake thread a
    # third were lost in DDS; now at most a rare best-effort loss on a busy machine (a clean-
    # clone CI run once missed "all 60 frames in"), and it is counted
    lost = losses.lost["ego"]
    assert losses.first["ego"] == 1 and diag["first_sequence_number.ego"] == 1
    assert lost <= 2 and diag.get("lost_before_intake.ego", 0) == lost, diag
    check_accounting(service)
    assert diag["count.ego_frames_in"] == 60 - lost
    # the diagnostics add up: every frame planned, or dropped with its cause
    assert diag["count.plans_out"] + sum(diag.get(f"drop.{cause}", 0) for cause in EGO_DROPS) == 60 - lost


def test_frames_lost_in_dds_before_intake_are_counted():
    """An intake slower than the camera with a queue of one: DDS drops frames before the
    node sees them; the gaps in the publisher's sequence numbers count every one."""
    with ros_session() as session:
        node = vehicle(session, "qos_depth:=1")
        service = node.planning.service
        take = service.on_ego_image

        def slow_intake(*args, **kwargs):
            time.sleep(0.2)
            take(*args, **kwargs)

        service.on_ego_image = slow_intake
        feed = Feeder(session, ego_qos=qos_profile_sensor_data)
        feed.matched()
        for k in range(30):
            feed.frame(now_ns(), k % len(EGO), roadside=False)
            time.sleep(1 / 30)
        time.sleep(1.0)
        arrived = service.counts["ego_frames_in"]
        lost = node.planning.losses.lost["ego"]
        first = node.planning.losses.first["ego"]
        diag = node.planning.diagnostic_values()[0]
    assert lost > 5 and arrived < 25  # most never reached the node ...
    assert arrived + lost + (first - 1) == 30  # ... and every one is accounted
    assert diag["lost_before_intake.ego"] == lost


def test_an_unreadable_raw_image_is_counted_in_and_dropped():
    with ros_session() as session:
        node = vehicle(session, "ego_image_transport:=raw")
        t = conv.rclpy_types()
        feed = Feeder(session, ego_type=t("sensor_msgs/msg/Image"))
        feed.matched(feed.ego)
        image = np.zeros((8, 6, 3), np.uint8)
        good = conv.bgr_to_image_msg(t, image, now_ns(), "ego_camera")
        short = conv.bgr_to_image_msg(t, image, now_ns() + 1, "ego_camera")
        short.data = short.data[:-10]  # 10 bytes missing: not an 8x6 bgr8 image
        odd = conv.bgr_to_image_msg(t, image, now_ns() + 2, "ego_camera")
        odd.encoding = "yuv422_yuy2"
        for msg in (short, odd, good):
            feed.ego.publish(msg)
        service = node.planning.service
        wait_until(lambda: service.counts["ego_frames_in"] == 3, 10, what="3 frames in")
        wait_until(lambda: not service.ego.frames, 10, what="the good frame planned")
    assert service.drops["ego_undecodable"] == 2 and service.counts["plans_out"] == 1
    check_accounting(service)


def test_best_effort_and_reliable_publishers_both_reach_the_image_subscriptions():
    with ros_session() as session:
        node = vehicle(session)  # qos_images: sensor_data (best effort)
        feed = Feeder(session, ego_qos=RELIABLE, road_qos=qos_profile_sensor_data)
        feed.matched()
        feed.frame(now_ns(), 1)
        service = node.planning.service
        wait_until(lambda: service.counts["plans_out"] == 1, 10, what="a plan")
    assert service.counts["roadside_frames_in"] == 1 and service.counts["cycles_fused"] == 1


def test_a_best_effort_camera_on_a_reliable_subscription_is_reported_not_silent():
    with ros_session() as session:
        node = vehicle(session, "qos_images:=reliable", "input_silence_warn_s:=0.5")
        other = ros_session()  # another participant, as a camera driver would be
        with other as camera_side:
            camera = camera_side.node("camera")
            pub = camera.create_publisher(conv.rclpy_types()("sensor_msgs/msg/CompressedImage"),
                                          "/vehicle_node/input/ego_image", qos_profile_sensor_data)
            wait_until(lambda: node.planning.links.counts["ego_image_incompatible_qos"] >= 1, 10,
                       what="the incompatible QoS event")
            pub.publish(compressed(conv.rclpy_types(), EGO[0], now_ns()))
            time.sleep(1.0)
            values, silent = node.planning.diagnostic_values()
    assert values["link.ego_image_incompatible_qos"] >= 1
    assert node.planning.service.counts["ego_frames_in"] == 0 and "ego_image" in silent


def test_a_publisher_of_another_type_on_an_input_is_reported():
    """roadside_codec:=raw used to send sensor_msgs/Image to a CompressedImage subscription:
    DDS delivers nothing and nothing said so."""
    with ros_session() as session:
        node = vehicle(session)
        with ros_session() as roadside_side:
            raw = roadside_side.node("roadside").create_publisher(
                conv.rclpy_types()("sensor_msgs/msg/Image"), "/vehicle_node/input/roadside_image", 10)

            def reported():
                values, _ = node.planning.diagnostic_values()
                return values.get("link.roadside_image_incompatible_type") == 1

            wait_until(reported, 10, 0.2, what="the foreign publisher in the diagnostics")
            assert raw.get_subscription_count() == 0  # DDS never matched them
        wait_until(lambda: "link.roadside_image_incompatible_type" not in
                   node.planning.diagnostic_values()[0], 10, 0.2, what="the report to end with the publisher")


def test_each_silent_input_is_named_after_the_configured_silence_never_before():
    silence_s = 4
    with ros_session() as session:
        started_ns = now_ns()
        node = vehicle(session, f"input_silence_warn_s:={silence_s}")
        t = conv.rclpy_types()
        diags = Collector(session.node("listener"), t("diagnostic_msgs/msg/DiagnosticArray"), "/diagnostics",
                          RELIABLE)
        feed = Feeder(session)
        feed.matched()
        wait_until(lambda: node.planning.diagnostic_values()[1], silence_s + 5,
                   what=f"{silence_s} s of silence")
        # judged by the messages' own stamps (the node's clock), not by when they arrived here
        early = [conv.diagnostic_to_dict(m)["v2x_vlm_ros: vehicle_node"]["values"] for m in diags.messages
                 if conv.stamp_to_ns(m.header.stamp) - started_ns < (silence_s - 0.5) * 1e9]
        assert early and all(v["silent_inputs"] == "" for v in early)  # before: warned after 1 s
        assert time.monotonic() - node.planning.silence.started_s >= silence_s
        assert node.planning.diagnostic_values()[1] == ["ego_image", "roadside_image"]
        feed.frame(now_ns(), 0, roadside=False)
        wait_until(lambda: node.planning.service.counts["ego_frames_in"] == 1, 5, what="an ego frame")
        assert node.planning.diagnostic_values()[1] == ["roadside_image"]


def test_the_shipped_motion_model_gets_the_roadside_frame_from_half_a_second_before(monkeypatch):
    """The shipped student reads motion (roadside_motion_s 0.5): over DDS, the node hands it the
    roadside frame that came 0.5 s before the paired one, and counts the plan at the stream's
    start that had none (the model then sees the current frame alone)."""
    with ros_session() as session:
        node = vehicle(session, "diagnostics_period_s:=0.1")
        engine = node.planning.service.engine
        assert engine.roadside_motion_s == 0.5
        given = []
        plan = engine.plan
        monkeypatch.setattr(engine, "plan", lambda inputs: given.extend(inputs) or plan(inputs))
        feed = Feeder(session)
        t = feed.types
        listen = session.node("listener")
        paths = Collector(listen, t("nav_msgs/msg/Path"), "/vehicle_node/output/path", RELIABLE)
        diags = Collector(listen, t("diagnostic_msgs/msg/DiagnosticArray"), "/diagnostics", RELIABLE)
        feed.matched()
        stamp = now_ns()
        feed.frame(stamp, 0)
        wait_until(lambda: len(paths) == 1, 20, what="the first plan")
        time.sleep(max(0.0, (stamp + 500_000_000 - now_ns()) / 1e9))  # the next frame is not from the future
        feed.frame(stamp + 500_000_000, 1)
        wait_until(lambda: len(paths) == 2, 20, what="the second plan")

        def values():
            return conv.diagnostic_to_dict(diags.messages[-1])["v2x_vlm_ros: vehicle_node"]["values"] \
                if diags.messages else {}
        wait_until(lambda: values().get("count.plans_out") == "2", 5, what="a status counting both plans")
    assert values()["count.roadside_previous_missing"] == "1"
    assert [g.roadside is not None for g in given] == [True, True]
    assert given[0].roadside_previous is None
    assert np.array_equal(given[1].roadside, load_image(ROAD[1]))
    assert np.array_equal(given[1].roadside_previous, load_image(ROAD[0]))


def test_sim_time_plans_follow_clock():
    t = conv.rclpy_types()
    with ros_session() as session:
        node = vehicle(session, "use_sim_time:=true")
        feed = Feeder(session)
        clock = feed.node.create_publisher(t("rosgraph_msgs/msg/Clock"), "/clock", 10)
        paths = Collector(session.node("listener"), t("nav_msgs/msg/Path"), "/vehicle_node/output/path",
                          RELIABLE)
        feed.matched(clock)
        sim = 1_626_155_123_000_000_000  # a DAIR-V2X stamp: far from the wall clock

        def tick(ns):
            clock.publish(t("rosgraph_msgs/msg/Clock")(clock=conv.ns_to_stamp(t, ns)))

        tick(sim)
        wait_until(lambda: node.planning.now_ns() == sim, 5, what="the node to follow /clock")
        feed.matched()
        feed.frame(sim + 40_000_000, 2)
        time.sleep(0.5)
        assert len(paths) == 0  # sim time has not moved: the planning timer has not fired
        tick(sim + 150_000_000)
        wait_until(lambda: len(paths) == 1, 10, what="a plan after /clock moved")
    assert conv.stamp_to_ns(paths.messages[0].header.stamp) == sim + 40_000_000
