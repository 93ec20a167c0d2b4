"""QoS profiles by name, and subscriptions that report why they receive nothing.

A reliable subscription never matches a best-effort publisher, and a subscription of one
type never matches a publisher of another type on the same topic: DDS then delivers
nothing, silently (the most reported problem of ROS inference nodes). ``LinkProblems``
finds both: QoS through the subscription's ``incompatible_qos`` event (counted), types
by looking at the publishers on the topic in the ROS graph (Fast DDS in Jazzy raises no
incompatible-type event), once a second from the diagnostics timer. Each problem is
logged with the input, the topic and what to change; the nodes put the counts in their
diagnostics.
"""

from __future__ import annotations

from collections import Counter

from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data


def qos(kind: str, depth: int) -> QoSProfile:
    """``sensor_data`` (best effort, volatile), ``reliable`` or ``best_effort``; keep last ``depth``."""
    if kind == "sensor_data":
        return QoSProfile(reliability=qos_profile_sensor_data.reliability,
                          durability=qos_profile_sensor_data.durability,
                          history=HistoryPolicy.KEEP_LAST, depth=depth)
    if kind not in ("reliable", "best_effort"):
        raise ValueError(f"QoS must be sensor_data, reliable or best_effort, got {kind!r}")
    reliability = ReliabilityPolicy.RELIABLE if kind == "reliable" else ReliabilityPolicy.BEST_EFFORT
    return QoSProfile(reliability=reliability, history=HistoryPolicy.KEEP_LAST, depth=depth)


class LinkProblems:
    """Counts of publishers a node's subscriptions could not match, by input and cause."""

    def __init__(self, logger):
        self.logger = logger
        self.counts: Counter = Counter()
        self._foreign: dict[str, tuple[str, ...]] = {}

    def check_types(self, node, watched: dict) -> None:
        """``watched``: input name -> (subscription, expected type such as
        ``sensor_msgs/msg/CompressedImage``). Publishers of another type on the topic are
        counted as ``<input>_incompatible_type`` (as long as they are there)."""
        for name, (subscription, expected) in watched.items():
            topic = subscription.topic_name
            foreign = tuple(sorted({info.topic_type for info in node.get_publishers_info_by_topic(topic)
                                    if info.topic_type != expected}))
            key = f"{name}_incompatible_type"
            if foreign:
                self.counts[key] = len(foreign)
            else:
                self.counts.pop(key, None)
            if foreign and foreign != self._foreign.get(name):
                self.logger.warning(
                    f"{name} ({topic}): published as {', '.join(foreign)} but subscribed as {expected}: "
                    f"it will deliver nothing. Make the transports agree (roadside_codec:=raw needs "
                    f"roadside_image_transport:=raw; v2x_vlm.launch.py does this unless roadside_transport "
                    f"says otherwise)")
            self._foreign[name] = foreign

    def watched_events(self, name: str, topic_hint: str, expected: str) -> SubscriptionEventCallbacks:
        def incompatible_qos(event):
            self.counts[f"{name}_incompatible_qos"] += 1
            policy = getattr(event.last_policy_kind, "name", event.last_policy_kind)
            self.logger.warning(
                f"{name} ({topic_hint}): a publisher offers a QoS incompatible with ours ({expected}); "
                f"last incompatible policy: {policy}. It will deliver nothing: make the publisher "
                f"reliable or set qos_images:=best_effort / sensor_data on this node")

        return SubscriptionEventCallbacks(incompatible_qos=incompatible_qos)
