"""Shared fixtures: a tiny tokenizer and a tiny random Florence-2 planner directory."""

import pytest

from v2x_vlm_ros.model.configuration import PRESETS, ModelSettings
from v2x_vlm_ros.model.modeling import build_model, save_model
from v2x_vlm_ros.model.tokenizer import build_tokenizer

CORPUS = [
    "Clear daylight over a two-lane urban road with a yellow centre line.",
    "A white truck parked at the right roadside, about 20 m away.",
    "Ego state: position (0.0, 0.0) m, speed 8.4 m/s, heading 120 deg, yaw rate +0.05 rad/s.",
    "Command: turn left. Command: turn right. Command: go forward.",
    "Task: plan the ego trajectory for the next 5 seconds as 10 waypoints.",
] * 4


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_tokenizer(CORPUS, vocab_size=400)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer):
    out = tmp_path_factory.mktemp("tiny_model")
    model = build_model("tiny", tiny_tokenizer, seed=0)
    save_model(out, model, tiny_tokenizer, ModelSettings(image_size=PRESETS["tiny"].image_size))
    return out
