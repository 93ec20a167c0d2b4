"""A synthetic cooperative driving world written in the DAIR-V2X layouts.

Each sequence is one four-way intersection with an ego vehicle and a roadside camera, in
one of five scenarios (``SCENARIOS``). ``generate(out_dir, SynthConfig(...))`` writes
V2X-Seq-SPD (or DAIR-V2X-C) files through ``data.writer`` and returns a summary dict:

- ``out_dir``, ``layout``, ``num_sequences``, ``vehicle_frames``, ``infra_frames``;
- ``scenarios``: {sequence id: scenario}; ``split``: {train/val/test: [sequence ids]};
- ``sequences``: per sequence its id, scenario and timing facts (e.g. for
  ``occluded_crossing`` how long the crossing car stays hidden from the ego camera);
- ``seconds``: wall time.

Modules, one concept each: ``config`` (settings), ``kinematics`` (routes, bicycle model,
speed control), ``world`` (intersection, buildings, light, sensor rigs), ``agents`` (road
users), ``scenarios`` (the five scenarios and background traffic), ``camera`` and
``render`` (pinhole drawing, painter's algorithm, occlusion masks), ``describe`` (scene
descriptions), ``generate`` (frames, labels, writing).
"""

from v2x_vlm_ros.data.synth.config import SCENARIOS, SPLIT_PATTERN, SynthConfig, split_of
from v2x_vlm_ros.data.synth.generate import Simulation, generate, render_sequence, simulate

__all__ = ["SCENARIOS", "SPLIT_PATTERN", "Simulation", "SynthConfig", "generate",
           "render_sequence", "simulate", "split_of"]
