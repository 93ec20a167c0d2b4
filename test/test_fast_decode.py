"""The static-cache decode loop gives generate's tokens (fp32), in batches, always
well-formed, in exactly 2T + 1 decoder steps."""

from pathlib import Path

import numpy as np
import pytest
import torch

from v2x_vlm_ros.data.dair import DairV2XDataset
from v2x_vlm_ros.data.records import Command, EgoMotion
from v2x_vlm_ros.model.modeling import build_model, load_model
from v2x_vlm_ros.model.planner import ModelPlanner
from v2x_vlm_ros.model.tokenizer import loc_token_ids
from v2x_vlm_ros.runtime.engine import PlanInput
from v2x_vlm_ros.runtime.fast_decode import GraphedDecode, StaticDecoder

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
