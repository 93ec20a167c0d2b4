"""Run a planner over a dataset and score it with the UniV2X metrics."""

from __future__ import annotations

from tqdm import tqdm

from v2x_vlm_ros.data.dair import DairV2XDataset
from v2x_vlm_ros.eval.fingerprint import SampleFingerprint
from v2x_vlm_ros.eval.frames import FrameRecords
from v2x_vlm_ros.eval.metrics import PlanningMetrics
from v2x_vlm_ros.eval.protocols import dataset_report
from v2x_vlm_ros.eval.slices import SliceScores, dataset_slices
from v2x_vlm_ros.runtime.transmission import stored_stream_cost

#: Rate at which the roadside stream is costed (the paper's f = 2 Hz).
ROADSIDE_RATE_HZ = 2.0


def score(samples, planner, collision: str = "univ2x", progress: bool = True, batch_size: int = 32,
          total: int | None = None, observers=(),
          protocol: str = "time") -> tuple[PlanningMetrics, dict[str, PlanningMetrics]]:
    """Metrics of ``planner`` over an iterable of samples, overall and per scenario, under
    ``protocol`` (the one the samples' dataset was read with, ``DairV2XDataset.protocol``).

    Planners with ``plan_batch(samples)`` get batches of ``batch_size``, others one sample
    at a time through ``plan(sample)``. Each of ``observers`` (e.g. ``slices.SliceScores``)
    gets ``update(sample, *metric_args)`` for every sample too."""
    overall = PlanningMetrics(collision, protocol=protocol)
    per_scenario: dict[str, PlanningMetrics] = {}
    batched = hasattr(planner, "plan_batch")
    chunk: list = []

    def flush():
        plans = planner.plan_batch(chunk) if batched else [planner.plan(s) for s in chunk]
        for sample, pred in zip(chunk, plans):
            args = (pred, sample.future_xy, sample.future_mask, sample.future_agents, sample.sample_id)
            overall.update(*args)
            for observer in observers:
                observer.update(sample, *args)
            if sample.scenario is not None:
                if sample.scenario not in per_scenario:
                    per_scenario[sample.scenario] = PlanningMetrics(collision, protocol=protocol)
                per_scenario[sample.scenario].update(*args)
        bar.update(len(chunk))
        chunk.clear()

    with tqdm(total=total, desc=f"eval {planner.name}", unit="sample", disable=not progress) as bar:
        for sample in samples:
            chunk.append(sample)
            if len(chunk) >= (batch_size if batched else 1):
                flush()
        if chunk:
            flush()
    return overall, per_scenario


def evaluate(dataset: DairV2XDataset, planner, collision: str = "univ2x",
             progress: bool = True, batch_size: int = 32, samples=None, frames_path=None) -> dict:
    """Metrics of ``planner`` on every sample of ``dataset`` (see ``score``). The result holds
    the keys of ``PlanningMetrics.result()`` plus ``planner``, ``transmission`` (what the
    planner's roadside stream costs), ``dataset`` (where the samples came from, what was
    skipped while reading them, and their ``eval.fingerprint``), ``by_scenario`` and ``slices``
    (``eval.slices``: the hidden-hazard slice when the dataset has the visibility sidecar,
    else empty).
    ``samples``: the dataset's samples already read (default: read them from ``dataset``).
    ``frames_path``: also write every frame's plan and scores there (``eval.frames``), and
    its line count as ``frames_written``."""
    frame_slices = dataset_slices(dataset.root)
    slices = SliceScores(frame_slices, collision, protocol=dataset.protocol)
    fingerprint = SampleFingerprint()
    observers = [slices, fingerprint]
    records = None
    if frames_path is not None:
        records = FrameRecords(frames_path, frame_slices, collision, protocol=dataset.protocol)
        observers.append(records)
    try:
        overall, per_scenario = score(dataset if samples is None else samples, planner, collision,
                                      progress, batch_size, total=len(dataset), observers=observers,
                                      protocol=dataset.protocol)
    finally:
        if records is not None:
            records.close()
    result = overall.result()
    result.update(dataset_report(dataset))  # protocol, and whether the result is comparable
    result["planner"] = planner.name
    result["transmission"] = transmission_of(planner, dataset)
    result["dataset"] = {
        "root": str(dataset.root),
        "layout": dataset.layout,
        "split": None if dataset.split is None else dataset.split.name,
        "split_file": None if dataset.split is None else str(dataset.split.path),
        "protocol": dataset.protocol,
        "scenario": dataset.scenario,
        "skipped": dataset.skips.counts,
        # which frames with which ground truth (eval.fingerprint): results with the same one
        # scored the same frames, whatever directory the data was read from
        "fingerprint": fingerprint.hexdigest(),
    }
    if hasattr(planner, "decode_failures"):
        result["decode_failures"] = planner.decode_failures
    if hasattr(planner, "roadside_blank"):
        result["roadside_blank"] = planner.roadside_blank
    if getattr(planner, "roadside_previous_missing", 0):  # only a model that reads motion counts them
        result["roadside_previous_missing"] = planner.roadside_previous_missing
    result["by_scenario"] = {name: m.result() for name, m in sorted(per_scenario.items())}
    for sub in result["by_scenario"].values():
        sub["comparability"] = result["comparability"]
    if frames_path is not None:
        result["frames_written"] = {"path": str(frames_path), "count": records.count}
    result["slices"] = slices.result()
    for sub in result["slices"].values():
        sub["comparability"] = result["comparability"]
    return result


def transmission_of(planner, dataset: DairV2XDataset) -> dict:
    """Roadside bandwidth a planner needs: the dataset's roadside images as stored, sent at
    2 Hz (formula and measured). Planners that read no roadside image cost 0."""
    if not getattr(planner, "uses_roadside", False):
        return {"uses_roadside": False, "formula_bps": 0.0, "measured_bps": 0.0}
    cost = stored_stream_cost(dataset.roadside_image_paths(), ROADSIDE_RATE_HZ) or {
        "formula_bps": 0.0, "measured_bps": 0.0}
    return {"uses_roadside": True, **cost}
