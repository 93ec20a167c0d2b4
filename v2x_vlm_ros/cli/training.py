"""Subcommands that train or probe a model: ``train``, ``probe`` and ``twin-test``."""

from __future__ import annotations

import dataclasses
import json
import os

from v2x_vlm_ros.cli.common import print_report
from v2x_vlm_ros.config import ConfigError


def cmd_train(args) -> int:
    import yaml

    from v2x_vlm_ros.config import from_dict, read_yaml
    from v2x_vlm_ros.training.config import TrainConfig
    from v2x_vlm_ros.training.trainer import train

    data = dict(read_yaml(args.config).get("train") or {})
    for item in args.override:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--override expects key=value, got {item!r}")
        data[key.strip()] = yaml.safe_load(value)
    config = from_dict(TrainConfig, data, f"{args.config}: train")
    if args.check:  # a recipe checks every stage's settings before hours of training
        _check_student_codec(config)
        print(json.dumps(dataclasses.asdict(config), indent=1, default=str))
        return 0
    summary = train(config, progress=not args.quiet)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, one summary
        val = summary.get("validation") or {}
        shown = {k: v for k, v in summary.items() if k != "validation"}
        shown["validation"] = {k: val.get(k) for k in ("num_samples", "l2", "collision")} if val else None
        print(json.dumps(shown, indent=2, default=str))
    return 0


def _check_student_codec(config) -> None:
    """A planner student that exists already: the config's codec_* settings must be its own
    (training would stop on them; --check says it first)."""
    from v2x_vlm_ros.training.config import student_codec_error

    problem = student_codec_error(config)
    if problem:
        raise ConfigError(problem)


def cmd_probe(args) -> int:
    from v2x_vlm_ros.training.probe import probe_run

    try:
        report = probe_run(args.run, args.data, split=None if args.split == "all" else args.split,
                           max_frames=args.max_frames, batch_size=args.batch_size, device=args.device)
    except (FileNotFoundError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    return print_report(report, args.json)


def cmd_twin_test(args) -> int:
    from v2x_vlm_ros.data.dair import DairV2XDataset
    from v2x_vlm_ros.eval.twin_test import twin_test
    from v2x_vlm_ros.model.modeling import ModelLoadError
    from v2x_vlm_ros.runtime.planner import ModelPlanner

    try:
        dataset = DairV2XDataset(args.data, split=None if args.split == "all" else args.split,
                                 scenario=args.scenario, progress=not args.quiet)
        planner = ModelPlanner(args.model, args.device, batch_size=args.batch_size)
        report = twin_test(planner, dataset, max_pairs=args.max_pairs, batch_size=args.batch_size)
    except (ModelLoadError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    report.update(model=str(args.model), data=str(args.data), split=args.split, scenario=args.scenario)
    return print_report(report, args.json)


def add_parsers(sub) -> None:
    p = sub.add_parser("train", help="train a planner (Algorithm 2); torchrun runs it on many processes")
    p.add_argument("config", help="YAML file with a 'train:' section (see config/train_*.yaml)")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config field (YAML value), repeatable")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--check", action="store_true",
                   help="validate the config and overrides, print the resolved settings, train nothing")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("probe", help="does a run's vision encoder see what the roadside camera sees? "
                                     "(its dense roadside probe on a synthetic world, docs/TRAINING.md)")
    p.add_argument("run", help="training output directory with a checkpoint trained with lambda_objects > 0")
    p.add_argument("--data", required=True,
                   help="world written by v2x-vlm synth (visibility.json with boxes)")
    p.add_argument("--split", default="all", help="split of the world, or 'all' (default)")
    p.add_argument("--max-frames", type=int, default=400, help="frames spread over the world for cells_auc")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", help="also write the report to this file")
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("twin-test", help="does the roadside view move a model's first plan token? (hidden-"
                                         "hazard frames against their twins, real and grey roadside; "
                                         "eval/twin_test.py)")
    p.add_argument("model", help="model directory")
    p.add_argument("--data", required=True, help="world written by v2x-vlm synth (with visibility.json)")
    p.add_argument("--split", default="all", help="split of the world, or 'all' (default)")
    p.add_argument("--scenario", help="only this scenario's sequences (e.g. occluded_crossing)")
    p.add_argument("--max-pairs", type=int, help="at most this many pairs (default: all)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", help="also write the report to this file")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_twin_test)
