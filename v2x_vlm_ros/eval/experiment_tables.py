"""The five tables of ``v2x-vlm experiments``, each a function of an ``Experiments`` run
(``eval.experiments``), which owns the samples, the loaded models and the cached runs.

- Table 1: the model, the constant-velocity baseline, the ego-only model and the teacher,
  plus the ``occluded_crossing`` rows (the case where the roadside view matters).
- Table 2: the roadside image through ``RoadsideService`` at each s of ``SCALES``.
- Table 3: roadside noise, description-word perturbation, both (``eval.perturb``).
- Table 4: the engine's stage times of the Table 1 model run.
- Table 5: ablation checkpoints, and the training command of every switch.
- Table 6: the inference-time ablations of the model's inputs (roadside grey, another
  sequence's, none; empty description) beside the full model, overall and on the
  hidden-hazard slice (``eval.slices``) where only the roadside view tells.

Each table is a dict with a one-line ``caption`` (what was measured, on what) and rows of
plain numbers; ``run`` in a row names the full result in results.json's ``runs``.
"""

from __future__ import annotations

from v2x_vlm_ros.eval.evaluate import ROADSIDE_RATE_HZ
from v2x_vlm_ros.eval.experiment_planners import ExperimentPlanner
from v2x_vlm_ros.eval.metrics import HORIZONS
from v2x_vlm_ros.eval.perturb import (BlankRoadside, DescriptionPerturbation, EmptyDescription, GreyRoadside,
                                      RoadsideLink, RoadsideNoise, SwapRoadside)
from v2x_vlm_ros.eval.slices import HIDDEN_HAZARD
from v2x_vlm_ros.runtime.baselines import ConstantVelocityPlanner

#: Table 2's roadside downsampling factors (the paper's).
SCALES = (1.0, 0.5, 0.2, 0.1)
#: Table 3: roadside noise standard deviations (0..255 pixel values) and the word probability.
NOISE_STDS = (5.0, 10.0)
TEXT_P = 0.1
#: The scenario whose rows Table 1 adds: a crossing the ego camera cannot see.
FOCUS_SCENARIO = "occluded_crossing"
#: Table 5: ablation name -> the TrainConfig switch it turns off.
SWITCHES = {"no_fusion": "fusion", "no_scene_text": "scene_text", "no_alignment": "alignment",
            "no_distillation": "distillation", "no_augmentation": "augment_resolution",
            "no_roadside_dropout": "roadside_dropout", "no_modality_weights": "modality_weights",
            "no_pair_weight": "pair_weight", "no_hazard_weight": "hazard_weight",
            "no_hazard_probe": "lambda_hazard", "no_objects_probe": "lambda_objects",
            "no_speed_reference": "codec_reference", "no_roadside_crop": "roadside_crop",
            "no_roadside_motion": "roadside_motion_s", "no_vision_training": "freeze_vision"}
#: The overrides of switches that are not turned off by ``SWITCH=false``.
#: (no_fusion: the hazard probe reads the roadside half of the fused image, so it goes too, and
#: so do the roadside crop and motion, which a model without the roadside view refuses.)
OVERRIDES = {"no_fusion": ("fusion=false", "lambda_hazard=0", "roadside_crop=null", "roadside_motion_s=null",
                           "roadside_motion_layout=stack"),
             "no_augmentation": ("augment_resolution=null", "augment_jpeg_quality=null"),
             "no_roadside_dropout": ("roadside_dropout=0",), "no_pair_weight": ("pair_weight=1",),
             "no_hazard_weight": ("hazard_weight=1",), "no_hazard_probe": ("lambda_hazard=0",),
             "no_objects_probe": ("lambda_objects=0",),
             # the whole roadside image instead of the recipe's box of it
             "no_roadside_crop": ("roadside_crop=null",),
             # one roadside frame (the layout is the default's, which needs no motion)
             "no_roadside_motion": ("roadside_motion_s=null", "roadside_motion_layout=stack"),
             # the vision encoder kept as the ego-only student left it
             "no_vision_training": ("freeze_vision=true",),
             # absolute waypoints (the paper's tokens) in the previous codec's range; the
             # teacher writes speed-relative tokens, so this row trains without distillation:
             # compare it with no_distillation
             "no_speed_reference": ("codec_reference=none", "codec_x_range=[-10,80]", "codec_bins=400",
                                    "distillation=false")}
#: Table 6: the inference-time ablations (``v2x-vlm eval --roadside / --description``).
#: A grey (blank) roadside frame is planned as none, as on the vehicle; "kept" feeds it to the
#: model itself (``eval --keep-blank-roadside``).
INPUT_ABLATIONS = (("roadside grey", "roadside=grey"),
                   ("roadside grey, fed to the model", "roadside=grey-kept"),
                   ("roadside of another sequence", "roadside=swap"),
                   ("no roadside (ego-only input)", "roadside=none"),
                   ("empty description", "description=empty"))
KEYS = (*HORIZONS, "avg")
STAGE_LABELS = {"preprocess": "preprocessing (fusion, resize, normalise; prompt tokens)",
                "vision": "vision tower + projector", "encoder": "text encoder",
                "decoder": "decoder (constrained greedy, static KV cache)",
                "model": "model (generate: vision + encoder + decoder)",
                "decode": "trajectory decode (tokens -> waypoints)", "refine": "refinement"}


def train_command(name: str, train_config: str) -> str | None:
    """The ``v2x-vlm train`` command that produces the ablation ``name`` (None: unknown)."""
    switch = SWITCHES.get(name)
    if switch is None:
        return None
    out = f"runs/ablation-{name.replace('_', '-')}"
    overrides = OVERRIDES.get(name, (f"{switch}=false",))
    return f"v2x-vlm train {train_config} " + " ".join(f"--override {o}" for o in overrides) + \
        f" --override output_dir={out}"


def ablation_model_dir(name: str) -> str:
    return f"runs/ablation-{name.replace('_', '-')}/model"


def compact(result: dict) -> dict:
    """The numbers a table row shows."""
    t = result.get("transmission") or {}
    return {"num_samples": result["num_samples"], "l2": dict(result["l2"]),
            "l2_valid_only": dict(result.get("l2_valid_only") or {}),
            "collision": dict(result["collision"]), "formula_bps": t.get("formula_bps"),
            "measured_bps": t.get("measured_bps")}


def _delta(a: dict, b: dict) -> dict:
    return {k: None if a.get(k) is None or b.get(k) is None else a[k] - b[k] for k in KEYS}


def table1(ex) -> dict:
    rows = [("V2X-VLM (model)", "model", ex.clean())]
    rows.append(("constant velocity", "constant_velocity",
                 ex.evaluate("constant_velocity", ConstantVelocityPlanner())))
    rows.append(ex.ego_only())
    if ex.options.teacher:
        teacher = ExperimentPlanner(ex.model("teacher", ex.options.teacher), "teacher")
        rows.append(("teacher", "teacher", ex.evaluate("teacher", teacher)))
    scenario = FOCUS_SCENARIO if any(FOCUS_SCENARIO in r["by_scenario"] for _, _, r in rows) else None
    scenario_rows = []
    for name, key, r in rows if scenario else []:
        if scenario in r["by_scenario"]:
            sub = {**r["by_scenario"][scenario], "transmission": r["transmission"]}
            scenario_rows.append({"method": f"{name}, {scenario}", "run": key, **compact(sub)})
    slice_rows = []
    for name, key, r in rows:
        for slice_name, sub in (r.get("slices") or {}).items():
            slice_rows.append({"method": f"{name}, {slice_name}", "run": key,
                               **compact({**sub, "transmission": r["transmission"]})})
    bps = ex.stored_cost
    return {
        "slice_rows": slice_rows,
        "caption": (f"Planning error L2 (m) and collision rate (%) at 2.5/3.5/4.5 s (UniV2X, one waypoint "
                    f"per horizon; collision test {ex.options.collision}) on {ex.on}; BPS of the "
                    f"roadside stream at {ROADSIDE_RATE_HZ:g} Hz as stored ({bps['width']}x{bps['height']}"
                    f" JPEG): the paper's s²·W·H·C·f and measured (mean file size x rate)."),
        "rows": [{"method": name, "run": key, **compact(r)} for name, key, r in rows],
        "ego_only_source": ex.ego_only_dir()[1],
        "scenario": scenario,
        "scenario_rows": scenario_rows,
    }


def table2(ex) -> dict:
    base = ex.model("model", ex.options.model)
    caption = (f"Roadside downsampling on {ex.on}: the roadside image downsampled by s and "
               f"JPEG-encoded by RoadsideService (RoadsideConfig defaults), decoded, then fused; "
               f"BPS at {ROADSIDE_RATE_HZ:g} Hz by the formula s²·W·H·C·f and measured (encoded bytes "
               f"x rate); latency: the engine's mean per frame (batch {ex.options.batch_size}), "
               f"link encode/decode apart.")
    if not base.uses_roadside:
        return {"caption": caption, "rows": [], "skipped": "the model does not read the roadside image "
                "(fusion off): downsampling it changes nothing"}
    rows = []
    for s in SCALES:
        link = RoadsideLink(s, ROADSIDE_RATE_HZ)
        key = f"model:link_s{s:g}"
        result = ex.evaluate(key, ExperimentPlanner(base, f"model, s = {s:g}", [link]))
        cost = link.cost()
        result["transmission"] = {"uses_roadside": True, "source": "RoadsideService", **cost}
        lat = result["latency"]
        rows.append({"scale": s, "run": key, **compact(result), "mean_bytes": cost["mean_bytes"],
                     "original_size": cost["original_size"], "sent_size": cost["sent_size"],
                     "codec": cost["codec"], "quality": cost["quality"],
                     "latency": {"model_ms": lat["total_ms"], "fps": lat["fps"], **link.timing()}})
    return {"caption": caption, "rows": rows}


def table3(ex) -> dict:
    base = ex.model("model", ex.options.model)
    clean = ex.clean()
    seed = ex.options.seed
    conditions = [(f"noise std {s:g}", s, 0.0) for s in NOISE_STDS]
    conditions.append((f"text p = {TEXT_P:g}", 0.0, TEXT_P))
    conditions += [(f"noise std {s:g} + text p = {TEXT_P:g}", s, TEXT_P) for s in NOISE_STDS]
    rows = [{"condition": "clean", "noise_std": 0.0, "text_p": 0.0, "run": "model", **compact(clean),
             "delta_l2": _delta(clean["l2"], clean["l2"]),
             "delta_collision": _delta(clean["collision"], clean["collision"]), "text": None}]
    for name, std, p in conditions:
        transforms, text = [], None
        if std:
            transforms.append(RoadsideNoise(std, seed))
        if p:
            text = DescriptionPerturbation(p, seed, ex.vocabulary)
            transforms.append(text)
        key = f"model:noise{std:g}_text{p:g}"
        result = ex.evaluate(key, ExperimentPlanner(base, f"model, {name}", transforms))
        rows.append({"condition": name, "noise_std": std, "text_p": p, "run": key, **compact(result),
                     "delta_l2": _delta(result["l2"], clean["l2"]),
                     "delta_collision": _delta(result["collision"], clean["collision"]),
                     "text": None if text is None else text.stats()})
    notes = []
    if not base.uses_roadside:
        notes.append("the model does not read the roadside image: the noise cannot change anything")
    if not base.settings.scene_text:
        notes.append("the model's prompt has no scene description: the text perturbation cannot change "
                     "anything")
    return {
        "caption": (f"Robustness on {ex.on}: Gaussian noise (std on 0..255, rounded, clipped) on the "
                    f"roadside image; each scene-description word dropped or replaced with probability "
                    f"p (state, command and task text untouched); seeded per sample from seed {seed}; "
                    f"Δ = perturbed - clean."),
        "rows": rows, "notes": notes,
    }


def table4(ex) -> dict:
    base = ex.model("model", ex.options.model)
    lat = ex.clean()["latency"]
    total = lat["total_ms"]
    stages = [{"stage": s, "label": STAGE_LABELS.get(s, s), "mean_ms": ms,
               "share": ms / total if total else None} for s, ms in lat["stages_ms"].items()]
    m = ex.machine
    device = ex.options.device
    hardware = m.get("gpu") if device.startswith("cuda") and m.get("gpu") else m["cpu"]
    return {
        "caption": (f"Latency per frame of the planning step (the engine, from decoded images to the "
                    f"refined trajectory) on {device} ({hardware}), backend "
                    f"{base.engine.backend.used}, batch {ex.options.batch_size} (a batch's stage "
                    f"times split evenly over its frames), {lat['frames']} frames of {ex.on}."),
        "device": device, "hardware": hardware, "backend": base.engine.backend.line(),
        "batch_size": ex.options.batch_size, "frames": lat["frames"], "stages": stages,
        "total_ms": total, "fps": lat["fps"], "image_read_ms": lat["image_read_ms"], "run": "model",
    }


def table5(ex) -> dict:
    opts = ex.options
    reference = {"name": "full model", "switch": None, "status": "evaluated", "model_dir": opts.model,
                 "command": None, "run": "model", **compact(ex.clean()), "hidden_hazard": _hidden(ex.clean())}
    names = list(SWITCHES) + [n for n in opts.ablations if n not in SWITCHES]
    rows = []
    for name in names:
        row = {"name": name, "switch": SWITCHES.get(name), "command": train_command(name, opts.train_config),
               "use": None if name not in SWITCHES else f"--ablation {name}={ablation_model_dir(name)}"}
        directory = opts.ablations.get(name)
        key = f"ablation_{name}"
        if directory is not None and directory.endswith(".json"):  # scored earlier by `v2x-vlm eval`
            result = ex.imported(key, directory)
            row.update(status=f"evaluated earlier ({directory})", model_dir=result["model"], run=key,
                       **compact(result), hidden_hazard=_hidden(result))
        elif directory is not None:
            planner = ExperimentPlanner(ex.model(key, directory), name)
            result = ex.evaluate(key, planner)
            row.update(status="evaluated", model_dir=directory, run=key, **compact(result),
                       hidden_hazard=_hidden(result))
        elif name == "no_fusion" and ex.ego_only_dir()[0] is not None:
            result = ex.ego_only()[2]
            row.update(status="evaluated (the ego-only model)",
                       model_dir=ex.sources.get("ego_only"), run="ego_only", **compact(result),
                       hidden_hazard=_hidden(result))
        else:
            row.update(status="not trained", model_dir=None, run=None)
        rows.append(row)
    return {
        "caption": (f"Ablations on {ex.on}, each checkpoint evaluated as in Table 1; switches without "
                    f"a checkpoint are listed as not trained, with the command that trains one "
                    f"(config {opts.train_config})."),
        "train_config": opts.train_config, "reference": reference, "rows": rows,
    }


def _hidden(result: dict) -> dict | None:
    """The hidden-hazard slice's numbers of a run (None without the visibility sidecar)."""
    sub = (result.get("slices") or {}).get(HIDDEN_HAZARD)
    return None if sub is None else compact(sub)


def table6(ex) -> dict:
    """The model (and the teacher) with one input taken away at inference time."""
    models = [("model", "model", ex.options.model)]
    if ex.options.teacher:
        models.append(("teacher", "teacher", ex.options.teacher))
    rows = []
    for label, key, directory in models:
        base = ex.model(key, directory)
        clean = ex.evaluate(key, ExperimentPlanner(base, label))
        rows.append(_ablation_row(label, "none (full inputs)", key, clean, clean))
        if not base.uses_roadside:
            continue
        for name, spec in INPUT_ABLATIONS:
            transform = {"roadside=grey": GreyRoadside, "roadside=grey-kept": GreyRoadside,
                         "roadside=none": BlankRoadside, "description=empty": EmptyDescription}.get(spec)
            transform = transform() if transform is not None else SwapRoadside(
                ex.samples, base.engine.roadside_motion_s)
            kept = spec == "roadside=grey-kept"
            run = f"{key}:{spec}"
            planner = ExperimentPlanner(base, f"{label}, {transform.label}{', kept' if kept else ''}",
                                        [transform], uses_roadside=spec != "roadside=none",
                                        keep_blank_roadside=True if kept else None)
            rows.append(_ablation_row(label, name, run, ex.evaluate(run, planner), clean))
    slice_n = (rows[0]["hidden_hazard"] or {}).get("num_samples") if rows else None
    return {
        "caption": (f"Inference-time ablations on {ex.on}: each input taken away from the trained model "
                    f"(roadside image grey: planned as none, as a dead camera is on the vehicle, and "
                    f"fed to the model itself; another sequence's roadside frame, no roadside image, empty "
                    f"scene description); overall and on the hidden-hazard frames "
                    f"({slice_n if slice_n is not None else 'no visibility sidecar: n/a'} samples: a "
                    f"yielded-to agent seen by the roadside camera, not by the ego's); Δ = ablated - full."),
        "rows": rows,
    }


def _ablation_row(model: str, ablation: str, run: str, result: dict, clean: dict) -> dict:
    hidden = (result.get("slices") or {}).get(HIDDEN_HAZARD)
    clean_hidden = (clean.get("slices") or {}).get(HIDDEN_HAZARD)
    row = {"model": model, "ablation": ablation, "run": run, **compact(result),
           "delta_l2": _delta(result["l2"], clean["l2"]),
           "delta_collision": _delta(result["collision"], clean["collision"]),
           "hidden_hazard": None}
    if hidden is not None:
        row["hidden_hazard"] = {**compact(hidden), "delta_l2": _delta(hidden["l2"], clean_hidden["l2"]),
                                "delta_collision": _delta(hidden["collision"], clean_hidden["collision"])}
    return row
