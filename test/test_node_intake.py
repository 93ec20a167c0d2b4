"""ros.intake without ROS: frames lost before a subscription, and silent inputs."""

import pytest

from v2x_vlm_ros.ros.intake import SilenceMonitor, TransportLosses


def test_gaps_in_the_publishers_sequence_numbers_are_counted_as_lost():
    losses = TransportLosses()
    got = [losses.observe("ego", n) for n in (1, 2, 3, 7, 8, 10)]
    assert got == [0, 0, 0, 3, 0, 1] and losses.lost["ego"] == 4
    assert losses.observe("roadside", 5) == 0  # the first sample of a stream proves nothing
    assert losses.lost["roadside"] == 0
    assert losses.first == {"ego": 1, "roadside": 5}  # ... but is kept


def test_a_restarted_publisher_starts_a_new_count():
    losses = TransportLosses()
    for n in (1, 2, 3, 4):
        losses.observe("ego", n)
    assert losses.observe("ego", 1) == 0 and losses.observe("ego", 3) == 1
    assert losses.lost["ego"] == 1


@pytest.mark.parametrize("number", [None, 0, -1, "7", 2.0])
def test_missing_or_odd_sequence_numbers_are_ignored(number):
    losses = TransportLosses()
    losses.observe("ego", 1)
    assert losses.observe("ego", number) == 0 and losses.observe("ego", 2) == 0
    assert sum(losses.lost.values()) == 0


def test_silence_counts_from_the_start_never_before_the_threshold():
    watch = SilenceMonitor(("ego_image", "roadside_image"), threshold_s=3.0, now_s=100.0)
    assert watch.silent_for(101.0) == {} and watch.due_warnings(102.9) == {}
    assert watch.silent_for(103.5) == {"ego_image": 3.5, "roadside_image": 3.5}
    watch.seen("ego_image", 103.6)
    assert set(watch.silent_for(104.0)) == {"roadside_image"}
    assert set(watch.silent_for(106.7)) == {"ego_image", "roadside_image"}


def test_each_silent_input_is_warned_about_on_its_own_and_not_too_often():
    watch = SilenceMonitor(("ego_image", "roadside_image"), threshold_s=1.0, now_s=0.0, repeat_s=10.0)
    watch.seen("roadside_image", 0.5)
    assert watch.due_warnings(1.2) == {"ego_image": 1.2}
    assert watch.due_warnings(1.6) == {"roadside_image": pytest.approx(1.1)}
    assert watch.due_warnings(5.0) == {}
    assert set(watch.due_warnings(11.3)) == {"ego_image"}
    watch.seen("ego_image", 11.4)  # back: the next silence warns again at once
    assert watch.due_warnings(12.5) == {"ego_image": pytest.approx(1.1), "roadside_image": 12.0}
    with pytest.raises(ValueError, match="threshold"):
        SilenceMonitor(("x",), 0.0, 0.0)
