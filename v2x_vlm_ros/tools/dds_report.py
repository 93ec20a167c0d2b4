"""The latency of the planner through ROS 2: a bag played in real time into
v2x_vlm.launch.py, ego-image stamp -> Path received, beside the vehicle service's own
stage latencies from the same run (its /diagnostics).

Measured by ``test/test_launch_latency.py`` (launch_testing: both nodes from the installed
package, Fast DDS, ``v2x-vlm play`` at the recorded pace); written to
``docs/DDS_LATENCY.md`` and ``docs/dds_latency.json`` only when asked, with the package
installed by colcon (``bash scripts/test.sh`` builds it into ``.colcon/install``)::

    source scripts/bootstrap.sh && source .colcon/install/setup.bash
    V2X_VLM_WRITE_DOCS=1 .venv/bin/python -m pytest test/test_launch_latency.py

What the DDS figure contains: JPEG bytes into DDS at the player, delivery to both nodes
(the roadside link through roadside_node), the wait for the vehicle's next planning tick
(0 to 1/planning_rate_hz), the plan (decode, model, refine), the Path published and
delivered back to the player. The service figure is the plan alone (``total`` of the
stages in the vehicle node's diagnostics).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path


def report(played: dict, service_latency: dict, frames: dict, setup: dict) -> dict:
    """The measurement as one JSON-able dict. ``played``: ``v2x-vlm play --out`` JSON;
    ``service_latency``: the vehicle diagnostics' ``latency_ms.<stage>.p50/p99`` values;
    ``frames``: the vehicle's counts and drops at the end of the run."""
    from v2x_vlm_ros.eval.machine import machine

    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        # other work on the machine shows in every figure: say how busy it was
        "load_average_1_5_15_min": [round(x, 2) for x in os.getloadavg()],
        "setup": setup,
        "dds_ms": played["latency_ms"],
        "ego_frames_published": played["ego_frames"],
        "paths_received": played["paths_received"],
        "service_ms": service_latency,
        "vehicle_frames": frames,
    }


def markdown(result: dict) -> str:
    m, dds, svc = result["machine"], result["dds_ms"], result["service_ms"]
    lines = [
        "# Latency through ROS 2 (DDS)",
        "",
        f"- date: {result['date']}",
        f"- machine: {m['cpu']} ({m['cpu_count']} CPU cores), {m['platform']}, Python {m['python']}; "
        f"load average at the end of the run (1/5/15 min): "
        f"{', '.join(str(x) for x in result['load_average_1_5_15_min'])}",
        f"- setup: {result['setup']['description']}",
        "- command: `source scripts/bootstrap.sh && source .colcon/install/setup.bash && "
        "V2X_VLM_WRITE_DOCS=1 .venv/bin/python -m pytest test/test_launch_latency.py` (after `bash "
        "scripts/test.sh`, which installs the package with colcon)",
        "",
        "| | p50 (ms) | p90 (ms) | p99 (ms) | max (ms) | n |",
        "|---|---|---|---|---|---|",
        f"| ego image published -> Path received (DDS, both nodes) | {dds['p50']:.1f} | "
        f"{dds['p90']:.1f} | {dds['p99']:.1f} | {dds['max']:.1f} | {dds['n']} |",
    ]
    total = svc.get("total")
    if total:
        lines.append(f"| the plan alone (vehicle service, same run) | {total['p50']:.1f} | | "
                     f"{total['p99']:.1f} | | |")
    for stage in sorted(k for k in svc if k != "total"):
        lines.append(f"| - {stage} | {svc[stage]['p50']:.1f} | | {svc[stage]['p99']:.1f} | | |")
    counts = result["vehicle_frames"]
    lost = int(counts.get("lost_before_intake.ego", 0)) + int(counts.get("first_sequence_number.ego", 1)) - 1
    lines += [
        "",
        f"{result['ego_frames_published']} ego frames published at the recorded pace (10 Hz); "
        f"{result['paths_received']} plans received. The vehicle node counted "
        f"{counts.get('count.ego_frames_in', '?')} frames in, "
        f"{counts.get('count.plans_out', '?')} plans out, "
        f"{counts.get('drop.ego_superseded', 0)} superseded (a newer frame came while it planned), "
        f"{counts.get('drop.ego_too_old', 0)} too old, and "
        f"{lost} lost in DDS before intake (the gaps in the player's sequence numbers, and those "
        f"before the first one received).",
        "",
        "The DDS figure includes the wait for the next planning tick (up to 100 ms at 10 Hz) and "
        "the delivery of the roadside link through roadside_node; the service figure is the plan "
        "itself. Service-only figures at other sizes and batch sizes: docs/BENCHMARKS.md; a "
        "10,000-frame run of the service: docs/soak.",
        "",
    ]
    return "\n".join(lines)


def write(result: dict, docs: Path) -> None:
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "dds_latency.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (docs / "DDS_LATENCY.md").write_text(markdown(result), encoding="utf-8")
