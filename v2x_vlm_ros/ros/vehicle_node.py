"""vehicle_node: the rclpy adapter over ``runtime.vehicle.VehicleService``.

Topics (private, remapped in launch/v2x_vlm.launch.py):
- in:  ``~/input/ego_image`` (sensor_msgs/Image or CompressedImage, ``ego_image_transport``),
       ``~/input/roadside_image`` (as ``roadside_image_transport``), ``~/input/odometry``
       (nav_msgs/Odometry, optional), ``~/input/command`` (std_msgs/String LEFT/RIGHT/FORWARD,
       optional; ``default_command`` until then), ``~/input/scene_description``
       (std_msgs/String, optional: a description made elsewhere, e.g. a captioning node or
       a bag; it applies from when it is received);
- out: ``~/output/path`` (nav_msgs/Path in ``base_frame``), ``~/output/path_map`` (in
       ``map_frame``, when odometry gives a pose), ``~/output/markers`` (MarkerArray),
       ``~/output/scene_description`` (String), ``~/output/debug_image`` (Image, when
       ``publish_debug_image``), ``/diagnostics`` (mode, frames in, drops by cause, frames
       lost before intake, silent inputs, link problems, latencies; the current command,
       the stamp of the last odometry and a digest of the last scene description taken
       in: ``last_in.odometry_stamp``, ``last_in.description_digest``).

Threads (callback groups on a MultiThreadedExecutor, see ``ros.process``): intake
(image, odometry, command and description callbacks: store only), planning (the timer at
``planning_rate_hz`` on the ROS clock, so ``use_sim_time`` follows /clock) and
housekeeping (diagnostics on a steady timer, every ``diagnostics_period_s``, which runs
even while /clock is silent; an input is counted in them, ``count.<input>_in``, only once
it is stored). A plan in progress never stops frames from being taken in: the planner takes
the newest ego frame when it is free, and the ones it skips are counted as superseded.

Two node types: ``vehicle_node`` (plain; loads the model and subscribes at start) and
``vehicle_lifecycle_node`` (managed, as Nav2 / Autoware do for heavy nodes: the model is
loaded and warmed up in ``configure``, subscriptions and timers exist while ``active``).
Both have the same parameters, topics and behaviour; ``VehiclePlanning`` is that common
part. Parameters: ``ros.parameters`` (what), ``ros.node_parameters`` (how they are
declared, checked and applied while running).
"""

from __future__ import annotations

import sys
import threading
import time

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.node import Node

from v2x_vlm_ros.conversion import messages as conv
from v2x_vlm_ros.data.records import EgoMotion
from v2x_vlm_ros.geometry import yaw_of
from v2x_vlm_ros.preprocessing.image_codec import ImageDecodeError
from v2x_vlm_ros.ros.intake import SilenceMonitor, TransportLosses
from v2x_vlm_ros.ros.node_parameters import LiveParameters
from v2x_vlm_ros.ros.parameters import VehicleNodeConfig, build, vehicle_node_parameters
from v2x_vlm_ros.ros.process import StartError, run
from v2x_vlm_ros.ros.qos import LinkProblems, qos
from v2x_vlm_ros.runtime.describer import Description, DescriptionCache
from v2x_vlm_ros.runtime.engine import EngineOptions
from v2x_vlm_ros.runtime.factory import default_model_dir, make_describer, make_engine
from v2x_vlm_ros.runtime.refine import RefineConfig, Refiner
from v2x_vlm_ros.runtime.vehicle import VehicleConfig, VehicleService

ODOMETRY_HISTORY_S = 0.1
#: Inputs whose silence is reported (odometry, command and description are optional).
WATCHED_INPUTS = ("ego_image", "roadside_image")
NODE_NAME = "vehicle_node"


def _steady_s() -> float:
    return time.monotonic()


class VehiclePlanning:
    """The vehicle node's parameters, model, subscriptions, timers and publishers, in the
    steps of a managed node: ``configure`` (parameters -> service, model loaded and warmed
    up, publishers), ``activate`` (subscriptions, timers), ``deactivate``, ``cleanup``;
    ``close`` ends it from any state."""

    def __init__(self, node: Node):
        self.node = node
        self.types = conv.rclpy_types()
        self.service: VehicleService | None = None
        self.configured = False
        self.closing = False
        self.pose = None  # map <- base_link from odometry
        # what the last odometry (its stamp) and scene description (its digest) taken in
        # were, in /diagnostics: a player sending them tells its own from a late copy
        self.last_in: dict[str, str] = {}
        self.losses = TransportLosses()
        self.links = LinkProblems(node.get_logger())
        self.silence: SilenceMonitor | None = None
        self._subscriptions: list = []
        self.watched: dict = {}
        self._timers: list = []
        self.plan_timer = self.diagnostics_timer = None  # exist while active
        self._idle = threading.Event()  # set while no plan is in progress
        self._idle.set()
        self.intake_group = MutuallyExclusiveCallbackGroup()
        self.planning_group = MutuallyExclusiveCallbackGroup()
        self.housekeeping_group = MutuallyExclusiveCallbackGroup()
        self.params = LiveParameters(node, vehicle_node_parameters(), self.configs, self.apply,
                                     lambda spec: spec.runtime or not self.configured)
        self.cfg, self.service_cfg, self.refine_cfg = self.configs(self.params.values)

    @staticmethod
    def configs(values: dict) -> tuple[VehicleNodeConfig, VehicleConfig, RefineConfig]:
        """The node's three configs from parameter values (ValueError naming a bad one)."""
        return (build(VehicleNodeConfig, values), build(VehicleConfig, values),
                build(RefineConfig, values, "refine."))

    # -- lifecycle steps ------------------------------------------------------------------

    def configure(self) -> None:
        from v2x_vlm_ros.model.modeling import ModelLoadError

        node, log = self.node, self.node.get_logger()
        self.cfg, self.service_cfg, self.refine_cfg = self.configs(self.params.values)
        cfg = self.cfg
        model_dir = cfg.model or default_model_dir()
        engines = EngineOptions(precision=cfg.engine_precision)
        if cfg.engine_cache_dir:
            engines.cache_dir = cfg.engine_cache_dir
        try:  # warm-up runs before the subscriptions exist: the node is ready when they do
            engine, backend_note = make_engine(model_dir, cfg.device, cfg.backend, self.refine_cfg,
                                               engines=engines, warm_up=cfg.warmup_frames,
                                               token_choice=cfg.token_choice)
        except (ModelLoadError, OSError, ValueError, RuntimeError) as exc:
            raise StartError(f"{NODE_NAME}: parameter model={model_dir!r} (device {cfg.device}): "
                             f"cannot load: {exc}") from None
        log.info(f"model {model_dir} on {cfg.device}: {backend_note}; plan tokens: {engine.token_choice}")
        cache = DescriptionCache(self.service_cfg.description_max_age_s)
        describer = None
        if cfg.describer_model:
            try:
                describer = make_describer(cfg.describer_model, cfg.device, cache, cfg.describer_rate_hz,
                                           cfg.describer_deadline_s)
            except (ModelLoadError, OSError, ValueError, RuntimeError) as exc:
                raise StartError(f"{NODE_NAME}: parameter describer_model={cfg.describer_model!r}: "
                                 f"cannot load: {exc}") from None
        self.service = VehicleService(engine, self.service_cfg, describer, cache)
        out_qos = qos(cfg.qos_outputs, cfg.qos_depth)
        t = self.types
        self.pub_path = node.create_publisher(t("nav_msgs/msg/Path"), "~/output/path", out_qos)
        self.pub_path_map = node.create_publisher(t("nav_msgs/msg/Path"), "~/output/path_map", out_qos)
        self.pub_markers = node.create_publisher(t("visualization_msgs/msg/MarkerArray"), "~/output/markers",
                                                 out_qos)
        self.pub_text = node.create_publisher(t("std_msgs/msg/String"), "~/output/scene_description", out_qos)
        self.pub_debug = node.create_publisher(t("sensor_msgs/msg/Image"), "~/output/debug_image", out_qos)
        self.pub_diag = node.create_publisher(t("diagnostic_msgs/msg/DiagnosticArray"), "/diagnostics",
                                              out_qos)
        self._publishers = [self.pub_path, self.pub_path_map, self.pub_markers, self.pub_text, self.pub_debug,
                            self.pub_diag]
        self.configured = True

    def activate(self) -> None:
        node, cfg, t = self.node, self.cfg, self.types
        image_qos, out_qos = qos(cfg.qos_images, cfg.qos_depth), qos(cfg.qos_outputs, cfg.qos_depth)
        image_type = {"raw": "sensor_msgs/msg/Image", "compressed": "sensor_msgs/msg/CompressedImage"}
        ego_type, road_type = image_type[cfg.ego_image_transport], image_type[cfg.roadside_image_transport]

        self.watched = {}  # input -> (subscription, type): publishers of another type are reported

        def sub(msg_type, topic, callback, profile, name=None):
            kwargs = {"callback_group": self.intake_group}
            if name is not None:
                expected = f"{msg_type}, {cfg.qos_images}"
                kwargs["event_callbacks"] = self.links.watched_events(name, topic, expected)
            subscription = node.create_subscription(t(msg_type), topic, callback, profile, **kwargs)
            self._subscriptions.append(subscription)
            if name is not None:
                self.watched[name] = (subscription, msg_type)

        sub(ego_type, "~/input/ego_image", self.on_ego, image_qos, "ego_image")
        sub(road_type, "~/input/roadside_image", self.on_roadside, image_qos, "roadside_image")
        sub("nav_msgs/msg/Odometry", "~/input/odometry", self.on_odometry, out_qos)
        sub("std_msgs/msg/String", "~/input/command", self.on_command, out_qos)
        sub("std_msgs/msg/String", "~/input/scene_description", self.on_description, out_qos)
        self.silence = SilenceMonitor(WATCHED_INPUTS, cfg.input_silence_warn_s, _steady_s())
        self.plan_timer = node.create_timer(1.0 / self.service_cfg.planning_rate_hz, self.on_timer,
                                            callback_group=self.planning_group)
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.diagnostics_timer = node.create_timer(cfg.diagnostics_period_s, self.on_diagnostics,
                                                   callback_group=self.housekeeping_group, clock=steady)
        self._timers = [self.plan_timer, self.diagnostics_timer]
        node.get_logger().info(
            f"QoS: images {cfg.qos_images} (depth {cfg.qos_depth}), outputs {cfg.qos_outputs}; "
            f"ego {cfg.ego_image_transport}, roadside {cfg.roadside_image_transport}; "
            f"planning at {self.service_cfg.planning_rate_hz} Hz")

    def deactivate(self) -> None:
        for timer in self._timers:
            timer.cancel()
            self.node.destroy_timer(timer)
        self._timers, self.plan_timer, self.diagnostics_timer = [], None, None
        self._idle.wait(10.0)
        for s in self._subscriptions:
            self.node.destroy_subscription(s)
        self._subscriptions, self.watched = [], {}

    def cleanup(self) -> None:
        if self.service is not None and self.service.describer is not None:
            self.service.describer.close()
        for p in getattr(self, "_publishers", []):
            self.node.destroy_publisher(p)
        self._publishers = []
        self.service = None
        self.configured = False

    def close(self, timeout_s: float = 4.0) -> None:
        """Stop planning and publishing (from any thread, in any state); a plan in progress
        finishes without publishing."""
        self.closing = True
        for timer in self._timers:
            timer.cancel()
        self._idle.wait(timeout_s)
        if self.service is not None and self.service.describer is not None:
            self.service.describer.close()

    # -- run-time parameter changes -------------------------------------------------------

    def apply(self, changed: dict) -> None:
        self.cfg, self.service_cfg, self.refine_cfg = self.configs(self.params.values)
        if self.service is None:  # not configured yet: configure reads the values
            return
        self.service.reconfigure(self.service_cfg)
        if any(name.startswith("refine.") for name in changed):
            refine = self.refine_cfg
            self.service.engine.refiner = Refiner(refine) if refine.enabled else None
        if "planning_rate_hz" in changed and self.plan_timer is not None:
            self.plan_timer.timer_period_ns = int(1e9 / self.service_cfg.planning_rate_hz)
        if "diagnostics_period_s" in changed and self.diagnostics_timer is not None:
            self.diagnostics_timer.timer_period_ns = int(1e9 * self.cfg.diagnostics_period_s)
        if "input_silence_warn_s" in changed and self.silence is not None:
            self.silence.threshold_s = self.cfg.input_silence_warn_s

    # -- intake: store only ---------------------------------------------------------------

    def now_ns(self) -> int:
        return self.node.get_clock().now().nanoseconds

    def _take_image(self, stream: str, msg, info, transport: str):
        """(pixels, encoded) of an image message, or None when it cannot be read (counted)."""
        self.silence.seen(f"{stream}_image", _steady_s())
        self.losses.observe(stream, info.get("publication_sequence_number"))
        if transport == "compressed":
            return None, bytes(msg.data)
        try:
            return conv.image_msg_to_bgr(msg, f"~/input/{stream}_image"), None
        except ImageDecodeError as exc:
            self.service.on_unreadable(stream)
            self.node.get_logger().warning(str(exc), throttle_duration_sec=5.0)
            return None

    def on_ego(self, msg, info):  # two parameters: rclpy then passes the MessageInfo
        image = self._take_image("ego", msg, info, self.cfg.ego_image_transport)
        if image is not None:
            self.service.on_ego_image(conv.stamp_to_ns(msg.header.stamp), *image, "~/input/ego_image",
                                      now_ns=self.now_ns())

    def on_roadside(self, msg, info):
        image = self._take_image("roadside", msg, info, self.cfg.roadside_image_transport)
        if image is not None:
            self.service.on_roadside_image(conv.stamp_to_ns(msg.header.stamp), *image,
                                           "~/input/roadside_image", now_ns=self.now_ns())

    def on_odometry(self, msg):
        self.last_in["odometry_stamp"] = str(conv.stamp_to_ns(msg.header.stamp))
        try:
            pose, speed, yaw_rate = conv.odometry_to_state(msg)
        except ValueError as exc:  # NaN pose, broken quaternion: count it, keep the last good one
            self.service.count_drop("odometry_invalid")
            self.node.get_logger().warning(f"odometry refused: {exc}", throttle_duration_sec=5.0)
        else:
            self.pose = pose
            # odometry measures the speed itself: a nominal history marks it as known
            self.service.on_motion(conv.stamp_to_ns(msg.header.stamp),
                                   EgoMotion(speed, yaw_of(pose), yaw_rate, ODOMETRY_HISTORY_S))
        # counted once taken in (kept or refused): a count in /diagnostics means it is in
        self.service.count("odometry_in")

    def on_command(self, msg):
        try:
            self.service.on_command(conv.command_from_string(msg.data))
        except ValueError as exc:
            self.service.count_drop("command_invalid")
            self.node.get_logger().warning(str(exc), throttle_duration_sec=5.0)
        self.service.count("commands_in")

    def on_description(self, msg):
        self.last_in["description_digest"] = conv.text_digest(msg.data)
        self.service.descriptions.put(Description(msg.data, self.now_ns()))
        self.service.count("descriptions_in")

    # -- planning -------------------------------------------------------------------------

    def is_idle(self) -> bool:
        """No plan in progress."""
        return self._idle.is_set()

    def on_timer(self):
        if self.closing or self.service is None:
            return
        self._idle.clear()
        try:
            result = self.service.step(self.now_ns())
            if result is not None and not self.closing:
                self._publish(result)
        finally:
            self._idle.set()

    def _publish(self, result) -> None:
        began = time.perf_counter()
        t, cfg = self.types, self.cfg
        self.pub_path.publish(conv.trajectory_to_path(t, result.xy, result.stamp_ns, cfg.base_frame))
        if self.pose is not None:
            self.pub_path_map.publish(conv.trajectory_to_path(t, result.xy, result.stamp_ns, cfg.map_frame,
                                                              frame_from_ego=self.pose))
        if cfg.publish_markers:
            rgba = (0.1, 0.8, 0.2, 1.0) if result.mode == "fused" else (0.9, 0.6, 0.1, 1.0)
            self.pub_markers.publish(conv.trajectory_markers(t, result.xy, result.stamp_ns, cfg.base_frame,
                                                             "plan", rgba, 0))
        if result.description is not None:
            self.pub_text.publish(conv.string_msg(t, result.description))
        if cfg.publish_debug_image and self.service.last_ego is not None:
            from v2x_vlm_ros.tools.draw import debug_view  # only when asked for

            image = debug_view(self.service.last_ego, result.xy, result.mode)
            self.pub_debug.publish(conv.bgr_to_image_msg(t, image, result.stamp_ns, "ego_camera"))
        self.service.record_publish(1000.0 * (time.perf_counter() - began))

    # -- diagnostics ----------------------------------------------------------------------

    def diagnostic_values(self) -> tuple[dict, list[str]]:
        """(key -> value for /diagnostics, names of the silent inputs)."""
        now = _steady_s()
        self.links.check_types(self.node, self.watched)
        diag = self.service.diagnostics()
        silent = self.silence.silent_for(now)
        for name, quiet in self.silence.due_warnings(now).items():
            self.node.get_logger().warning(
                f"no {name} for {quiet:.1f} s (input_silence_warn_s {self.silence.threshold_s:g}): check the "
                f"topic remapping of ~/input/{name} and that the publisher's QoS is compatible with "
                f"{self.cfg.qos_images}")
        values = {"mode": diag["mode"], "command": diag["command"], "silent_inputs": ",".join(sorted(silent))}
        values.update({f"count.{k}": v for k, v in diag["counts"].items()})
        values.update({f"drop.{k}": v for k, v in diag["drops"].items()})
        values.update({f"lost_before_intake.{k}": v for k, v in self.losses.lost.items()})
        values.update({f"first_sequence_number.{k}": v for k, v in self.losses.first.items()})
        values.update({f"link.{k}": v for k, v in self.links.counts.items()})
        values.update({f"last_in.{k}": v for k, v in dict(self.last_in).items()})
        for stage, stats in diag["latency_ms"].items():
            values[f"latency_ms.{stage}.p50"] = round(stats["p50"], 2)
            values[f"latency_ms.{stage}.p99"] = round(stats["p99"], 2)
        if diag["last_plan_error"]:
            values["last_plan_error"] = diag["last_plan_error"]
        return values, sorted(silent)

    def on_diagnostics(self):
        if self.closing or self.service is None:
            return
        values, silent = self.diagnostic_values()
        ok = values["mode"] == "fused" and not silent and not self.links.counts
        self.pub_diag.publish(conv.diagnostic_array(
            self.types, self.now_ns(), f"v2x_vlm_ros: {NODE_NAME}", 0 if ok else 1,  # OK / WARN
            values["mode"] or "waiting for frames", values))


class VehicleNode(Node):
    """The plain vehicle node: configured and active from the start."""

    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        self.planning = VehiclePlanning(self)
        self.planning.configure()
        self.planning.activate()

    def close(self, timeout_s: float = 4.0) -> None:
        self.planning.close(timeout_s)


def make_lifecycle_node(**kwargs):
    """The managed vehicle node (rclpy.lifecycle imported only when asked for)."""
    from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn

    class VehicleLifecycleNode(LifecycleNode):
        """Unconfigured at start; ``configure`` loads the model and warms it up, ``activate``
        subscribes and starts the timers, ``deactivate`` / ``cleanup`` undo them."""

        def __init__(self):
            super().__init__(NODE_NAME, **kwargs)
            self.planning = VehiclePlanning(self)

        def on_configure(self, state):
            try:
                self.planning.configure()
            except (StartError, ValueError) as exc:
                self.get_logger().error(str(exc))
                return TransitionCallbackReturn.FAILURE
            return TransitionCallbackReturn.SUCCESS

        def on_activate(self, state):
            self.planning.activate()
            return super().on_activate(state)

        def on_deactivate(self, state):
            self.planning.deactivate()
            return super().on_deactivate(state)

        def on_cleanup(self, state):
            self.planning.cleanup()
            return TransitionCallbackReturn.SUCCESS

        def on_shutdown(self, state):
            self.planning.close()
            return TransitionCallbackReturn.SUCCESS

        def close(self, timeout_s: float = 4.0) -> None:
            self.planning.close(timeout_s)

    return VehicleLifecycleNode()


def main(args=None, stop=None) -> int:
    return run(VehicleNode, args, name=NODE_NAME, stop=stop)


def main_lifecycle(args=None, stop=None) -> int:
    return run(make_lifecycle_node, args, name=NODE_NAME, stop=stop)


if __name__ == "__main__":
    sys.exit(main())
