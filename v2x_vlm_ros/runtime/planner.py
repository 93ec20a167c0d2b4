"""The learned planner as a ``v2x-vlm eval`` planner: dataset samples in, trajectories out.

It reads each sample's images and runs them through ``runtime.engine.PlannerEngine``, the
same planning step the vehicle service and replay run (preprocessing, constrained
``generate``, decoding, refinement), so that what eval scores is what the vehicle does.
Malformed model output (possible with the text codec) falls back to constant velocity
and is counted in ``decode_failures``; a blank roadside image (a dead camera) is planned as
none and counted in ``roadside_blank``. A model that reads motion gets each sample's earlier
roadside frame from the dataset's history; where there is none (a sequence's first frames)
it plans on the current one twice, counted in ``roadside_previous_missing``.
"""

from __future__ import annotations

import numpy as np

from v2x_vlm_ros.data.images import earlier_roadside_image, load_image
from v2x_vlm_ros.data.records import CooperativeSample
from v2x_vlm_ros.model.modeling import LoadedModel, load_model
from v2x_vlm_ros.runtime.engine import PlanInput, PlannerEngine


def plan_in_batches(planner, samples) -> list[np.ndarray]:
    """Refined trajectories of ``samples``, ``planner.batch_size`` frames per engine call,
    through ``planner.inputs`` and ``planner.engine``; counts ``planner.decode_failures`` and
    ``planner.roadside_blank``."""
    out = []
    for start in range(0, len(samples), planner.batch_size):
        for result in planner.engine.plan(planner.inputs(samples[start: start + planner.batch_size])):
            planner.decode_failures += int(result.decode_failed)
            planner.roadside_blank += int(result.roadside_blank)
            planner.roadside_previous_missing += int(result.roadside_previous_missing)
            out.append(result.xy)
    return out


class ModelPlanner:
    name = "model"

    def __init__(self, model, device: str = "cpu", batch_size: int = 16, refiner=None,
                 cuda_graphs: bool = True, token_choice: str | None = None):
        loaded = model if isinstance(model, LoadedModel) else load_model(model, device)
        self.engine = PlannerEngine(loaded, device, refiner, cuda_graphs=cuda_graphs,
                                    token_choice=token_choice)
        self.loaded = loaded
        self.settings = loaded.settings
        self.batch_size = batch_size
        self.decode_failures = 0
        self.roadside_blank = 0  # roadside images planned as none: blank (engine.roadside_views)
        self.roadside_previous_missing = 0  # frames a model that reads motion saw without an earlier one

    @property
    def uses_roadside(self) -> bool:
        return self.engine.uses_roadside

    def inputs(self, samples: list[CooperativeSample]) -> list[PlanInput]:
        return [PlanInput(load_image(s.ego_image_path),
                          load_image(s.roadside_image_path) if self.uses_roadside else None,
                          s.description, s.motion, s.command,
                          roadside_previous=earlier_roadside_image(s, self.engine.roadside_motion_s))
                for s in samples]

    def model_inputs(self, samples: list[CooperativeSample]) -> dict:
        return self.engine.encode(self.inputs(samples))[0]

    def generate(self, batch: dict):
        return self.engine.generate(batch)

    def plan_batch(self, samples: list[CooperativeSample]) -> list[np.ndarray]:
        return plan_in_batches(self, samples)

    def plan(self, sample: CooperativeSample) -> np.ndarray:
        return self.plan_batch([sample])[0]
