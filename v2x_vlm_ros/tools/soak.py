"""``v2x-vlm soak``: the onboard services over a long run, every frame accounted for and
the process's memory watched.

The vehicle's inputs are made from a DAIR-V2X root (default: ``data/sample``): its ego and
roadside images are cycled, frame after frame, and each is re-stamped on one clock that
advances ``1 / camera_rate_hz`` per frame, so the run can be as long as asked whatever the
size of the data. Each roadside frame goes through ``RoadsideService`` (rate limit by
stamp, JPEG, as on the roadside unit) to ``VehicleService.on_roadside_image``; each ego
frame (JPEG bytes), the ego's motion, the command and the dataset's description go to the
vehicle service; a planning timer at the service's ``planning_rate_hz`` calls
``VehicleService.step``, which runs the real model.

Clock. By default the clock is logical: it jumps from event to event (camera frames and
timer ticks in time order, a frame before a tick at the same instant), so a 10,000-frame
run takes as long as 10,000 planning steps take, and planning is never late: with the
camera and the timer at the same rate every frame is planned. With ``realtime`` the clock
is the wall clock: frames are fed when due (sleeping in between), the timer fires when
due, and ticks missed while a step ran are skipped as a ROS timer skips them, so planning
slower than the camera shows up as superseded (or too old) frames.

Accounting. Every ego frame that came in is planned, dropped for a counted cause, or still
waiting at the end; every roadside camera frame is skipped by the link's rate limit, not
decodable at the source, or sent; every sent frame is received, and then evicted, dropped
or still held, each counted; every timer tick plans or has a counted reason not to. What
none of these explain is ``unexplained``, which must be 0.

Memory. The resident set (``VmRSS`` of /proc/self/status; elsewhere the peak from
``resource``) is sampled every ``sample_every`` frames. Growth is robust to spikes and
leaves out the warm-up: the samples are cut into four quarters in order, and growth is
the median of the last quarter minus the median of the second (the first quarter is
warm-up: allocator pools, caches and the service's bounded latency window fill there).
A least-squares slope over the last three quarters is reported beside it. Growth above
``max_growth_mb`` fails the run.

Outputs in ``out``: ``soak.json`` (everything), ``soak.md`` (the report) and ``memory.png``
(RSS over frames).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import resource
import sys
import time
import traceback
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from v2x_vlm_ros.data.errors import DatasetError
from v2x_vlm_ros.data.records import Command, EgoMotion
from v2x_vlm_ros.eval.machine import cpu_name
from v2x_vlm_ros.preprocessing.image_codec import ImageDecodeError, decode_image
from v2x_vlm_ros.runtime.describer import Description, DescriptionCache
from v2x_vlm_ros.runtime.factory import default_model_dir, make_engine
from v2x_vlm_ros.runtime.refine import RefineConfig
from v2x_vlm_ros.runtime.roadside import RoadsideConfig, RoadsideService
from v2x_vlm_ros.runtime.vehicle import MODES, VehicleConfig, VehicleService

#: Fewest memory samples the growth is computed from (the interval shrinks to give them).
MIN_SAMPLES = 8
PERCENTILES = (50, 90, 99)


def default_data_root() -> str:
    """The sample world of the source tree (data/sample)."""
    return str(Path(__file__).resolve().parents[2] / "data" / "sample")


@dataclass
class SoakOptions:
    frames: int
    model: str | None = None  # None: the demo model (runtime.factory.default_model_dir)
    data: str | None = None  # None: data/sample
    out: str = "out/soak"
    camera_rate_hz: float = 10.0
    roadside_rate_hz: float = 2.0
    device: str = "cpu"
    sample_every: int = 100
    max_growth_mb: float = 50.0
    realtime: bool = False
    refine: bool = True

    def __post_init__(self):
        if isinstance(self.frames, bool) or int(self.frames) != self.frames or self.frames < 1:
            raise ValueError(f"frames must be an integer >= 1, got {self.frames!r}")
        if not 0 < self.camera_rate_hz <= 1000:
            raise ValueError(f"camera rate must be in (0, 1000] Hz, got {self.camera_rate_hz}")
        if self.roadside_rate_hz < 0:
            raise ValueError(f"roadside rate must be >= 0 Hz (0: every frame), got {self.roadside_rate_hz}")
        if self.sample_every < 1:
            raise ValueError(f"sample_every must be >= 1, got {self.sample_every}")
        if not np.isfinite(self.max_growth_mb):
            raise ValueError(f"max_growth_mb must be finite, got {self.max_growth_mb}")


@dataclass(frozen=True)
class SourceFrame:
    """One dataset sample to cycle: paths (read when fed), not pixels."""

    name: str
    ego: Path
    roadside: Path | None
    motion: EgoMotion
    command: Command
    description: str | None


def source_frames(root, limit: int | None = None) -> list[SourceFrame]:
    """The samples of a DAIR-V2X root in replay order (at most ``limit``)."""
    from v2x_vlm_ros.data.dair import DairV2XDataset

    dataset = DairV2XDataset(root)
    order = dataset.time_order()[:limit]
    frames = []
    for i in order:
        s = dataset[i]
        frames.append(SourceFrame(s.sample_id, s.ego_image_path, s.roadside_image_path, s.motion,
                                  s.command, s.description))
    if not frames:
        raise DatasetError(Path(root), None, "no samples to cycle")
    return frames


# -- memory -----------------------------------------------------------------------------


def rss_mb() -> tuple[float, str]:
    """(resident set in MiB, where it was read): VmRSS, or the peak RSS where /proc is missing."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0, "VmRSS"
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (peak / 2**20 if sys.platform == "darwin" else peak / 1024.0), "ru_maxrss (peak)"


def memory_growth(frames: list[int], values_mb: list[float]) -> dict:
    """Growth of a memory series: median of the last quarter of samples minus median of the
    second (the first quarter is warm-up), and the least-squares slope over the last three
    quarters. Fewer than 4 samples: nothing to judge (``growth_mb`` None)."""
    values = np.asarray(values_mb, float)
    x = np.asarray(frames, float)
    out = {"method": "median(last quarter) - median(second quarter) of the samples",
           "growth_mb": None, "second_quarter_median_mb": None, "last_quarter_median_mb": None,
           "slope_mb_per_1k_frames": None, "slope_growth_mb": None, "warmup_samples": None}
    if values.size < 4:
        return out
    parts = np.array_split(np.arange(values.size), 4)
    q2, q4 = float(np.median(values[parts[1]])), float(np.median(values[parts[3]]))
    out.update(second_quarter_median_mb=q2, last_quarter_median_mb=q4, growth_mb=q4 - q2,
               warmup_samples=int(parts[1][0]))
    tail = np.concatenate(parts[1:])
    if np.ptp(x[tail]) > 0:
        slope = float(np.polyfit(x[tail], values[tail], 1)[0])
        out.update(slope_mb_per_1k_frames=1000.0 * slope, slope_growth_mb=slope * float(np.ptp(x[tail])))
    return out


def memory_verdict(growth: dict, max_growth_mb: float) -> bool:
    """True when the growth is measured and at most ``max_growth_mb``."""
    return growth.get("growth_mb") is not None and growth["growth_mb"] <= max_growth_mb


# -- latency ----------------------------------------------------------------------------


class _Series:
    """Per-stage values in arrays allocated (and touched) when a stage first shows up, so
    recording a long run does not itself grow the resident set frame by frame."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.n = 0
        self.columns: dict[str, np.ndarray] = {}

    def add(self, values: dict) -> None:
        if self.n >= self.capacity:
            return
        for key, value in values.items():
            column = self.columns.get(key)
            if column is None:
                column = self.columns[key] = np.full(self.capacity, np.nan)
            column[self.n] = value
        self.n += 1

    def stats(self, total: bool = True) -> dict:
        out = {}
        rows = {k: v[: self.n] for k, v in self.columns.items()}
        if total and rows:
            rows["total"] = np.nansum(np.stack(list(rows.values())), axis=0)
        for key, values in rows.items():
            values = values[np.isfinite(values)]
            if values.size:
                out[key] = {"n": int(values.size), "mean": float(values.mean()),
                            **{f"p{q}": float(np.percentile(values, q)) for q in PERCENTILES},
                            "max": float(values.max())}
        return out


# -- the run ----------------------------------------------------------------------------


def machine_info(device: str) -> dict:
    import torch

    info = {"platform": platform.platform(), "python": platform.python_version(), "cpu": cpu_name(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "device": str(device), "gpu": None}
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def _gpu_mb(device: str) -> float | None:
    import torch

    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        return torch.cuda.memory_allocated(torch.device(device)) / 2**20
    return None


def _balance(total: int, parts: dict) -> dict:
    return {"total": int(total), "explained_by": {k: int(v) for k, v in parts.items()},
            "unexplained": int(total - sum(parts.values()))}


#: Drops of an ego frame already taken for planning that are not named ``ego_*``.
EGO_STEP_DROPS = ("plan_failed",)


def _frame_drops(drops: dict, name: str) -> dict:
    """The drop counters of one stream that count frames. Where the buffer counts the frames
    a clock reset discards (``*_clock_reset_discarded``), ``*_clock_reset`` counts events and
    is left out; without that counter it is the only account of those frames there is."""
    out = {k: v for k, v in drops.items() if k.startswith(f"{name}_")}
    if f"{name}_clock_reset_discarded" in out:
        out.pop(f"{name}_clock_reset", None)
    return out


def accounting(counts: dict, drops: dict, link: dict, extra: dict, held: dict) -> dict:
    """Where every frame and every timer tick went. ``extra``: the soak's own counts
    (``roadside_source_undecodable``, ``step_errors``); ``held``: frames still buffered."""
    plans = counts.get("plans_out", 0)
    failed = {k: drops.get(k, 0) for k in EGO_STEP_DROPS}
    errors = extra.get("step_errors", 0)
    out = {
        "ego": _balance(counts.get("ego_frames_in", 0),
                        {"plans_out": plans, **_frame_drops(drops, "ego"), **failed, "step_errors": errors,
                         "held_at_end": held["ego"]}),
        "roadside_link": _balance(link["offered"], {
            "sent": link["sent"], "skipped_rate": link["skipped_rate"],
            "roadside_source_undecodable": extra.get("roadside_source_undecodable", 0)}),
        "roadside_received": _balance(link["sent"],
                                      {"roadside_frames_in": counts.get("roadside_frames_in", 0)}),
        "roadside_vehicle": _balance(counts.get("roadside_frames_in", 0),
                                     {**_frame_drops(drops, "roadside"), "held_at_end": held["roadside"]}),
        "steps": _balance(counts.get("steps", 0), {
            "plans_out": plans, "steps_without_new_ego_frame": counts.get("steps_without_new_ego_frame", 0),
            **{k: drops.get(k, 0) for k in ("ego_too_old", "ego_undecodable")}, **failed,
            "step_errors": errors}),
        "modes": _balance(sum(counts.get(f"cycles_{m}", 0) for m in MODES), {"plans_out": plans, **failed}),
    }
    out["unexplained"] = int(sum(abs(b["unexplained"]) for b in out.values()))
    return out


def soak(options: SoakOptions, progress: bool = True, on_frame=None) -> dict:
    """Run the vehicle services for ``options.frames`` camera frames and write the report.

    ``on_frame(k)`` is called after frame ``k`` is fed (a hook for tests and experiments,
    e.g. to hold an allocation and see the memory check catch it)."""
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    model = options.model or default_model_dir()
    data = options.data or default_data_root()
    pool = source_frames(data, limit=options.frames)
    engine, backend_note = make_engine(model, options.device, "eager", RefineConfig(enabled=options.refine),
                                       warm_up=2)
    vcfg = VehicleConfig()
    cache = DescriptionCache(vcfg.description_max_age_s)
    vehicle = VehicleService(engine, vcfg, None, cache)
    link = RoadsideService(RoadsideConfig(rate_hz=options.roadside_rate_hz))

    n = int(options.frames)
    every = min(options.sample_every, max(1, n // MIN_SAMPLES))
    stages = _Series(n)
    encode_ms = _Series(n)
    extra: Counter = Counter()
    errors: Counter = Counter()
    first_error: str | None = None
    samples: list[dict] = []
    rss_source = rss_mb()[1]

    t0 = 1_700_000_000 * 10**9  # any epoch: every stamp is re-made on this clock
    frame_ns = 1e9 / options.camera_rate_hz
    tick_ns = int(round(1e9 / vcfg.planning_rate_hz))
    began_ns = time.perf_counter_ns()
    began = time.perf_counter()

    def frame_t(k: int) -> int:
        return t0 + int(round(k * frame_ns))

    def clock() -> int:
        return t0 + time.perf_counter_ns() - began_ns

    def sample(k: int) -> None:
        mb, _ = rss_mb()
        entry = {"frame": k, "plans": vehicle.counts["plans_out"], "rss_mb": round(mb, 3),
                 "wall_s": round(time.perf_counter() - began, 3)}
        gpu = _gpu_mb(options.device)
        if gpu is not None:
            entry["gpu_allocated_mb"] = round(gpu, 3)
        samples.append(entry)

    def feed(k: int, now: int) -> None:
        src = pool[k % len(pool)]
        stamp = frame_t(k)
        ego_bytes = src.ego.read_bytes()
        if src.roadside is not None and link.admit(stamp):
            try:
                pixels = decode_image(src.roadside.read_bytes(), f"{src.name} roadside")
            except (ImageDecodeError, OSError):
                extra["roadside_source_undecodable"] += 1
            else:
                sent = link.encode(stamp, pixels)
                encode_ms.add({"roadside_encode": sent.encode_ms})
                vehicle.on_roadside_image(sent.stamp_ns, encoded=sent.data, now_ns=now)
        if src.description:
            cache.put(Description(src.description, stamp))
        vehicle.on_motion(stamp, src.motion)
        vehicle.on_command(src.command)
        vehicle.on_ego_image(stamp, encoded=ego_bytes, source=src.name, now_ns=now)

    k = 0
    next_tick = t0
    now = t0
    ticks = missed = 0
    sample(0)  # after loading and warm-up, before the first frame
    with tqdm(total=n, desc="soak", unit="frame", disable=not progress) as bar:
        while True:
            if options.realtime:
                now = clock()
            while k < n and frame_t(k) <= now:
                feed(k, now)
                if on_frame is not None:
                    on_frame(k)
                k += 1
                bar.update(1)
                if k % every == 0 and k < n:
                    sample(k)
                    bar.set_postfix(plans=vehicle.counts["plans_out"], rss_mb=f"{samples[-1]['rss_mb']:.0f}")
            if next_tick <= now:
                ticks += 1
                late = (now - next_tick) // tick_ns  # ticks a busy timer skipped (real time only)
                missed += late
                next_tick += (late + 1) * tick_ns
                try:
                    result = vehicle.step(now)
                except Exception as exc:  # counted and reported; the soak goes on like a node
                    extra["step_errors"] += 1
                    errors[type(exc).__name__] += 1
                    first_error = first_error or traceback.format_exc(limit=8)
                    continue
                if result is not None:
                    stages.add(result.stage_ms)
                continue
            if k >= n and not vehicle.ego.frames:
                break
            target = min(frame_t(k), next_tick) if k < n else next_tick
            if options.realtime:
                wait = (target - clock()) * 1e-9
                if wait > 0:
                    time.sleep(wait)
            else:
                now = target
    wall_s = time.perf_counter() - began
    sample(n)  # after the last planning step

    diag = vehicle.diagnostics()
    counts, drops = diag["counts"], diag["drops"]
    link_stats = link.stats()
    balances = accounting(counts, drops, link_stats, extra,
                          {"ego": len(vehicle.ego.frames), "roadside": len(vehicle.roadside.frames)})
    growth = memory_growth([s["frame"] for s in samples], [s["rss_mb"] for s in samples])
    memory_ok = memory_verdict(growth, options.max_growth_mb)
    checks = {"accounting": balances["unexplained"] == 0, "memory": memory_ok,
              "planned": counts.get("plans_out", 0) > 0, "no_step_errors": not errors}
    rss = [s["rss_mb"] for s in samples]
    memory = {"source": rss_source, "sample_every": every, "samples": samples,
              "start_mb": rss[0], "end_mb": rss[-1], "peak_mb": max(rss),
              "max_growth_mb": options.max_growth_mb, **growth, "passed": memory_ok}
    if every != options.sample_every:
        memory["note"] = f"sampled every {every} frames (asked {options.sample_every}) to get {MIN_SAMPLES}"
    if samples[0].get("gpu_allocated_mb") is not None:
        gpu = memory_growth([s["frame"] for s in samples], [s["gpu_allocated_mb"] for s in samples])
        memory["gpu_growth_mb"] = gpu["growth_mb"]
    plans = counts.get("plans_out", 0)
    result = {
        "passed": all(checks.values()),
        "checks": checks,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(options.device),
        "model": str(model),
        "backend": backend_note,
        "data": str(data),
        "source_frames": len(pool),
        "options": {**asdict(options), "model": str(model), "data": str(data)},
        "clock": {"mode": "realtime" if options.realtime else "logical",
                  "camera_rate_hz": options.camera_rate_hz, "planning_rate_hz": vcfg.planning_rate_hz,
                  "roadside_rate_hz": options.roadside_rate_hz,
                  "simulated_s": (frame_t(n - 1) - t0) * 1e-9, "wall_s": round(wall_s, 3),
                  "timer_ticks": ticks, "timer_ticks_missed": int(missed)},
        "frames": {"ego_in": counts.get("ego_frames_in", 0), "roadside_camera": link_stats["offered"],
                   "roadside_sent": link_stats["sent"], "roadside_in": counts.get("roadside_frames_in", 0)},
        "plans_out": plans,
        "drops": dict(sorted(drops.items())),
        "counts": dict(sorted(counts.items())),
        "soak_counts": dict(extra),
        "errors": dict(errors),
        "first_error": first_error,
        "last_plan_error": diag.get("last_plan_error"),  # a model failure the service caught, if any
        "link": link_stats,
        "accounting": balances,
        "unexplained": balances["unexplained"],
        "latency_ms": stages.stats(),
        "roadside_encode_ms": encode_ms.stats(total=False).get("roadside_encode"),
        "wall_ms_per_frame": 1000.0 * wall_s / n,
        "wall_ms_per_plan": 1000.0 * wall_s / plans if plans else None,
        "memory": memory,
        "files": ["soak.json", "soak.md", "memory.png"],
    }
    (out / "soak.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (out / "soak.md").write_text(soak_markdown(result), encoding="utf-8")
    plot_memory(result, out / "memory.png")
    return result


# -- report -----------------------------------------------------------------------------


def plot_memory(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mem = result["memory"]
    x = [s["frame"] for s in mem["samples"]]
    y = [s["rss_mb"] for s in mem["samples"]]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(x, y, marker=".", lw=1, label=f"RSS ({mem['source']})")
    if mem["warmup_samples"]:
        ax.axvspan(x[0], x[mem["warmup_samples"]], color="0.9", label="warm-up (first quarter)")
    if mem["growth_mb"] is not None:
        parts = np.array_split(np.arange(len(x)), 4)
        for part, key in ((parts[1], "second_quarter_median_mb"), (parts[3], "last_quarter_median_mb")):
            ax.hlines(mem[key], x[part[0]], x[part[-1]], colors="tab:red", lw=2,
                      label="median, second and last quarter" if key.startswith("second") else None)
        growth = f"growth {mem['growth_mb']:+.1f} MB (limit {mem['max_growth_mb']:g})"
    else:
        growth = "growth not measured"
    ax.set_xlabel("camera frames fed")
    ax.set_ylabel("resident memory (MiB)")
    ax.set_title(f"soak, {result['frames']['ego_in']} frames: {growth}, "
                 f"{'passed' if result['passed'] else 'FAILED'}")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _f(value, fmt: str = ".1f") -> str:
    return "n/a" if value is None else format(value, fmt)


def soak_markdown(result: dict) -> str:
    m, clock, mem, acc = result["machine"], result["clock"], result["memory"], result["accounting"]
    failed = [k for k, ok in result["checks"].items() if not ok]
    verdict = "PASSED" if result["passed"] else f"FAILED ({', '.join(failed)})"
    fr = result["frames"]
    lines = [
        f"# Soak: {verdict}", "",
        f"- date: {result['date']}",
        f"- machine: {m['cpu']} ({m['cpu_count']} CPUs, torch {m['torch']}, {m['torch_threads']} threads), "
        f"{m['platform']}, Python {m['python']}; device {m['device']}"
        + (f" ({m['gpu']})" if m["gpu"] else ""),
        f"- model: {result['model']} ({result['backend']})",
        f"- data: {result['data']} ({result['source_frames']} distinct samples"
        f"{', cycled' if result['source_frames'] < fr['ego_in'] else ''})",
        f"- clock: {clock['mode']}; camera {clock['camera_rate_hz']:g} Hz, planning timer "
        f"{clock['planning_rate_hz']:g} Hz, roadside link {clock['roadside_rate_hz'] or 'every frame'} Hz; "
        f"{clock['simulated_s']:.1f} s of driving in {clock['wall_s']:.1f} s wall "
        f"({result['wall_ms_per_frame']:.1f} ms per frame)",
        "",
        "## Frames", "",
        "| | count |", "|---|---|",
        f"| ego frames in | {fr['ego_in']} |",
        f"| plans out | {result['plans_out']} |",
        f"| roadside camera frames | {fr['roadside_camera']} |",
        f"| roadside frames sent (JPEG) | {fr['roadside_sent']} |",
        f"| roadside frames received | {fr['roadside_in']} |",
        f"| timer ticks (missed) | {clock['timer_ticks']} ({clock['timer_ticks_missed']}) |",
        f"| fused / ego-only cycles | {result['counts'].get('cycles_fused', 0)} / "
        f"{result['counts'].get('cycles_ego_only', 0)} |",
        f"| model answers not decodable (fallback plan) | {result['counts'].get('decode_failures', 0)} |",
        "",
        "## Drops by cause", "",
        "| cause | count |", "|---|---|",
    ]
    drops = {**result["drops"], "link: skipped by the rate limit": result["link"]["skipped_rate"],
             **{f"soak: {k}": v for k, v in result["soak_counts"].items()}}
    lines += [f"| {k} | {v} |" for k, v in drops.items()]
    lines += [f"| **unexplained** | **{result['unexplained']}** |", "",
              "roadside_queue_full is the vehicle's roadside buffer (depth 4) letting its oldest frame go "
              "when a new one comes: frames already offered for pairing, not lost ones.", "",
              "Accounting:", ""]
    for name, b in acc.items():
        if name == "unexplained":
            continue
        parts = " + ".join(f"{k} {v}" for k, v in b["explained_by"].items())
        lines.append(f"- {name}: {b['total']} = {parts}; unexplained {b['unexplained']}")
    lines += ["", "## Latency per planning step (ms)", "",
              "| stage | mean | p50 | p90 | p99 | max |", "|---|---|---|---|---|---|"]
    rows = dict(result["latency_ms"])
    if result["roadside_encode_ms"]:
        rows["roadside encode (per sent frame)"] = result["roadside_encode_ms"]
    for stage, s in rows.items():
        lines.append(f"| {stage} | {s['mean']:.2f} | {s['p50']:.2f} | {s['p90']:.2f} | {s['p99']:.2f} "
                     f"| {s['max']:.2f} |")
    lines += [
        "", "## Memory", "",
        f"Resident set ({mem['source']}) sampled every {mem['sample_every']} frames "
        f"({len(mem['samples'])} samples): start {mem['start_mb']:.1f} MiB, end {mem['end_mb']:.1f} MiB, "
        f"peak {mem['peak_mb']:.1f} MiB.",
        "",
        f"Growth = {mem['method']}: {_f(mem['second_quarter_median_mb'])} -> "
        f"{_f(mem['last_quarter_median_mb'])} MiB = **{_f(mem['growth_mb'], '+.2f')} MiB** "
        f"(limit {mem['max_growth_mb']:g}); least-squares slope after warm-up "
        f"{_f(mem['slope_mb_per_1k_frames'], '+.3f')} MiB per 1000 frames. "
        f"Memory check: {'passed' if mem['passed'] else 'FAILED'}.",
        "",
        "![resident memory over frames](memory.png)",
        "",
    ]
    if result["first_error"]:
        lines += ["## First step error", "", "```", result["first_error"].rstrip(), "```", ""]
    return "\n".join(lines)


def summary_line(result: dict) -> str:
    mem, lat = result["memory"], result["latency_ms"].get("total")
    total = "n/a" if lat is None else f"p50 {lat['p50']:.1f} / p90 {lat['p90']:.1f} / p99 {lat['p99']:.1f} ms"
    return (f"soak {'passed' if result['passed'] else 'FAILED'}: {result['frames']['ego_in']} frames, "
            f"{result['plans_out']} plans, {sum(result['drops'].values())} counted drops, "
            f"{result['unexplained']} unexplained; step {total}; RSS {mem['start_mb']:.0f} -> "
            f"{mem['end_mb']:.0f} MiB, growth {_f(mem['growth_mb'], '+.1f')} MiB "
            f"(limit {mem['max_growth_mb']:g})")
