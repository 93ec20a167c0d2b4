"""Both nodes' parameters under rclpy, through the parameter services (what `ros2 param`
uses): declared types, ranges and descriptions; whole numbers for floats; invalid values
refused naming the parameter; run-time changes applied, or refused with the reason."""

from __future__ import annotations


import numpy as np
import pytest

from ros_support import Collector, require, ros_session, wait_until

require("rclpy")

from rcl_interfaces.msg import ParameterType  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.parameter_client import AsyncParameterClient  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402

from v2x_vlm_ros.conversion import messages as conv  # noqa: E402
from v2x_vlm_ros.ros import roadside_node as rn  # noqa: E402
from v2x_vlm_ros.ros import vehicle_node as vn  # noqa: E402
from v2x_vlm_ros.ros.node_parameters import ParameterError  # noqa: E402
from v2x_vlm_ros.ros.parameters import (RoadsideNodeConfig, VehicleNodeConfig, build,  # noqa: E402
                                        roadside_node_parameters, vehicle_node_parameters)
from v2x_vlm_ros.runtime.refine import RefineConfig  # noqa: E402
from v2x_vlm_ros.runtime.roadside import RoadsideConfig  # noqa: E402
from v2x_vlm_ros.runtime.vehicle import VehicleConfig  # noqa: E402

pytestmark = pytest.mark.ros_node

NODES = {
    "vehicle_node": (vn.VehicleNode, vehicle_node_parameters, ["warmup_frames:=0"]),
    "roadside_node": (rn.RoadsideNode, roadside_node_parameters, []),
}
TYPES = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
         float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING}


def start(session, name: str, *overrides: str):
    cls, _, base = NODES[name]
    args = ["--ros-args"]
    for item in [*base, *overrides]:
        args += ["-p", item]
    return session.add(cls(context=session.context, cli_args=args))


def client(session, name: str) -> AsyncParameterClient:
    c = AsyncParameterClient(session.node(f"client_for_{name}"), name)
    assert c.wait_for_services(10.0), f"{name}'s parameter services"
    return c


def result(future, timeout_s: float = 10.0):
    wait_until(future.done, timeout_s, what="the parameter service's answer")
    return future.result()


def set_one(c: AsyncParameterClient, name: str, value):
    response = result(c.set_parameters([Parameter(name, value=value)]))
    return response.results[0]


@pytest.mark.parametrize("name", sorted(NODES))
def test_every_parameter_is_declared_with_its_type_range_and_description(name):
    specs = NODES[name][1]()
    with ros_session() as session:
        start(session, name)
        c = client(session, name)
        described = result(c.describe_parameters([s.name for s in specs])).descriptors
    assert [d.name for d in described] == [s.name for s in specs]
    for spec, d in zip(specs, described):
        assert d.type == TYPES[spec.kind], spec.name
        assert d.description == spec.description and d.description, spec.name
        if spec.range is not None:
            ranges = d.floating_point_range if spec.kind is float else d.integer_range
            assert (ranges[0].from_value, ranges[0].to_value) == spec.range, spec.name
        else:
            assert not d.floating_point_range and not d.integer_range, spec.name
        if spec.choices:
            assert "one of " + ", ".join(spec.choices) in d.additional_constraints, spec.name
        assert ("read at start" in d.additional_constraints) == (not spec.runtime), spec.name


def whole_number_overrides(specs, configs) -> dict[str, int]:
    """For every float parameter a valid whole number (its rounded default, else 1)."""
    values = {s.name: s.default for s in specs}
    out = {}
    for spec in specs:
        if spec.kind is not float:
            continue
        for candidate in (int(round(spec.default)), 1):
            try:
                configs({**values, spec.name: float(candidate)})
            except ValueError:
                continue
            out[spec.name] = candidate
            break
    return out


CONFIGS = {
    "vehicle_node": lambda v: (build(VehicleNodeConfig, v), build(VehicleConfig, v),
                               build(RefineConfig, v, "refine.")),
    "roadside_node": lambda v: (build(RoadsideNodeConfig, v), build(RoadsideConfig, v)),
}


@pytest.mark.parametrize("name", sorted(NODES))
def test_whole_numbers_are_taken_for_every_float_parameter(name):
    """`roadside_rate_hz:=0` and `roadside_scale:=1` used to kill roadside_node at start."""
    specs = NODES[name][1]()
    ints = whole_number_overrides(specs, CONFIGS[name])
    assert len(ints) == sum(s.kind is float for s in specs) >= 3
    with ros_session() as session:
        node = start(session, name, *(f"{k}:={v}" for k, v in ints.items()))
        for key, value in ints.items():
            p = node.get_parameter(key)
            assert p.type_ == Parameter.Type.DOUBLE and p.value == float(value), key
        c = client(session, name)
        key = "input_silence_warn_s"  # `ros2 param set ... 7` sends an integer
        assert set_one(c, key, 7).successful
        assert node.get_parameter(key).value == 7.0
        assert node.get_parameter(key).type_ == Parameter.Type.DOUBLE


@pytest.mark.parametrize("name, override, named", [
    ("roadside_node", "scale:=1.5", "scale"),
    ("roadside_node", "codec:=gif", "codec"),
    ("roadside_node", "qos_depth:=0", "qos_depth"),
    ("roadside_node", "rate_hz:=-2.0", "rate_hz"),
    ("vehicle_node", "qos_images:=fast", "qos_images"),
    ("vehicle_node", "model:=42", "model"),
    ("vehicle_node", "refine.max_speed_mps:=-1.0", "refine.max_speed_mps"),
    ("vehicle_node", "backend:=tpu", "backend"),
    ("vehicle_node", "token_choice:=argmax", "token_choice"),
    ("vehicle_node", "ego_max_age_s:=0.0", "ego_max_age_s"),
])
def test_invalid_values_are_refused_at_start_naming_the_parameter(name, override, named):
    with ros_session() as session:
        with pytest.raises(ParameterError) as info:
            start(session, name, override)
    message = str(info.value)
    assert message.startswith(f"{name}: ") and named in message, message


def test_roadside_changes_take_effect_or_are_refused_with_the_reason():
    t = conv.rclpy_types()
    with ros_session() as session:
        node = start(session, "roadside_node", "rate_hz:=0")
        c = client(session, "roadside_node")
        camera = session.node("camera")
        pub = camera.create_publisher(t("sensor_msgs/msg/CompressedImage"), "/roadside_node/input/image",
                                      qos_profile_sensor_data)
        sent = Collector(camera, t("sensor_msgs/msg/CompressedImage"), "/roadside_node/output/image",
                         qos_profile_sensor_data)
        wait_until(lambda: pub.get_subscription_count() and sent_matched(node), 10, what="matching")
        image = np.random.default_rng(0).integers(0, 255, (80, 120, 3), np.uint8)
        jpeg = conv.bgr_to_compressed_msg(t, image, 0, "roadside_camera").data

        def offer(n, start_ns):
            # one frame at a time, each taken in before the next: the input is best effort,
            # keep last 5, so a burst on a loaded machine loses frames before the node sees them
            for k in range(n):
                stamp = start_ns + k * 100_000_000
                before = node.service.counts["offered"]
                pub.publish(conv.bgr_to_compressed_msg(t, bytes(jpeg), stamp, "roadside_camera"))
                wait_until(lambda: node.service.counts["offered"] == before + 1, 10,
                           what=f"frame {k + 1} of {n} offered")

        # before: `ros2 param set /roadside_node rate_hz 5.0` said "successful" and changed nothing
        assert set_one(c, "rate_hz", 5).successful  # an integer, as `ros2 param set ... 5` sends
        assert node.service.config.rate_hz == 5.0
        offer(20, 1_000_000_000)  # 2 s of a 10 Hz camera
        wait_until(lambda: node.service.counts["offered"] == 20, 10, what="20 frames offered")
        assert node.service.counts["sent"] == 10  # 5 Hz
        assert set_one(c, "scale", 0.5).successful and set_one(c, "codec", "png").successful
        offer(1, 10_000_000_000)
        wait_until(lambda: len(sent) == 11, 10, what="the png frame")
        last = sent.messages[-1]
        assert last.format == "png" and conv.compressed_msg_to_bgr(last, "sent").shape == (40, 60, 3)
        refused = set_one(c, "codec", "raw")
        assert not refused.successful and "message type of ~/output/image" in refused.reason
        refused = set_one(c, "qos_depth", 3)
        assert not refused.successful
        assert refused.reason.startswith("qos_depth cannot change while the node runs")
        refused = set_one(c, "quality", 101)
        assert not refused.successful and "quality" in refused.reason
        assert node.service.config.codec == "png" and node.get_parameter("qos_depth").value == 5


def sent_matched(node) -> bool:
    return node.pub.get_subscription_count() > 0


def test_vehicle_changes_take_effect_or_are_refused_with_the_reason():
    with ros_session() as session:
        node = start(session, "vehicle_node")
        planning = node.planning
        assert planning.service.engine.token_choice == "greedy"  # the demo model's own
        c = client(session, "vehicle_node")
        assert set_one(c, "planning_rate_hz", 4).successful
        assert planning.plan_timer.timer_period_ns == 250_000_000
        assert set_one(c, "refine.max_speed_mps", 12.5).successful
        assert planning.service.engine.refiner.config.max_speed_mps == 12.5
        assert set_one(c, "refine.enabled", False).successful and planning.service.engine.refiner is None
        assert set_one(c, "sync_slop_s", 0.1).successful and planning.service.config.sync_slop_s == 0.1
        assert set_one(c, "description_max_age_s", 1.5).successful
        assert planning.service.descriptions.max_age_ns == 1_500_000_000
        assert set_one(c, "input_silence_warn_s", 1.25).successful and planning.silence.threshold_s == 1.25
        assert planning.diagnostics_timer.timer_period_ns == 1_000_000_000
        assert set_one(c, "diagnostics_period_s", 0.05).successful
        assert planning.diagnostics_timer.timer_period_ns == 50_000_000
        refused = set_one(c, "diagnostics_period_s", 0.0)
        assert not refused.successful and "diagnostics_period_s must be > 0, got 0.0" in refused.reason
        assert planning.diagnostics_timer.timer_period_ns == 50_000_000
        for key, value in (("model", "/elsewhere"), ("device", "cuda"), ("backend", "inductor"),
                           ("queue_depth", 8), ("ego_image_transport", "raw"), ("token_choice", "mean")):
            refused = set_one(c, key, value)
            assert not refused.successful, key
            assert refused.reason == f"{key} cannot change while the node runs: it is read at start " \
                                     f"(restart the node to change it)"
        refused = set_one(c, "roadside_max_age_s", 0.0)
        assert not refused.successful and "roadside_max_age_s must be > 0" in refused.reason
        refused = set_one(c, "sync_slop_s", -1.0)
        assert not refused.successful and "sync_slop_s" in refused.reason
        assert planning.service.config.roadside_max_age_s == 1.0
        assert planning.service.config.sync_slop_s == 0.1
        assert node.get_parameter("model").value == ""


def test_token_choice_parameter_overrides_the_models_own():
    with ros_session() as session:
        node = start(session, "vehicle_node", "token_choice:=median")
        engine = node.planning.service.engine
        assert engine.token_choice == "median" and engine.static.token_choice == "median"
