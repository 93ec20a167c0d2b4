"""A node's parameters under rclpy: declared with type, range and description, checked as a
whole, and applied while the node runs.

``LiveParameters`` declares every ``ParameterSpec`` of a node (``ros.parameters``) with a
full ``ParameterDescriptor`` and then keeps three promises:

- **Numbers are numbers.** A whole number given for a float parameter (``rate_hz:=0`` on
  the command line, ``ros2 param set ... rate_hz 5``, a YAML ``scale: 1``) is taken as that
  float, at start and at run time. rclpy itself would refuse it (at start with an
  ``InvalidParameterTypeException`` that kills the node).
- **Invalid values are refused with a reason naming the parameter**, at start
  (``ParameterError``, which the node's main turns into one log line and exit code 2) and
  at run time (the ``SetParametersResult`` reason ``ros2 param set`` prints). Besides the
  descriptor's type and range, every change is checked by building the node's dataclass
  configs with the new values, so cross-field rules hold too.
- **A successful set takes effect.** Parameters in ``RUNTIME`` are handed to the node's
  ``apply`` callback after rclpy stores them; the others are refused while running with a
  reason saying so (never "success, and nothing changed").
"""

from __future__ import annotations

from collections.abc import Callable

from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType,
                                SetParametersResult)
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.parameter import Parameter

from v2x_vlm_ros.ros.parameters import ParameterSpec

_TYPES = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
          float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING}


class ParameterError(ValueError):
    """A parameter value a node cannot run with; the message names the parameter."""


def descriptor(spec: ParameterSpec) -> ParameterDescriptor:
    """The ROS 2 descriptor of ``spec``: type, description, range, constraints."""
    desc = ParameterDescriptor(name=spec.name, description=spec.description,
                               additional_constraints=spec.constraints())
    if spec.kind in _TYPES:
        desc.type = _TYPES[spec.kind]
    if spec.range is not None and spec.kind is float:
        desc.floating_point_range = [FloatingPointRange(
            from_value=float(spec.range[0]), to_value=float(spec.range[1]), step=0.0)]
    elif spec.range is not None and spec.kind is int:
        desc.integer_range = [IntegerRange(from_value=int(spec.range[0]), to_value=int(spec.range[1]),
                                           step=0)]
    return desc


def _as_float(spec: ParameterSpec, value):
    """A whole number for a float parameter, as a float; anything else unchanged."""
    if spec.kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


class LiveParameters:
    """Declares ``specs`` on ``node`` and keeps ``values`` (name -> value) current.

    ``check(values)`` raises ValueError for a set of values the node cannot run with (it
    builds the node's configs); ``apply(changed)`` applies accepted run-time changes;
    ``changeable(name)`` says whether a parameter may change now (``spec.runtime``, unless
    the node says otherwise, e.g. a lifecycle node before it is configured)."""

    def __init__(self, node, specs: list[ParameterSpec], check: Callable[[dict], None],
                 apply: Callable[[dict], None] | None = None,
                 changeable: Callable[[ParameterSpec], bool] | None = None):
        self.node = node
        self.specs = {s.name: s for s in specs}
        self.check = check
        self.apply = apply
        self.changeable = changeable or (lambda spec: spec.runtime)
        self.values: dict = {}
        self.refused: list[str] = []  # reasons of refused run-time changes (diagnostics, tests)
        overrides = self._overrides()
        for spec in specs:
            self.values[spec.name] = self._declare(spec, overrides)
        try:
            check(dict(self.values))
        except (TypeError, ValueError) as exc:
            raise ParameterError(f"{node.get_name()}: invalid parameters: {exc}") from None
        node.add_pre_set_parameters_callback(self._coerce)
        node.add_on_set_parameters_callback(self._validate)
        node.add_post_set_parameters_callback(self._applied)

    def _overrides(self) -> dict:
        # rclpy keeps the values given on the command line / in parameter files in this
        # attribute (no public accessor in Jazzy); read to coerce ints for float
        # parameters before declaring (test_ros_parameters checks that this still works)
        return {name: p.value for name, p in getattr(self.node, "_parameter_overrides", {}).items()}

    def _declare(self, spec: ParameterSpec, overrides: dict):
        # declared with the default (which fixes the type: rclpy takes a statically typed
        # parameter's type from the value it is declared with), then set to the override
        # through rclpy's checks of type and range (their reasons name the parameter)
        try:
            param = self.node.declare_parameter(spec.name, spec.default, descriptor(spec),
                                                ignore_override=True)
        except (InvalidParameterTypeException, InvalidParameterValueException) as exc:
            raise ParameterError(f"{self.node.get_name()}: parameter {spec.name}: {exc}") from None
        if spec.name not in overrides:
            return param.value
        value = _as_float(spec, overrides[spec.name])
        result = self.node.set_parameters([Parameter(spec.name, value=value)])[0]
        if not result.successful:
            raise ParameterError(f"{self.node.get_name()}: parameter {spec.name} := {value!r} refused: "
                                 f"{result.reason}")
        return self.node.get_parameter(spec.name).value

    # -- run-time changes: coerce, validate, apply ------------------------------------------

    def _coerce(self, params: list[Parameter]) -> list[Parameter]:
        out = []
        for p in params:
            spec = self.specs.get(p.name)
            if spec is not None and spec.kind is float and p.type_ == Parameter.Type.INTEGER:
                p = Parameter(p.name, Parameter.Type.DOUBLE, float(p.value))
            out.append(p)
        return out

    def _validate(self, params: list[Parameter]) -> SetParametersResult:
        merged = dict(self.values)
        for p in params:
            spec = self.specs.get(p.name)
            if spec is None:  # use_sim_time and rclpy's own: not ours to judge
                continue
            if p.value == self.values[p.name]:
                continue
            if not self.changeable(spec):
                return self._refuse(f"{p.name} cannot change while the node runs: "
                                    "it is read at start (restart the node to change it)")
            merged[p.name] = p.value
        try:
            self.check(merged)
        except (TypeError, ValueError) as exc:
            return self._refuse(f"invalid value: {exc}")
        return SetParametersResult(successful=True)

    def _refuse(self, reason: str) -> SetParametersResult:
        self.refused.append(reason)
        self.node.get_logger().warning(f"parameter change refused: {reason}")
        return SetParametersResult(successful=False, reason=reason)

    def _applied(self, params: list[Parameter]) -> None:
        changed = {p.name: p.value for p in params
                   if p.name in self.specs and p.value != self.values[p.name]}
        if not changed:
            return
        self.values.update(changed)
        if self.apply is not None:
            self.apply(changed)
        self.node.get_logger().info(
            "parameters applied: " + ", ".join(f"{k}={v!r}" for k, v in sorted(changed.items())))
