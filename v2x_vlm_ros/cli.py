"""The ``v2x-vlm`` command: subcommands only, each a thin call into the library.

Command names, flags and JSON keys named in the project's issues are a contract with
outside tools: add to them, never rename them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from v2x_vlm_ros.config import ConfigError, load_section
from v2x_vlm_ros.data.errors import DatasetError
from v2x_vlm_ros.model.codec import TOKEN_CHOICES

EXIT_BAD_INPUT = 2


def _image_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, e.g. 384x216, got {text!r}") from None
    if w < 16 or h < 16 or w * h > 64_000_000:
        raise argparse.ArgumentTypeError(f"image size {w}x{h} out of range (16x16 .. 64 MP)")
    return w, h


def _write_json(path: str | None, data: dict) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _dataset_args(p: argparse.ArgumentParser, protocol: bool = False) -> None:
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


def _open_dataset(args, check_images: bool = False):
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


# -- subcommands ------------------------------------------------------------------------


def cmd_synth(args) -> int:
    from v2x_vlm_ros.data.synth import SynthConfig, generate

    config = load_section(SynthConfig, args.config, "synth") if args.config else SynthConfig()
    overrides = {"num_sequences": args.sequences, "seed": args.seed, "image_size": args.image_size,
                 "duration_s": args.duration, "layout": args.layout, "jpeg_quality": args.jpeg_quality,
                 "workers": args.workers}
    # replace() re-runs the config's validation on the overridden values
    try:
        config = dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    summary = generate(args.out, config, progress=not args.quiet)
    print(json.dumps(summary, indent=2))
    return 0


def cmd_dataset_summary(args) -> int:
    from v2x_vlm_ros.eval.transmission import stored_stream_cost

    ds = _open_dataset(args, check_images=args.check_images)
    summary = ds.summary(progress=not args.quiet)
    # what the roadside images would cost on the link, as stored, at the paper's 2 Hz
    summary["roadside_stream"] = stored_stream_cost(ds.roadside_image_paths())
    _write_json(args.json, summary)
    shown = {k: v for k, v in summary.items() if k != "skipped_items"}
    print(json.dumps(shown, indent=2))
    for item in summary["skipped_items"][: args.show_skips]:
        print(f"skipped {item}")
    hidden = len(summary["skipped_items"]) - args.show_skips
    if hidden > 0:
        print(f"... and {hidden} more skipped items (all of them are in --json)")
    return 0


def cmd_eval(args) -> int:
    from v2x_vlm_ros.eval.baselines import PLANNERS
    from v2x_vlm_ros.eval.evaluate import evaluate
    from v2x_vlm_ros.eval.metrics import format_markdown_table

    if args.planner == "model":
        if not args.model:
            raise ConfigError("--planner model needs --model DIR (a model directory or hub id)")
        from v2x_vlm_ros.model.modeling import ModelLoadError
        from v2x_vlm_ros.model.planner import ModelPlanner

        from v2x_vlm_ros.runtime.refine import RefineConfig, Refiner

        refiner = None if args.no_refine else Refiner(RefineConfig())
        try:
            planner = ModelPlanner(args.model, device=args.device, batch_size=args.batch_size,
                                   refiner=refiner, token_choice=args.token_choice)
        except ModelLoadError as exc:
            raise ConfigError(str(exc)) from None
        planner.engine.keep_blank_roadside = args.keep_blank_roadside
        token_choice = planner.engine.token_choice
    else:
        if args.token_choice is not None:
            raise ConfigError("--token-choice changes how a model's answer is read: "
                              "use it with --planner model")
        planner = PLANNERS[args.planner]()
    if args.keep_blank_roadside and args.planner != "model":
        raise ConfigError("--keep-blank-roadside changes how a model plans: use it with --planner model")
    ablated = args.roadside is not None or args.description is not None or args.command is not None
    if ablated and args.planner != "model":
        raise ConfigError("--roadside, --description and --command change a model's inputs: "
                          "use them with --planner model")
    ds = _open_dataset(args)
    if ds.protocol == "univ2x" and args.collision != "univ2x":
        raise ConfigError(f"--collision {args.collision} belongs to the time protocol; the univ2x protocol "
                          "uses UniV2X's raster test (add --protocol time)")
    samples = None
    if ablated:  # the inference-time ablations (eval.perturb)
        from v2x_vlm_ros.eval.experiment_planners import ExperimentPlanner
        from v2x_vlm_ros.eval.perturb import ablation_transforms

        if args.roadside == "swap":
            samples = [ds[i] for i in range(len(ds))]
        try:
            transforms = ablation_transforms(args.roadside, args.description, samples or (), args.command,
                                             motion_s=planner.engine.roadside_motion_s)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        label = ", ".join(t.label for t in transforms)
        planner = ExperimentPlanner(planner, f"{planner.name}, {label}", transforms,
                                    uses_roadside=planner.uses_roadside and args.roadside != "none")
    result = evaluate(ds, planner, collision=args.collision, progress=not args.quiet,
                      batch_size=args.batch_size, samples=samples, frames_path=args.frames)
    if args.planner == "model":
        result["model"] = str(args.model)
        result["token_choice"] = token_choice  # the model's own or --token-choice
        result["token_choice_given"] = args.token_choice
        # how it was run, so that `experiments --ablation NAME=FILE.json` can check the file
        # was scored as its own runs are
        result["refine"] = not args.no_refine
        result["batch_size"] = args.batch_size
        result["ablation"] = {"roadside": args.roadside, "description": args.description,
                              "command": args.command, "keep_blank_roadside": args.keep_blank_roadside}
    table = format_markdown_table({planner.name: result})
    if result["by_scenario"]:
        rows = {f"{planner.name}, {name}": r for name, r in result["by_scenario"].items()}
        table += "\nBy scenario:\n\n" + format_markdown_table(rows)
    if result["slices"]:
        rows = {f"{planner.name}, {name}": r for name, r in result["slices"].items()}
        table += ("\nSlices (hidden_hazard: an agent the ground truth yields to is seen by the roadside "
                  "camera, not by the ego's; hazard_twin: the same frames of the same scene without "
                  "it, where the ground truth drives on):\n\n" + format_markdown_table(rows))
    split = result["dataset"]["split"]
    note = (f"\n{result['num_samples']} samples of {args.root}"
            f"{'' if split is None else f' (split {split})'}"
            f"{'' if args.scenario is None else f' (scenario {args.scenario})'}; "
            f"protocol {result['protocol']}: {result['protocol_details']['description']}; "
            f"collision test: {result.get('collision_test', result['collision_method'])}; "
            f"{result['l2_convention']}\n")
    _write_json(args.json, result)
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(table + note, encoding="utf-8")
    print(table + note, end="")
    return 0


def cmd_metric_cases(args) -> int:
    from v2x_vlm_ros.eval.metric_cases import CaseError, format_summary, load_cases, score_cases

    try:
        result = score_cases(load_cases(args.file), args.protocol)
    except CaseError as exc:
        raise ConfigError(str(exc)) from None
    result["source"] = str(args.file)
    _write_json(args.json, result)
    print(format_summary(result), end="")
    agrees = result.get("expected_comparison", {}).get("agrees", True)
    return 1 if args.check and not agrees else 0


def cmd_bag(args) -> int:
    from v2x_vlm_ros.tools.bag import write_bag

    if Path(args.out).exists():  # before indexing a whole dataset
        raise ConfigError(f"{args.out}: output exists already (a rosbag2 is never overwritten); "
                          "remove it or choose another path")
    ds = _open_dataset(args)
    try:
        summary = write_bag(ds, args.out, storage=args.storage, distro=args.distro, progress=not args.quiet)
    except (ValueError, FileExistsError, OSError) as exc:
        raise ConfigError(str(exc)) from None
    print(json.dumps(summary, indent=2, default=str))
    return 0


def cmd_replay(args) -> int:
    from v2x_vlm_ros.model.modeling import ModelLoadError
    from v2x_vlm_ros.runtime.roadside import RoadsideConfig
    from v2x_vlm_ros.tools.replay import ReplayOptions, replay

    try:
        link = RoadsideConfig(scale=args.roadside_scale, codec=args.roadside_codec,
                              quality=args.roadside_quality, rate_hz=args.roadside_rate)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    options = ReplayOptions(model=args.model or _demo_model(), out=args.out, realtime=args.realtime,
                            roadside=link, no_roadside=args.no_roadside, describer=args.describer,
                            describer_rate_hz=args.describer_rate, device=args.device,
                            collision=args.collision, refine=not args.no_refine)
    source = Path(args.root)
    dataset = None
    if not (source / "metadata.yaml").is_file():  # a DAIR-V2X root, not a bag
        dataset = _open_dataset(args)
    try:
        result = replay(source, options, dataset=dataset, progress=not args.quiet)
    except ModelLoadError as exc:
        raise ConfigError(str(exc)) from None
    print((Path(args.out) / "metrics.md").read_text(), end="")
    print(f"wrote {args.out}: predictions.mcap, metrics.json, metrics.md, "
          f"{len(result['replay']['pictures'])} pictures, {result['replay']['video'] or 'no video'}")
    return 0


def _demo_model() -> str:
    from v2x_vlm_ros.runtime.factory import default_model_dir

    return default_model_dir()


def cmd_build_engine(args) -> int:
    from v2x_vlm_ros.model.modeling import ModelLoadError, load_model
    from v2x_vlm_ros.runtime.engine import DEFAULT_PROMPT_TOKENS
    from v2x_vlm_ros.runtime.engine_build import COMPILERS, build_engines
    from v2x_vlm_ros.runtime.engine_cache import EngineCache

    try:
        loaded = load_model(args.model, args.device)
    except ModelLoadError as exc:
        raise ConfigError(str(exc)) from None
    settings = loaded.settings
    length = args.prompt_length or settings.num_image_tokens + DEFAULT_PROMPT_TOKENS
    try:
        summary = build_engines(loaded.model, args.model, args.device, args.precision, args.batch,
                                settings.image_size, length, settings.num_image_tokens,
                                EngineCache(args.cache_dir), COMPILERS[args.compiler]())
    except Exception as exc:  # TensorRT missing, export failure, a failed parity check: say so
        reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
        raise ConfigError(f"engine build failed: {reason}") from None
    print(json.dumps(summary, indent=2))
    return 0


def cmd_experiments(args) -> int:
    from v2x_vlm_ros.eval.experiments import (
        ExperimentError,
        ExperimentOptions,
        parse_ablations,
        parse_tables,
        run_experiments,
    )
    from v2x_vlm_ros.model.modeling import ModelLoadError

    try:
        options = ExperimentOptions(
            root=args.root, model=args.model or _demo_model(), teacher=args.teacher,
            ego_only_model=args.ego_only_model, ablations=parse_ablations(args.ablation), out=args.out,
            split=args.split, split_file=args.split_file, max_samples=args.max_samples, seed=args.seed,
            device=args.device, tables=parse_tables(args.tables), batch_size=args.batch_size,
            collision=args.collision, refine=not args.no_refine, train_config=args.train_config,
            protocol=args.protocol)
        result = run_experiments(options, progress=not args.quiet)
    except ModelLoadError as exc:
        raise ConfigError(f"{exc} (check --model, --teacher, --ego-only-model and --ablation)") from None
    except ExperimentError as exc:
        raise ConfigError(str(exc)) from None
    print((Path(args.out) / "tables.md").read_text(encoding="utf-8"), end="")
    print(f"wrote {args.out}: {', '.join(result['files'])} "
          f"({result['timings']['total_s']:.1f} s)")
    return 0


def cmd_bench(args) -> int:
    from v2x_vlm_ros.tools.bench import bench, record

    if bool(args.model) == bool(args.config):
        raise ConfigError("give exactly one of --model DIR and --config base|large|small|tiny")
    preset = {"small": "small-student"}.get(args.config, args.config)
    if args.batch < 1 or args.iterations < 1 or args.warmup < 0:
        raise ConfigError(f"need --batch >= 1, --iterations >= 1 and --warmup >= 0 "
                          f"(got {args.batch}, {args.iterations}, {args.warmup})")
    result = bench(args.model, preset, args.device, args.batch, args.backend, args.iterations, args.warmup,
                   args.image_size, note=args.note)
    _write_json(args.json, result)
    if not args.no_record:
        record(result, Path(args.history), Path(args.markdown))
    f, b = result["fast"], result["baseline"]
    print(f"{result['model']} on {result['device']} ({result['backend']}), batch {args.batch}: "
          f"fast p50 {f['p50_ms']:.1f} ms ({f['fps']:.1f} FPS), baseline p50 {b['p50_ms']:.1f} ms, "
          f"speed-up {result['speedup_p50']:.2f}x; "
          f"preprocess {100 * result['preprocess_share']:.0f} % of the frame")
    print("stages (ms):", ", ".join(f"{k} {v:.1f}" for k, v in f["stages_ms"].items()))
    return 0


def cmd_soak(args) -> int:
    from v2x_vlm_ros.model.modeling import ModelLoadError
    from v2x_vlm_ros.tools.soak import SoakOptions, soak, summary_line

    try:
        options = SoakOptions(frames=args.frames, model=args.model or _demo_model(), data=args.data,
                              out=args.out, camera_rate_hz=args.camera_rate,
                              roadside_rate_hz=args.roadside_rate, device=args.device,
                              sample_every=args.sample_every, max_growth_mb=args.max_growth_mb,
                              realtime=args.realtime)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    try:
        result = soak(options, progress=not args.quiet)
    except ModelLoadError as exc:
        raise ConfigError(f"{exc} (--model DIR chooses another model)") from None
    _write_json(args.json, result)
    print((Path(args.out) / "soak.md").read_text(encoding="utf-8"), end="")
    print(summary_line(result))
    print(f"wrote {args.out}: soak.json, soak.md, memory.png")
    return 0 if result["passed"] else 1


def cmd_frames(args) -> int:
    from v2x_vlm_ros.eval.frames import collisions_by_sequence, format_collision_table, read_frame_records

    if args.names and len(args.names) != len(args.files):
        raise ConfigError(f"--names gives {len(args.names)} names for {len(args.files)} files")
    names = args.names or [Path(f).stem for f in args.files]
    if len(set(names)) != len(names):
        raise ConfigError(f"run names repeat ({', '.join(names)}): give --names")
    runs = {}
    for name, path in zip(names, args.files):
        try:
            runs[name] = read_frame_records(path)
        except OSError as exc:
            raise ConfigError(f"{path}: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    try:
        table = collisions_by_sequence(runs, args.slice)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if args.slice and not table["total"]["frames"]:
        raise ConfigError(f"no frame of slice {args.slice!r} in {args.files[0]} (the slices a frame "
                          "is in are listed in its 'slices')")
    text = format_collision_table(table)
    print(text, end="")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text, encoding="utf-8")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(table, indent=2) + "\n", encoding="utf-8")
    return 0


def cmd_table(args) -> int:
    from v2x_vlm_ros.eval.metrics import format_markdown_table

    if args.names and len(args.names) != len(args.results):
        raise ConfigError(f"--names gives {len(args.names)} names for {len(args.results)} results")
    rows = {}
    for i, path in enumerate(args.results):
        try:
            result = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: {exc}") from None
        if args.scenario:
            if args.scenario not in result.get("by_scenario", {}):
                raise ConfigError(f"{path}: no results for scenario {args.scenario!r}")
            result = {**result["by_scenario"][args.scenario], "planner": result.get("planner"),
                      "transmission": result.get("transmission")}
        elif args.slice:
            if args.slice not in (result.get("slices") or {}):
                raise ConfigError(f"{path}: no results for slice {args.slice!r} (a synthetic world's "
                                  "visibility.json gives hidden_hazard and hazard_twin)")
            result = {**result["slices"][args.slice], "planner": result.get("planner"),
                      "transmission": result.get("transmission")}
        name = args.names[i] if args.names else result.get("planner", Path(path).stem)
        rows[name] = result
    table = format_markdown_table(rows)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(table, encoding="utf-8")
    print(table, end="")
    return 0


def cmd_describe(args) -> int:
    from v2x_vlm_ros.model.describer import SceneDescriber, describe_dataset
    from v2x_vlm_ros.model.modeling import ModelLoadError

    ds = _open_dataset(args)
    try:
        describer = SceneDescriber(args.model, device=args.device, max_new_tokens=args.max_new_tokens)
    except ModelLoadError as exc:
        raise ConfigError(str(exc)) from None
    count = describe_dataset(ds, describer, args.out, batch_size=args.batch_size, progress=not args.quiet)
    print(f"wrote {count} descriptions to {args.out}")
    return 0


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


def _print_report(report: dict, json_path: str | None) -> int:
    """Print a command's JSON report (and write it to ``json_path`` when given)."""
    text = json.dumps(report, indent=2)
    if json_path:
        Path(json_path).write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


def cmd_probe(args) -> int:
    from v2x_vlm_ros.training.probe import probe_run

    try:
        report = probe_run(args.run, args.data, split=None if args.split == "all" else args.split,
                           max_frames=args.max_frames, batch_size=args.batch_size, device=args.device)
    except (FileNotFoundError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    return _print_report(report, args.json)


def cmd_twin_test(args) -> int:
    from v2x_vlm_ros.data.dair import DairV2XDataset
    from v2x_vlm_ros.eval.twin_test import twin_test
    from v2x_vlm_ros.model.modeling import ModelLoadError
    from v2x_vlm_ros.model.planner import ModelPlanner

    try:
        dataset = DairV2XDataset(args.data, split=None if args.split == "all" else args.split,
                                 scenario=args.scenario, progress=not args.quiet)
        planner = ModelPlanner(args.model, args.device, batch_size=args.batch_size)
        report = twin_test(planner, dataset, max_pairs=args.max_pairs, batch_size=args.batch_size)
    except (ModelLoadError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    report.update(model=str(args.model), data=str(args.data), split=args.split, scenario=args.scenario)
    return _print_report(report, args.json)


def cmd_play(args) -> int:
    try:
        from v2x_vlm_ros.ros.bag_player import PlayOptions, play
    except ImportError as exc:
        raise ConfigError(f"v2x-vlm play needs ROS 2 (rclpy) in this Python: {exc}") from None
    try:
        options = PlayOptions(rate=args.rate, step=args.step, record=args.out is not None,
                              path_topic=args.path_topic, link_topic=args.link_topic,
                              link_message=args.link_message, roadside_rate_hz=args.roadside_rate_hz,
                              planning_period_s=1.0 / args.planning_rate_hz, timeout_s=args.timeout,
                              settle_s=args.settle, jump_settle_s=args.jump_settle,
                              confirm_intake=args.confirm_intake, resend_s=args.resend,
                              max_samples=args.max_samples, max_gap_s=args.max_gap)
        summary = play(args.bag, options, args.out)
    except (ValueError, FileNotFoundError, TimeoutError) as exc:
        raise ConfigError(str(exc)) from None
    print(json.dumps(summary, indent=2))
    return 0 if not summary["missing"] else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="v2x-vlm", description="V2X-VLM cooperative planner: datasets, evaluation and tools.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="generate a synthetic cooperative world in the V2X-Seq-SPD layout")
    p.add_argument("out", help="output dataset root")
    p.add_argument("--sequences", type=int, help="number of sequences")
    p.add_argument("--seed", type=int, help="random seed (same seed, same bytes)")
    p.add_argument("--image-size", type=_image_size, help="WIDTHxHEIGHT of both cameras (default 1920x1080)")
    p.add_argument("--duration", type=float, help="seconds per sequence")
    p.add_argument("--layout", choices=("spd", "c"), help="V2X-Seq-SPD (default) or DAIR-V2X-C")
    p.add_argument("--jpeg-quality", type=int, help="JPEG quality 1..100")
    p.add_argument("--workers", type=int, help="processes rendering sequences in parallel")
    p.add_argument("--config", help="YAML file with a 'synth:' section")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("dataset", help="inspect a dataset")
    dsub = p.add_subparsers(dest="dataset_command", required=True)
    p = dsub.add_parser("summary", help="sequences, frames, samples, and skipped items with reasons")
    _dataset_args(p, protocol=True)
    p.add_argument("--check-images", action="store_true", help="decode every image (slow on real data)")
    p.add_argument("--json", help="write the summary, every skipped item included, to this file")
    p.add_argument("--show-skips", type=int, default=20, help="skipped items printed (default 20)")
    p.set_defaults(func=cmd_dataset_summary)

    p = sub.add_parser("eval", help="score a planner with the UniV2X metrics (L2, collision)")
    _dataset_args(p, protocol=True)
    p.add_argument("--planner", default="constant-velocity", choices=("constant-velocity", "model"),
                   help="planner to evaluate (default: the constant-velocity baseline, which needs no model)")
    p.add_argument("--model", help="--planner model: model directory (or hub id)")
    p.add_argument("--device", default="cpu", help="--planner model: torch device (cpu, cuda, ...)")
    p.add_argument("--batch-size", type=int, default=32, help="samples planned per batch")
    p.add_argument("--no-refine", action="store_true",
                   help="--planner model: score the decoded trajectory without refinement")
    p.add_argument("--collision", choices=("univ2x", "obb"), default="univ2x",
                   help="time protocol's collision test: raster boxes (default) or oriented-box overlap")
    p.add_argument("--roadside", choices=("grey", "swap", "none"),
                   help="--planner model: ablate the roadside input (a grey image, another sequence's "
                        "roadside frame, or none: the ego-only canvas)")
    p.add_argument("--description", choices=("empty",), help="--planner model: ablate the scene description")
    p.add_argument("--command", choices=("swap",),
                   help="--planner model: ablate the navigation command (swap: LEFT planned as RIGHT "
                        "and RIGHT as LEFT; does the planner turn the way it is told?)")
    p.add_argument("--token-choice", choices=TOKEN_CHOICES, default=None,
                   help="--planner model: how each location token is chosen, overriding the model's own "
                        "(v2x_vlm.json token_choice): greedy, the most likely bin; mean or median, the bin "
                        "at the mean or median of the model's distribution over bins")
    p.add_argument("--keep-blank-roadside", action="store_true",
                   help="--planner model: plan a blank (one-colour) roadside image as it is; by default "
                        "it is planned as no roadside image (a dead camera), as on the vehicle, and counted "
                        "(roadside_blank). With --roadside grey: what the model itself reads into a grey "
                        "view")
    p.add_argument("--json", help="write the full result to this JSON file")
    p.add_argument("--markdown", help="write the table to this Markdown file")
    p.add_argument("--frames", help="write every frame's plan, ground truth, slices and scores to this "
                                    "JSON Lines file (which frames and sequences collide)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("metric-cases",
                       help="score cases given as trajectories, masks and boxes (UniV2X golden-case schema)")
    p.add_argument("file", help="cases JSON (.json, .json.gz or .json.xz) in the schema of "
                   "test/fixtures/univ2x-golden/README.md")
    p.add_argument("--protocol", choices=("univ2x", "time"), default="univ2x",
                   help="univ2x: UniV2X's own metric rules (default); "
                   "time: the tests of the project's 10 Hz protocol")
    p.add_argument("--json", help="write per-case flags and the aggregate to this file")
    p.add_argument("--check", action="store_true",
                   help="exit 1 when the cases carry expected values and any step disagrees")
    p.set_defaults(func=cmd_metric_cases)

    p = sub.add_parser("bag", help="write a DAIR-V2X dataset as a rosbag2 (ros2 bag play on Humble/Jazzy)")
    _dataset_args(p)
    p.add_argument("out", help="bag directory to create (must not exist)")
    p.add_argument("--storage", required=True, choices=("mcap", "sqlite3"),
                   help="mcap (Jazzy, metadata version 9) or sqlite3 (Humble, version 8)")
    p.add_argument("--distro", choices=("humble", "jazzy"),
                   help="message definitions (default: humble for sqlite3, jazzy for mcap)")
    p.set_defaults(func=cmd_bag)

    p = sub.add_parser("replay", help="run the onboard services on a DAIR-V2X root or a bag, without ROS")
    _dataset_args(p)
    p.add_argument("--model", help="model directory (default: the demo model, models/synthetic-student)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--realtime", action="store_true", help="feed frames at their recorded pace")
    p.add_argument("--roadside-scale", type=float, default=1.0, help="downsampling factor s in (0, 1]")
    p.add_argument("--roadside-codec", choices=("jpeg", "png", "raw"), default="jpeg", help="link encoding")
    p.add_argument("--roadside-quality", type=int, default=90, help="JPEG quality of the link")
    p.add_argument("--roadside-rate", type=float, default=2.0,
                   help="roadside frames sent per second (0: every frame)")
    p.add_argument("--no-roadside", action="store_true", help="send no roadside frame (ego-only driving)")
    p.add_argument("--describer", help="describer model directory: captions asynchronously")
    p.add_argument("--describer-rate", type=float, default=0.5, help="captions per second at most")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--collision", choices=("univ2x", "obb"), default="univ2x", help="collision test")
    p.add_argument("--no-refine", action="store_true", help="publish the decoded trajectory unrefined")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("build-engine",
                       help="compile and cache engines, so that the vehicle never compiles on start")
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("--device", default="cuda", help="device the engines are for (default cuda)")
    p.add_argument("--precision", choices=("fp16", "bf16", "fp32"), default="fp16", help="engine precision")
    p.add_argument("--batch", type=int, default=1, help="frames per call the engines are built for")
    p.add_argument("--prompt-length", type=int, help="encoder length (default: image tokens + 160)")
    p.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "v2x_vlm_ros" / "engines"),
                   help="engine cache folder (vehicle_node's engine_cache_dir)")
    p.add_argument("--compiler", choices=("tensorrt", "export"), default="tensorrt",
                   help="tensorrt (needs TensorRT and CUDA) or export (portable torch.export programs)")
    p.set_defaults(func=cmd_build_engine)

    p = sub.add_parser("experiments",
                       help="the paper's Tables 1-5 (and 6: inference-time ablations) on a DAIR-V2X root: "
                            "tables.md, results.json, plot")
    p.add_argument("root", nargs="?", default="data/sample", help="dataset root (default: data/sample)")
    p.add_argument("--model", help="model directory (default: the demo model, models/synthetic-student)")
    p.add_argument("--teacher", help="teacher model directory: an extra Table 1 row")
    p.add_argument("--ego-only-model",
                   help="ego-only model directory (default: <model>-ego-only when it exists, else the "
                        "model with the roadside half blanked)")
    p.add_argument("--ablation", action="append", default=[], metavar="NAME=DIR|FILE.json",
                   help="Table 5 checkpoint, e.g. no_scene_text=runs/ablation-no-scene-text/model, or its "
                        "`v2x-vlm eval --planner model --json` result on the same frames (checked) "
                        "(repeatable)")
    p.add_argument("--out", default="out/experiments",
                   help="output directory (tables.md, results.json, l2_vs_bandwidth.png)")
    p.add_argument("--split", help="split (train/val/test) in the split file, or 'all'; default: all "
                   "sequences (time protocol), val (univ2x protocol)")
    p.add_argument("--split-file", help="DAIR-shaped split file, or 'univ2x' for UniV2X's (shipped); "
                   "default: UniV2X's (univ2x protocol), split_datas/*.json under ROOT (time protocol)")
    p.add_argument("--protocol", choices=("auto", "univ2x", "time"), default="auto",
                   help="evaluation protocol (see `v2x-vlm eval --help`); auto: univ2x on a V2X-Seq-SPD "
                   "root, time on a synthetic world or DAIR-V2X-C")
    p.add_argument("--max-samples", type=int, help="evaluate at most N samples, evenly spaced")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise and text perturbations")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, ...)")
    p.add_argument("--tables", default="1,2,3,4,5,6", help="tables to run, e.g. 1,4 (default: all)")
    p.add_argument("--batch-size", type=int, default=8, help="frames planned per batch")
    p.add_argument("--collision", choices=("univ2x", "obb"), default="univ2x", help="collision test")
    p.add_argument("--no-refine", action="store_true", help="score the decoded trajectories unrefined")
    p.add_argument("--train-config", default="config/train_synthetic_student.yaml",
                   help="training config the Table 5 commands override")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_experiments)

    p = sub.add_parser("bench", help="time the planning step against transformers' processor + generate")
    p.add_argument("--model", help="model directory")
    p.add_argument("--config", choices=("base", "large", "small", "tiny"),
                   help="random weights of a size preset")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--batch", type=int, default=1, help="frames per planning call")
    p.add_argument("--backend", choices=("eager", "inductor", "tensorrt"), default="eager",
                   help="fast path backend")
    p.add_argument("--iterations", type=int, default=30, help="timed frames (batches)")
    p.add_argument("--warmup", type=int, default=3, help="untimed frames first")
    p.add_argument("--image-size", type=_image_size, default=(1920, 1080), help="camera images, WxH")
    p.add_argument("--json", help="write the result here too")
    p.add_argument("--history", default="docs/benchmarks.json", help="results kept per configuration")
    p.add_argument("--markdown", default="docs/BENCHMARKS.md", help="the table rendered from the history")
    p.add_argument("--no-record", action="store_true", help="do not touch the history and the table")
    p.add_argument("--note", help="a remark kept with this result (e.g. why a goal was missed)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("soak", help="a long run of the onboard services: frames accounted, memory watched")
    p.add_argument("--frames", type=int, required=True, help="camera frames to feed")
    p.add_argument("--model", help="model directory (default: the demo model, models/synthetic-student)")
    p.add_argument("--data", help="DAIR-V2X root whose frames are cycled (default: data/sample)")
    p.add_argument("--camera-rate", type=float, default=10.0, help="ego and roadside camera rate, Hz")
    p.add_argument("--roadside-rate", type=float, default=2.0,
                   help="roadside frames sent per second (0: every frame)")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--sample-every", type=int, default=100, help="frames between memory samples")
    p.add_argument("--out", default="out/soak", help="output directory (soak.json, soak.md, memory.png)")
    p.add_argument("--json", help="write the result here too")
    p.add_argument("--max-growth-mb", type=float, default=50.0,
                   help="resident memory growth after warm-up that fails the run (MiB)")
    p.add_argument("--realtime", action="store_true",
                   help="pace by the wall clock (default: a logical clock, as fast as planning goes)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_soak)

    p = sub.add_parser("table", help="one Markdown table from several `eval --json` results")
    p.add_argument("results", nargs="+", help="JSON files written by v2x-vlm eval --json")
    p.add_argument("--names", nargs="+", help="row names (default: each result's planner)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--scenario", help="tabulate this scenario's results instead of the overall ones")
    group.add_argument("--slice", help="tabulate this slice's results (e.g. hidden_hazard) instead")
    p.add_argument("--out", help="also write the table to this file")
    p.set_defaults(func=cmd_table)

    p = sub.add_parser("frames", help="where plans collide: per sequence and scenario, from `eval "
                                      "--frames` files of the same world side by side")
    p.add_argument("files", nargs="+", help="JSON Lines files written by v2x-vlm eval --frames")
    p.add_argument("--names", nargs="+", help="column names (default: each file's stem)")
    p.add_argument("--slice", help="only the frames of this slice (e.g. hidden_hazard)")
    p.add_argument("--out", help="also write the Markdown table to this file")
    p.add_argument("--json", help="also write the numbers to this JSON file")
    p.set_defaults(func=cmd_frames)

    p = sub.add_parser("describe", help="caption each ego image with a Florence-2 (training descriptions)")
    _dataset_args(p)
    p.add_argument("--model", required=True, help="describer model directory (or hub id)")
    p.add_argument("--out", required=True, help="output JSONL, one description per vehicle frame")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--batch-size", type=int, default=8, help="images captioned per batch")
    p.add_argument("--max-new-tokens", type=int, default=96, help="caption length limit in tokens")
    p.set_defaults(func=cmd_describe)

    p = sub.add_parser("play", help="play a bag from `v2x-vlm bag` into ROS 2 with /clock "
                                    "(no `ros2 bag` needed)")
    p.add_argument("bag", help="bag directory (v2x-vlm bag DATA BAG)")
    p.add_argument("--rate", type=float, default=1.0, help="real-time factor")
    p.add_argument("--step", action="store_true",
                   help="publish a sample, wait for its plan on --path-topic, go on "
                        "(every frame planned once)")
    p.add_argument("--out", help="JSON file for the plans received and their latency")
    p.add_argument("--path-topic", default="/v2x/planning/path", help="the vehicle node's planned path")
    p.add_argument("--link-topic", default="/v2x/roadside/sent",
                   help="step mode: the roadside link to wait on ('' when no roadside_node runs)")
    p.add_argument("--link-message", choices=("compressed", "raw"), default="compressed",
                   help="what roadside_node sends (raw for roadside_codec:=raw)")
    p.add_argument("--roadside-rate-hz", type=float, default=2.0, help="roadside_node's rate_hz")
    p.add_argument("--planning-rate-hz", type=float, default=10.0, help="vehicle_node's planning_rate_hz")
    p.add_argument("--timeout", type=float, default=20.0, help="step mode: longest wait for a plan (s)")
    p.add_argument("--settle", type=float, default=0.03,
                   help="step mode: seconds for the nodes to take in the ego image before /clock "
                        "advances (and the sample's other messages, with --no-confirm-intake)")
    p.add_argument("--jump-settle", type=float, default=0.5,
                   help="step mode with --no-confirm-intake: seconds for the nodes to take in /clock's "
                        "jump to a new sequence before its first messages")
    p.add_argument("--no-confirm-intake", dest="confirm_intake", action="store_false",
                   help="step mode: do not wait for vehicle_node's /diagnostics counts to show a "
                        "sample's inputs taken in before its ego image (pause --settle instead)")
    p.add_argument("--resend", type=float, default=3.0,
                   help="step mode: publish a sample's inputs again when vehicle_node has not counted "
                        "them in after this many seconds (a best-effort message lost; 'resent' in the "
                        "output)")
    p.add_argument("--max-samples", type=int, help="stop after this many samples")
    p.add_argument("--max-gap", type=float, default=2.0,
                   help="real time: skip gaps longer than this (s) between samples (sequences minutes apart)")
    p.set_defaults(func=cmd_play)

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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (DatasetError, ConfigError) as exc:
        print(f"v2x-vlm: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
