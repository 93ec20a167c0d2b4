"""Play a bag written by ``v2x-vlm bag`` into ROS 2 with /clock (``v2x-vlm play``), for
machines without ``ros2 bag play`` (rosbag2 is not installable from the package index).

Messages are read with rosbags and published with rclpy exactly as stored (the bag's CDR
bytes are deserialised into rclpy's own classes), on the bag's topics, reliable keep-last
10 (what the bag's metadata offers; compatible with the nodes' best-effort image
subscriptions). Topics whose message type is not installed (tf2_msgs: /tf, /tf_static)
are left out and listed. /clock (rosgraph_msgs/Clock) carries the bag's log time, so
nodes with ``use_sim_time`` run on the recorded stamps.

Two ways to play:

- **real time** (``rate``): every sample at its log time, /clock published at 100 Hz in
  between (the nodes' timers run as on a vehicle). Gaps longer than ``max_gap_s`` in the
  bag (DAIR-V2X sequences are minutes apart) are skipped: /clock jumps across them, as
  ``v2x-vlm replay --realtime`` does. With ``record`` set, the planned paths
  are received and each one's latency is measured: the wall time from publishing an ego
  image to receiving the Path stamped with it, through DDS and both nodes. That is the
  on-vehicle latency figure (the planning timer's wait included).
- **step** (``step=True``): publish a sample, wait until its plan arrives, go on. Every
  ego frame is planned exactly once, so the paths received can be compared one to one
  with ``v2x-vlm replay`` on the same bag. The order per sample: the roadside camera frame
  (and, when roadside_node will forward it, waiting until the forwarded frame is seen on
  the link topic: ``RoadsideService.admit`` decides, as in the node), the description,
  odometry and command, the ego image; then /clock is advanced past the ego stamp and by
  more than one planning period, so the planning timer fires once after the frame is in.
  The planning timer runs on the latest inputs, so each one must be in before the ego
  frame: with ``confirm_intake`` (default) the player waits, before the ego image, until
  vehicle_node's ``/diagnostics`` counts (``count.descriptions_in``, ``odometry_in``,
  ``commands_in``, ``roadside_frames_in``; counted once stored) reach what was sent and
  the last odometry stamp, description digest and command it reports
  (``INTAKE_IDENTITY``) are those of the sample: a count alone cannot tell the sample's
  message from a late copy of the previous one sent again (below). A
  status comes every ``diagnostics_period_s`` of the node (1 s; set it to 0.05 for a quick
  step play). Without it the player pauses ``settle_s`` and trusts the timing (a loaded
  machine took a message in late: seen once in 540 frames on a CI machine). Inputs not
  counted in after ``resend_s`` are published again (best-effort topics lose a message now
  and then, most often the first after discovery), counted in ``resent`` (a copy of one
  that was only late is taken in twice, and the later, identical one kept); a frame
  roadside_node forwarded and the link lost is not (the node forwards each stamp once), so
  before the first sample the player waits until roadside_node's ``/diagnostics`` report
  its output matched to every subscriber of the link, the planner's included
  (``output.subscribers``; a CI run sent the first frame 2 s after the planner's
  subscription appeared, before roadside_node had matched it, and lost it).
  A jump of /clock to a new sequence is followed by a wait until vehicle_node's status is
  stamped at or after it (with ``confirm_intake``; a pause of ``jump_settle_s`` without):
  the node stamps a scene description with its clock when it arrives (std_msgs/String
  has no header), so one taken in before the jump would be of the previous sequence's
  time, stale, and the plan would go without it. The planner's last ``/diagnostics``
  values (its input counts: descriptions fresh or stale, roadside frames unpaired, ...)
  are kept in the result, to tell why a plan differs.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from v2x_vlm_ros.runtime.roadside import RoadsideConfig, RoadsideService
from v2x_vlm_ros.tools import bag as bagfile

#: The vehicle node's default planned-path topic (launch/v2x_vlm.launch.py path_topic).
PATH_TOPIC = "/v2x/planning/path"
LINK_TOPIC = "/v2x/roadside/sent"
CLOCK_RATE_HZ = 100.0
PLANNER_STATUS = "vehicle_node"  # the end of vehicle_node's DiagnosticStatus name
ROADSIDE_STATUS = "roadside_node"  # the end of roadside_node's
#: step mode: the planner's count of each input the player sends it (``count.<name>``)
INTAKE_COUNTS = {bagfile.DESCRIPTION: "descriptions_in", bagfile.ODOMETRY: "odometry_in",
                 bagfile.COMMAND: "commands_in", bagfile.ROADSIDE_IMAGE: "roadside_frames_in"}
#: step mode: which value of the planner's status names the last message of a topic it took
#: in. A count cannot tell a sample's message from a late copy of the previous sample's (sent
#: again after ``resend_s``): the copy makes the count reach what was sent before the new
#: message is in (a CI run so planned 3 of 540 frames unlike replay, up to 7 m off).
INTAKE_IDENTITY = {bagfile.ODOMETRY: "last_in.odometry_stamp",
                   bagfile.DESCRIPTION: "last_in.description_digest", bagfile.COMMAND: "command"}


def intake_identity(topic: str, msg) -> str | None:
    """What vehicle_node reports (``INTAKE_IDENTITY[topic]``) once it has taken ``msg`` in;
    None for a topic it reports nothing of, or a command it refuses (it keeps the last)."""
    from v2x_vlm_ros.conversion import messages as conv

    if topic == bagfile.ODOMETRY:
        return str(conv.stamp_to_ns(msg.header.stamp))
    if topic == bagfile.DESCRIPTION:
        return conv.text_digest(msg.data)
    if topic == bagfile.COMMAND:
        try:
            return conv.command_from_string(msg.data).name
        except ValueError:
            return None
    return None


@dataclass
class PlayOptions:
    rate: float = 1.0  # real-time factor (real-time mode)
    step: bool = False  # publish a sample, wait for its plan, go on
    record: bool = False  # subscribe to the plans (latency, paths) in real-time mode
    path_topic: str = PATH_TOPIC
    link_topic: str = LINK_TOPIC  # the roadside link to wait on in step mode ("" : do not wait)
    link_message: str = "compressed"  # what roadside_node sends: compressed (jpeg/png) or raw
    roadside_rate_hz: float = 2.0  # roadside_node's rate_hz, to know which frames it forwards
    planning_period_s: float = 0.1  # 1 / vehicle_node's planning_rate_hz
    timeout_s: float = 20.0  # step mode: longest wait for a plan or a forwarded frame
    # step mode: pause after a sample's other inputs and again after its ego image, before
    # /clock advances: the planning timer runs on the latest inputs, so an input the node
    # has not taken in by then (a loaded machine) makes the plan differ from replay's
    settle_s: float = 0.03
    jump_settle_s: float = 0.5  # step mode without confirm_intake: the pause after /clock jumps
    # step mode: before each ego image, wait until vehicle_node's /diagnostics counts show
    # the sample's other inputs taken in, and after a /clock jump until its status is
    # stamped past it (instead of trusting settle_s and jump_settle_s)
    confirm_intake: bool = True
    # step mode with confirm_intake: a sample's inputs not counted in within this many
    # seconds are published again (best-effort topics lose a message now and then, most
    # often the first one after discovery); counted in the result's ``resent``
    resend_s: float = 3.0
    start_delay_s: float = 2.0  # discovery (both ways) before the first message
    max_samples: int | None = None
    max_gap_s: float = 2.0  # real-time mode: longer gaps between samples (a new sequence) are skipped

    def __post_init__(self):
        if not self.rate > 0:
            raise ValueError(f"rate must be > 0, got {self.rate}")
        if self.link_message not in ("compressed", "raw"):
            raise ValueError(f"link_message must be compressed or raw, got {self.link_message!r}")
        if self.roadside_rate_hz < 0 or not self.planning_period_s > 0 or not self.timeout_s > 0:
            raise ValueError("roadside_rate_hz must be >= 0, planning_period_s and timeout_s > 0")
        if not self.resend_s > 0:
            raise ValueError(f"resend_s must be > 0, got {self.resend_s}")
        for name in ("settle_s", "jump_settle_s"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


@dataclass
class PlayResult:
    samples: int = 0
    ego_frames: int = 0
    paths: dict = field(default_factory=dict)  # ego stamp ns -> (T, 2) plan in base_link
    latency_ms: list = field(default_factory=list)  # per received path (real-time mode)
    missing: list = field(default_factory=list)  # ego stamps whose plan never came (step mode)
    skipped_topics: dict = field(default_factory=dict)  # topic -> reason
    wall_s: float = 0.0
    planner_diagnostics: dict = field(default_factory=dict)  # the last vehicle_node status values
    resent: int = 0  # step mode: messages published again because their intake was not counted

    def summary(self) -> dict:
        lat = np.asarray(self.latency_ms, float)
        stats = ({"p50": float(np.percentile(lat, 50)), "p90": float(np.percentile(lat, 90)),
                  "p99": float(np.percentile(lat, 99)), "max": float(lat.max()), "n": int(lat.size)}
                 if lat.size else None)
        return {"samples": self.samples, "ego_frames": self.ego_frames, "paths_received": len(self.paths),
                "missing": len(self.missing), "latency_ms": stats, "skipped_topics": self.skipped_topics,
                "resent": self.resent, "wall_s": round(self.wall_s, 2)}

    def to_json(self) -> dict:
        out = self.summary()
        out["paths"] = {str(k): np.asarray(v).tolist() for k, v in sorted(self.paths.items())}
        out["missing_stamps"] = self.missing
        out["planner_diagnostics"] = self.planner_diagnostics
        return out


def _message_class(msgtype: str):
    """rclpy's class for ``pkg/msg/Name``, or None when that package is not installed."""
    import importlib

    pkg, _, name = msgtype.split("/")
    try:
        return getattr(importlib.import_module(f"{pkg}.msg"), name)
    except (ImportError, AttributeError):
        return None


def bag_topics(path) -> dict[str, str]:
    """``{topic: msgtype}`` of a bag."""
    from rosbags.highlevel import AnyReader

    with AnyReader([Path(path)]) as reader:
        return {c.topic: c.msgtype for c in reader.connections}


def _raw_groups(path):
    """``(log ns, {topic: (msgtype, cdr bytes)})`` per sample, streamed."""
    from rosbags.highlevel import AnyReader

    with AnyReader([Path(path)]) as reader:
        group_ns, group = None, {}
        for conn, timestamp, raw in reader.messages():
            if group_ns is not None and timestamp != group_ns:
                yield group_ns, group
                group = {}
            group_ns = timestamp
            group[conn.topic] = (conn.msgtype, bytes(raw))
        if group:
            yield group_ns, group


class BagPlayer:
    """Publishes a bag's samples through one rclpy node (see the module's docstring)."""

    def __init__(self, node, options: PlayOptions):
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from rosgraph_msgs.msg import Clock

        self.node, self.options = node, options
        self.qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.clock_pub = node.create_publisher(Clock, "/clock", 10)
        self._Clock = Clock
        self.publishers: dict = {}
        self.result = PlayResult()
        self._lock = threading.Lock()
        self._path_event = threading.Condition(self._lock)
        self._link_seen: set[int] = set()
        self._diagnostics_seen = 0  # vehicle_node statuses received (to wait for a fresh one)
        self._roadside_status: dict | None = None  # roadside_node's last status values
        self._planner_clock_ns = 0  # the stamp of the last status: the planner's clock then
        self._sent: dict[str, int] = {}  # count name -> how many the planner should have taken in
        self._awaited: dict[str, str] = {}  # status key -> the value once the last message sent is in
        self._sent_wall: dict[int, float] = {}
        self._clock_ns = 0
        if options.step or options.record:
            from nav_msgs.msg import Path as PathMsg

            node.create_subscription(PathMsg, options.path_topic, self._on_path, 10)
        if options.step and options.link_topic:
            from sensor_msgs.msg import CompressedImage, Image

            from rclpy.qos import qos_profile_sensor_data

            link_type = Image if options.link_message == "raw" else CompressedImage
            # best effort: matches roadside_node's sensor-data output and a reliable one
            node.create_subscription(link_type, options.link_topic, self._on_link, qos_profile_sensor_data)
        if options.step or options.record:
            from diagnostic_msgs.msg import DiagnosticArray

            node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)

    # -- receiving ------------------------------------------------------------------------

    def _on_path(self, msg) -> None:
        from v2x_vlm_ros.conversion import messages as conv

        received = time.monotonic()
        stamp = conv.stamp_to_ns(msg.header.stamp)
        with self._lock:
            self.result.paths[stamp] = conv.path_to_xy(msg)
            if stamp in self._sent_wall:
                self.result.latency_ms.append(1000.0 * (received - self._sent_wall.pop(stamp)))
            self._path_event.notify_all()

    def _on_link(self, msg) -> None:
        from v2x_vlm_ros.conversion import messages as conv

        with self._lock:
            self._link_seen.add(conv.stamp_to_ns(msg.header.stamp))
            self._path_event.notify_all()

    def _on_diagnostics(self, msg) -> None:
        from v2x_vlm_ros.conversion import messages as conv

        for name, status in conv.diagnostic_to_dict(msg).items():
            if name.endswith(PLANNER_STATUS):
                with self._lock:
                    self.result.planner_diagnostics = status["values"]
                    self._planner_clock_ns = conv.stamp_to_ns(msg.header.stamp)  # its ROS clock
                    self._diagnostics_seen += 1
                    self._path_event.notify_all()
            elif name.endswith(ROADSIDE_STATUS):
                with self._lock:
                    self._roadside_status = status["values"]
                    self._path_event.notify_all()

    def _wait(self, predicate, timeout_s: float) -> bool:
        with self._lock:
            return self._path_event.wait_for(predicate, timeout_s)

    # -- publishing -----------------------------------------------------------------------

    def _publisher(self, topic: str, msgtype: str):
        if topic in self.publishers:
            return self.publishers[topic]
        cls = _message_class(msgtype)
        if cls is None:
            self.result.skipped_topics[topic] = f"{msgtype} is not installed"
            self.publishers[topic] = None
        else:
            self.publishers[topic] = (self.node.create_publisher(cls, topic, self.qos), cls)
        return self.publishers[topic]

    def publish_clock(self, ns: int) -> None:
        from builtin_interfaces.msg import Time

        self._clock_ns = ns
        self.clock_pub.publish(self._Clock(clock=Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)))

    def _publish(self, topic: str, msgtype: str, raw: bytes):
        from rclpy.serialization import deserialize_message

        pub = self._publisher(topic, msgtype)
        if pub is None:
            return None
        publisher, cls = pub
        msg = deserialize_message(raw, cls)
        publisher.publish(msg)
        return msg

    def _publish_sample(self, group: dict, skip=()) -> None:
        for topic, (msgtype, raw) in group.items():
            if topic not in skip:
                msg = self._publish(topic, msgtype, raw)
                if msg is not None and topic in INTAKE_IDENTITY and self.options.step:
                    with self._lock:
                        awaited = intake_identity(topic, msg)
                        if awaited is None:
                            self._awaited.pop(INTAKE_IDENTITY[topic], None)
                        else:
                            self._awaited[INTAKE_IDENTITY[topic]] = awaited

    # -- the two modes --------------------------------------------------------------------

    def wait_for_subscribers(self, topics, timeout_s: float) -> list[str]:
        """Wait until each of ``topics`` has a subscriber (a message published before DDS
        has matched one is lost); the topics still without one after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        waiting = [t for t in topics if self.publishers.get(t)]
        while waiting and time.monotonic() < deadline:
            waiting = [t for t in waiting if self.publishers[t][0].get_subscription_count() == 0]
            time.sleep(0.05)
        return waiting

    def wait_for_link_matched(self, timeout_s: float) -> bool:
        """Wait until roadside_node reports its output matched to as many readers as the
        graph shows on the link topic (ours and the planner's): roadside_node forwards each
        frame once, and one sent before the planner is matched is lost for good. True once
        it is, or at once when roadside_node does not report ``output.subscribers``; False
        when no status says so within ``timeout_s`` (the play goes on, as before)."""
        def matched():
            status = self._roadside_status
            if status is None:
                return False
            if "output.subscribers" not in status:  # a roadside_node that does not tell
                return True
            return int(status["output.subscribers"]) >= self.node.count_subscribers(self.options.link_topic)

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:  # the graph count changes without a status: poll it
            if self._wait(matched, min(0.2, max(0.0, deadline - time.monotonic()))):
                return True
        return False

    def play(self, bag_path) -> PlayResult:
        from v2x_vlm_ros.conversion import messages as conv

        opts = self.options
        for topic, msgtype in bag_topics(bag_path).items():
            self._publisher(topic, msgtype)
        # like a camera that starts after the planner: nothing is published before the
        # image topics have subscribers (a node loading its model takes seconds)
        missing = self.wait_for_subscribers([bagfile.EGO_IMAGE, bagfile.ROADSIDE_IMAGE], opts.timeout_s)
        if missing:
            raise TimeoutError(f"nobody subscribes to {', '.join(missing)} after {opts.timeout_s} s: "
                               f"are vehicle_node and roadside_node running (ROS_DOMAIN_ID, remappings)?")
        if opts.step and opts.link_topic:  # the planner's link subscription, besides our own
            deadline = time.monotonic() + opts.timeout_s
            while self.node.count_subscribers(opts.link_topic) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            self.wait_for_link_matched(max(0.0, deadline - time.monotonic()))
        time.sleep(opts.start_delay_s)  # let the other subscriptions match too
        if opts.step and opts.confirm_intake:
            if not self._wait(lambda: self._diagnostics_seen > 0, opts.timeout_s):
                raise TimeoutError(f"no vehicle_node status on /diagnostics within {opts.timeout_s} s: step "
                                   f"mode confirms from its counts that each sample's inputs are in "
                                   f"(--no-confirm-intake: trust --settle instead)")
            with self._lock:  # what it took in before: other publishers, an earlier play
                self._sent = {name: self._planner_count(name) for name in INTAKE_COUNTS.values()}
        began = time.monotonic()
        link = RoadsideService(RoadsideConfig(rate_hz=opts.roadside_rate_hz))  # which frames are forwarded
        start_ns = start_wall = last_ns = None
        ticker = None
        if not opts.step:
            ticker = _ClockTicker(self, opts.rate)
        try:
            for log_ns, group in _raw_groups(bag_path):
                if opts.max_samples is not None and self.result.samples >= opts.max_samples:
                    break
                self.result.samples += 1
                if opts.step:
                    self._step(log_ns, group, link, conv)
                    continue
                if start_ns is None:
                    start_ns, start_wall = log_ns, time.monotonic()
                    ticker.start(start_ns, start_wall)
                elif log_ns - last_ns > opts.max_gap_s * 1e9:  # skip the gap: shift the time base
                    start_ns += log_ns - last_ns - int(opts.planning_period_s * 1e9)
                    ticker.shift(log_ns - last_ns - int(opts.planning_period_s * 1e9))
                last_ns = log_ns
                due = start_wall + (log_ns - start_ns) * 1e-9 / opts.rate
                time.sleep(max(0.0, due - time.monotonic()))
                ego = group.get(bagfile.EGO_IMAGE)
                self._publish_sample(group, skip=(bagfile.EGO_IMAGE,))
                if ego is not None:
                    msg = self._publish(bagfile.EGO_IMAGE, *ego)
                    if msg is not None:
                        with self._lock:
                            self._sent_wall[conv.stamp_to_ns(msg.header.stamp)] = time.monotonic()
                        self.result.ego_frames += 1
            if ticker is not None and opts.record:  # the last plans are still on their way
                self._wait(lambda: not self._sent_wall, 2.0 + 5 * opts.planning_period_s)
            if opts.step or opts.record:  # the planner's counts after the last plan: its
                seen = self._diagnostics_seen  # second status from now (1 Hz) was surely taken after
                self._wait(lambda: self._diagnostics_seen >= seen + 2, 3.5)
        finally:
            if ticker is not None:
                ticker.stop()
        self.result.wall_s = time.monotonic() - began
        return self.result

    def _step(self, log_ns: int, group: dict, link: RoadsideService, conv) -> None:
        opts = self.options
        period_ns = int(opts.planning_period_s * 1e9)
        if log_ns - self._clock_ns > 2 * period_ns:
            # the first sample, or a new sequence seconds later: move the nodes' clock up to
            # just before it first (a frame stamped far ahead of the clock is dropped as "from
            # the future", as it should be on a vehicle)
            self.publish_clock(log_ns - period_ns)
            if opts.confirm_intake:  # a status stamped at or after the jump: its clock has moved
                if not self._wait(lambda: self._planner_clock_ns >= self._clock_ns, opts.timeout_s):
                    raise TimeoutError(f"vehicle_node's clock (its /diagnostics stamp) did not reach "
                                       f"/clock {self._clock_ns} within {opts.timeout_s} s: is it on "
                                       f"use_sim_time?")
            else:
                time.sleep(max(opts.settle_s, opts.jump_settle_s))
        road = group.get(bagfile.ROADSIDE_IMAGE)
        if road is not None:
            msg = self._publish(bagfile.ROADSIDE_IMAGE, *road)
            stamp = conv.stamp_to_ns(msg.header.stamp)
            if opts.link_topic and link.admit(stamp):
                link.mark_sent(stamp)
                if not self._wait(lambda: stamp in self._link_seen, opts.timeout_s):
                    raise TimeoutError(f"roadside frame {stamp} was not forwarded on {opts.link_topic} "
                                       f"within {opts.timeout_s} s: is roadside_node running with "
                                       f"rate_hz {opts.roadside_rate_hz}?")
                self._expect(bagfile.ROADSIDE_IMAGE)
        for topic in group:
            if topic != bagfile.ROADSIDE_IMAGE and self.publishers.get(topic):
                self._expect(topic)
        self._publish_sample(group, skip=(bagfile.ROADSIDE_IMAGE, bagfile.EGO_IMAGE))
        ego = group.get(bagfile.EGO_IMAGE)
        if ego is None:
            return
        if opts.confirm_intake:
            self._confirm_intake(log_ns, group)
        else:
            time.sleep(opts.settle_s)  # description, odometry, command in before the frame
        msg = self._publish(bagfile.EGO_IMAGE, *ego)
        stamp = conv.stamp_to_ns(msg.header.stamp)
        self.result.ego_frames += 1
        time.sleep(opts.settle_s)
        for attempt in range(2):  # a second clock step if the timer ran before the frame was in
            self.publish_clock(max(stamp, self._clock_ns + period_ns + 100_000))
            if self._wait(lambda: stamp in self.result.paths, opts.timeout_s / 2):
                return
        self.result.missing.append(stamp)

    def _expect(self, topic: str) -> None:
        """One more message of ``topic`` the planner is to take in (when it counts them)."""
        if self.options.confirm_intake and topic in INTAKE_COUNTS:
            with self._lock:
                self._sent[INTAKE_COUNTS[topic]] += 1

    def _planner_count(self, name: str) -> int:
        """``count.<name>`` in the planner's last status (0 before it counted any); call
        with the lock held."""
        return int(self.result.planner_diagnostics.get(f"count.{name}", 0))

    def _confirm_intake(self, log_ns: int, group: dict | None = None) -> None:
        """Wait until the planner's counts show every input sent so far taken in, and the
        last odometry, description and command it reports (``INTAKE_IDENTITY``, once it
        reports them) are the ones sent last; every ``resend_s`` the messages of ``group``
        (the sample) that lag are published again. A copy of one that was only late counts
        once more: the counts then run ahead of what was sent, which is why they alone do
        not confirm the next sample's messages."""
        def lagging():
            return {name: (self._planner_count(name), sent) for name, sent in self._sent.items()
                    if self._planner_count(name) < sent}

        def not_yet():  # status key -> (reported, awaited), for the keys the planner reports
            status = self.result.planner_diagnostics
            return {key: (status[key], value) for key, value in self._awaited.items()
                    if key in status and status[key] != value}

        deadline = time.monotonic() + self.options.timeout_s
        while True:
            left = deadline - time.monotonic()
            if self._wait(lambda: not lagging() and not not_yet(),
                          max(0.0, min(self.options.resend_s, left))):
                return
            if group is None or time.monotonic() >= deadline:
                break
            with self._lock:
                behind = set(lagging()) | set(not_yet())
            for topic, name in INTAKE_COUNTS.items():
                if topic == bagfile.ROADSIDE_IMAGE and self.options.link_topic:
                    continue  # roadside_node forwards a frame once: a copy is rate-skipped there
                if ((name in behind or INTAKE_IDENTITY.get(topic) in behind) and topic in group
                        and self.publishers.get(topic)):
                    self._publish(topic, *group[topic])
                    self.result.resent += 1
        with self._lock:
            behind = ", ".join([f"count.{n} {got} of {sent}" for n, (got, sent) in sorted(lagging().items())]
                               + [f"{key} {got}, not the {value} sent"
                                  for key, (got, value) in sorted(not_yet().items())])
            drops = ", ".join(f"{k} {v}" for k, v in sorted(self.result.planner_diagnostics.items())
                              if k.startswith("drop.") and v not in ("0", 0))
        raise TimeoutError(f"vehicle_node has not taken in the inputs of the sample at {log_ns} within "
                           f"{self.options.timeout_s} s ({behind}, from /diagnostics): a message lost "
                           f"(best-effort roadside link?) or the node is not publishing /diagnostics"
                           + (f"; its drops: {drops}" if drops else ""))


class _ClockTicker:
    """Publishes /clock at ``CLOCK_RATE_HZ`` following the wall clock (real-time mode)."""

    def __init__(self, player: BagPlayer, rate: float):
        self.player, self.rate = player, rate
        self._stop = threading.Event()
        self._thread = None
        self._skipped_ns = 0

    def shift(self, ns: int) -> None:
        """Jump the clock ahead by ``ns`` (a skipped gap)."""
        self._skipped_ns += ns

    def start(self, start_ns: int, start_wall: float) -> None:
        def tick():
            while not self._stop.wait(1.0 / CLOCK_RATE_HZ):
                elapsed_ns = int((time.monotonic() - start_wall) * self.rate * 1e9)
                self.player.publish_clock(start_ns + self._skipped_ns + elapsed_ns)

        self.player.publish_clock(start_ns)
        self._thread = threading.Thread(target=tick, name="clock", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(1.0)


def play(bag_path, options: PlayOptions, out: str | None = None, args=None) -> dict:
    """Play ``bag_path`` from a node of its own (``v2x-vlm play``); the summary, and the
    paths received in ``out`` (JSON) when given."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    if not Path(bag_path).exists():
        raise FileNotFoundError(f"{bag_path}: no such bag")
    rclpy.init(args=args)
    try:
        node = rclpy.create_node("v2x_bag_player")
        player = BagPlayer(node, options)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        spinner = threading.Thread(target=executor.spin, daemon=True)
        spinner.start()
        try:
            result = player.play(bag_path)
        finally:
            executor.shutdown(timeout_sec=1.0)
            spinner.join(2.0)
            node.destroy_node()
    finally:
        rclpy.try_shutdown()
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result.to_json()) + "\n", encoding="utf-8")
    return result.summary()


def score_plans(bag_path, plans: dict, collision: str = "univ2x") -> dict:
    """The planning metrics of ``plans`` (ego stamp ns -> (T, 2)) against the bag's ground
    truth paths, the way ``v2x-vlm replay`` scores a bag (no agent labels in a bag: L2)."""
    from v2x_vlm_ros.eval.metrics import PlanningMetrics
    from v2x_vlm_ros.tools.replay import frames_from_bag

    metrics = PlanningMetrics(collision)
    for frame in frames_from_bag(bag_path):
        if frame.ego_stamp_ns in plans:
            metrics.update(np.asarray(plans[frame.ego_stamp_ns]), frame.truth_xy, frame.truth_mask,
                           [None] * len(frame.truth_mask), frame.sample_id)
    return metrics.result()
