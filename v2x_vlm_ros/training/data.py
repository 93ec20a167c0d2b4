"""Training batches: cooperative samples -> model inputs, trajectory labels and masks.

A batch holds, for the student (and, when its inputs differ, for the teacher, see
``PairedCollate``):
``pixel_values`` (fused images), ``input_ids`` / ``attention_mask`` (image placeholders +
prompt), ``text_ids`` / ``text_mask`` (the prompt alone, for the alignment loss) and
``labels``: ``<s>``, 2T location tokens, ``</s>``, with -100 where the ground truth is
masked (past the end of a sequence), so those steps never teach anything. ``traj_mask``
marks the location-token positions that carry a label (the distillation positions; none for a command twin).

``PlanningExamples`` also applies the training-time input switches (``TrainConfig``):
resolution and JPEG-quality augmentation (``Augmentation``) and roadside dropout (the
roadside image left out, or, for a share ``roadside_dropout_uniform`` of the dropped ones,
replaced by a uniform image of a random grey level, as a dead camera sends), and command
twins (``command_twin_frames``: a turn frame taught, with the same images, as the other
turn, its command swapped and its ground truth mirrored). Their draws come from a generator
seeded by (seed, epoch, example index) only, so a resumed run sees the same inputs as one
that never stopped.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from v2x_vlm_ros.data.dair import DairV2XDataset
from v2x_vlm_ros.data.images import earlier_roadside_image, load_image
from v2x_vlm_ros.data.records import Command
from v2x_vlm_ros.model.codec import LocTokenCodec
from v2x_vlm_ros.model.processing import ImagePreprocessor, PromptEncoder
from v2x_vlm_ros.training.losses import IGNORE_INDEX


def read_descriptions(path) -> dict[str, str]:
    """``{vehicle_frame: description}`` from a ``v2x-vlm describe`` JSONL file."""
    out = {}
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            out[str(row["vehicle_frame"])] = str(row["description"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: line {n}: {type(exc).__name__}: {exc}") from None
    return out


@dataclass(frozen=True)
class Augmentation:
    """Resolution and JPEG-quality augmentation of one image (each step with probability
    ``p``): area-shrunk to a fraction of its size drawn log-uniformly in ``resolution``,
    then re-encoded as JPEG at a quality drawn in ``jpeg_quality``. None: step off."""

    resolution: tuple[float, float] | None = None
    jpeg_quality: tuple[int, int] | None = None
    p: float = 0.5

    @property
    def active(self) -> bool:
        return (self.resolution is not None or self.jpeg_quality is not None) and self.p > 0

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        out = image
        if self.resolution is not None and rng.random() < self.p:
            lo, hi = self.resolution
            f = math.exp(rng.uniform(math.log(lo), math.log(hi)))
            h, w = out.shape[:2]
            size = (max(8, round(w * f)), max(8, round(h * f)))
            if size != (w, h):
                out = cv2.resize(out, size, interpolation=cv2.INTER_AREA)
        if self.jpeg_quality is not None and rng.random() < self.p:
            quality = int(rng.integers(self.jpeg_quality[0], self.jpeg_quality[1] + 1))
            ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, quality])
            if ok:
                out = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        return out


class PlanningExamples(torch.utils.data.Dataset):
    """Raw examples (decoded images, prompt ingredients, ground truth) of a dataset, with
    the training-time input switches applied (see the module docstring)."""

    def __init__(self, dataset: DairV2XDataset, descriptions: dict[str, str] | None = None,
                 fusion: bool = True, augment: Augmentation | None = None, roadside_dropout: float = 0.0,
                 roadside_dropout_uniform: float = 0.0, seed: int = 0, hazard_labels: list[int] | None = None,
                 roadside_boxes: list[list[list[float]] | None] | None = None,
                 command_twins: float = 0.0, command_twin_ok: list[bool] | None = None,
                 motion_s: float | None = None):
        self.dataset = dataset
        # ModelSettings.roadside_motion_s: also the roadside frame taken this long before
        self.motion_s = motion_s if fusion else None
        self.previous_missing = 0  # examples with no earlier roadside frame (sequences' starts)
        self.hazard_labels = hazard_labels  # per sample: 1 / 0, -1 unknown (roadside_hazard_labels)
        self.roadside_boxes = roadside_boxes  # per sample: boxes or None unknown (roadside_object_boxes)
        self.descriptions = descriptions
        self.fusion = fusion
        self.augment = augment if augment is not None and augment.active else None
        self.roadside_dropout = float(roadside_dropout)
        self.roadside_dropout_uniform = float(roadside_dropout_uniform)
        self.seed = int(seed)
        self.epoch = 0
        self.dropped = 0  # roadside images dropped so far, left out or uniform (logs and tests)
        self.uniform = 0  # of those, the ones replaced by a uniform image
        self.command_twins = float(command_twins)
        self.command_twin_ok = command_twin_ok  # per sample: may become a command twin
        if self.command_twins > 0 and (command_twin_ok is None or len(command_twin_ok) != len(dataset)):
            raise ValueError("command_twins needs command_twin_ok, one flag per sample")
        self.twinned = 0  # examples taught as command twins so far (logs and tests)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        s = self.dataset[i]
        description = s.description
        if self.descriptions is not None:
            description = self.descriptions.get(s.vehicle_frame, "")
        ego = load_image(s.ego_image_path)
        roadside = load_image(s.roadside_image_path) if self.fusion else None
        previous = None
        if self.motion_s is not None:
            previous = earlier_roadside_image(s, self.motion_s)
            self.previous_missing += previous is None
        blank = False  # the roadside image replaced by a uniform one
        if self.augment is not None or self.roadside_dropout > 0:
            rng = np.random.default_rng([self.seed, self.epoch, int(i), 11])
            if roadside is not None and rng.random() < self.roadside_dropout:
                self.dropped += 1
                # a uniform image says as little as none: no draw when the share is 0, so
                # runs without it see the inputs they saw before the option existed
                if self.roadside_dropout_uniform > 0 and rng.random() < self.roadside_dropout_uniform:
                    roadside = np.full_like(roadside, int(rng.integers(0, 256)))
                    previous = None if previous is None else np.full_like(previous, int(roadside.flat[0]))
                    self.uniform += 1
                    blank = True
                else:
                    roadside = previous = None
            if self.augment is not None:
                ego = self.augment(ego, rng)
                if roadside is not None and not blank:
                    # the earlier frame goes through the same resolution and quality as the current
                    same = copy.deepcopy(rng) if previous is not None else None
                    roadside = self.augment(roadside, rng)
                    previous = None if previous is None else self.augment(previous, same)
        command, future_xy = s.command, s.future_xy
        if self.command_twins > 0 and self.command_twin_ok[i] \
                and np.random.default_rng([self.seed, self.epoch, int(i), 13]).random() < self.command_twins:
            command, future_xy = command_twin(command, future_xy)
            self.twinned += 1
        # the probe's label; unknown (-1) when no roadside view reaches the model
        hazard = -1 if self.hazard_labels is None or roadside is None or blank else int(self.hazard_labels[i])
        boxes = None  # the dense probe's boxes, when known and the halves are as they assume
        if self.roadside_boxes is not None and roadside is not None and not blank \
                and _same_aspect(ego, roadside):
            boxes = self.roadside_boxes[i]
        return {
            "ego": ego, "roadside": roadside, "roadside_previous": previous,
            "description": description, "motion": s.motion, "command": command,
            "future_xy": future_xy, "future_mask": s.future_mask, "roadside_hazard": hazard,
            "roadside_boxes": boxes, "roadside_blank": blank, "command_twin": command != s.command,
        }


#: A command twin's frame: the ego not yet turning (|yaw rate| at most this), so that the
#: same images fit a turn either way.
COMMAND_TWIN_MAX_YAW_RATE = 0.05


def command_twin(command, future_xy: np.ndarray):
    """(command, waypoints) of a turn frame's twin: LEFT and RIGHT swapped, the ground truth
    mirrored across the ego's heading (y -> -y; a new array)."""
    command = Command(command)
    if command == Command.FORWARD:
        raise ValueError(f"a command twin needs a LEFT or RIGHT frame, got {command.name}")
    return command.opposite, np.asarray(future_xy, dtype=np.float64) * np.array([1.0, -1.0])


def command_twin_frames(dataset: DairV2XDataset) -> list[bool]:
    """Per sample, whether it may be taught as a command twin (``TrainConfig.command_twins``):
    a LEFT or RIGHT frame whose ego is not turning yet (``COMMAND_TWIN_MAX_YAW_RATE``), of a
    sequence where the ground truth yields to no one (a synthetic world's ``conflict`` list
    empty; real data has no sidecar and only the first two tests apply): a yield for a queue
    on one road says nothing of the other road. Why: before the turn starts, the command is
    the only input that tells left from right, and a world where one side is rare taught the
    planners to plan both commands as the common one (docs/TRAINING.md); the twin shows the
    same images with the other command and the other turn."""
    from v2x_vlm_ros.data.synth.visibility import read_visibility

    visibility = read_visibility(dataset.root)
    yields = {seq for seq, entry in visibility["sequences"].items() if entry.get("conflict")} \
        if visibility is not None else set()
    return [entry.command in (Command.LEFT, Command.RIGHT)
            and abs(entry.motion.yaw_rate_rps) <= COMMAND_TWIN_MAX_YAW_RATE
            and entry.sequence.sequence_id not in yields
            for entry in dataset._index]


def _same_aspect(ego: np.ndarray, roadside: np.ndarray, tolerance: float = 0.02) -> bool:
    """Whether the roadside image fills the right half of the fused image (it is scaled to
    the ego's height, so equal aspect ratios give equal widths); the dense probe's cells
    assume it."""
    a = ego.shape[1] / ego.shape[0]
    b = roadside.shape[1] / roadside.shape[0]
    return abs(a - b) <= tolerance * a


class BatchBuilder:
    """Turns a list of raw examples into tensors for one model (the collate function)."""

    def __init__(self, tokenizer, settings, max_positions: int, codec: LocTokenCodec):
        self.tokenizer = tokenizer
        self.settings = settings
        self.images = ImagePreprocessor(settings)
        self.prompts = PromptEncoder(tokenizer, settings, max_positions)
        self.codec = codec

    def labels(self, xy: np.ndarray, mask: np.ndarray, speed_mps: float) -> list[int]:
        tokens = list(self.codec.encode(xy, speed_mps).token_ids)
        for pos, k in enumerate(self.codec.config.waypoint_order):  # waypoint k is token pair pos
            if not mask[k]:
                tokens[2 * pos] = tokens[2 * pos + 1] = IGNORE_INDEX
        return [self.tokenizer.bos_token_id, *tokens, self.tokenizer.eos_token_id]

    def __call__(self, examples: list[dict]) -> dict:
        prompts = [self.prompts.encode(e["description"], e["motion"], e["command"]) for e in examples]
        input_ids, attention = _pad([p.input_ids for p in prompts], self.tokenizer.pad_token_id)
        text_ids, text_mask = _pad([p.text_ids for p in prompts], self.tokenizer.pad_token_id)
        labels = torch.tensor([self.labels(e["future_xy"], e["future_mask"], e["motion"].speed_mps)
                               for e in examples])
        traj_mask = labels != IGNORE_INDEX
        traj_mask[:, 0] = False  # <s>
        traj_mask[:, -1] = False  # </s>
        # a command twin is not distilled: its turn is the other one, and the teacher, trained
        # where one side was rare, plans both commands alike (docs/TRAINING.md)
        traj_mask[[bool(e.get("command_twin")) for e in examples]] = False
        return {
            "pixel_values": self.images([(e["ego"], e["roadside"], e.get("roadside_previous"))
                                         for e in examples]),
            "input_ids": input_ids, "attention_mask": attention,
            "text_ids": text_ids, "text_mask": text_mask,
            "labels": labels, "traj_mask": traj_mask,
            "roadside_hazard": torch.tensor([float(e.get("roadside_hazard", -1)) for e in examples]),
            **_boxes_tensor([e.get("roadside_boxes") for e in examples]),
            "truncated": sum(p.truncated for p in prompts),
        }


def _boxes_tensor(per_sample: list) -> dict:
    """"roadside_boxes" (B, K, 4), NaN rows padding, and "roadside_known" (B,) bool: which
    samples the dense probe learns from (a known empty list is a frame with no road user)."""
    width = max([1] + [len(b) for b in per_sample if b is not None])
    boxes = torch.full((len(per_sample), width, 4), float("nan"))
    for i, b in enumerate(per_sample):
        if b:
            boxes[i, : len(b)] = torch.tensor(b, dtype=torch.float32)
    return {"roadside_boxes": boxes, "roadside_known": torch.tensor([b is not None for b in per_sample])}


def _pad(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids, mask


class PairedCollate:
    """Student batch, plus the teacher's own inputs (``batch["teacher"]``) when its settings
    differ or, with ``distill``, when an example's roadside image was replaced by a uniform
    one (``roadside_dropout_uniform``): the teacher then sees the roadside left out. A
    uniform view means "no view" (a dead camera); a teacher never trained on one reads it as
    something else (the demo teachers: "brake at every junction", docs/TRAINING.md), and
    distillation would copy that reading into the student. Left out is the input the
    teacher learned "no roadside view" from."""

    def __init__(self, student: BatchBuilder, teacher: BatchBuilder | None, distill: bool = False):
        self.student = student
        self.teacher = teacher
        self.distill = distill or teacher is not None

    def __call__(self, examples: list[dict]) -> dict:
        batch = self.student(examples)
        if not self.distill:
            return batch
        blank = any(e.get("roadside_blank") for e in examples)
        seen = [dict(e, roadside=None, roadside_previous=None) if e.get("roadside_blank") else e
                for e in examples]
        if self.teacher is not None:
            batch["teacher"] = self.teacher(seen)
        elif blank:
            batch["teacher"] = self.student(seen)
        return batch


def roadside_hazard_labels(dataset: DairV2XDataset) -> list[int] | None:
    """Per sample, the roadside-hazard probe's label (``TrainConfig.lambda_hazard``): 1
    when the roadside camera sees a road user the ground truth yields to and the ego camera
    does not, 0 when the roadside camera sees none, -1 (left out) when the ego camera sees
    it too or the sidecar does not list the frame (``roadside_conflict_frames`` says why);
    None without the sidecar (real data)."""
    from v2x_vlm_ros.data.synth.visibility import read_visibility, roadside_conflict_frames

    visibility = read_visibility(dataset.root)
    if visibility is None:
        return None
    seen = roadside_conflict_frames(visibility)

    def label(entry) -> int:  # from the dataset's index: no sample needs loading
        found = seen.get((entry.sequence.sequence_id, entry.sequence.frames[entry.position].frame_id))
        return -1 if found is None else int(found)

    return [label(entry) for entry in dataset._index]


def roadside_object_boxes(dataset: DairV2XDataset) -> list[list[list[float]] | None] | None:
    """Per sample, the dense probe's targets (``TrainConfig.lambda_objects``): the boxes
    [x0, y0, x1, y1] (fractions of the roadside image) of every road user the paired
    roadside frame sees, from the sidecar's ``roadside_boxes``; None for a frame the sidecar
    does not list. None for the whole dataset without a sidecar or when it was written
    before the boxes existed."""
    from v2x_vlm_ros.data.synth.visibility import read_visibility

    visibility = read_visibility(dataset.root)
    if visibility is None:
        return None
    frames = {}
    for seq, entry in visibility["sequences"].items():
        for frame, seen in entry["frames"].items():
            if "roadside_boxes" not in seen:
                return None
            frames[(str(seq), str(frame))] = [list(map(float, b)) for b in seen["roadside_boxes"].values()]
    return [frames.get((e.sequence.sequence_id, e.sequence.frames[e.position].frame_id))
            for e in dataset._index]


class EpochSampler(torch.utils.data.Sampler):
    """Deterministic per-epoch order: a permutation seeded by (seed, epoch), cut to a
    fraction of the data, then sharded across processes (rank r takes every world-th
    index, the list wrapped so all ranks get the same count). Resumable: the order of an
    epoch is a pure function of its number. With ``weights`` the fraction is drawn without
    replacement with probabilities proportional to them (``pair_weights``)."""

    def __init__(self, size: int, seed: int, fraction: float = 1.0, rank: int = 0, world: int = 1,
                 weights=None):
        if size < 1:
            raise ValueError("no training samples")
        self.size, self.seed, self.rank, self.world = size, seed, rank, world
        self.count = max(1, math.ceil(size * fraction))
        self.epoch = 0
        self.p = None
        if weights is not None:
            w = np.asarray(weights, dtype=np.float64)
            if w.shape != (size,) or not np.all(w > 0):
                raise ValueError(f"need {size} positive sampling weights")
            if not np.allclose(w, w[0]):
                self.p = w / w.sum()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def indices(self) -> list[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.p is None:
            order = rng.permutation(self.size)[: self.count]
        else:
            order = rng.choice(self.size, size=self.count, replace=False, p=self.p)
        per_rank = math.ceil(self.count / self.world)
        wrapped = np.resize(order, per_rank * self.world)
        return wrapped[self.rank:: self.world].tolist()

    def __iter__(self):
        return iter(self.indices())

    def __len__(self) -> int:
        return math.ceil(self.count / self.world)


def pair_weights(dataset: DairV2XDataset, weight: float, hazard_weight: float = 1.0,
                 scenario_weights: dict[str, float] | None = None,
                 balance_turns: bool = False, harmless_weight: float = 1.0) -> list[float] | None:
    """Sampling weight per sample: ``weight`` for the frames of a synthetic world's paired
    sequences (a hidden hazard and its twin, from the visibility sidecar), 1 for the others;
    ``hazard_weight`` instead for the hidden-hazard frames and the same frames of their twins
    (the frames where only the roadside view decides the plan); ``harmless_weight`` instead for
    their negatives (``harmless_hidden_frames``: a hidden agent that is no hazard, seen by the
    roadside camera alone; 1: off); times the factor of the
    sequence's scenario in ``scenario_weights`` (``scenarios.json``; 1 for the others).
    ``balance_turns``: then the frames of the rarer turn command (LEFT or RIGHT) are scaled so
    that both commands weigh the same in total (``balance_turn_weights``).
    None when every weight is 1 or the dataset has no sidecar (without scenario weights)."""
    from v2x_vlm_ros.data.synth.visibility import (harmless_hidden_frames, hidden_hazard_twin_frames,
                                                   read_visibility)

    if scenario_weights and not dataset.scenarios:
        raise ValueError(f"scenario_weights need {dataset.root}/scenarios.json (a synthetic world's "
                         "sidecar); this dataset has none")
    visibility = read_visibility(dataset.root)
    if ((weight == 1.0 and hazard_weight == 1.0 and harmless_weight == 1.0) or visibility is None) \
            and not scenario_weights:
        weights = None
    else:
        paired = {seq for seq, entry in visibility["sequences"].items() if entry.get("variant")} \
            if visibility is not None else set()
        hazard = hidden_hazard_twin_frames(visibility) if hazard_weight != 1.0 and visibility is not None \
            else set()
        harmless = harmless_hidden_frames(visibility) if harmless_weight != 1.0 and visibility is not None \
            else set()
        factors = scenario_weights or {}

        def weight_of(entry) -> float:  # from the dataset's index: no sample needs loading
            seq = entry.sequence.sequence_id
            key = (seq, entry.sequence.frames[entry.position].frame_id)
            if key in hazard:
                base = hazard_weight
            elif key in harmless:
                base = harmless_weight
            else:
                base = weight if seq in paired else 1.0
            return base * factors.get(dataset.scenarios.get(seq), 1.0)

        weights = [weight_of(entry) for entry in dataset._index]
    if balance_turns:
        balanced = balance_turn_weights([entry.command for entry in dataset._index],
                                        weights or [1.0] * len(dataset._index))
        if balanced is not None:
            weights = balanced
    return weights


def balance_turn_weights(commands: list, weights: list[float]) -> list[float] | None:
    """``weights`` with the frames of the rarer turn command (by total weight) scaled up so
    that LEFT and RIGHT frames weigh the same; None when one of them has no frame (nothing to
    balance against). Why: the navigation command is the only input that tells a left turn
    from a right one before the ego starts turning; on a world where one direction is rare
    (the hazard-rich synthetic world: 1,181 LEFT frames against 5,087 RIGHT ones, most of
    those hidden-hazard frames drawn 8 times as often), the planners learned "turn" from the
    command and "right" from the prior, and planned LEFT and RIGHT alike (docs/TRAINING.md)."""
    if len(commands) != len(weights):
        raise ValueError(f"{len(commands)} commands for {len(weights)} weights")
    out = [float(w) for w in weights]
    left = sum(w for c, w in zip(commands, out) if c == Command.LEFT)
    right = sum(w for c, w in zip(commands, out) if c == Command.RIGHT)
    if left == 0 or right == 0:
        return None
    rare, factor = (Command.LEFT, right / left) if left < right else (Command.RIGHT, left / right)
    return [w * factor if c == rare else w for c, w in zip(commands, out)]
