"""`v2x-vlm play` options: step mode's settle time reaches the player, bad values are refused
with the option named (the player itself runs through DDS in test_launch_v2x_vlm.py)."""

import pytest

from v2x_vlm_ros.cli import build_parser
from v2x_vlm_ros.ros.bag_player import PlayOptions


def test_settle_defaults_and_flag():
    args = build_parser().parse_args(["play", "some_bag", "--step"])
    assert args.settle == 0.03
    args = build_parser().parse_args(["play", "some_bag", "--step", "--settle", "0.2"])
    assert args.settle == 0.2
    assert PlayOptions(step=True, settle_s=0.2).settle_s == 0.2
    assert build_parser().parse_args(["play", "b", "--step"]).jump_settle == 0.5
    assert build_parser().parse_args(["play", "b", "--step", "--jump-settle", "1.5"]).jump_settle == 1.5


def test_step_mode_confirms_intake_unless_told_not_to():
    assert build_parser().parse_args(["play", "b", "--step"]).confirm_intake is True
    assert build_parser().parse_args(["play", "b", "--step", "--no-confirm-intake"]).confirm_intake is False
    assert PlayOptions(step=True).confirm_intake is True


@pytest.mark.parametrize("name", ["settle_s", "jump_settle_s"])
@pytest.mark.parametrize("value", [-0.01, float("nan")])
def test_negative_or_nan_settle_is_refused(name, value):
    with pytest.raises(ValueError) as err:
        PlayOptions(step=True, **{name: value})
    assert str(err.value) == f"{name} must be >= 0, got {value}"


@pytest.mark.parametrize("kwargs, message", [
    ({"rate": 0.0}, "rate must be > 0, got 0.0"),
    ({"link_message": "jpeg"}, "link_message must be compressed or raw, got 'jpeg'"),
    ({"timeout_s": 0.0}, "roadside_rate_hz must be >= 0, planning_period_s and timeout_s > 0"),
])
def test_other_bad_options_name_themselves(kwargs, message):
    with pytest.raises(ValueError) as err:
        PlayOptions(**kwargs)
    assert str(err.value) == message


@pytest.mark.parametrize("value", [0.0, -1.0, float("nan")])
def test_a_resend_period_that_is_not_positive_is_refused(value):
    assert PlayOptions(step=True).resend_s == 3.0
    assert build_parser().parse_args(["play", "b", "--step"]).resend == 3.0
    assert build_parser().parse_args(["play", "b", "--step", "--resend", "0.5"]).resend == 0.5
    with pytest.raises(ValueError) as err:
        PlayOptions(step=True, resend_s=value)
    assert str(err.value) == f"resend_s must be > 0, got {value}"
