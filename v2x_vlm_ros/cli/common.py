"""Helpers every subcommand shares: argument types, the dataset arguments and opening,
JSON output, the bundled demo model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from v2x_vlm_ros.config import load_section

EXIT_BAD_INPUT = 2


def image_size_arg(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, e.g. 384x216, got {text!r}") from None
    if w < 16 or h < 16 or w * h > 64_000_000:
        raise argparse.ArgumentTypeError(f"image size {w}x{h} out of range (16x16 .. 64 MP)")
    return w, h


def write_json(path: str | None, data: dict) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def add_dataset_args(p: argparse.ArgumentParser, protocol: bool = False) -> None:
    p.add_argument("root", help="dataset root (V2X-Seq-SPD or DAIR-V2X-C layout)")
    p.add_argument("--split", help="split (train/val/test) in the split file, or 'all'; default: all "
                   "sequences (time protocol), val (univ2x protocol)")
    p.add_argument("--split-file", help="DAIR-shaped split file, or 'univ2x' for UniV2X's (shipped); "
                   "default: UniV2X's (univ2x protocol), split_datas/*.json under ROOT (time protocol)")
    if protocol:
        p.add_argument("--protocol", choices=("auto", "univ2x", "time"),
                       help="univ2x: UniV2X's evaluation (2 Hz samples of its val split, k-th-next-sample "
                       "waypoints, its label update, its raster metric), the one the published tables "
                       "use; time: every 10 Hz frame, waypoints by time; auto (default): univ2x on a "
                       "V2X-Seq-SPD root, time on a synthetic world (scenarios.json) or DAIR-V2X-C")
    p.add_argument("--scenario", help="only sequences of this scenario (synthetic data: scenarios.json)")
    p.add_argument("--config", help="YAML file with a 'dataset:' section (ground-truth settings)")
    p.add_argument("--strict", action="store_true", help="fail on the first bad record, do not skip it")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def open_dataset(args, check_images: bool = False):
    from v2x_vlm_ros.data.dair import DairV2XDataset, DatasetConfig

    config = load_section(DatasetConfig, args.config, "dataset") if args.config else DatasetConfig()
    if getattr(args, "protocol", None) is not None:
        config.protocol = args.protocol
    elif hasattr(args, "protocol") and not args.config:
        config.protocol = "auto"
    config.strict = config.strict or args.strict
    config.check_images = config.check_images or check_images
    return DairV2XDataset(args.root, split=args.split, split_file=args.split_file,
                          scenario=args.scenario, config=config, progress=not args.quiet)


def demo_model() -> str:
    from v2x_vlm_ros.runtime.factory import default_model_dir

    return default_model_dir()


def print_report(report: dict, json_path: str | None) -> int:
    """Print a command's JSON report (and write it to ``json_path`` when given)."""
    text = json.dumps(report, indent=2)
    if json_path:
        Path(json_path).write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0
