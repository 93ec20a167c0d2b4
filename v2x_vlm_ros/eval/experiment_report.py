"""``v2x-vlm experiments`` output: the Markdown tables and the L2-vs-bandwidth plot, both
rendered from results.json's content (so a stored results.json can be re-rendered)."""

from __future__ import annotations

import math
from pathlib import Path

from v2x_vlm_ros.eval.experiment_tables import KEYS, SWITCHES
from v2x_vlm_ros.eval.metrics import format_counts_table
from v2x_vlm_ros.eval.protocols import NOT_COMPARABLE


def _f(value, spec: str = ".2f") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return format(float(value), spec)


def _signed(value) -> str:
    return "n/a" if value is None else f"{float(value):+.2f}"


def _bps(value) -> str:
    return "n/a" if value is None else ("0" if value == 0 else f"{float(value):.2e}")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(r) + " |" for r in rows)]


_METRIC_HEADER = ["L2 (m) 2.5 s", "3.5 s", "4.5 s", "avg", "L2 valid avg", "Col. (%) 2.5 s", "3.5 s",
                  "4.5 s", "avg"]


def _valid_avg(row: dict) -> str:
    """The L2 over valid steps only (beside UniV2X's, where masked steps count 0)."""
    return _f((row.get("l2_valid_only") or {}).get("avg"))


def _metrics(row: dict) -> list[str]:
    return ([_f(row["l2"].get(k)) for k in KEYS] + [_valid_avg(row)]
            + [_f(row["collision"].get(k)) for k in KEYS])


def _table1(t: dict) -> list[str]:
    header = ["method", *_METRIC_HEADER, "BPS (formula)", "BPS (measured)"]
    rows = [[r["method"], *_metrics(r), _bps(r["formula_bps"]), _bps(r["measured_bps"])]
            for r in t["rows"] + t["scenario_rows"] + t.get("slice_rows", [])]
    lines = _table(header, rows)
    lines.append("")
    lines.append(f"Ego-only row: {t['ego_only_source']}.")
    if t["scenario"]:
        lines.append(f"Rows ending in \"{t['scenario']}\": that scenario's samples only "
                     f"({t['scenario_rows'][0]['num_samples'] if t['scenario_rows'] else 0} samples).")
    if t.get("slice_rows"):
        lines.append(f"Rows ending in \"hidden_hazard\": the frames where an agent the ground truth yields "
                     f"to is seen by the roadside camera and not by the ego camera "
                     f"({t['slice_rows'][0]['num_samples']} samples); rows ending in \"hazard_twin\": the "
                     f"same frames of the same scenes without that agent, where the ground truth drives on.")
    return lines


def _table2(t: dict) -> list[str]:
    if t.get("skipped"):
        return [f"Not run: {t['skipped']}."]
    header = ["s", "sent size", "BPS (formula)", "BPS (measured)", "mean bytes", "L2 avg (m)",
              "L2 valid avg", "Col. avg (%)", "latency (ms/frame)", "FPS", "link encode + decode (ms)"]
    rows = []
    for r in t["rows"]:
        lat = r["latency"]
        size = "x".join(str(v) for v in r["sent_size"]) if r["sent_size"] else "n/a"
        link = (f"{_f(lat['encode_ms'])} + {_f(lat['decode_ms'])}" if lat["encode_ms"] is not None else "n/a")
        rows.append([f"{r['scale']:g}", size, _bps(r["formula_bps"]), _bps(r["measured_bps"]),
                     _f(r["mean_bytes"], ".0f"), _f(r["l2"]["avg"]), _valid_avg(r), _f(r["collision"]["avg"]),
                     _f(lat["model_ms"]), _f(lat["fps"], ".1f"), link])
    return _table(header, rows)


def _table3(t: dict) -> list[str]:
    header = ["condition", *_METRIC_HEADER, "Δ L2 avg", "Δ Col. avg", "words perturbed"]
    rows = []
    for r in t["rows"]:
        text = r.get("text")
        words = "-" if not text else (f"{text['words_perturbed']}/{text['words_total']}"
                                      if text["words_total"] else "no descriptions")
        rows.append([r["condition"], *_metrics(r), _signed(r["delta_l2"]["avg"]),
                     _signed(r["delta_collision"]["avg"]), words])
    lines = _table(header, rows)
    for note in t.get("notes", []):
        lines += ["", f"Note: {note}."]
    return lines


def _table4(t: dict) -> list[str]:
    rows = [[s["label"], _f(s["mean_ms"]), _f(100 * s["share"], ".1f") if s["share"] is not None else "n/a"]
            for s in t["stages"]]
    rows.append(["**total**", _f(t["total_ms"]), "100.0"])
    rows.append(["**FPS**", _f(t["fps"], ".1f"), ""])
    lines = _table(["stage", "mean (ms/frame)", "share (%)"], rows)
    backend = t["backend"][:1].upper() + t["backend"][1:]
    lines += ["", f"{backend}. Reading and decoding the two image files, before the "
                  f"engine (not in the total): {_f(t['image_read_ms'])} ms/frame."]
    return lines


def _table5(t: dict) -> list[str]:
    header = ["ablation", "switch off", "status", *_METRIC_HEADER, "BPS (formula)",
              "hidden hazard: L2 avg", "Col. avg (%)"]
    rows = []
    for r in [t["reference"], *t["rows"]]:
        metrics = _metrics(r) if r.get("l2") else ["-"] * len(_METRIC_HEADER)
        h = r.get("hidden_hazard")
        hidden = [_f(h["l2"]["avg"]), _f(h["collision"]["avg"])] if h else ["-", "-"]
        rows.append([r["name"], r["switch"] or ("-" if r["name"] == "full model" else "?"), r["status"],
                     *metrics, _bps(r.get("formula_bps")) if r.get("l2") else "-", *hidden])
    lines = _table(header, rows)
    lines += ["", "Training commands (then pass the checkpoint with the `--ablation` shown):", ""]
    for r in t["rows"]:
        if r["command"]:
            lines.append(f"- {r['name']} ({r['status']}): `{r['command']}`, then `{r['use']}`")
        else:
            lines.append(f"- {r['name']}: not a known switch ({', '.join(SWITCHES)}); "
                         f"evaluated from {r['model_dir']}")
    return lines


def _table6(t: dict) -> list[str]:
    header = ["model", "input taken away", "L2 avg (m)", "L2 valid avg", "Col. avg (%)", "Δ L2 avg",
              "Δ Col. avg", "hidden hazard: L2 avg", "L2 valid avg", "Col. avg (%)", "Δ L2 avg", "Δ Col. avg"]
    rows = []
    for r in t["rows"]:
        h = r.get("hidden_hazard")
        hidden = (["n/a"] * 5 if h is None else
                  [_f(h["l2"]["avg"]), _valid_avg(h), _f(h["collision"]["avg"]),
                   _signed(h["delta_l2"]["avg"]), _signed(h["delta_collision"]["avg"])])
        rows.append([r["model"], r["ablation"], _f(r["l2"]["avg"]), _valid_avg(r), _f(r["collision"]["avg"]),
                     _signed(r["delta_l2"]["avg"]), _signed(r["delta_collision"]["avg"]), *hidden])
    return _table(header, rows)


_TITLES = {"table1": "Table 1. Planning performance and transmission cost",
           "table2": "Table 2. Roadside image downsampling",
           "table3": "Table 3. Robustness to noisy inputs",
           "table4": "Table 4. Latency breakdown",
           "table5": "Table 5. Ablations",
           "table6": "Table 6. Inference-time ablations: does the model use its inputs?"}
_RENDER = {"table1": _table1, "table2": _table2, "table3": _table3, "table4": _table4, "table5": _table5,
           "table6": _table6}


def render_markdown(result: dict) -> str:
    ds, proto = result["dataset"], result["protocol"]
    model = result["models"].get("model", {}).get("dir", result["options"].get("model"))
    lines = ["# V2X-VLM experiments", "",
             f"- data: {ds['root']} ({ds['layout']}, split {ds['split'] or 'all'}), {ds['selection']} "
             f"samples; scenarios {ds['scenarios']}",
             f"- model: {model}; device {proto['device']}, batch {proto['batch_size']}, "
             f"refinement {'on' if proto['refine'] else 'off'}; seed {result['seed']}; {result['created']}",
             f"- metrics: L2 {proto['l2_convention']}; collision test {proto['collision_method']}; "
             f"roadside stream costed at {proto['roadside_rate_hz']:g} Hz",
             f"- protocol {proto.get('name', 'time')}: {proto.get('comparability', NOT_COMPARABLE)}",
             ""]
    for key, table in result["tables"].items():
        lines += [f"## {_TITLES[key]}", "", f"*{table['caption']}*", "", *_RENDER[key](table), ""]
    if result.get("runs"):
        lines += ["## What decides the numbers", "",
                  "*Per run and horizon: samples (the denominator), steps with a ground-truth waypoint, "
                  "steps excluded because the ground-truth ego box itself collides, steps without labels.*",
                  "", format_counts_table(result["runs"])]
    if "l2_vs_bandwidth.png" in result.get("files", []):
        lines += ["![L2 vs bandwidth](l2_vs_bandwidth.png)", ""]
    return "\n".join(lines)


def plot_l2_vs_bandwidth(result: dict, path: Path) -> bool:
    """L2 avg against the measured roadside bandwidth of Table 2's s values, annotated with s
    and the formula's BPS; the rows without a roadside stream as horizontal lines. False
    (nothing written) when Table 2 has no rows."""
    rows = (result["tables"].get("table2") or {}).get("rows") or []
    points = [r for r in rows if r["measured_bps"] and r["l2"]["avg"] is not None]
    if not points:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    x = [r["measured_bps"] for r in points]
    y = [r["l2"]["avg"] for r in points]
    ax.plot(x, y, marker="o", color="tab:blue", label="model, roadside downsampled by s (JPEG)")
    for i, (r, xi, yi) in enumerate(zip(points, x, y)):  # labels alternate above / below
        ax.annotate(f"s = {r['scale']:g}\nformula {r['formula_bps']:.1e} B/s", (xi, yi),
                    textcoords="offset points", xytext=(4, 10 if i % 2 == 0 else -30), fontsize=8)
    table1 = result["tables"].get("table1") or {}
    styles = iter(("tab:red", "tab:gray", "tab:green", "tab:purple"))
    levels = list(y)
    for r in table1.get("rows", []):
        if r["formula_bps"] == 0 and r["l2"]["avg"] is not None:
            levels.append(r["l2"]["avg"])
            ax.axhline(r["l2"]["avg"], ls="--", lw=1, color=next(styles, "k"), label=f"{r['method']} (0 B/s)")
    low, high = min(levels), max(levels)
    pad = max(0.15 * (high - low), 0.1 * max(abs(high), 1e-3))
    ax.set_ylim(low - pad, high + pad)
    ax.margins(x=0.2)
    ax.set_xscale("log")
    ax.set_xlabel("measured roadside bandwidth (bytes/s, JPEG at the stream rate)")
    ax.set_ylabel("L2 avg (m)")
    ds = result["dataset"]
    ax.set_title(f"L2 vs bandwidth: {ds['samples_used']} samples of {Path(ds['root']).name}",
                 fontsize=10, pad=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
