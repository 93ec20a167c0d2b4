"""Evaluation slices: the metrics again on a subset of the samples that says something the
overall numbers hide.

``hidden_hazard``: the frames where an agent the ground-truth ego yields to is seen by the
roadside camera and not by the ego camera (``data.synth.visibility``: the synthetic world's
``visibility.json``). There only the roadside view tells the planner what the ground truth
does; a model that fuses nothing plans there as if the hazard were not there.

``hazard_twin``: the same frames of the twin scenes (the same sequence without the hazard,
where the ground truth drives on; ``visibility.hazard_twin_frames``). The ego camera sees
the same in both; a planner that brakes on the hidden-hazard frames because of what the ego
sees (the junction ahead) brakes here too, and a roadside-greyed ablation that looks worse on
``hidden_hazard`` only shows fusion if this slice does not get better.

A slice result has the same shape as the overall one (``PlanningMetrics.result()``:
``num_samples``, ``l2``, ``collision``, ...); results go into an eval JSON as
``"slices": {"hidden_hazard": {...}, "hazard_twin": {...}}`` (a contract: outside checks
read it). A dataset without the sidecar (real DAIR-V2X data) has no slices:
``"slices": {}``.
"""

from __future__ import annotations

from v2x_vlm_ros.data.synth.visibility import hazard_twin_frames, hidden_hazard_frames, read_visibility
from v2x_vlm_ros.eval.metrics import PlanningMetrics

HIDDEN_HAZARD = "hidden_hazard"
HAZARD_TWIN = "hazard_twin"


class FrameSlice:
    """A named set of (sequence id, vehicle frame id)."""

    def __init__(self, name: str, frames: set[tuple[str, str]]):
        self.name = name
        self.frames = frames

    def __contains__(self, sample) -> bool:
        # a sample's id is its vehicle frame id (dataset samples and replay frames alike)
        return (str(sample.sequence_id), str(sample.sample_id)) in self.frames

    def __len__(self) -> int:
        return len(self.frames)


def dataset_slices(root) -> list[FrameSlice]:
    """The slices a dataset root supports (the hidden-hazard slice and its twins' frames
    when it has the visibility sidecar; none otherwise). A broken sidecar raises
    ``VisibilityError``."""
    visibility = read_visibility(root)
    if visibility is None:
        return []
    return [FrameSlice(HIDDEN_HAZARD, hidden_hazard_frames(visibility)),
            FrameSlice(HAZARD_TWIN, hazard_twin_frames(visibility))]


class SliceScores:
    """Per-slice ``PlanningMetrics``, fed sample by sample beside the overall metrics
    (``eval.evaluate.score``'s ``observers``)."""

    def __init__(self, slices: list[FrameSlice], collision: str = "univ2x", protocol: str = "time"):
        self.slices = list(slices)
        self.metrics = {s.name: PlanningMetrics(collision, protocol=protocol) for s in self.slices}

    def update(self, sample, *metric_args) -> None:
        """``metric_args``: what ``PlanningMetrics.update`` takes for ``sample``."""
        for s in self.slices:
            if sample in s:
                self.metrics[s.name].update(*metric_args)

    def result(self) -> dict:
        return {name: m.result() for name, m in self.metrics.items()}
