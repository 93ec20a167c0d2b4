"""Subcommands that run the onboard services without ROS or time them: ``replay``,
``build-engine``, ``bench`` and ``soak``."""

from __future__ import annotations

import json
from pathlib import Path

from v2x_vlm_ros.cli.common import (add_dataset_args, demo_model, image_size_arg, open_dataset,
                                    write_json)
from v2x_vlm_ros.config import ConfigError


def cmd_replay(args) -> int:
    from v2x_vlm_ros.model.modeling import ModelLoadError
    from v2x_vlm_ros.runtime.roadside import RoadsideConfig
    from v2x_vlm_ros.tools.replay import ReplayOptions, replay

    try:
        link = RoadsideConfig(scale=args.roadside_scale, codec=args.roadside_codec,
                              quality=args.roadside_quality, rate_hz=args.roadside_rate)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    options = ReplayOptions(model=args.model or demo_model(), out=args.out, realtime=args.realtime,
                            roadside=link, no_roadside=args.no_roadside, describer=args.describer,
                            describer_rate_hz=args.describer_rate, device=args.device,
                            collision=args.collision, refine=not args.no_refine)
    source = Path(args.root)
    dataset = None
    if not (source / "metadata.yaml").is_file():  # a DAIR-V2X root, not a bag
        dataset = open_dataset(args)
    try:
        result = replay(source, options, dataset=dataset, progress=not args.quiet)
    except ModelLoadError as exc:
        raise ConfigError(str(exc)) from None
    print((Path(args.out) / "metrics.md").read_text(), end="")
    print(f"wrote {args.out}: predictions.mcap, metrics.json, metrics.md, "
          f"{len(result['replay']['pictures'])} pictures, {result['replay']['video'] or 'no video'}")
    return 0


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
    write_json(args.json, result)
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
        options = SoakOptions(frames=args.frames, model=args.model or demo_model(), data=args.data,
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
    write_json(args.json, result)
    print((Path(args.out) / "soak.md").read_text(encoding="utf-8"), end="")
    print(summary_line(result))
    print(f"wrote {args.out}: soak.json, soak.md, memory.png")
    return 0 if result["passed"] else 1


def add_parsers(sub) -> None:
    p = sub.add_parser("replay", help="run the onboard services on a DAIR-V2X root or a bag, without ROS")
    add_dataset_args(p)
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
    p.add_argument("--image-size", type=image_size_arg, default=(1920, 1080), help="camera images, WxH")
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
