"""The static-cache decode loop gives generate's tokens (fp32), in batches, always
well-formed, in exactly 2T + 1 decoder steps; with either token choice."""

from pathlib import Path

import numpy as np
import pytest
import torch

from v2x_vlm_ros.data.dair import DairV2XDataset
from v2x_vlm_ros.data.records import Command, EgoMotion
from v2x_vlm_ros.model.codec import TOKEN_CHOICES
from v2x_vlm_ros.model.grammar import BinChoice, choose_bins
from v2x_vlm_ros.model.modeling import build_model, load_model
from v2x_vlm_ros.model.tokenizer import loc_token_ids
from v2x_vlm_ros.runtime.engine import PlanInput, PlannerEngine
from v2x_vlm_ros.runtime.fast_decode import GraphedDecode, StaticDecoder
from v2x_vlm_ros.runtime.planner import ModelPlanner

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"


@pytest.fixture(scope="module")
def batch(tiny_model_dir):
    planner = ModelPlanner(tiny_model_dir)
    ds = DairV2XDataset(SAMPLE, split="train")
    samples = [ds[i] for i in (0, 9, 70, 133, 260, 299)]
    samples[2].description = "A much longer description of the scene. " * 5  # uneven prompt lengths
    return planner, planner.model_inputs(samples)


def static_decoder(planner):
    tok = planner.loaded.tokenizer
    codec = planner.engine.codec
    return StaticDecoder(planner.loaded.model, codec.allowed_token_ids(0), codec.num_tokens,
                         tok.bos_token_id, tok.eos_token_id)


def test_same_tokens_as_generate_in_fp32(batch):
    planner, inputs = batch
    reference = planner.generate(inputs)[:, 2:-1]  # drop start, <s> and </s>
    ours = static_decoder(planner).run(**inputs)
    assert ours.shape == reference.shape == (6, 20)
    assert torch.equal(ours, reference)


def test_batch_rows_match_single_rows(batch):
    planner, inputs = batch
    dec = static_decoder(planner)
    together = dec.run(**inputs)
    for i in range(3):
        width = int(inputs["attention_mask"][i].sum())
        one = {k: v[i: i + 1, :width] if k != "pixel_values" else v[i: i + 1] for k, v in inputs.items()}
        assert torch.equal(dec.run(**one)[0], together[i])


def test_random_weights_always_give_location_tokens_in_exactly_2t_plus_1_steps(tiny_tokenizer, batch):
    planner, inputs = batch
    locs = set(loc_token_ids(tiny_tokenizer)[: planner.settings.codec.bins])
    for seed in range(3):
        model = build_model("tiny", tiny_tokenizer, seed=seed).eval()
        dec = StaticDecoder(model, sorted(locs), 20, 0, 2)
        calls = []
        original = dec.step
        dec.step = lambda *a, **k: calls.append(1) or original(*a, **k)
        out = dec.run(**inputs)
        assert set(out.flatten().tolist()) <= locs and len(calls) == 21


def test_trained_weights_agree_too(tiny_model_dir, batch):
    """A second model directory (different weights) as a guard against a lucky match."""
    planner, inputs = batch
    loaded = load_model(tiny_model_dir)
    with torch.no_grad():
        for p in loaded.model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    other = ModelPlanner(loaded)
    assert torch.equal(static_decoder(other).run(**inputs), other.generate(inputs)[:, 2:-1])


def test_the_buffered_loop_of_cuda_graphs_gives_the_same_tokens(batch):
    """``GraphedDecode`` without capture: the static buffers a graph replays over, refilled
    per frame (several frames through one instance), give ``StaticDecoder``'s tokens."""
    planner, inputs = batch
    dec = static_decoder(planner)
    states = dec.encode(**inputs)
    mask = inputs["attention_mask"]
    graphed = GraphedDecode(dec, mask.shape[0], mask.shape[1], states.dtype, "cpu", capture=False)
    assert graphed.graph is None
    first = graphed.decode(states, mask)
    assert torch.equal(first, dec.run(**inputs))
    flipped = torch.flip(states, dims=[0]), torch.flip(mask, dims=[0])
    assert torch.equal(graphed.decode(*flipped), torch.flip(first, dims=[0]))  # no state left over
    assert torch.equal(graphed.decode(states, mask), first)


def test_engine_pads_prompts_to_buckets_keeps_few_graphs_and_survives_a_failed_capture(batch, monkeypatch):
    from v2x_vlm_ros.runtime import engine as engine_module

    planner, _ = batch
    eng = planner.engine
    img = np.full((81, 144, 3), 90, np.uint8)
    inputs = [PlanInput(img, img, "word " * n, EgoMotion(6.0, 0.0, 0.0, 0.5), Command.FORWARD)
              for n in (0, 3, 40)]
    plain = [o.raw_xy for o in eng.plan(inputs)]
    eng.graphs = {}  # what a CUDA device turns on (here the loop runs without capture)
    try:
        batch_in, _ = eng.encode(inputs)
        assert batch_in["input_ids"].shape[1] % engine_module.GRAPH_LENGTH_BUCKET == 0
        bucketed = [o.raw_xy for o in eng.plan(inputs)]
        for a, b in zip(plain, bucketed):  # padding is masked: the same plan
            assert np.allclose(a, b, atol=1e-6)
        for n in range(0, 400, 20):
            eng.plan([PlanInput(img, img, "word " * n, EgoMotion(6.0, 0.0, 0.0, 0.5), Command.FORWARD)])
        assert 1 < len(eng.graphs) <= engine_module.MAX_GRAPHS

        def broken(*args, **kwargs):
            raise RuntimeError("CUDA error: operation not permitted when stream is capturing")

        eng.graphs = {}
        monkeypatch.setattr(engine_module, "GraphedDecode", broken)
        out = eng.plan(inputs)
        assert eng.graphs is None and any("CUDA graph capture failed" in n for n in eng.backend.notes)
        assert all(np.allclose(a, o.raw_xy, atol=1e-6) for a, o in zip(plain, out))
    finally:
        eng.graphs = None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the device machine)")
def test_captured_cuda_graph_matches_eager_on_cuda(tiny_model_dir):
    loaded = load_model(tiny_model_dir, "cuda")
    planner = ModelPlanner(loaded, device="cuda")
    ds = DairV2XDataset(SAMPLE, split="train")
    inputs = planner.model_inputs([ds[i] for i in (0, 9, 70)])
    dec = static_decoder(planner)
    states = dec.encode(**inputs)
    mask = inputs["attention_mask"]
    graphed = GraphedDecode(dec, mask.shape[0], mask.shape[1], states.dtype, "cuda", capture=True)
    assert graphed.graph is not None
    assert torch.equal(graphed.decode(states, mask), dec.run(**inputs))


def test_choose_bins_mean_median_and_greedy_on_hand_made_distributions():
    # two peaks, "stop" at bin 0 (0.6) and "drive on" at bin 3 (0.4): mean 1.2 -> bin 1,
    # median bin 0; a single peak stays where it is; float16 logits give the float32 answer
    probs = torch.tensor([[0.6, 0.0, 0.0, 0.4], [0.0, 0.0, 1.0, 0.0], [0.1, 0.1, 0.1, 0.7],
                          [0.0, 0.55, 0.0, 0.45]])
    logits = probs.clamp_min(1e-12).log()
    assert choose_bins(logits, "greedy").tolist() == [0, 2, 3, 1]
    assert choose_bins(logits, "mean").tolist() == [1, 2, 2, 2]  # 0.1 + 0.2 + 2.1 = 2.4 -> 2
    assert choose_bins(logits, "median").tolist() == [0, 2, 3, 1]  # cumulative 0.3, 1.0 at bin 3
    probs = torch.tensor([[0.2, 0.2, 0.2, 0.2, 0.2], [0.4, 0.0, 0.0, 0.0, 0.6]])
    logits = probs.clamp_min(1e-12).log()
    assert choose_bins(logits, "median").tolist() == [2, 4]
    assert choose_bins(logits, "mean").tolist() == [2, 2]  # 2.4 -> 2
    for choice in TOKEN_CHOICES:
        assert torch.equal(choose_bins(logits.half(), choice), choose_bins(logits, choice))
    with pytest.raises(ValueError, match=r"token_choice must be one of .*got 'mode'"):
        choose_bins(logits, "mode")


@pytest.mark.parametrize("choice", ["mean", "median"])
def test_static_choice_gives_the_generate_reference_tokens_and_differs_from_greedy(
        tiny_model_dir, batch, choice):
    """The static loop with token_choice mean / median against generate with BinChoice after
    the grammar (fp32), on the tiny model and on perturbed weights."""
    planner, inputs = batch
    greedy = static_decoder(planner).run(**inputs)
    perturbed = load_model(tiny_model_dir)
    with torch.no_grad():
        for p in perturbed.model.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.05)
    for loaded in (planner.loaded, perturbed):
        chosen = ModelPlanner(loaded, token_choice=choice)
        assert chosen.engine.token_choice == choice and chosen.engine.static.token_choice == choice
        assert isinstance(chosen.engine.processors[-1], BinChoice)
        ours = chosen.engine.static.run(**inputs)
        assert torch.equal(ours, chosen.generate(inputs)[:, 2:-1])
        if loaded is planner.loaded:
            assert (ours != greedy).any()  # the choice is applied, not ignored


def test_token_choice_comes_from_the_model_unless_overridden_and_is_validated(tiny_model_dir):
    loaded = load_model(tiny_model_dir)
    assert PlannerEngine(loaded).token_choice == "greedy"
    loaded.settings.token_choice = "mean"
    try:
        assert PlannerEngine(loaded).static.token_choice == "mean"
        assert PlannerEngine(loaded, token_choice="greedy").static.token_choice == "greedy"
    finally:
        loaded.settings.token_choice = "greedy"
    with pytest.raises(ValueError,
                       match=r"token_choice must be one of \('greedy', 'mean', 'median'\), got 'mode'"):
        PlannerEngine(loaded, token_choice="mode")
    with pytest.raises(ValueError, match="token_choice must be one of"):
        StaticDecoder(loaded.model, [5, 6], 20, 0, 2, token_choice="mode")
