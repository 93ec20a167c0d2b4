"""Subcommands that score planners: ``eval``, ``metric-cases``, ``experiments`` (the
paper's tables), ``table`` and ``frames``."""

from __future__ import annotations

import json
from pathlib import Path

from v2x_vlm_ros.cli.common import add_dataset_args, demo_model, open_dataset, write_json
from v2x_vlm_ros.config import ConfigError
from v2x_vlm_ros.model.codec import TOKEN_CHOICES


def cmd_eval(args) -> int:
    from v2x_vlm_ros.runtime.baselines import PLANNERS
    from v2x_vlm_ros.eval.evaluate import evaluate
    from v2x_vlm_ros.eval.metrics import format_markdown_table

    if args.planner == "model":
        if not args.model:
            raise ConfigError("--planner model needs --model DIR (a model directory or hub id)")
        from v2x_vlm_ros.model.modeling import ModelLoadError
        from v2x_vlm_ros.runtime.planner import ModelPlanner

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
    ds = open_dataset(args)
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
    write_json(args.json, result)
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
    write_json(args.json, result)
    print(format_summary(result), end="")
    agrees = result.get("expected_comparison", {}).get("agrees", True)
    return 1 if args.check and not agrees else 0


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
            root=args.root, model=args.model or demo_model(), teacher=args.teacher,
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


def add_parsers(sub) -> None:
    p = sub.add_parser("eval", help="score a planner with the UniV2X metrics (L2, collision)")
    add_dataset_args(p, protocol=True)
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
