"""Helpers shared by the training tests: the bundled sample, a random image, a tiny
training config and the tiny model's batch builder."""

import dataclasses
from pathlib import Path

import numpy as np

from v2x_vlm_ros.model.modeling import load_model
from v2x_vlm_ros.training.config import TrainConfig


SAMPLE = str(Path(__file__).resolve().parents[1] / "data" / "sample")


def random_image(h=81, w=144):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def train_config(tmp_path, tiny_model_dir, **overrides) -> TrainConfig:
    base = dict(data_root=SAMPLE, student="tiny", teacher=None, tokenizer_from=str(tiny_model_dir),
                freeze_vision=False, epochs=1, batch_size=8, lr=5e-3, val_split=None,
                output_dir=str(tmp_path / "run"), log_every=1, resume=True, seed=3)
    base.update(overrides)
    return TrainConfig(**base)


def tiny_builder(tiny_model_dir, **codec_changes):
    """(loaded tiny model, its BatchBuilder); ``codec_changes`` replace fields of the model's
    codec config (``reference=``, ``order=``) for the builder only."""
    from v2x_vlm_ros.model.codec import build_codec, loc_token_name
    from v2x_vlm_ros.training.data import BatchBuilder

    loaded = load_model(tiny_model_dir)
    ids = [loaded.tokenizer.convert_tokens_to_ids(loc_token_name(i)) for i in range(1000)]
    codec = dataclasses.replace(loaded.settings.codec, **codec_changes)
    return loaded, BatchBuilder(loaded.tokenizer, loaded.settings,
                                loaded.model.config.text_config.max_position_embeddings,
                                build_codec(codec, ids))


def tiny_batch(tiny_model_dir):
    from v2x_vlm_ros.data.records import Command, EgoMotion

    loaded, builder = tiny_builder(tiny_model_dir)
    t = 0.5 * np.arange(1, 11)
    examples = [{"ego": random_image(), "roadside": random_image(), "description": "a car",
                 "command": Command.FORWARD, "motion": EgoMotion(v, 0.0, 0.0, 0.5),
                 "future_xy": np.column_stack([v * t, np.zeros(10)]),
                 "future_mask": np.ones(10, bool)} for v in (4.0, 9.0)]
    return loaded, builder(examples)
