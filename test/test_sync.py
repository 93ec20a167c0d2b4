"""The pairing rule and the bounded, counted input buffers."""

from collections import Counter

import pytest

from v2x_vlm_ros.runtime.sync import FrameBuffer, Stamped, pick_roadside

S = 1_000_000_000  # ns per second


def frames(*stamps_s):
    return [Stamped(int(t * S), f"r{t}") for t in stamps_s]


def test_newest_frame_within_slop_and_age_wins():
    cands = frames(9.0, 9.5, 10.1, 10.4)
    assert pick_roadside(10 * S, cands, slop_s=0.2, max_age_s=1.0).value == "r10.1"  # 0.1 s ahead: ok
    assert pick_roadside(10 * S, cands, slop_s=0.05, max_age_s=1.0).value == "r9.5"  # beyond the slop
    assert pick_roadside(10 * S, frames(8.9, 9.5), slop_s=0.2, max_age_s=0.4) is None  # all stale
    assert pick_roadside(10 * S, frames(9.0), slop_s=0.0, max_age_s=1.0).value == "r9.0"  # age == limit
    assert pick_roadside(10 * S, [], 0.2, 1.0) is None


def test_buffer_keeps_the_newest_and_counts_every_drop():
    drops = Counter()
    buf = FrameBuffer("ego", depth=2, drops=drops)
    for t in (1.0, 1.1, 1.2):
        assert buf.push(int(t * S), t)
    assert [f.value for f in buf.frames] == [1.1, 1.2] and drops["ego_queue_full"] == 1
    assert not buf.push(int(1.2 * S), "dup") and drops["ego_duplicate_stamp"] == 1
    assert not buf.push(int(1.15 * S), "late") and drops["ego_out_of_order"] == 1
    assert buf.take_latest().value == 1.2 and drops["ego_superseded"] == 1 and not buf.frames
    assert buf.received == 5


def test_a_clock_reset_is_followed_not_refused():
    drops = Counter()
    buf = FrameBuffer("ego", depth=4, drops=drops, reset_s=2.0)
    buf.push(100 * S, "before")
    assert buf.push(3 * S, "after the reset")  # a bag played again from its start
    assert drops["ego_clock_reset"] == 1 and [f.value for f in buf.frames] == ["after the reset"]
    assert buf.push(int(3.1 * S), "next")


def test_discard_removes_one_frame_by_identity():
    buf = FrameBuffer("roadside", depth=3, drops=Counter())
    for t in (1, 2, 3):
        buf.push(t * S, [t])  # values that do not compare as booleans
    middle = buf.frames[1]
    buf.discard(middle)
    assert [f.value for f in buf.frames] == [[1], [3]]


def test_depth_is_validated():
    with pytest.raises(ValueError, match="queue depth must be >= 1"):
        FrameBuffer("ego", depth=0, drops=Counter())
