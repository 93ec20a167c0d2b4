"""``v2x-vlm experiments``: the paper's Tables 1-5 on any dataset in the DAIR-V2X layout.

Every number comes from ``eval.evaluate.score`` (the UniV2X metrics, REFERENCE §3) run
over the same samples with different planners; what changes between rows is the planner
or what its inputs go through (``eval.perturb``):

- Table 1: the model, the constant-velocity baseline, the ego-only model (a sibling
  ``<model>-ego-only`` directory when there is one, else the fused model with the roadside
  half blanked, labelled so) and the teacher; plus the rows of the ``occluded_crossing``
  scenario, where the roadside view matters, when the data has it. BPS: the roadside
  images as stored, at 2 Hz.
- Table 2: the roadside image through ``RoadsideService`` at s = 1, 0.5, 0.2, 0.1.
- Table 3: roadside Gaussian noise, description-word perturbation, both.
- Table 4: the engine's stage times of the Table 1 model run.
- Table 5: the ``--ablation NAME=DIR`` checkpoints, and the training command of each switch.
  A row may also be given as ``NAME=FILE.json``, the ``v2x-vlm eval --planner model --json``
  result of its checkpoint, checked to have scored the same frames (``eval.fingerprint``) the
  same way: ten 33-minute trainings do not fit one session, their results do.
- Table 6: the inference-time ablations (roadside grey / another sequence's / none, empty
  description) next to the full model, overall and on the hidden-hazard slice.

Every run also scores the dataset's slices (``eval.slices``: the hidden-hazard frames of a
synthetic world with its visibility sidecar); Table 1 adds their rows.

The tables themselves are in ``eval.experiment_tables``, the planner wrappers in
``eval.experiment_planners``, the input transforms in ``eval.perturb`` and the Markdown and
the plot in ``eval.experiment_report``; this module holds the options, the samples, the
loaded models and the runs (each evaluated once, and reused by the tables that show it).
"""

from __future__ import annotations

import datetime
import json
import re
import subprocess
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from v2x_vlm_ros.eval import experiment_tables
from v2x_vlm_ros.eval.evaluate import ROADSIDE_RATE_HZ, score
from v2x_vlm_ros.eval.experiment_planners import ExperimentPlanner, StageRecorder, latency_summary
from v2x_vlm_ros.eval.experiment_tables import SCALES, SWITCHES, train_command
from v2x_vlm_ros.eval.fingerprint import fingerprint
from v2x_vlm_ros.eval.metrics import HORIZONS, L2_CONVENTION
from v2x_vlm_ros.eval.perturb import BlankRoadside, description_vocabulary, sample_key
from v2x_vlm_ros.eval.slices import SliceScores, dataset_slices
from v2x_vlm_ros.runtime.transmission import stored_stream_cost

__all__ = ["ExperimentError", "ExperimentOptions", "ExperimentPlanner", "Experiments", "SCALES", "SWITCHES",
           "StageRecorder", "latency_summary", "parse_ablations", "parse_tables", "run_experiments",
           "train_command"]

TABLES = (1, 2, 3, 4, 5, 6)
DEFAULT_TRAIN_CONFIG = "config/train_synthetic_student.yaml"
SCHEMA = "v2x_vlm_ros/experiments/1"
PLOT = "l2_vs_bandwidth.png"
BLANKED = "none: the model with the roadside half blanked"


class ExperimentError(ValueError):
    """Options or data the experiments cannot run with."""


@dataclass
class ExperimentOptions:
    root: str = "data/sample"
    model: str | None = None  # None: the demo model
    teacher: str | None = None
    ego_only_model: str | None = None  # None: <model>-ego-only when it exists, else blanked
    ablations: dict[str, str] = field(default_factory=dict)
    out: str = "out/experiments"
    split: str | None = None
    split_file: str | None = None
    max_samples: int | None = None
    seed: int = 0
    device: str = "cpu"
    tables: tuple[int, ...] = TABLES
    batch_size: int = 8
    collision: str = "univ2x"
    refine: bool = True
    train_config: str = DEFAULT_TRAIN_CONFIG
    protocol: str = "auto"  # time, univ2x or auto (univ2x on real V2X-Seq-SPD)

    def __post_init__(self):
        if self.model is None:
            from v2x_vlm_ros.runtime.factory import default_model_dir

            self.model = default_model_dir()
        self.tables = tuple(sorted(set(int(t) for t in self.tables)))
        if not self.tables or not set(self.tables) <= set(TABLES):
            raise ExperimentError(f"tables must be a non-empty subset of {TABLES}, got {self.tables}")
        if self.max_samples is not None and self.max_samples < 1:
            raise ExperimentError(f"--max-samples must be >= 1, got {self.max_samples}")
        if self.batch_size < 1:
            raise ExperimentError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.collision not in ("univ2x", "obb"):
            raise ExperimentError(f"collision must be univ2x or obb, got {self.collision!r}")
        if self.protocol not in ("auto", "time", "univ2x"):
            raise ExperimentError(f"protocol must be auto, time or univ2x, got {self.protocol!r}")
        self.ablations = {normalise_ablation(k): str(v) for k, v in self.ablations.items()}


def normalise_ablation(name: str) -> str:
    key = str(name).strip().lower().replace("-", "_")
    if not re.fullmatch(r"[a-z0-9_]+", key):
        raise ExperimentError(f"ablation name must be letters, digits, _ or -, got {name!r}")
    return key


def parse_ablations(items: list[str]) -> dict[str, str]:
    """``["no_fusion=DIR", ...]`` -> {name: DIR}."""
    out = {}
    for item in items or []:
        name, sep, directory = item.partition("=")
        if not sep or not name.strip() or not directory.strip():
            raise ExperimentError(f"--ablation expects NAME=DIR, got {item!r}")
        out[normalise_ablation(name)] = directory.strip()
    return out


def parse_tables(text: str) -> tuple[int, ...]:
    try:
        tables = tuple(int(t) for t in str(text).split(",") if t.strip())
    except ValueError:
        raise ExperimentError(f"--tables expects numbers like 1,2,3,4,5, got {text!r}") from None
    return tables


def versions() -> dict:
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import cv2
    import torch
    import transformers

    info = {"python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__,
            "transformers": transformers.__version__, "opencv": cv2.__version__}
    try:
        info["v2x_vlm_ros"] = version("v2x_vlm_ros")
    except PackageNotFoundError:
        info["v2x_vlm_ros"] = None
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                                timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10)
        if commit.returncode == 0:
            info["git_commit"] = commit.stdout.strip()
            info["git_dirty"] = bool(dirty.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def machine() -> dict:
    import torch

    from v2x_vlm_ros.eval.machine import machine as base_machine

    return {**base_machine(), "torch_threads": torch.get_num_threads()}


# -- the experiments ----------------------------------------------------------------------------


class Experiments:
    def __init__(self, options: ExperimentOptions, progress: bool = True):
        self.options = options
        self.progress = progress
        self.timings: dict = {"tables_s": {}, "model_load_s": {}, "runs_s": {}}
        self._planners: dict = {}
        self._runs: dict[str, dict] = {}
        self.sources: dict[str, str] = {}
        self.machine = machine()

    # -- data and models

    def open(self) -> None:
        from v2x_vlm_ros.data.dair import DairV2XDataset, DatasetConfig

        opts = self.options
        ds = DairV2XDataset(opts.root, split=opts.split, split_file=opts.split_file, progress=self.progress,
                            config=DatasetConfig(protocol=opts.protocol))
        if ds.protocol == "univ2x" and opts.collision != "univ2x":
            raise ExperimentError(f"collision {opts.collision} belongs to the time protocol; the univ2x "
                                  "protocol uses UniV2X's raster test")
        n = len(ds)
        if n == 0:
            raise ExperimentError(f"{opts.root}: no samples"
                                  f"{'' if opts.split is None else f' in split {opts.split!r}'}")
        if opts.max_samples is None or opts.max_samples >= n:
            picks, selection = list(range(n)), f"all {n}"
        else:  # evenly spaced, as the trainer's validation picks them
            picks = [int(i) for i in np.linspace(0, n - 1, opts.max_samples).round().astype(int)]
            selection = f"{len(picks)} evenly spaced of {n}"
        self.samples = [ds[i] for i in tqdm(picks, desc="samples", unit="sample", disable=not self.progress)]
        self.dataset = ds
        self.stored_cost = stored_stream_cost(sorted({s.roadside_image_path for s in self.samples}),
                                              ROADSIDE_RATE_HZ)
        self.vocabulary = description_vocabulary(ds.descriptions.values())
        self.slices = dataset_slices(opts.root)
        split = "" if ds.split is None else f", split {ds.split.name}"
        self.on = f"{len(self.samples)} samples of {opts.root}{split}, protocol {ds.protocol}"
        self.dataset_info = {
            "root": str(ds.root), "layout": ds.layout, "split": None if ds.split is None else ds.split.name,
            "protocol": ds.protocol,
            "split_file": None if ds.split is None else str(ds.split.path),
            "samples_available": n, "samples_used": len(self.samples), "selection": selection,
            "scenarios": dict(sorted(Counter(s.scenario or "unknown" for s in self.samples).items())),
            "with_description": sum(bool(s.description) for s in self.samples),
            "description_vocabulary": len(self.vocabulary),
            "skipped": ds.skips.counts, "sample_keys": [sample_key(s) for s in self.samples],
            "slices": {sl.name: sum(s in sl for s in self.samples) for sl in self.slices},
            "fingerprint": fingerprint(self.samples),
        }

    @property
    def report(self) -> dict:
        """The protocol and whether these results stand next to the published tables."""
        from v2x_vlm_ros.eval.protocols import dataset_report

        return dataset_report(self.dataset)

    def protocol_report(self) -> dict:
        report = self.report
        return {"name": report["protocol"], "comparability": report["comparability"],
                "details": report["protocol_details"]}

    def model(self, key: str, directory: str):
        """A loaded ``ModelPlanner`` (once per key), warmed up so that timings start clean."""
        if key not in self._planners:
            from v2x_vlm_ros.runtime.planner import ModelPlanner
            from v2x_vlm_ros.runtime.refine import RefineConfig, Refiner

            t0 = time.perf_counter()
            refiner = Refiner(RefineConfig()) if self.options.refine else None
            planner = ModelPlanner(directory, device=self.options.device,
                                   batch_size=self.options.batch_size, refiner=refiner)
            planner.engine.warm_up()
            self.timings["model_load_s"][key] = time.perf_counter() - t0
            self._planners[key] = planner
            self.sources[key] = str(directory)
        return self._planners[key]

    def evaluate(self, key: str, planner) -> dict:
        """Metrics of ``planner`` on the samples (once per key)."""
        if key in self._runs:
            return self._runs[key]
        t0 = time.perf_counter()
        slices = SliceScores(self.slices, self.options.collision, protocol=self.dataset.protocol)
        overall, per_scenario = score(self.samples, planner, self.options.collision, self.progress,
                                      self.options.batch_size, total=len(self.samples), observers=[slices],
                                      protocol=self.dataset.protocol)
        result = overall.result()
        result["comparability"] = self.report["comparability"]
        result["slices"] = slices.result()
        result["planner"] = planner.name
        if planner.uses_roadside:
            result["transmission"] = {"uses_roadside": True, "source": "stored files", **self.stored_cost}
        else:
            result["transmission"] = {"uses_roadside": False, "formula_bps": 0.0, "measured_bps": 0.0}
        result["by_scenario"] = {name: m.result() for name, m in sorted(per_scenario.items())}
        if isinstance(planner, ExperimentPlanner):
            result["decode_failures"] = planner.decode_failures
            result["roadside_blank"] = planner.roadside_blank
            if planner.roadside_previous_missing:  # a model that reads motion, at sequences' starts
                result["roadside_previous_missing"] = planner.roadside_previous_missing
            result["model_dir"] = self.sources.get(key.split(":")[0])
            result["latency"] = planner.latency()
        self._runs[key] = result
        self.timings["runs_s"][key] = time.perf_counter() - t0
        return result

    def imported(self, key: str, path: str) -> dict:
        """The result in ``path``, a ``v2x-vlm eval --json`` file, as the run ``key`` (a Table 5
        row trained and scored in another session or on another machine), once checked to be
        what these experiments would have computed: a model's plan, not ablated at inference,
        scored on the same frames (``dataset.fingerprint``) under the same protocol, collision
        test, refinement and token choice."""
        if key in self._runs:
            return self._runs[key]
        try:
            result = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ExperimentError(f"{path}: not a readable eval JSON ({exc})") from None
        needed = ("num_samples", "l2", "collision", "slices", "dataset", "model", "refine")
        missing = [k for k in needed if not isinstance(result, dict) or k not in result]
        if missing:
            raise ExperimentError(f"{path}: not the JSON of `v2x-vlm eval --planner model ... --json` "
                                  f"(missing {', '.join(missing)})")
        opts = self.options
        checks = [
            ("dataset.fingerprint", (result["dataset"] or {}).get("fingerprint"),
             self.dataset_info["fingerprint"],
             f"scored on other frames than the {len(self.samples)} of {opts.root}"),
            ("protocol", result.get("protocol"), self.dataset.protocol, "another protocol"),
            ("collision_method", result.get("collision_method"), opts.collision, "another collision test"),
            ("refine", result["refine"], opts.refine, "refinement set otherwise"),
            ("token_choice_given", result.get("token_choice_given"), None,
             "--token-choice given (the experiments read each model as it decodes)"),
        ]
        for field_name, got, want, why in checks:
            if got != want:
                raise ExperimentError(f"{path}: {why} ({field_name} {got!r}, these experiments {want!r})")
        ablated = {k: v for k, v in (result.get("ablation") or {}).items() if v}
        if ablated:
            raise ExperimentError(f"{path}: planned with inputs ablated at inference ({ablated}); "
                                  "a Table 5 row is the model as it is")
        result = {**result, "imported_from": str(path)}
        self._runs[key] = result
        self.sources[key] = str(result["model"])
        return result

    def clean(self) -> dict:
        base = self.model("model", self.options.model)
        return self.evaluate("model", ExperimentPlanner(base, "model"))

    def ego_only_dir(self) -> tuple[str | None, str]:
        """(directory of the ego-only checkpoint or None, where it came from)."""
        opts = self.options
        if opts.ego_only_model is not None:
            return opts.ego_only_model, "given (--ego-only-model)"
        sibling = Path(opts.model).with_name(Path(opts.model).name + "-ego-only")
        if sibling.is_dir():
            return str(sibling), "sibling directory <model>-ego-only"
        return None, BLANKED

    def ego_only(self) -> tuple[str, str, dict]:
        """(row label, run key, result) of the ego-only row."""
        directory, _ = self.ego_only_dir()
        if directory is not None:
            planner = ExperimentPlanner(self.model("ego_only", directory), "ego-only model")
            return "ego-only model", "ego_only", self.evaluate("ego_only", planner)
        label = "model, roadside blanked (no ego-only checkpoint)"
        planner = ExperimentPlanner(self.model("model", self.options.model), label, [BlankRoadside()],
                                    uses_roadside=False)
        return label, "model:blanked", self.evaluate("model:blanked", planner)

    # -- everything

    def run(self) -> dict:
        from v2x_vlm_ros.eval.experiment_report import plot_l2_vs_bandwidth, render_markdown

        t_start = time.perf_counter()
        created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        self.open()
        if 5 in self.options.tables:  # a Table 5 file that does not fit fails now, not after the runs
            for name, path in self.options.ablations.items():
                if path.endswith(".json"):
                    self.imported(f"ablation_{name}", path)
        tables = {}
        for number in tqdm(self.options.tables, desc="tables", unit="table", disable=not self.progress):
            t0 = time.perf_counter()
            tables[f"table{number}"] = getattr(experiment_tables, f"table{number}")(self)
            self.timings["tables_s"][f"table{number}"] = time.perf_counter() - t0
        models = {}
        for key, planner in self._planners.items():
            s = planner.settings
            models[key] = {"dir": self.sources[key], "fusion": s.fusion, "scene_text": s.scene_text,
                           "image_size": list(s.image_size), "backend": planner.engine.backend.line()}
        self.timings["total_s"] = time.perf_counter() - t_start
        result = {
            "schema": SCHEMA, "created": created, "seed": self.options.seed,
            "options": {**asdict(self.options), "tables": list(self.options.tables)},
            "versions": versions(), "machine": self.machine, "dataset": self.dataset_info, "models": models,
            "protocol": {**self.protocol_report(),
                         "collision_method": self.options.collision, "l2_convention": L2_CONVENTION,
                         "horizon_steps": dict(HORIZONS), "roadside_rate_hz": ROADSIDE_RATE_HZ,
                         "batch_size": self.options.batch_size, "refine": self.options.refine,
                         "device": self.options.device},
            "tables": tables, "runs": self._runs, "timings": self.timings,
        }
        out = Path(self.options.out)
        out.mkdir(parents=True, exist_ok=True)
        files = ["tables.md", "results.json"]
        if plot_l2_vs_bandwidth(result, out / PLOT):
            files.append(PLOT)
        elif (out / PLOT).is_file():  # an earlier run's plot would not match these tables
            (out / PLOT).unlink()
        result["files"] = files
        (out / "tables.md").write_text(render_markdown(result), encoding="utf-8")
        (out / "results.json").write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
        return result


def run_experiments(options: ExperimentOptions, progress: bool = True) -> dict:
    """Run the tables of ``options`` and write ``tables.md``, ``results.json`` and
    ``l2_vs_bandwidth.png`` (when Table 2 ran) into ``options.out``; returns results.json's
    content."""
    return Experiments(options, progress).run()
