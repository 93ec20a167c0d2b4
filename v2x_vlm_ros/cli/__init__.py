"""The ``v2x-vlm`` command: subcommands only, each a thin call into the library.

One module per kind of work, each with its handlers and their parsers (``add_parsers``):
``data`` (synth, dataset, describe, bag, play), ``evaluation`` (eval, metric-cases,
experiments, table, frames), ``onboard`` (replay, build-engine, bench, soak), ``training``
(train, probe, twin-test); ``common`` holds what they share.

Command names, flags and JSON keys named in the project's issues are a contract with
outside tools: add to them, never rename them.
"""

from __future__ import annotations

import argparse
import sys

from v2x_vlm_ros.cli import data, evaluation, onboard, training
from v2x_vlm_ros.cli.common import EXIT_BAD_INPUT
from v2x_vlm_ros.config import ConfigError
from v2x_vlm_ros.data.errors import DatasetError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="v2x-vlm", description="V2X-VLM cooperative planner: datasets, evaluation and tools.")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (data, evaluation, onboard, training):
        group.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (DatasetError, ConfigError) as exc:
        print(f"v2x-vlm: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
