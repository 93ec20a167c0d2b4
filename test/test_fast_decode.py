"""The static-cache decode loop gives generate's tokens (fp32), in batches, always
well-formed, in exactly 2T + 1 decoder steps."""

from pathlib import Path

import pytest
import torch

from v2x_vlm_ros.data.dair import DairV2XDataset
from v2x_vlm_ros.model.modeling import build_model, load_model
from v2x_vlm_ros.model.planner import ModelPlanner
from v2x_vlm_ros.model.tokenizer import loc_token_ids
from v2x_vlm_ros.runtime.fast_decode import StaticDecoder

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"


@pytest.fixture(scope="module")
def batch(tiny_model_dir):
    planner = ModelPlanner(tiny_model_dir)
    ds = DairV2XDataset(SAMPLE, split="val")
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
