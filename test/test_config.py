"""Dataclass configs from YAML: shipped files match the code, mistakes are named."""

from dataclasses import dataclass

import pytest

from v2x_vlm_ros.config import ConfigError, from_dict, load_section, package_config_dir
from v2x_vlm_ros.data.dair import DatasetConfig


def test_shipped_dataset_config_is_the_defaults_with_the_univ2x_protocol():
    path = package_config_dir() / "dataset.yaml"
    assert load_section(DatasetConfig, path, "dataset") == DatasetConfig(protocol="univ2x")


@dataclass
class Example:
    rate_hz: float = 2.0
    name: str = "x"
    size: tuple[int, int] | None = None
    enabled: bool = True


def test_unknown_key_wrong_type_and_values_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['rate'\]"):
        from_dict(Example, {"rate": 3})
    with pytest.raises(ConfigError, match="cfg.rate_hz: expected a number, got 'fast'"):
        from_dict(Example, {"rate_hz": "fast"}, "cfg")
    with pytest.raises(ConfigError, match="expected true or false"):
        from_dict(Example, {"enabled": "yes"})
    with pytest.raises(ConfigError, match="match_tolerance_s must be in"):
        from_dict(DatasetConfig, {"match_tolerance_s": 0.3})
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: [1, 2\n")
    with pytest.raises(ConfigError, match="malformed YAML"):
        load_section(DatasetConfig, bad, "dataset")


def test_values_are_coerced_to_the_declared_types():
    cfg = from_dict(Example, {"rate_hz": 5, "size": [384, 216]})
    assert cfg.rate_hz == 5.0 and isinstance(cfg.rate_hz, float)
    assert cfg.size == (384, 216)
    assert from_dict(Example, {"size": None}).size is None
