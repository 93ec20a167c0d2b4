"""Fault tests (issue 6, item 3): the services keep planning, in the documented mode,
within one cycle, and count everything.

Faults: the roadside stream stops mid-run and returns (or returns with its clock reset or
ahead); the describer raises, or hangs past its deadline, or finishes a job across a clock
reset; the model raises (CUDA out of memory, once, intermittently or for a while); planning
is slower than the camera. Logical clocks wherever the service takes one; the threaded
describer runs on a real thread with short deadlines, synchronised by events. Every run
checks that the queues stay within their depth and that every frame that came in is
planned, still queued, or counted. A table of the scenarios run (cycles, plans and
counted degradations) is printed at the end of the session.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import cv2
import numpy as np
import pytest
import torch

from v2x_vlm_ros.data.records import EgoMotion
from v2x_vlm_ros.runtime.describer import ClockedDescriber, DescriptionCache, ThreadedDescriber
from v2x_vlm_ros.runtime.engine import PlanOutput
from v2x_vlm_ros.runtime.factory import make_engine
from v2x_vlm_ros.runtime.vehicle import VehicleConfig, VehicleService

from service_checks import check_accounting, register_summary

S = 1_000_000_000
MS = 1_000_000
T0 = 1_700_000_000 * S
EGO = np.full((81, 144, 3), 90, np.uint8)
# textured: a one-colour roadside frame is a dead camera, planned ego-only (blank_image)
_CHECKER = (140 + 40 * (np.indices((81, 144)).sum(axis=0) % 2)).astype(np.uint8)
ROAD_JPEG = cv2.imencode(".jpg", np.repeat(_CHECKER[..., None], 3, axis=2))[1].tobytes()


def t(seconds: float) -> int:
    return T0 + int(round(seconds * S))


# -- the summary table --------------------------------------------------------------------

SCENARIOS: dict[str, Counter] = {}
COLUMNS = ("runs", "cycles", "plans", "counted")


def record(scenario: str, svc: VehicleService) -> None:
    """One run of a fault scenario: its planning cycles, plans and counted degradations."""
    row = SCENARIOS.setdefault(scenario, Counter())
    counts = svc.counts
    row["runs"] += 1
    row["cycles"] += counts["steps"]
    row["plans"] += counts["plans_out"]
    described = Counter(svc.describer.counts if svc.describer is not None else {})
    row["counted"] += (sum(svc.drops.values()) + counts["roadside_unpaired"] + counts["description_stale"]
                       + counts["decode_failures"]
                       + sum(described[k] for k in ("errors", "hung", "late", "superseded")))


def _fault_lines() -> list[str]:
    if not SCENARIOS:
        return []
    width = max(len(s) for s in SCENARIOS) + 2
    lines = [f"{'scenario':<{width}}" + "".join(f"{c:>9}" for c in COLUMNS)]
    for scenario, row in sorted(SCENARIOS.items()):
        lines.append(f"{scenario:<{width}}" + "".join(f"{row[c]:>9}" for c in COLUMNS))
    runs = sum(row["runs"] for row in SCENARIOS.values())
    lines.append(f"{len(SCENARIOS)} fault scenarios, {runs} runs")
    return lines


@pytest.fixture(scope="module", autouse=True)
def fault_summary(request):
    """The table is printed at the end of the session (no conftest hook needed)."""
    register_summary(request.config, "v2x-fault-scenarios-summary", "fault scenarios run", _fault_lines)
    yield


# -- helpers ------------------------------------------------------------------------------


class FakeEngine:
    """Constant velocity at the input speed; ``fail(cycle)`` decides when the model raises."""

    uses_roadside = True

    def __init__(self, fail=lambda cycle: None):
        self.fail = fail
        self.cycle = 0

    def plan(self, inputs):
        self.cycle += 1
        error = self.fail(self.cycle)
        if error is not None:
            raise error
        xy = np.column_stack([np.arange(1, 11) * 0.5 * inputs[0].motion.speed_mps, np.zeros(10)])
        return [PlanOutput(xy=xy, raw_xy=xy, stage_ms={"model": 1.0})]


def service(engine=None, describer=None, cache=None, **config):
    svc = VehicleService(engine or FakeEngine(), VehicleConfig(**config), describer, cache)
    svc.on_motion(T0, EgoMotion(8.0, 0.3, 0.0, 0.5))
    return svc


def wait_until(condition, timeout_s: float = 2.0) -> None:
    """Poll a condition a thread will make true (short sleeps; fails after the timeout)."""
    end = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < end, "timed out waiting for the describer thread"
        time.sleep(0.002)


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return make_engine(tiny_model_dir)[0]


# -- 1. the roadside stream stops mid-run and returns --------------------------------------


def run_roadside(svc, seconds: float, roadside_stamp):
    """10 Hz ego, 2 Hz roadside; ``roadside_stamp(t)`` is the stamp the roadside frame due at
    t carries, or None while the stream is silent. Returns the mode of every cycle."""
    modes = []
    for k in range(int(seconds * 10)):
        now = t(k / 10)
        if k % 5 == 0:
            stamp = roadside_stamp(k / 10)
            if stamp is not None:
                svc.on_roadside_image(stamp, encoded=ROAD_JPEG, now_ns=now)
        svc.on_ego_image(now, EGO, now_ns=now)
        plan = svc.step(now)
        assert plan is not None and plan.stamp_ns == now and np.isfinite(plan.xy).all()  # every cycle
        modes.append(plan.mode)
        check_accounting(svc)
    return modes


@pytest.mark.parametrize("outage", [(20, 50), (20, 24), (10, 16), (30, None)],
                         ids=["3 s", "one frame lost", "two frames lost", "never returns"])
def test_roadside_stream_stops_and_returns(outage):
    """Outage from ``start`` to ``end`` (tenths of a second; None: for good)."""
    start, end = outage
    silent = [start <= k and (end is None or k < end) for k in range(70)]
    svc = service(roadside_max_age_s=1.0)
    modes = run_roadside(svc, 7.0, lambda s: None if silent[round(s * 10)] else t(s))
    expected, last_sent = [], None
    for k in range(70):  # fused while the newest roadside frame is at most 1 s old
        if k % 5 == 0 and not silent[k]:
            last_sent = k
        expected.append("fused" if k - last_sent <= 10 else "ego_only")
    assert modes == expected
    ego_only = expected.count("ego_only")
    assert svc.counts["cycles_ego_only"] == svc.counts["roadside_unpaired"] == ego_only
    assert svc.counts["plans_out"] == 70 and svc.mode == expected[-1]
    entered = 1 if ego_only else 0
    assert svc.counts["mode_ego_only_entered"] == entered
    assert svc.counts["mode_fused_entered"] == (entered if expected[-1] == "fused" else 0)
    record("roadside stops and returns", svc)


def test_roadside_stops_and_returns_with_the_real_planner(engine):
    svc = service(engine, roadside_max_age_s=1.0)
    modes = run_roadside(svc, 6.0, lambda s: None if 2.0 <= s < 4.0 else t(s))
    assert modes == ["fused"] * 26 + ["ego_only"] * 14 + ["fused"] * 20
    assert svc.counts["mode_ego_only_entered"] == svc.counts["mode_fused_entered"] == 1
    assert svc.counts["cycles_ego_only"] == 14 and svc.counts["plans_out"] == 60
    record("roadside stops and returns (real planner)", svc)


BROKEN_CLOCKS = [(-100.0, "roadside_clock_reset"), (30.0, "roadside_from_the_future")]


@pytest.mark.parametrize("shift_s,drop", BROKEN_CLOCKS, ids=["clock reset", "clock ahead"])
def test_roadside_returns_with_a_broken_clock_then_a_good_one(shift_s, drop):
    """After the outage the roadside unit comes back with its clock 100 s behind (a reboot)
    or 30 s ahead: those frames never pair (counted); its clock fixed, fusion resumes in the
    cycle its first frame arrives."""
    svc = service(roadside_max_age_s=1.0)

    def stamp(s):
        if 2.0 <= s < 3.0:
            return None
        return t(s) + int(shift_s * S) if 3.0 <= s < 6.0 else t(s)

    modes = run_roadside(svc, 8.0, stamp)
    assert modes[:26] == ["fused"] * 26
    assert modes[26:60] == ["ego_only"] * 34
    assert modes[60:] == ["fused"] * 20
    assert svc.drops[drop] >= 1 and svc.counts["roadside_unpaired"] == 34
    assert svc.counts["mode_ego_only_entered"] == svc.counts["mode_fused_entered"] == 1
    record(f"roadside returns with its clock {'reset' if shift_s < 0 else 'ahead'}", svc)


# -- 2. the describer raises, hangs, or finishes across a clock reset ----------------------


def test_clocked_describer_that_raises_is_counted_and_planning_goes_on():
    cache = DescriptionCache(max_age_s=0.5)
    errors = {3: RuntimeError("describer crashed"), 4: ValueError("bad caption"), 5: RuntimeError("again"),
              6: RuntimeError("again"), 7: RuntimeError("again"), 8: RuntimeError("again")}
    calls = []

    def describe(image):
        calls.append(1)
        if len(calls) in errors:
            raise errors[len(calls)]
        return f"caption {len(calls)}"

    describer = ClockedDescriber(describe, cache, rate_hz=5.0)  # every other 10 Hz frame
    svc = service(describer=describer, cache=cache)
    states = []
    for k in range(30):
        now = t(k / 10)
        svc.on_ego_image(now, EGO, now_ns=now)
        plan = svc.step(now)
        assert plan is not None
        states.append(plan.description_state)
        check_accounting(svc)
    assert describer.counts["errors"] == 6 and describer.counts["described"] == 9
    assert describer.counts["error_RuntimeError"] == 5 and describer.counts["error_ValueError"] == 1
    # captions at frames 0 and 2 work, 4..14 fail (calls 3..8): the frame-2 caption is fresh
    # up to 0.5 s, then stale until the call at frame 16 succeeds
    assert states[:8] == ["fresh"] * 8 and states[8:16] == ["stale"] * 8 and states[16:] == ["fresh"] * 14
    assert svc.counts["description_stale"] == 8 and svc.counts["plans_out"] == 30
    assert svc.diagnostics()["describer"]["errors"] == 6
    record("describer raises (logical clock)", svc)


def test_threaded_describer_that_raises_is_counted_and_never_blocks_planning():
    cache = DescriptionCache(max_age_s=5.0)

    def describe(image):
        if image[0, 0, 0] == 1:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return f"caption {int(image[0, 0, 0])}"

    describer = ThreadedDescriber(describe, cache, rate_hz=1000.0, deadline_s=1.0)
    try:
        svc = service(describer=describer, cache=cache)
        for k, value in enumerate([1, 2, 1, 3]):
            now = t(k / 10)
            svc.on_ego_image(now, np.full((8, 8, 3), value, np.uint8), now_ns=now)
            assert svc.step(now) is not None
            wait_until(lambda: describer.counts["described"] + describer.counts["errors"] == k + 1)
            check_accounting(svc)
        assert describer.counts["errors"] == describer.counts["error_RuntimeError"] == 2
        assert describer.counts["described"] == 2 and cache.get(t(0.3))[0] == "caption 3"
        assert svc.counts["plans_out"] == 4
    finally:
        describer.close()
    record("describer raises (thread)", svc)


def test_threaded_describer_hung_past_its_deadline():
    """Planning never waits; while hung, submissions supersede one another in a one-frame
    slot (bounded, counted), the description goes stale on the planning clock (counted),
    the hang is reported once, and once the call returns it is counted late and the
    newest frame is described."""
    cache = DescriptionCache(max_age_s=0.5)
    release, entered = threading.Event(), threading.Event()

    def describe(image):
        entered.set()
        if image[0, 0, 0] == 0:
            assert release.wait(timeout=5.0)
        return f"caption {int(image[0, 0, 0])}"

    describer = ThreadedDescriber(describe, cache, rate_hz=1000.0, deadline_s=0.05)
    try:
        svc = service(describer=describer, cache=cache)
        svc.on_ego_image(t(0.0), np.zeros((8, 8, 3), np.uint8), now_ns=t(0.0))
        assert entered.wait(timeout=2.0)  # the worker is now stuck in the call
        slowest, states = 0.0, []
        for k in range(1, 21):
            now = t(k / 10)
            svc.on_ego_image(now, np.full((8, 8, 3), k, np.uint8), now_ns=now)
            began = time.perf_counter()
            plan = svc.step(now)
            slowest = max(slowest, time.perf_counter() - began)
            assert plan is not None
            states.append(plan.description_state)
            check_accounting(svc)
        assert slowest < 0.5  # no step waited for the describer (it hangs until released)
        assert states == ["none"] * 20  # nothing described yet: the prompt goes without
        assert describer.counts["superseded"] == 19  # one slot: 20 frames, 19 replaced
        time.sleep(0.06)  # past the deadline
        assert describer.status() == "hung" and describer.status() == "hung"
        assert describer.counts["hung"] == 1 and svc.diagnostics()["describer"]["status"] == "hung"
        release.set()
        wait_until(lambda: describer.counts["described"] == 2 and describer.status() == "idle")
        assert describer.counts["late"] == 1  # the hung call; then frame 20, the newest
        assert cache.get(t(2.0))[:2] == ("caption 20", "fresh")
        svc.on_ego_image(t(2.1), EGO, now_ns=t(2.1))
        plan = svc.step(t(2.1))
        assert plan.description == "caption 20" and plan.description_state == "fresh"
    finally:
        release.set()
        describer.close()
    record("describer hangs past its deadline", svc)


def test_threaded_describer_finishing_across_a_clock_reset():
    """A bag played again while a caption is being made: the late caption carries a stamp
    from the old clock, far ahead of the new one. It is not used (stale) and the next
    caption, from the new clock, replaces it."""
    cache = DescriptionCache(max_age_s=1.0)
    release = {0: threading.Event(), 5: threading.Event()}
    entered = threading.Event()

    def describe(image):
        entered.set()
        value = int(image[0, 0, 0])
        if value in release:
            assert release[value].wait(timeout=5.0)
        return f"caption {value}"

    describer = ThreadedDescriber(describe, cache, rate_hz=1000.0, deadline_s=1.0)
    try:
        svc = service(describer=describer, cache=cache)
        svc.on_ego_image(t(60.0), np.zeros((8, 8, 3), np.uint8), now_ns=t(60.0))
        assert entered.wait(timeout=2.0)  # caption 0 is being made
        assert svc.step(t(60.0)).description_state == "none"
        svc.on_ego_image(t(0.0), np.full((8, 8, 3), 5, np.uint8), now_ns=t(0.0))  # the clock starts over
        release[0].set()
        wait_until(lambda: describer.counts["described"] == 1)  # caption 0, stamped 60 s ahead
        plan = svc.step(t(0.0))
        assert (plan.description, plan.description_state) == (None, "stale")  # not used as fresh
        release[5].set()
        wait_until(lambda: describer.counts["described"] == 2)  # caption 5 replaces it
        svc.on_ego_image(t(0.1), np.full((8, 8, 3), 6, np.uint8), now_ns=t(0.1))
        wait_until(lambda: describer.counts["described"] == 3)
        plan = svc.step(t(0.1))
        assert (plan.description, plan.description_state) == ("caption 6", "fresh")
        check_accounting(svc)
    finally:
        for event in release.values():
            event.set()
        describer.close()
    record("describer finishes across a clock reset", svc)


# -- 3. the model raises ------------------------------------------------------------------


def oom():
    return torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


@pytest.mark.parametrize("failing", [{3}, {3, 4, 7}, set(range(5, 25))],
                         ids=["once", "intermittent", "20 cycles"])
def test_model_raising_drops_the_frame_counted_and_the_next_cycle_plans(failing):
    """Documented behaviour: a failing planning step publishes nothing for that frame, counts
    it (drops.plan_failed, counts.plan_error_<type>, last_plan_error) and the next cycle
    plans as usual; nothing else changes (no fallback plan: the model gave none)."""
    svc = service(FakeEngine(lambda c: RuntimeError("CUDA out of memory") if c in failing else None))
    out = []
    for k in range(1, 31):
        now = t(k / 10)
        svc.on_roadside_image(now - 50 * MS, encoded=ROAD_JPEG, now_ns=now)
        svc.on_ego_image(now, EGO, now_ns=now)
        plan = svc.step(now)
        out.append(plan is not None)
        if plan is not None:
            assert plan.mode == "fused" and plan.stamp_ns == now
        check_accounting(svc)
    assert out == [k not in failing for k in range(1, 31)]  # exactly the failing cycles, no more
    diag = svc.diagnostics()
    assert diag["drops"]["plan_failed"] == diag["counts"]["plan_error_RuntimeError"] == len(failing)
    assert diag["counts"]["plans_out"] == 30 - len(failing)
    assert diag["last_plan_error"] == "RuntimeError: CUDA out of memory"
    assert diag["mode"] == "fused" and len(svc.latencies) == 30 - len(failing)
    record("model raises (fake engine)", svc)


def test_real_engine_running_out_of_memory_in_the_decoder(engine):
    svc = service(engine)
    real_tokens, calls = engine.tokens, []

    def tokens(batch):
        calls.append(1)
        if len(calls) in (2, 3):
            raise oom()
        return real_tokens(batch)

    engine.tokens = tokens
    try:
        planned = []
        for k in range(1, 7):
            now = t(k / 10)
            svc.on_ego_image(now, EGO, now_ns=now)
            plan = svc.step(now)
            planned.append(plan is not None)
            if plan is not None:
                assert np.isfinite(plan.xy).all() and plan.xy.shape == (10, 2)
            check_accounting(svc)
    finally:
        del engine.tokens
    assert planned == [True, False, False, True, True, True]
    assert svc.drops["plan_failed"] == svc.counts["plan_error_OutOfMemoryError"] == 2
    assert svc.last_plan_error.startswith("OutOfMemoryError: CUDA out of memory")
    record("model raises (real engine, OOM in the decoder)", svc)


# -- 4. planning slower than the camera ----------------------------------------------------


@pytest.mark.parametrize("plan_s,depth", [(0.35, 4), (1.0, 4), (0.25, 1)])
def test_planning_slower_than_the_camera_supersedes_counted_with_bounded_queues(plan_s, depth):
    """500 frames at 10 Hz (roadside 2 Hz, odometry 50 Hz) on a logical clock; a step takes
    ``plan_s``, so the next one starts when it ends. Queues never exceed their depth, each
    step plans on the newest frame, and every other frame is superseded or pushed out of
    the full queue, counted."""
    svc = service(queue_depth=depth, latency_window=50)
    events = [(k * 20 * MS, "odometry") for k in range(2500)]
    events += [(k * 100 * MS, "ego") for k in range(500)]
    events += [(k * 500 * MS + 30 * MS, "roadside") for k in range(100)]
    events.sort()
    next_step, newest, plans = 0, None, 0
    for when, kind in events:
        now = T0 + when
        while next_step <= when and newest is not None:  # steps due before this event
            plan = svc.step(T0 + next_step)
            assert plan is not None and plan.stamp_ns == newest  # the newest frame, never an older one
            plans += 1
            next_step += int(plan_s * S)
            newest = None
            check_accounting(svc)
        if kind == "ego":
            svc.on_ego_image(now, EGO, now_ns=now)
            newest = now
            next_step = max(next_step, when)  # an idle planner starts on this frame
        elif kind == "roadside":
            svc.on_roadside_image(now, encoded=ROAD_JPEG, now_ns=now)
        else:
            svc.on_motion(now, EgoMotion(8.0, 0.3, 0.0, 0.5))
        assert len(svc.ego.frames) <= depth and len(svc.roadside.frames) <= depth
    drops = svc.drops
    assert plans == svc.counts["plans_out"] and plans >= int(50 / plan_s) - 1
    assert drops["ego_superseded"] + drops["ego_queue_full"] + plans + len(svc.ego.frames) == 500
    assert (drops["ego_superseded"] > 0) == (depth > 1)  # with one place the queue pushes out instead
    assert (drops["ego_queue_full"] > 0) == (plan_s * 10 > depth)  # more frames per step than places
    assert drops["ego_too_old"] == 0 and len(svc.latencies) == 50
    # the first step comes before the first roadside frame
    assert svc.counts["cycles_ego_only"] == 1 and svc.counts["cycles_fused"] == plans - 1
    record(f"planning slower than the camera ({plan_s} s/step, depth {depth})", svc)


def test_threaded_describer_slower_than_the_camera_keeps_one_frame():
    """200 frames while each caption takes ten frame periods (21 captions): the slot holds
    one frame, the rest are superseded, counted; submitted = described + superseded."""
    cache = DescriptionCache(max_age_s=5.0)
    gate, taken = threading.Semaphore(0), threading.Semaphore(0)

    def describe(image):
        taken.release()
        assert gate.acquire(timeout=5.0)
        return f"caption {int(image[0, 0, 0])}"

    describer = ThreadedDescriber(describe, cache, rate_hz=1000.0, deadline_s=5.0)
    try:
        svc = service(describer=describer, cache=cache)
        for k in range(200):
            now = t(k / 10)
            svc.on_ego_image(now, np.full((8, 8, 3), k % 250, np.uint8), now_ns=now)
            assert svc.step(now) is not None
            if k % 10 == 0:
                assert taken.acquire(timeout=2.0)  # the worker started a caption
            if k % 10 == 9:
                gate.release()  # ... which ends ten frames later
            assert describer._slot is None or describer._slot[0] == now  # one frame, the newest
            check_accounting(svc)
        gate.release()  # the caption started on the last frame
        wait_until(lambda: describer.status() == "idle" and describer._slot is None)
        assert describer.counts["described"] + describer.counts["superseded"] == 200
        assert describer.counts["described"] == 21 and svc.counts["plans_out"] == 200
    finally:
        for _ in range(5):
            gate.release()
        describer.close()
    record("describer slower than the camera", svc)
