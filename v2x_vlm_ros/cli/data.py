"""Subcommands that make or inspect data: ``synth``, ``dataset summary``, ``describe``,
``bag`` and ``play``."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from v2x_vlm_ros.cli.common import add_dataset_args, image_size_arg, open_dataset, write_json
from v2x_vlm_ros.config import ConfigError, load_section


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
    from v2x_vlm_ros.runtime.transmission import stored_stream_cost

    ds = open_dataset(args, check_images=args.check_images)
    summary = ds.summary(progress=not args.quiet)
    # what the roadside images would cost on the link, as stored, at the paper's 2 Hz
    summary["roadside_stream"] = stored_stream_cost(ds.roadside_image_paths())
    write_json(args.json, summary)
    shown = {k: v for k, v in summary.items() if k != "skipped_items"}
    print(json.dumps(shown, indent=2))
    for item in summary["skipped_items"][: args.show_skips]:
        print(f"skipped {item}")
    hidden = len(summary["skipped_items"]) - args.show_skips
    if hidden > 0:
        print(f"... and {hidden} more skipped items (all of them are in --json)")
    return 0


def cmd_bag(args) -> int:
    from v2x_vlm_ros.tools.bag import write_bag

    if Path(args.out).exists():  # before indexing a whole dataset
        raise ConfigError(f"{args.out}: output exists already (a rosbag2 is never overwritten); "
                          "remove it or choose another path")
    ds = open_dataset(args)
    try:
        summary = write_bag(ds, args.out, storage=args.storage, distro=args.distro, progress=not args.quiet)
    except (ValueError, FileExistsError, OSError) as exc:
        raise ConfigError(str(exc)) from None
    print(json.dumps(summary, indent=2, default=str))
    return 0


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


def cmd_describe(args) -> int:
    from v2x_vlm_ros.model.describer import SceneDescriber, describe_dataset
    from v2x_vlm_ros.model.modeling import ModelLoadError

    ds = open_dataset(args)
    try:
        describer = SceneDescriber(args.model, device=args.device, max_new_tokens=args.max_new_tokens)
    except ModelLoadError as exc:
        raise ConfigError(str(exc)) from None
    count = describe_dataset(ds, describer, args.out, batch_size=args.batch_size, progress=not args.quiet)
    print(f"wrote {count} descriptions to {args.out}")
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("synth", help="generate a synthetic cooperative world in the V2X-Seq-SPD layout")
    p.add_argument("out", help="output dataset root")
    p.add_argument("--sequences", type=int, help="number of sequences")
    p.add_argument("--seed", type=int, help="random seed (same seed, same bytes)")
    p.add_argument("--image-size", type=image_size_arg,
                   help="WIDTHxHEIGHT of both cameras (default 1920x1080)")
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
    add_dataset_args(p, protocol=True)
    p.add_argument("--check-images", action="store_true", help="decode every image (slow on real data)")
    p.add_argument("--json", help="write the summary, every skipped item included, to this file")
    p.add_argument("--show-skips", type=int, default=20, help="skipped items printed (default 20)")
    p.set_defaults(func=cmd_dataset_summary)

    p = sub.add_parser("bag", help="write a DAIR-V2X dataset as a rosbag2 (ros2 bag play on Humble/Jazzy)")
    add_dataset_args(p)
    p.add_argument("out", help="bag directory to create (must not exist)")
    p.add_argument("--storage", required=True, choices=("mcap", "sqlite3"),
                   help="mcap (Jazzy, metadata version 9) or sqlite3 (Humble, version 8)")
    p.add_argument("--distro", choices=("humble", "jazzy"),
                   help="message definitions (default: humble for sqlite3, jazzy for mcap)")
    p.set_defaults(func=cmd_bag)

    p = sub.add_parser("describe", help="caption each ego image with a Florence-2 (training descriptions)")
    add_dataset_args(p)
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
