"""Training configuration (Algorithm 2), loaded from the ``train:`` section of a YAML file.

The defaults are the paper's fine-tuning recipe (AdamW, lr 1e-6, batch 4, 10 epochs,
λ1 = 0.1, λ2 = 0.5, T = 2, frozen teacher, student vision encoder frozen); the files in
``config/`` override what a run changes, e.g. the synthetic-world recipes that train small
models from scratch with a larger learning rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from v2x_vlm_ros.model.codec import ORDERS, REFERENCES, CodecConfig
from v2x_vlm_ros.model.configuration import (PRESETS, SETTINGS_FILE, ModelSettings, check_crop,
                                             check_motion_layout, check_motion_s)


@dataclass
class TrainConfig:
    # -- data ---------------------------------------------------------------------------
    #: Dataset root (V2X-Seq-SPD or DAIR-V2X-C layout).
    data_root: str = "data/sample"
    #: Split names in the split file for training and per-epoch validation (None: all).
    train_split: str | None = "train"
    val_split: str | None = "val"
    #: DAIR-shaped split file, or "univ2x" for UniV2X's V2X-Seq-SPD split (shipped); default:
    #: split_datas/*.json under data_root (UniV2X's for a univ2x validation).
    split_file: str | None = None
    #: JSONL of scene descriptions from ``v2x-vlm describe`` (possibly edited by a person),
    #: used instead of the dataset's own descriptions.jsonl.
    descriptions: str | None = None
    #: Fraction of the training samples drawn (without replacement) each epoch: adjacent
    #: 10 Hz frames are near-duplicates, so a fraction sees as much per step at less cost.
    epoch_fraction: float = 1.0

    # -- models -------------------------------------------------------------------------
    #: The student: a preset name (``tiny``, ``small-student``, ``small-teacher``, ``base``,
    #: ``large``) trained from scratch, or a model directory / hub id to fine-tune.
    student: str = "florence-community/Florence-2-base"
    #: The frozen teacher (model directory or hub id); None trains without distillation.
    teacher: str | None = "florence-community/Florence-2-large"
    #: Tokenizer for a preset student: from this model directory (default: the teacher's);
    #: without either, a BPE is trained on the training prompts and descriptions.
    tokenizer_from: str | None = None
    #: BPE size when a tokenizer is built.
    vocab_size: int = 2000
    #: For a model-directory student: keep only these encoder and decoder layers (the same
    #: numbers for both), e.g. [0, 2] of a 3-layer teacher. A student of the teacher's width
    #: started from the teacher's own layers, as DistilBERT starts from one layer in two of
    #: BERT; None keeps them all.
    student_layers: list[int] | None = None
    #: Copy the vision tower weights from this model directory (a preset student then has
    #: a trained encoder to freeze, as the paper's student has Florence-2's pretrained one).
    init_vision_from: str | None = None
    #: Model input (height, width) for a preset student (None: the preset's), or for a model
    #: directory fine-tuned at another size (None: the size it was trained at).
    image_size: tuple[int, int] | None = None
    #: Trajectory codec of a preset student or a plain Florence-2 (a hub id, a directory
    #: without planner settings): x and y ranges (m) and bins per coordinate (None: (-20, 100),
    #: (-50, 50), 1000). A planner's model directory keeps its own codec (its location tokens
    #: mean its bins; re-binning is not fine-tuning): None keeps it, and a value given must be
    #: the model's (``codec_conflicts``: an error, not silently ignored).
    codec_x_range: tuple[float, float] | None = None
    codec_y_range: tuple[float, float] | None = None
    codec_bins: int | None = None
    #: What the tokens are relative to: "none" (the paper's: the waypoints) or
    #: "constant_speed" (the waypoints minus driving on at the current speed; see
    #: model/codec.py). None: "none" for a preset student, the model's for a model
    #: directory (a value given must be the model's). A student distilled from a teacher
    #: must use the teacher's.
    codec_reference: str | None = None
    #: In which order the waypoints are written: "time" (the paper's) or "endpoint_first"
    #: (the last waypoint first; model/codec.py). None: "time" for a preset student, the
    #: model's own order for a model directory; a value given re-orders a model directory's
    #: tokens too (fine-tuning then relearns what each position means).
    codec_order: str | None = None
    #: Freeze the student's vision encoder (kept in eval mode: its drop-path stays off).
    freeze_vision: bool = True
    #: "plan": Algorithm 2 (the planner's losses). "vision": pretrain the vision encoder
    #: alone on the dense roadside probe (``lambda_objects``), no decoder, no teacher, the
    #: stand-in for the detection pretraining Florence-2's encoder has and a from-scratch
    #: one lacks; each epoch is scored by ``training/probe.py`` (probe_log.csv) and the
    #: model saved, for a "plan" run's ``init_vision_from`` (docs/TRAINING.md).
    stage: str = "plan"

    # -- ablations (Table 5) --------------------------------------------------------------
    #: False: ego image only (the roadside half of the canvas is blank).
    fusion: bool = True
    #: False: no scene description in the prompt.
    scene_text: bool = True
    #: False: no image-text alignment loss.
    alignment: bool = True
    #: False: no distillation loss (the teacher is not even loaded).
    distillation: bool = True

    # -- what helps on top of the paper's recipe (each a switch with its ablation) --------
    #: Resolution augmentation: each training image is, with probability ``augment_p``,
    #: shrunk by area averaging to a fraction of its size drawn in this range (log-uniform)
    #: before the model's own resize, so the model sees cameras of many resolutions.
    augment_resolution: tuple[float, float] | None = None
    #: JPEG-quality augmentation: each training image is, with probability ``augment_p``,
    #: re-encoded as JPEG at a quality drawn in this range (after the resolution step).
    augment_jpeg_quality: tuple[int, int] | None = None
    augment_p: float = 0.5
    #: Roadside dropout: the probability that a training example's roadside image is left
    #: out (the canvas's roadside half holds the mean colour, as when no roadside frame
    #: arrives on the vehicle); the teacher sees the same. 0: never.
    roadside_dropout: float = 0.0
    #: Of the dropped roadside images, the share replaced by a uniform image of a random
    #: grey level (0-255) instead of left out: a dead camera or a broken encoder sends
    #: such frames, and a model that saw only the mean-colour canvas reads a uniform grey
    #: view as something else (on the synthetic teachers: "brake at every junction"), so
    #: ``eval --roadside grey`` would not measure the view's information. 0: never.
    roadside_dropout_uniform: float = 0.0
    #: Sampling weight of the frames of paired scenes (a hidden hazard and its twin, the
    #: same scene without it; ``visibility.json`` of a synthetic world) against the other
    #: frames' 1: the frames where the roadside view tells the two apart, seen more often.
    pair_weight: float = 1.0
    #: Hidden-hazard frames (a conflicting agent seen by the roadside camera and not the
    #: ego's) and the same frames of their twins drawn this many times as often, instead of
    #: ``pair_weight``: there only the roadside view tells the two scenes apart.
    hazard_weight: float = 1.0
    #: Their negatives: frames where the roadside camera sees a hidden agent the ground truth
    #: does not yield to (waiting at its line, or crossing well before the ego gets there:
    #: ``synth`` ``early_cross_share``; the ego camera may see it too), drawn this many times as
    #: often instead of ``pair_weight`` (``visibility.harmless_hidden_frames``). With only the
    #: hazards weighted up, "an agent at the junction in the roadside view" is nearly always
    #: a yield in training, and the planner brakes for cross traffic that has long passed. 1: off.
    harmless_weight: float = 1.0
    #: Per scenario of a synthetic world (``scenarios.json``), a factor on its frames'
    #: sampling weight, on top of ``pair_weight`` / ``hazard_weight``: e.g.
    #: ``{follow_lead: 3, left_turn: 3}``. A hazard-rich world with ``hazard_weight`` leaves
    #: each plain scenario a few per cent of the examples, and the planners trained on it
    #: follow a lead car and turn worse than constant velocity (TRAINING.md). None: all 1.
    scenario_weights: dict[str, float] | None = None
    #: Scale the sampling weight of the rarer turn command's frames (LEFT or RIGHT, by total
    #: weight after the weights above) so that both commands weigh the same: before the turn
    #: starts only the command tells its direction, and a planner trained where one side is
    #: rare plans both commands as the common one (``training.data.balance_turn_weights``).
    balance_turns: bool = False
    #: Command twins: each turn frame whose ego is not turning yet, of a sequence that yields
    #: to no one (``training.data.command_twin_frames``), is with this probability taught as
    #: the other turn: the same images, LEFT and RIGHT swapped, the ground truth mirrored
    #: (y -> -y). Only the command then tells the two apart. 0: off.
    command_twins: float = 0.0
    #: VLM-E2E's learnable modality-weighted fusion (``model.fusion``): learned weights of
    #: the ego image, roadside image and text features before the decoder, logged in
    #: train_log.csv and stored with the model.
    modality_weights: bool = False
    #: The part of the roadside image the student sees (``ModelSettings.roadside_crop``:
    #: [x0, y0, x1, y1] fractions, resized to the roadside half's usual size), stored with
    #: the model so the vehicle, replay and eval crop alike; null: all of it. The teacher
    #: keeps its own input (it was trained on the whole image).
    roadside_crop: tuple[float, float, float, float] | None = None
    #: Motion in the roadside view (``ModelSettings.roadside_motion_s``): the student also sees
    #: the roadside frame taken this many seconds before the current one, stacked above it in
    #: the roadside part of the canvas; stored with the model. null: one frame (the paper's).
    #: The teacher keeps its own input.
    roadside_motion_s: float | None = None
    #: How the two frames share the roadside part (``ModelSettings.roadside_motion_layout``):
    #: "stack" (the earlier box above the current one) or "blue" (the earlier box's blue
    #: channel in the current box, which keeps its full scale). Needs roadside_motion_s.
    roadside_motion_layout: str = "stack"
    #: Spread of the trajectory tokens' targets over neighbouring location bins, in bins
    #: (``losses.BinLabelSmoothing``, HL-Gauss; 0: one-hot, the paper's): neighbouring bins
    #: share what they learn. Tried at 3 bins, no better on the acceptance world (TRAINING.md).
    label_sigma_bins: float = 0.0
    #: Weight of the trajectory and distillation losses at the first waypoint written (its two
    #: tokens; the plan's endpoint, the decision to brake or drive on, with ``codec_order:
    #: endpoint_first``), the other positions keeping weight 1 (1: the paper's uniform mean).
    #: The plan's later tokens follow from that one, so teacher-forced they are easy and
    #: dilute the one token where a hidden hazard and its twin differ. Tried at 5 for one
    #: epoch of the teacher: better plans overall, not on the hidden hazards (TRAINING.md).
    decision_weight: float = 1.0

    # -- optimisation -------------------------------------------------------------------
    epochs: int = 10
    batch_size: int = 4  # per process
    lr: float = 1e-6
    weight_decay: float = 0.01
    warmup_steps: int = 0
    grad_clip: float = 1.0
    lambda_align: float = 0.1
    lambda_kd: float = 0.5
    #: Weight of the roadside-hazard probe's loss (``losses.RoadsideHazardHead``; 0: off):
    #: a training-only linear probe on the image cells of the roadside half learns whether
    #: the roadside camera shows a road user the ground truth yields to (labels from a
    #: synthetic world's ``visibility.json``), so the vision encoder has to represent it.
    #: Nothing of it ships with the model.
    lambda_hazard: float = 0.0
    #: What the roadside-hazard probe reads: "vision" (the roadside half's image cells, as
    #: above) or "decoder" (``losses.PlanStateHazardHead``: the decoder's state where it
    #: writes the plan's first token, the endpoint with ``codec_order: endpoint_first``). On the
    #: decoder, its loss teaches the cross-attention to find that road user before the plan is
    #: written, which the planning loss alone did not (docs/TRAINING.md).
    hazard_probe_on: str = "vision"
    #: Weight of the dense roadside probe's loss (``losses.RoadsideObjectsHead``; 0: off): a
    #: training-only linear score per image cell of the roadside half learns which cells hold
    #: a road user the roadside camera sees (boxes from ``visibility.json``, worlds written
    #: with ``roadside_boxes``). Nothing of it ships with the model.
    lambda_objects: float = 0.0
    temperature: float = 2.0  # distillation
    kappa: float = 0.07  # InfoNCE temperature (the paper does not give it)
    align_dim: int = 256  # common dimension of the alignment projections
    #: Stop after this many optimiser steps in total (smoke runs, tests).
    max_steps: int | None = None
    seed: int = 0

    # -- evaluation, logging, checkpoints -----------------------------------------------
    #: Validation samples planned per epoch (None: all); evenly spaced over the split.
    eval_max_samples: int | None = 400
    #: Validation protocol: "univ2x" (UniV2X's evaluation, 2 Hz samples of the val split:
    #: the numbers the published tables use), "time" (every 10 Hz frame) or "auto" (univ2x
    #: on a real V2X-Seq-SPD root, time on a synthetic world or DAIR-V2X-C).
    val_protocol: str = "auto"
    #: The time protocol's collision test ("univ2x" raster or "obb"); univ2x fixes its own.
    collision: str = "univ2x"
    output_dir: str = "runs/train"
    log_every: int = 20
    #: Also checkpoint every this many steps (None: only at the end of each epoch).
    checkpoint_every: int | None = None
    #: Also export the model of every epoch to output_dir/epochs/epoch-N (model/ keeps the
    #: best by validation L2, which need not be the best at what the probes and the slices
    #: measure: pick among them with eval --scenario / twin-test).
    export_each_epoch: bool = False
    #: Continue from output_dir/checkpoint when it exists.
    resume: bool = True
    #: "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ...
    device: str = "auto"
    #: DataLoader workers per process.
    num_workers: int = 0
    #: Precision of the exported model's weights: "float32", "float16" or "bfloat16"
    #: (training runs in float32 either way; float16 halves a shipped model).
    export_dtype: str = "float32"

    def __post_init__(self):
        if self.image_size is not None:
            self.image_size = tuple(int(v) for v in self.image_size)
        if self.codec_x_range is not None:
            self.codec_x_range = tuple(float(v) for v in self.codec_x_range)
        if self.codec_y_range is not None:
            self.codec_y_range = tuple(float(v) for v in self.codec_y_range)
        if self.codec_reference is not None and self.codec_reference not in REFERENCES:
            raise ValueError(f"codec_reference must be one of {REFERENCES}, got {self.codec_reference!r}")
        if self.codec_order is not None and self.codec_order not in ORDERS:
            raise ValueError(f"codec_order must be one of {ORDERS} (or null), got {self.codec_order!r}")
        for name in ("epochs", "batch_size", "vocab_size", "align_dim", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "temperature", "kappa"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("lambda_align", "lambda_kd", "lambda_hazard", "lambda_objects", "weight_decay",
                     "warmup_steps", "num_workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.augment_resolution is not None:
            self.augment_resolution = tuple(float(v) for v in self.augment_resolution)
            lo, hi = self.augment_resolution
            if not 0 < lo <= hi <= 1:
                raise ValueError(f"augment_resolution must be (lo, hi) with 0 < lo <= hi <= 1, "
                                 f"got {self.augment_resolution}")
        if self.augment_jpeg_quality is not None:
            self.augment_jpeg_quality = tuple(int(v) for v in self.augment_jpeg_quality)
            lo, hi = self.augment_jpeg_quality
            if not 1 <= lo <= hi <= 100:
                raise ValueError(f"augment_jpeg_quality must be (lo, hi) in 1..100, "
                                 f"got {self.augment_jpeg_quality}")
        if isinstance(self.label_sigma_bins, bool) or not isinstance(self.label_sigma_bins, (int, float)) \
                or not (math.isfinite(self.label_sigma_bins) and self.label_sigma_bins >= 0):
            raise ValueError(f"label_sigma_bins must be >= 0 (0: one-hot targets), "
                             f"got {self.label_sigma_bins!r}")
        self.label_sigma_bins = float(self.label_sigma_bins)
        if isinstance(self.decision_weight, bool) or not isinstance(self.decision_weight, (int, float)) \
                or not (math.isfinite(self.decision_weight) and self.decision_weight > 0):
            raise ValueError(f"decision_weight must be a number > 0 (1: every position alike), "
                             f"got {self.decision_weight!r}")
        self.decision_weight = float(self.decision_weight)
        if not self.pair_weight > 0:
            raise ValueError(f"pair_weight must be > 0, got {self.pair_weight}")
        if not self.hazard_weight > 0:
            raise ValueError(f"hazard_weight must be > 0, got {self.hazard_weight}")
        if not self.harmless_weight > 0:
            raise ValueError(f"harmless_weight must be > 0, got {self.harmless_weight}")
        if self.scenario_weights is not None:
            self.scenario_weights = _scenario_weights(self.scenario_weights)
        if not isinstance(self.balance_turns, bool):
            raise ValueError(f"balance_turns must be true or false, got {self.balance_turns!r}")
        for name in ("augment_p", "roadside_dropout", "roadside_dropout_uniform", "command_twins"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.roadside_crop is not None:
            self.roadside_crop = check_crop(self.roadside_crop, "roadside_crop")
            if not self.fusion:
                raise ValueError("roadside_crop needs fusion: without it the model sees no roadside image")
            if self.lambda_objects > 0:
                raise ValueError("roadside_crop and lambda_objects > 0 do not go together: the dense "
                                 "probe's boxes are fractions of the whole roadside image")
        if self.roadside_motion_s is not None:
            self.roadside_motion_s = check_motion_s(self.roadside_motion_s, "roadside_motion_s")
            if not self.fusion:
                raise ValueError("roadside_motion_s needs fusion: without it the model sees no roadside "
                                 "image")
            if self.lambda_objects > 0:
                raise ValueError("roadside_motion_s and lambda_objects > 0 do not go together: the dense "
                                 "probe's boxes are fractions of one roadside frame")
        check_motion_layout(self.roadside_motion_layout, "roadside_motion_layout")
        if self.roadside_motion_layout != "stack" and self.roadside_motion_s is None:
            raise ValueError(f"roadside_motion_layout {self.roadside_motion_layout!r} needs "
                             "roadside_motion_s: with one roadside frame there is nothing to lay out")
        for name in ("lambda_hazard", "lambda_objects"):
            if getattr(self, name) > 0 and not self.fusion:
                raise ValueError(f"{name} needs fusion: the probe reads the roadside half of the "
                                 "fused image")
        if self.hazard_probe_on not in ("vision", "decoder"):
            raise ValueError(f"hazard_probe_on must be 'vision' or 'decoder', got {self.hazard_probe_on!r}")
        if self.stage not in ("plan", "vision"):
            raise ValueError(f"stage must be 'plan' or 'vision', got {self.stage!r}")
        if self.stage == "vision":
            if not self.lambda_objects > 0:
                raise ValueError("stage 'vision' trains the vision encoder on the dense roadside probe "
                                 "alone: set lambda_objects > 0")
            if self.freeze_vision:
                raise ValueError("stage 'vision' trains the vision encoder: set freeze_vision: false")
            if self.lambda_hazard > 0 and self.hazard_probe_on == "decoder":
                raise ValueError("stage 'vision' runs no decoder: hazard_probe_on 'decoder' needs "
                                 "stage 'plan'")
        if self.student_layers is not None:
            if self.student in PRESETS:
                raise ValueError(f"student_layers keeps layers of a trained model: student "
                                 f"{self.student!r} is a preset built from scratch (give a model "
                                 "directory, e.g. the teacher's)")
            self.student_layers = [int(v) for v in self.student_layers]
            if not self.student_layers or sorted(set(self.student_layers)) != self.student_layers \
                    or self.student_layers[0] < 0:
                raise ValueError(f"student_layers must be increasing layer numbers >= 0, "
                                 f"got {self.student_layers}")
        if not 0 < self.epoch_fraction <= 1:
            raise ValueError(f"epoch_fraction must be in (0, 1], got {self.epoch_fraction}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.export_dtype not in ("float32", "float16", "bfloat16"):
            raise ValueError(f"export_dtype must be float32, float16 or bfloat16, got {self.export_dtype!r}")
        if self.collision not in ("univ2x", "obb"):
            raise ValueError(f"collision must be 'univ2x' or 'obb', got {self.collision!r}")
        if self.val_protocol not in ("auto", "time", "univ2x"):
            raise ValueError(f"val_protocol must be 'auto', 'time' or 'univ2x', got {self.val_protocol!r}")

    @property
    def uses_teacher(self) -> bool:
        return self.stage == "plan" and self.distillation and self.teacher is not None

    def preset_codec(self) -> CodecConfig:
        """The codec of a preset student: the codec_* fields, CodecConfig's defaults for
        those left at None."""
        given = {"x_range": self.codec_x_range, "y_range": self.codec_y_range, "bins": self.codec_bins,
                 "reference": self.codec_reference, "order": self.codec_order}
        return CodecConfig(**{k: v for k, v in given.items() if v is not None})

    def codec_conflicts(self, codec: CodecConfig) -> list[str]:
        """The codec_* fields this config gives that differ from ``codec``, a model
        directory's own (codec_order aside: it re-orders the same tokens), as messages."""
        out = []
        for field, value, own in (("codec_x_range", self.codec_x_range, codec.x_range),
                                  ("codec_y_range", self.codec_y_range, codec.y_range),
                                  ("codec_bins", self.codec_bins, codec.bins),
                                  ("codec_reference", self.codec_reference, codec.reference)):
            if value is not None and value != own:
                shown = list(own) if isinstance(own, tuple) else own
                out.append(f"{field} is {list(value) if isinstance(value, tuple) else value!r}, "
                           f"the model's is {shown!r}")
        return out


def student_is_planner(cfg: TrainConfig) -> bool:
    """Whether the student is a planner's model directory (one with planner settings), whose
    trajectory codec is its own; a preset or a plain Florence-2 takes the config's."""
    return cfg.student not in PRESETS and Path(cfg.student, SETTINGS_FILE).is_file()


def student_codec_error(cfg: TrainConfig) -> str | None:
    """The error for a planner student whose config asks for another codec (None: none)."""
    if not student_is_planner(cfg):
        return None
    conflicts = cfg.codec_conflicts(ModelSettings.load(cfg.student).codec)
    if not conflicts:
        return None
    return (f"student {cfg.student} is a model directory, which keeps its own trajectory codec (its "
            f"location tokens mean its bins): {'; '.join(conflicts)}. Leave these settings out "
            "(null) or give the model's values")


def _scenario_weights(value) -> dict[str, float]:
    from v2x_vlm_ros.data.synth.config import SCENARIOS

    if not isinstance(value, dict):
        raise ValueError(f"scenario_weights must map scenario names to weights, got {value!r}")
    unknown = sorted(str(k) for k in value if k not in SCENARIOS)
    if unknown:
        raise ValueError(f"scenario_weights: unknown scenario(s) {unknown}; known: {list(SCENARIOS)}")
    for name, weight in value.items():
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0:
            raise ValueError(f"scenario_weights: {name} must be a number > 0, got {weight!r}")
    return {name: float(weight) for name, weight in value.items()}
