"""Every shipped training config loads into TrainConfig (a typo would only show at run time)."""

from pathlib import Path

import pytest

from v2x_vlm_ros.config import load_section
from v2x_vlm_ros.training.config import TrainConfig

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "config").glob("train_*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_train_config_loads(path):
    cfg = load_section(TrainConfig, path, "train")
    assert cfg.output_dir.startswith("runs/")


def test_the_paper_recipe_keeps_the_paper_defaults():
    cfg = load_section(TrainConfig, Path(CONFIGS[0]).parent / "train_dair_student.yaml", "train")
    assert (cfg.lr, cfg.batch_size, cfg.epochs) == (1e-6, 4, 10)
    assert (cfg.lambda_align, cfg.lambda_kd, cfg.temperature) == (0.1, 0.5, 2.0)
    assert cfg.freeze_vision and cfg.student == "florence-community/Florence-2-base"
    assert len(CONFIGS) == 6


def test_the_vision_stage_config_pretrains_the_encoder_for_a_planner():
    cfg = load_section(TrainConfig, Path(CONFIGS[0]).parent / "train_synthetic_vision.yaml", "train")
    assert cfg.stage == "vision" and cfg.lambda_objects > 0 and not cfg.freeze_vision
    assert cfg.roadside_dropout == 0.0 and not cfg.uses_teacher
    assert cfg.image_size == (128, 384)  # the planners' fused input
