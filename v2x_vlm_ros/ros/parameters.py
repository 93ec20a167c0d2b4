"""Node parameters, declared from the same dataclasses the services use (no ROS import).

Each node declares, with a description taken from the field's ``#:`` comment:
- the service's own config (``VehicleConfig`` / ``RoadsideConfig``) under plain names,
- the refinement config under ``refine.<name>`` (vehicle node),
- the node's ROS-side settings (``VehicleNodeConfig`` / ``RoadsideNodeConfig``): model,
  image transports, QoS, frames, describer.

``config/*.param.yaml`` sets them, the launch files override a few, and a static test
checks that all three agree with what the nodes declare.

Besides its description each parameter has a type (from the field's annotation), a range
for numbers (``RANGES``, inclusive as ROS 2 descriptors are; strict bounds such as "> 0"
are the dataclass's own checks), the allowed values of a choice (``CHOICES``) and whether
it may change while the node runs (``RUNTIME``): those a running node applies at once;
the others (model, device, backend, transports, QoS, buffer sizes, ...) are read when the
node starts (or, for the lifecycle vehicle node, when it is configured).
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing
from dataclasses import dataclass

from v2x_vlm_ros.model.codec import TOKEN_CHOICES
from v2x_vlm_ros.runtime.refine import RefineConfig
from v2x_vlm_ros.runtime.roadside import RoadsideConfig
from v2x_vlm_ros.runtime.vehicle_config import VehicleConfig

QOS_CHOICES = ("sensor_data", "reliable", "best_effort")
TRANSPORTS = ("raw", "compressed")
BACKEND_CHOICES = ("tensorrt", "inductor", "eager")
TOKEN_CHOICE_CHOICES = ("",) + TOKEN_CHOICES  # "": the model's own


@dataclass
class VehicleNodeConfig:
    #: Model directory (HF format). Empty: the demo model installed with the package.
    model: str = ""
    #: torch device for the model: cpu, cuda, cuda:1, ...
    device: str = "cpu"
    #: Inference backend: tensorrt, inductor or eager; unavailable ones fall back (logged).
    backend: str = "eager"
    #: Where engines built by `v2x-vlm build-engine` are looked up (tensorrt backend);
    #: empty: ~/.cache/v2x_vlm_ros/engines.
    engine_cache_dir: str = ""
    #: Engine precision to look up: fp16, bf16 or fp32.
    engine_precision: str = "fp16"
    #: Blank frames planned before the node reports ready (compilation, allocation).
    warmup_frames: int = 2
    #: How each plan token is read from the model's distribution over bins: greedy (most
    #: likely), mean or median; empty: the model's own (token_choice in its v2x_vlm.json).
    token_choice: str = ""
    #: Ego camera input: "raw" (sensor_msgs/Image) or "compressed" (CompressedImage).
    ego_image_transport: str = "compressed"
    #: Roadside input: "raw" or "compressed" (what roadside_node sends).
    roadside_image_transport: str = "compressed"
    #: QoS of the image subscriptions: sensor_data (best effort, keep last), reliable, best_effort.
    qos_images: str = "sensor_data"
    #: QoS of the outputs: reliable (default) or best_effort.
    qos_outputs: str = "reliable"
    #: Queue depth of subscriptions and publishers.
    qos_depth: int = 5
    #: Frame of the planned path (the ego LiDAR / base frame).
    base_frame: str = "base_link"
    #: Frame of the path published in map coordinates (when odometry gives a pose).
    map_frame: str = "map"
    #: Publish the path and markers in RViz colours.
    publish_markers: bool = True
    #: Publish the fused input with the plan drawn on it (raw Image; RViz cannot show compressed).
    publish_debug_image: bool = False
    #: Warn when an input has been silent this long (a QoS mismatch looks exactly like this).
    input_silence_warn_s: float = 3.0
    #: Period of the /diagnostics status (steady clock). 1 s on a vehicle; shorter for a tool
    #: that follows the input counts, e.g. `v2x-vlm play --step` confirming each sample's intake.
    diagnostics_period_s: float = 1.0
    #: Describer model directory for the scene description; empty: plan without descriptions.
    describer_model: str = ""
    #: Describer calls per second at most.
    describer_rate_hz: float = 0.5
    #: A describer call longer than this is reported as late (hung while it lasts).
    describer_deadline_s: float = 10.0

    def __post_init__(self):
        _check_choice("ego_image_transport", self.ego_image_transport, TRANSPORTS)
        _check_choice("roadside_image_transport", self.roadside_image_transport, TRANSPORTS)
        _check_choice("qos_images", self.qos_images, QOS_CHOICES)
        _check_choice("qos_outputs", self.qos_outputs, QOS_CHOICES)
        if self.qos_depth < 1:
            raise ValueError(f"qos_depth must be >= 1, got {self.qos_depth}")
        _check_choice("engine_precision", self.engine_precision, ("fp16", "bf16", "fp32"))
        _check_choice("backend", self.backend, BACKEND_CHOICES)
        _check_choice("token_choice", self.token_choice, TOKEN_CHOICE_CHOICES)
        if self.warmup_frames < 0:
            raise ValueError(f"warmup_frames must be >= 0, got {self.warmup_frames}")
        for name in ("input_silence_warn_s", "diagnostics_period_s", "describer_rate_hz",
                     "describer_deadline_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")


@dataclass
class RoadsideNodeConfig:
    #: Roadside camera input: "raw" (sensor_msgs/Image) or "compressed".
    input_transport: str = "compressed"
    #: QoS of the camera subscription.
    qos_images: str = "sensor_data"
    #: QoS of the transmitted stream (must be compatible with the vehicle's qos_images).
    qos_outputs: str = "sensor_data"
    #: Queue depth of subscription and publisher.
    qos_depth: int = 5
    #: Warn when the camera has been silent this long.
    input_silence_warn_s: float = 3.0

    def __post_init__(self):
        _check_choice("input_transport", self.input_transport, TRANSPORTS)
        _check_choice("qos_images", self.qos_images, QOS_CHOICES)
        _check_choice("qos_outputs", self.qos_outputs, QOS_CHOICES)
        if self.qos_depth < 1 or not self.input_silence_warn_s > 0:
            raise ValueError("qos_depth must be >= 1 and input_silence_warn_s > 0")


def _check_choice(name: str, value: str, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


#: Inclusive ranges of the numeric parameters (a ROS 2 descriptor's range; rclpy refuses
#: values outside it). Strict bounds ("> 0") are enforced by the dataclasses.
RANGES: dict[str, tuple[float, float]] = {
    # vehicle_node
    "warmup_frames": (0, 1000), "qos_depth": (1, 1000), "input_silence_warn_s": (0.0, 3600.0),
    "diagnostics_period_s": (0.0, 60.0),
    "describer_rate_hz": (0.0, 100.0), "describer_deadline_s": (0.0, 3600.0),
    "planning_rate_hz": (0.0, 1000.0), "sync_slop_s": (0.0, 10.0), "roadside_max_age_s": (0.0, 60.0),
    "description_max_age_s": (0.0, 3600.0), "ego_max_age_s": (0.0, 60.0),
    "future_tolerance_s": (0.0, 3600.0), "queue_depth": (1, 1000),
    "max_image_pixels": (1, 1_000_000_000), "latency_window": (1, 1_000_000),
    "refine.dt_s": (0.0, 10.0), "refine.max_speed_mps": (0.0, 150.0), "refine.max_accel_mps2": (0.0, 50.0),
    "refine.max_decel_mps2": (0.0, 50.0), "refine.max_curvature_per_m": (0.0, 10.0),
    "refine.max_lateral_accel_mps2": (0.0, 50.0), "refine.min_progress_m": (-100.0, 0.0),
    "refine.tolerance": (0.0, 10.0), "refine.min_heading_step_m": (0.0, 100.0),
    "refine.smoothing": (0.0, 1000.0), "refine.repair_straightness": (0.0, 1000.0),
    "refine.max_iterations": (1, 1000),
    # roadside_node
    "scale": (0.0, 1.0), "quality": (1, 100), "rate_hz": (0.0, 1000.0),
}

#: Parameters that take one of a few values.
CHOICES: dict[str, tuple[str, ...]] = {
    "backend": BACKEND_CHOICES, "engine_precision": ("fp16", "bf16", "fp32"),
    "token_choice": TOKEN_CHOICE_CHOICES,
    "ego_image_transport": TRANSPORTS, "roadside_image_transport": TRANSPORTS,
    "input_transport": TRANSPORTS, "qos_images": QOS_CHOICES, "qos_outputs": QOS_CHOICES,
    "default_command": ("LEFT", "RIGHT", "FORWARD"), "codec": ("jpeg", "png", "raw"),
}

#: Parameters a running node applies when they are set (``ros2 param set``); any other is
#: refused while running, with the reason.
RUNTIME: dict[str, frozenset[str]] = {
    "vehicle_node": frozenset({
        "input_silence_warn_s", "diagnostics_period_s", "publish_markers", "publish_debug_image",
        "planning_rate_hz",
        "sync_slop_s", "roadside_max_age_s", "description_max_age_s", "ego_max_age_s",
        "future_tolerance_s", "max_image_pixels",
        *(f"refine.{f.name}" for f in dataclasses.fields(RefineConfig)),
    }),
    # codec only within jpeg/png: raw changes the message type of ~/output/image
    "roadside_node": frozenset({"scale", "codec", "quality", "rate_hz", "input_silence_warn_s"}),
}


@dataclass(frozen=True)
class ParameterSpec:
    name: str
    default: object
    description: str
    kind: type = str  # bool, int, float, str or list
    range: tuple[float, float] | None = None
    choices: tuple[str, ...] | None = None
    runtime: bool = False

    def constraints(self) -> str:
        """The human-readable rules (a descriptor's additional_constraints)."""
        parts = []
        if self.choices:
            parts.append("one of " + ", ".join(self.choices))
        if not self.runtime:
            parts.append("read at start (restart the node to change it)")
        return "; ".join(parts)


def field_docs(cls) -> dict[str, str]:
    """``{field: text}`` from the comment lines right above each field (``#:`` or ``#``;
    section rulers such as ``# -- data ---`` are not documentation)."""
    docs, pending = {}, []
    for line in inspect.getsource(cls).splitlines():
        stripped = line.strip()
        if stripped.startswith("#") and not stripped.startswith("# --"):
            pending.append(stripped.lstrip("#:").strip())
            continue
        match = re.match(r"(\w+)\s*:", stripped)
        if match and pending:
            docs[match.group(1)] = " ".join(pending)
        if not stripped.startswith("#"):
            pending = []
    return docs


def parameter_specs(cls, prefix: str = "", runtime: frozenset[str] = frozenset()) -> list[ParameterSpec]:
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    specs = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if isinstance(default, tuple):  # ROS parameters hold lists, not tuples
            default = list(default)
        name = prefix + f.name
        kind = hints[f.name] if hints[f.name] in (bool, int, float, str) else list
        specs.append(ParameterSpec(name, default, docs.get(f.name, ""), kind, RANGES.get(name),
                                   CHOICES.get(name), name in runtime))
    return specs


def vehicle_node_parameters() -> list[ParameterSpec]:
    runtime = RUNTIME["vehicle_node"]
    return (parameter_specs(VehicleNodeConfig, runtime=runtime)
            + parameter_specs(VehicleConfig, runtime=runtime)
            + parameter_specs(RefineConfig, "refine.", runtime))


def roadside_node_parameters() -> list[ParameterSpec]:
    runtime = RUNTIME["roadside_node"]
    return (parameter_specs(RoadsideNodeConfig, runtime=runtime)
            + parameter_specs(RoadsideConfig, runtime=runtime))


def build(cls, values: dict, prefix: str = ""):
    """An instance of ``cls`` from declared parameter values (``prefix`` stripped)."""
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key.startswith(prefix) and key[len(prefix):] in names:
            name = key[len(prefix):]
            default = getattr(cls, name, None)
            kwargs[name] = tuple(value) if isinstance(default, tuple) else value
    return cls(**kwargs)


def render_param_yaml(node: str, specs: list[ParameterSpec]) -> str:
    """The ``config/<node>.param.yaml`` text for ``specs`` (defaults, described)."""
    import textwrap

    import yaml

    lines = [f"# {node} parameters, generated from the dataclasses the node declares them from",
             "# (python -m v2x_vlm_ros.ros.parameters); test_node_interface.py keeps them in step.",
             f"{node}:", "  ros__parameters:"]
    for spec in specs:
        lines += [f"    # {line}" for line in textwrap.wrap(spec.description, 92)]
        value = yaml.safe_dump(spec.default, default_flow_style=True).strip()
        lines.append(f"    {spec.name}: {value.removesuffix('...').strip()}")
    return "\n".join(lines) + "\n"


PARAM_FILES = {"vehicle_node": vehicle_node_parameters, "roadside_node": roadside_node_parameters}

if __name__ == "__main__":
    from pathlib import Path

    config_dir = Path(__file__).resolve().parents[2] / "config"
    for node_name, specs_of in PARAM_FILES.items():
        (config_dir / f"{node_name}.param.yaml").write_text(render_param_yaml(node_name, specs_of()))
