"""The vehicle service's settings (``VehicleConfig``), in a module of their own so that
reading them (roadside_node declares no vehicle parameter, but ``ros.parameters`` lists
both nodes') does not import torch."""

from __future__ import annotations

from dataclasses import dataclass

from v2x_vlm_ros.data.records import Command


@dataclass
class VehicleConfig:
    """Vehicle node parameters (vehicle_node declares the same names)."""

    #: Planning timer rate.
    planning_rate_hz: float = 10.0
    #: A roadside frame may be this much newer than the ego frame (clock disagreement).
    sync_slop_s: float = 0.25
    #: A roadside frame older than this is stale: planning goes ego-only.
    roadside_max_age_s: float = 1.0
    #: A description of an ego image older than this is stale: the prompt goes without.
    description_max_age_s: float = 3.0
    #: An ego frame older than this when its step comes is not planned on (counted).
    ego_max_age_s: float = 0.5
    #: Frames from further in the future than this (clock error) are dropped.
    future_tolerance_s: float = 0.5
    #: Frames kept per input stream (the oldest is dropped first, counted).
    queue_depth: int = 4
    #: Navigation command until the route sends one: LEFT, RIGHT or FORWARD.
    default_command: str = "FORWARD"
    #: Largest image accepted (pixels); bigger ones are dropped before decoding.
    max_image_pixels: int = 16_000_000
    #: Planning steps kept for the latency statistics.
    latency_window: int = 1000

    def __post_init__(self):
        for name in ("planning_rate_hz", "roadside_max_age_s", "description_max_age_s", "ego_max_age_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("sync_slop_s", "future_tolerance_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.queue_depth < 1 or self.max_image_pixels < 1 or self.latency_window < 1:
            raise ValueError("queue_depth, max_image_pixels and latency_window must be >= 1")
        if self.default_command.upper() not in Command.__members__:
            raise ValueError(f"default_command must be LEFT, RIGHT or FORWARD, got {self.default_command!r}")
