"""The twin test at the decision token: does the roadside view move the plan's first token?

A synthetic world's paired scenes (``data.synth.visibility``) give, for every hidden-hazard
frame, the same frame of its twin: the scene without the hidden road user. Before the
ground-truth ego starts braking the two frames' prompts are identical (same ego pose and
speed, the same ego image) and only the roadside image differs. On those pairs this reports the model's
first plan token, the one every later token is conditioned on: its expected value (the mean
of the model's distribution over the loc bins, in metres) and its greedy value, with the
real roadside image, with a uniform grey one (``eval.perturb.GreyRoadside``) and with none
(``eval.perturb.BlankRoadside``: the canvas's mean colour, what roadside dropout trains on).

A planner that reads the hidden road user writes a shorter first waypoint for the hidden-
hazard frame than for its twin with the real view, and the same for both with grey or
none. Where grey or none put the first token (braking or driving on) is what the model
does when the roadside view tells it nothing. With
``codec.order: endpoint_first`` the first token is the plan's endpoint, where braking and
driving on are metres apart; in time order it is the first waypoint (0.5 s), where they
barely differ, which is why greedy decoding in time order never brakes for a hidden hazard
(docs/TRAINING.md). ``v2x-vlm eval --roadside grey`` scores the whole decoded plans; this
shows the decision before decoding can hide it.
"""

from __future__ import annotations

import numpy as np
import torch

from v2x_vlm_ros.data.synth.visibility import hazard_twin_pairs, read_visibility
from v2x_vlm_ros.eval.perturb import BlankRoadside, GreyRoadside
from v2x_vlm_ros.model.codec import LocTokenCodec

#: Two frames count as a pair with identical prompts when the ego is at the same pose and
#: their ego speeds differ by less.
SAME_SPEED_MPS = 0.05
#: A greedy first waypoint this much shorter for the hidden-hazard frame counts as braking.
SHORTER_M = 2.0
#: The roadside views compared: report key -> the input transform (None: as recorded).
VIEWS = {"real": None, "grey": GreyRoadside(), "none": BlankRoadside()}


def same_prompt_pairs(dataset) -> list[tuple[object, object]]:
    """(hidden-hazard sample, twin sample) for every pair of ``dataset`` where the ego is at
    the same pose with the same speed (the ground truth has not started braking yet)."""
    visibility = read_visibility(dataset.root)
    if visibility is None:
        raise ValueError(f"{dataset.root}: no visibility.json (a synthetic world's sidecar): no twin pairs")
    pairs = hazard_twin_pairs(visibility)
    samples = {(str(s.sequence_id), str(s.sample_id)): s for s in dataset}
    out = []
    for key in sorted(pairs):
        hidden, twin = samples.get(key), samples.get(pairs[key])
        if hidden is None or twin is None:
            continue
        if np.array_equal(hidden.world_from_ego, twin.world_from_ego) \
                and abs(hidden.motion.speed_mps - twin.motion.speed_mps) < SAME_SPEED_MPS:
            out.append((hidden, twin))
    return out


def first_token_x(planner, samples, view: str = "real") -> tuple[np.ndarray, np.ndarray]:
    """(expected, greedy) x in metres of the first written waypoint for ``samples``
    (``model.planner.ModelPlanner``), with the roadside ``view`` (a key of ``VIEWS``)."""
    engine = planner.engine
    codec = engine.codec
    if not isinstance(codec, LocTokenCodec):
        raise ValueError(f"{planner.loaded.source}: the twin test reads loc-token plans; this model "
                         "writes text (codec.kind 'text')")
    if view not in VIEWS:
        raise ValueError(f"view must be one of {', '.join(VIEWS)}, got {view!r}")
    inputs = planner.inputs(samples)
    if VIEWS[view] is not None:
        inputs = [VIEWS[view](s, f) for s, f in zip(samples, inputs)]
    # the model's own reading of each view: a grey view is not replaced by none here
    # (the planning step does that, engine.roadside_views)
    batch, _ = engine.encode(inputs, [f.roadside if engine.uses_roadside else None for f in inputs])
    tok = planner.loaded.tokenizer
    start = planner.loaded.model.generation_config.decoder_start_token_id  # as generate starts
    decoder = torch.tensor([[start, tok.bos_token_id]] * len(samples), device=engine.device)
    with torch.no_grad():
        logits = planner.loaded.model(**batch, decoder_input_ids=decoder).logits[:, -1].float()
    probs = torch.softmax(logits[:, codec.allowed_token_ids(0)], dim=-1).cpu().numpy()
    centres = codec.bin_centres(0)
    first = codec.config.waypoint_order[0]
    ref = np.array([codec.config.reference_xy(s.motion.speed_mps)[first, 0] for s in samples])
    return probs @ centres + ref, centres[probs.argmax(axis=1)] + ref


def twin_test(planner, dataset, max_pairs: int | None = None, batch_size: int = 16) -> dict:
    """The report (see the module docstring) of ``planner`` on ``dataset``'s same-prompt pairs."""
    pairs = same_prompt_pairs(dataset)[:max_pairs]
    if not pairs:
        split = dataset.split.name if dataset.split else "all"
        raise ValueError(f"{dataset.root}: no hidden-hazard frame with a same-speed twin frame "
                         f"(split {split}, scenario {dataset.scenario})")
    first = planner.engine.codec.config.waypoint_order[0]
    report = {"pairs": len(pairs), "first_waypoint": first + 1, "order": planner.engine.codec.config.order,
              "ground_truth_x": {
                  "hidden": float(np.mean([h.future_xy[first, 0] for h, _ in pairs])),
                  "twin": float(np.mean([t.future_xy[first, 0] for _, t in pairs]))}}
    for view in VIEWS:
        got = {}
        for side, index in (("hidden", 0), ("twin", 1)):
            samples = [p[index] for p in pairs]
            parts = [first_token_x(planner, samples[i: i + batch_size], view)
                     for i in range(0, len(samples), batch_size)]
            got[side] = (np.concatenate([e for e, _ in parts]), np.concatenate([g for _, g in parts]))
        gap = got["hidden"][0] - got["twin"][0]
        report[view] = {
            "expected_x": {"hidden": float(got["hidden"][0].mean()), "twin": float(got["twin"][0].mean())},
            "greedy_x": {"hidden": float(got["hidden"][1].mean()), "twin": float(got["twin"][1].mean())},
            "expected_gap_m": float(gap.mean()),
            "hidden_shorter_share": float(np.mean(got["hidden"][1] < got["twin"][1] - SHORTER_M)),
        }
    return report
