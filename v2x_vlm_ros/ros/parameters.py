"""Node parameters, declared from the same dataclasses the services use (no ROS import).

Each node declares, with a description taken from the field's ``#:`` comment:
- the service's own config (``VehicleConfig`` / ``RoadsideConfig``) under plain names,
- the refinement config under ``refine.<name>`` (vehicle node),
- the node's ROS-side settings (``VehicleNodeConfig`` / ``RoadsideNodeConfig``): model,
  image transports, QoS, frames, describer.

``config/*.param.yaml`` sets them, the launch files override a few, and a static test
checks that all three agree with what the nodes declare.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from dataclasses import dataclass

from v2x_vlm_ros.runtime.refine import RefineConfig
from v2x_vlm_ros.runtime.roadside import RoadsideConfig
from v2x_vlm_ros.runtime.vehicle import VehicleConfig

QOS_CHOICES = ("sensor_data", "reliable", "best_effort")
TRANSPORTS = ("raw", "compressed")


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
        if self.warmup_frames < 0:
            raise ValueError(f"warmup_frames must be >= 0, got {self.warmup_frames}")
        for name in ("input_silence_warn_s", "describer_rate_hz", "describer_deadline_s"):
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


@dataclass(frozen=True)
class ParameterSpec:
    name: str
    default: object
    description: str


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


def parameter_specs(cls, prefix: str = "") -> list[ParameterSpec]:
    docs = field_docs(cls)
    specs = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if isinstance(default, tuple):  # ROS parameters hold lists, not tuples
            default = list(default)
        specs.append(ParameterSpec(prefix + f.name, default, docs.get(f.name, "")))
    return specs


def vehicle_node_parameters() -> list[ParameterSpec]:
    return (parameter_specs(VehicleNodeConfig) + parameter_specs(VehicleConfig)
            + parameter_specs(RefineConfig, "refine."))


def roadside_node_parameters() -> list[ParameterSpec]:
    return parameter_specs(RoadsideNodeConfig) + parameter_specs(RoadsideConfig)


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
