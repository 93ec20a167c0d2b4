"""Run a planner over a dataset and score it with the UniV2X metrics."""

from __future__ import annotations

from tqdm import tqdm

from v2x_vlm_ros.data.dair import DairV2XDataset
from v2x_vlm_ros.eval.metrics import PlanningMetrics


def evaluate(dataset: DairV2XDataset, planner, collision: str = "univ2x",
             progress: bool = True) -> dict:
    """Metrics of ``planner`` on every sample of ``dataset``, overall and per scenario.

    The result holds the metric keys of ``PlanningMetrics.result()`` plus ``planner``,
    ``transmission`` (what the planner's roadside stream costs), ``dataset`` (where the
    samples came from, and what was skipped while reading them) and ``by_scenario``."""
    overall = PlanningMetrics(collision)
    per_scenario: dict[str, PlanningMetrics] = {}
    for sample in tqdm(dataset, total=len(dataset), desc=f"eval {planner.name}", unit="sample",
                       disable=not progress):
        pred = planner.plan(sample)
        args = (pred, sample.future_xy, sample.future_mask, sample.future_agents, sample.sample_id)
        overall.update(*args)
        if sample.scenario is not None:
            per_scenario.setdefault(sample.scenario, PlanningMetrics(collision)).update(*args)
    result = overall.result()
    result["planner"] = planner.name
    result["transmission"] = transmission_of(planner)
    result["dataset"] = {
        "root": str(dataset.root),
        "layout": dataset.layout,
        "split": None if dataset.split is None else dataset.split.name,
        "scenario": dataset.scenario,
        "skipped": dataset.skips.counts,
    }
    result["by_scenario"] = {name: m.result() for name, m in sorted(per_scenario.items())}
    return result


def transmission_of(planner) -> dict:
    """Roadside bandwidth a planner needs; planners that read no roadside image cost 0."""
    if not getattr(planner, "uses_roadside", False):
        return {"uses_roadside": False, "formula_bps": 0.0, "measured_bps": 0.0}
    return {"uses_roadside": True, **planner.transmission()}
