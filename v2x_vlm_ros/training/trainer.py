"""Algorithm 2: train the student planner with L_traj + λ1·L_align + λ2·L_KD.

One process, or many through torchrun (DDP, ``gloo`` on CPU, ``nccl`` on CUDA): the
student and the alignment heads are wrapped in ``DistributedDataParallel``; the frozen
teacher runs beside them in each process. Rank 0 writes logs, checkpoints and the model.

Per step: the fused images go through the student's vision tower once (under no_grad when
it is frozen; it also stays in eval mode so its drop-path is off; a teacher with the same
frozen tower reuses its output, ``TeacherImageFeatures``) and its projector; the
image features replace the ``<image>`` placeholders; the language model predicts the
trajectory tokens (teacher forcing). The alignment loss pairs the pooled image token with
the mean of the text encoder over the prompt alone; the distillation loss compares the
student's and the teacher's trajectory-token logits at temperature T.

Switches on top of the paper's recipe (``TrainConfig``): resolution / JPEG-quality
augmentation and roadside dropout act on the examples (``training.data``); the learnable
modality weights (``model.fusion``) are trained with the student, logged in
``train_log.csv`` (``w_ego``, ``w_roadside``, ``w_text``) and stored with the model.

Outputs in ``output_dir``: ``train_log.csv`` (losses every ``log_every`` steps),
``eval_log.csv`` (validation L2 / collision each epoch), ``checkpoint/`` (resumable) and
``model/`` (the best model by validation L2, a self-contained model directory).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as torch_dist
from torch import nn
from tqdm import tqdm
from transformers import AutoTokenizer
from transformers.models.bart.modeling_bart import shift_tokens_right

from v2x_vlm_ros.data.dair import DairV2XDataset, DatasetConfig
from v2x_vlm_ros.data.synth.visibility import read_visibility
from v2x_vlm_ros.eval.evaluate import score
from v2x_vlm_ros.eval.protocols import dataset_report
from v2x_vlm_ros.model.codec import CodecConfig, build_codec
from v2x_vlm_ros.model.configuration import PRESETS, ModelSettings
from v2x_vlm_ros.model.fusion import ModalityWeights
from v2x_vlm_ros.model.fusion import install as install_modality_weights
from v2x_vlm_ros.model.modeling import LoadedModel, build_model, keep_text_layers, load_model, save_model
from v2x_vlm_ros.model.processing import COMMAND_TEXT, TASK_TEXT, state_text
from v2x_vlm_ros.model.tokenizer import build_tokenizer, loc_token_ids
from v2x_vlm_ros.runtime.planner import ModelPlanner
from v2x_vlm_ros.training.checkpoint import CHECKPOINT, has_checkpoint, load_training_state, save_checkpoint
from v2x_vlm_ros.training.config import TrainConfig, student_codec_error, student_is_planner
from v2x_vlm_ros.training.csv_log import CsvLog
from v2x_vlm_ros.training.data import (Augmentation, BatchBuilder, EpochSampler, PairedCollate,
                                       PlanningExamples, pair_weights, read_descriptions,
                                       command_twin_frames, roadside_hazard_labels, roadside_object_boxes)
from v2x_vlm_ros.training.losses import (AlignmentHeads, BinLabelSmoothing, LossWeights,
                                         PlanStateHazardHead, RoadsideHazardHead, RoadsideObjectsHead,
                                         decision_weights, distillation_loss, hazard_loss, info_nce,
                                         objects_loss, total_loss, trajectory_loss)
from v2x_vlm_ros.training.probe import PROBE_FIELDS, objects_probe_report, probe_row

log = logging.getLogger(__name__)
HORIZON_KEYS = ("2.5", "3.5", "4.5", "avg")


# -- processes ---------------------------------------------------------------------------


@dataclasses.dataclass
class Processes:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # this process joined the group here, so it leaves it here

    def close(self) -> None:
        """Leave the process group: a gloo group still alive at interpreter exit can abort
        the process ("terminate called without an active exception") after a finished run."""
        if self.owns_group and torch_dist.is_initialized():
            torch_dist.destroy_process_group()
            self.owns_group = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            torch_dist.barrier()


def start_processes(device: str) -> Processes:
    """Join the torchrun group when launched by torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available() and device != "cpu"
    if world > 1:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        owns_group = not torch_dist.is_initialized()
        if owns_group:
            torch_dist.init_process_group("nccl" if cuda else "gloo")
        dev = torch.device(f"cuda:{local}") if cuda else torch.device("cpu")
        if cuda:
            torch.cuda.set_device(dev)
        return Processes(torch_dist.get_rank(), world, dev, owns_group)
    if device == "auto":
        return Processes(device=torch.device("cuda" if cuda else "cpu"))
    return Processes(device=torch.device(device))


# -- the trained module ------------------------------------------------------------------


class PlannerTrainModule(nn.Module):
    """Student + alignment heads; ``forward(batch)`` gives the logits and the two student
    losses, so that DDP sees every trained parameter in one forward."""

    def __init__(self, student, heads: AlignmentHeads | None, freeze_vision: bool, kappa: float,
                 fusion: ModalityWeights | None = None,
                 hazard_head: RoadsideHazardHead | PlanStateHazardHead | None = None,
                 objects_head: RoadsideObjectsHead | None = None, vision_only: bool = False,
                 smoothing: BinLabelSmoothing | None = None, decision_weight: float = 1.0):
        super().__init__()
        self.smoothing = smoothing  # spread loc-token targets (None: one-hot)
        self.decision_weight = decision_weight  # loss weight of the first waypoint written
        self.vision_only = vision_only  # the vision stage: image features and probes, no decoder
        self.student = student
        self.heads = heads
        self.hazard_head = hazard_head  # training-only probe on the roadside half or the decoder
        self.hazard_on_decoder = isinstance(hazard_head, PlanStateHazardHead)
        self.objects_head = objects_head  # training-only dense probe on the roadside half
        self.fusion = fusion  # learned modality weights (applied by a hook on the text encoder)
        self.freeze_vision = freeze_vision
        self.kappa = kappa
        # the frozen tower's last (input, output), for a teacher with the same tower
        self.tower_output: tuple[torch.Tensor, torch.Tensor] | None = None
        if freeze_vision:
            student.model.vision_tower.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_vision:
            self.student.model.vision_tower.eval()  # frozen: no drop-path, no batch statistics
        return self

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        tower = self.student.model.vision_tower
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_vision):
            hidden = tower(pixel_values).last_hidden_state  # (B, C, rows, cols)
        self.tower_output = (pixel_values, hidden) if self.freeze_vision else None
        features = self.student.model.multi_modal_projector(hidden)
        # after the pooled token, the projector's cells in row-major order (rows, cols)
        self._cells = features[:, 1:].reshape(features.shape[0], *hidden.shape[-2:], features.shape[-1])
        return features

    def forward(self, batch: dict):
        """Logits, trajectory loss, alignment loss (None without heads) and the probes'
        losses: roadside hazard, roadside objects (None without the probe). In the vision
        stage logits, trajectory and alignment losses are None."""
        if self.vision_only:
            logits = traj = align = None
            self.image_features(batch["pixel_values"])
        else:
            logits, traj, align, plan_state = forward_planner(
                self.student, batch, self.image_features, self.heads, self.kappa,
                keep_plan_state=self.hazard_on_decoder, smoothing=self.smoothing,
                weights=decision_weights(batch["labels"], self.decision_weight))
        hazard = objects = None
        if self.hazard_head is not None:
            probed = plan_state if self.hazard_on_decoder else self._cells
            hazard = hazard_loss(self.hazard_head(probed), batch["roadside_hazard"])
        if self.objects_head is not None:
            objects = objects_loss(self.objects_head(self._cells), batch["roadside_boxes"],
                                   batch["roadside_known"])
        self._cells = None
        return logits, traj, align, hazard, objects


def forward_planner(model, batch: dict, image_features=None, heads=None, kappa: float = 0.07,
                    keep_plan_state: bool = False, smoothing: BinLabelSmoothing | None = None,
                    weights: torch.Tensor | None = None):
    """Teacher-forced logits of ``model`` on ``batch``, its trajectory loss, (with
    ``heads``) its alignment loss and (with ``keep_plan_state``) its plan state. Image
    features are computed once and scattered into the ``<image>`` placeholders
    (transformers' forward would not return them).
    The plan state: the decoder's last hidden state at the position that writes the plan's
    first token (decoder inputs: start, ``<s>``, plan...; so position 1), (B, dim), for
    ``PlanStateHazardHead``; None unless ``keep_plan_state``. ``smoothing``: the trajectory
    loss's spread targets (None: one-hot); ``weights``: its per-position weights (None: all 1)."""
    if image_features is None:
        def image_features(px):
            return model.model.get_image_features(px).pooler_output
    features = image_features(batch["pixel_values"])
    embeds = model.get_input_embeddings()(batch["input_ids"])
    slots = (batch["input_ids"] == model.config.image_token_id).unsqueeze(-1)
    embeds = embeds.masked_scatter(slots, features.to(embeds.dtype))
    decoder_ids = shift_tokens_right(batch["labels"], model.config.text_config.pad_token_id,
                                     model.config.text_config.decoder_start_token_id)
    out = model(inputs_embeds=embeds, attention_mask=batch["attention_mask"],
                decoder_input_ids=decoder_ids, output_hidden_states=keep_plan_state)
    plan_state = out.decoder_hidden_states[-1][:, 1] if keep_plan_state else None
    traj = trajectory_loss(out.logits, batch["labels"], smoothing, weights)
    align = None
    if heads is not None:
        encoder = model.model.language_model.encoder
        text = encoder(input_ids=batch["text_ids"], attention_mask=batch["text_mask"]).last_hidden_state
        weights = batch["text_mask"].unsqueeze(-1).to(text.dtype)
        pooled_text = (text * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        z, h = heads(features[:, 0], pooled_text)  # token 0: the mean over the image cells
        align = info_nce(z, h, kappa)
    return out.logits, traj, align, plan_state


def same_vision_tower(a, b) -> bool:
    """Whether two Florence-2 models hold the same vision-tower weights (the synthetic
    students' frozen tower is a copy of their teacher's)."""
    sa, sb = a.model.vision_tower.state_dict(), b.model.vision_tower.state_dict()
    return sa.keys() == sb.keys() and all(
        sa[k].dtype == sb[k].dtype and sa[k].shape == sb[k].shape
        and torch.equal(sa[k], sb[k].to(sa[k].device)) for k in sa)


class TeacherImageFeatures:
    """The teacher's image features from the student's frozen tower output where the inputs
    are the same: with distillation the frozen tower ran twice per step on the same pixels,
    and it is most of a step's time on a CPU. Only for a teacher whose tower has the
    student's weights (``same_vision_tower``), both in eval mode; examples whose teacher
    input differs (``PairedCollate``: a uniform roadside view shown to the teacher as left
    out) go through the teacher's tower. The projector is the teacher's own. ``reused`` and
    ``computed`` count examples, for the summary."""

    def __init__(self, teacher_model):
        self.model = teacher_model
        self.reused = self.computed = 0

    def __call__(self, pixel_values: torch.Tensor, student_tower: tuple | None) -> torch.Tensor:
        inner = self.model.model
        same = None
        if student_tower is not None and student_tower[0].shape == pixel_values.shape:
            same = (student_tower[0] == pixel_values).flatten(1).all(1)
        if same is None or not bool(same.any()):
            hidden = inner.vision_tower(pixel_values).last_hidden_state
            self.computed += pixel_values.shape[0]
        else:
            hidden = student_tower[1]
            if not bool(same.all()):
                hidden = hidden.clone()
                hidden[~same] = inner.vision_tower(pixel_values[~same]).last_hidden_state
            self.reused += int(same.sum())
            self.computed += int((~same).sum())
        return inner.multi_modal_projector(hidden)


# -- model setup -------------------------------------------------------------------------


def _corpus(dataset: DairV2XDataset, descriptions: dict | None, limit: int = 4000) -> list[str]:
    """Texts a new tokenizer is trained on: descriptions, prompts, Florence-2's task texts."""
    texts = set((descriptions or dataset.descriptions).values())
    rng = np.random.default_rng(0)
    for i in rng.permutation(len(dataset))[:limit]:
        texts.add(state_text(dataset[int(i)].motion))
    texts.update(COMMAND_TEXT.values())
    texts.add(TASK_TEXT)
    texts.update(["Describe with a paragraph what is shown in the image.",
                  "Describe in detail what is shown in the image.", "What does the image describe?"])
    return sorted(texts)


def _copy_vision_tower(model, source: str) -> None:
    donor = load_model(source).model
    missing = model.model.vision_tower.load_state_dict(donor.model.vision_tower.state_dict(), strict=True)
    log.info("vision tower initialised from %s (%s)", source, missing)


def build_student(cfg: TrainConfig, train_ds: DairV2XDataset, descriptions) -> LoadedModel:
    if cfg.student in PRESETS:
        source = cfg.tokenizer_from or cfg.teacher
        if source is not None:
            tokenizer = AutoTokenizer.from_pretrained(source)
        else:
            tokenizer = build_tokenizer(_corpus(train_ds, descriptions), cfg.vocab_size)
        model = build_model(cfg.student, tokenizer, seed=cfg.seed)
        settings = ModelSettings(image_size=cfg.image_size or PRESETS[cfg.student].image_size,
                                 codec=cfg.preset_codec())
        loaded = LoadedModel(model, tokenizer, settings, cfg.student)
    else:
        problem = student_codec_error(cfg)  # a planner: its tokens mean its codec's bins
        if problem:
            raise ValueError(problem)
        loaded = load_model(cfg.student)
        if not student_is_planner(cfg):  # a plain Florence-2 (hub id, no planner settings): no codec yet
            loaded.settings.codec = cfg.preset_codec()
        if cfg.student_layers is not None:
            loaded = keep_text_layers(loaded, cfg.student_layers)
            log.info("student: layers %s of %s", cfg.student_layers, cfg.student)
        if cfg.image_size is not None:  # fine-tuned at another input size (the encoder is convolutional)
            loaded.settings.image_size = cfg.image_size
        if cfg.codec_order is not None:  # same tokens, positions re-ordered (fine-tuning relearns them)
            loaded.settings.codec = dataclasses.replace(loaded.settings.codec, order=cfg.codec_order)
    if cfg.init_vision_from:
        _copy_vision_tower(loaded.model, cfg.init_vision_from)
    loaded.settings.fusion = cfg.fusion
    loaded.settings.scene_text = cfg.scene_text
    loaded.settings.roadside_crop = cfg.roadside_crop
    loaded.settings.roadside_motion_s = cfg.roadside_motion_s
    loaded.settings.roadside_motion_layout = cfg.roadside_motion_layout
    return loaded


def load_teacher(cfg: TrainConfig, student: LoadedModel, device) -> LoadedModel:
    teacher = load_model(cfg.teacher, device)
    if len(teacher.tokenizer) != len(student.tokenizer) or \
            loc_token_ids(teacher.tokenizer) != loc_token_ids(student.tokenizer):
        raise ValueError(f"teacher {cfg.teacher} and the student do not share a tokenizer: "
                         "distillation compares logits token by token")
    vocab = teacher.model.config.text_config.vocab_size
    if vocab != student.model.config.text_config.vocab_size:
        raise ValueError("teacher and student vocabularies differ in size")
    if teacher.settings.codec != student.settings.codec:
        raise ValueError(f"teacher {cfg.teacher} writes trajectories as {teacher.settings.codec}, the "
                         f"student as {student.settings.codec}: distillation compares their tokens, "
                         "so the codec settings (codec_x_range, codec_y_range, codec_bins, "
                         "codec_reference, codec_order) must match")
    teacher.settings.fusion = cfg.fusion  # the teacher sees what the student sees
    teacher.settings.scene_text = cfg.scene_text
    teacher.model.requires_grad_(False).eval()
    return teacher


def teacher_needs_own_inputs(teacher: LoadedModel, student: LoadedModel) -> bool:
    """Whether the teacher's batch must be built with its own settings: another input size,
    another roadside crop (the teacher was trained on the whole roadside image) or another
    image token."""
    return (teacher.settings.image_size != student.settings.image_size
            or teacher.settings.roadside_crop != student.settings.roadside_crop
            or teacher.settings.roadside_motion_s != student.settings.roadside_motion_s
            or teacher.settings.roadside_motion_layout != student.settings.roadside_motion_layout
            or teacher.model.config.image_token_id != student.model.config.image_token_id)


def _builder(loaded: LoadedModel) -> BatchBuilder:
    codec = build_codec(loaded.settings.codec, loc_token_ids(loaded.tokenizer))
    return BatchBuilder(loaded.tokenizer, loaded.settings,
                        loaded.model.config.text_config.max_position_embeddings, codec)


def _to(batch: dict, device) -> dict:
    return {k: (_to(v, device) if isinstance(v, dict) else v.to(device) if torch.is_tensor(v) else v)
            for k, v in batch.items()}


def validate(planner: ModelPlanner, dataset: DairV2XDataset, max_samples: int | None,
             collision: str, batch_size: int) -> dict:
    """Metrics on evenly spaced validation samples."""
    n = len(dataset)
    picks = range(n) if max_samples is None or max_samples >= n else \
        np.linspace(0, n - 1, max_samples).round().astype(int)
    overall, by_scenario = score((dataset[int(i)] for i in picks), planner, collision, progress=False,
                                 batch_size=batch_size, total=len(picks), protocol=dataset.protocol)
    result = overall.result()
    result.update(dataset_report(dataset))
    result["by_scenario"] = {k: v.result() for k, v in sorted(by_scenario.items())}
    return result


def model_card(cfg: TrainConfig, val: dict | None, steps: int, seconds: float, codec: CodecConfig) -> str:
    lines = [f"# {Path(cfg.output_dir).name}", "",
             "V2X-VLM planner (Florence-2 architecture, transformers' native classes), trained by "
             "`v2x-vlm train`.", "", "## Training", "",
             f"- data: `{cfg.data_root}` (split `{cfg.train_split}`), seed {cfg.seed}",
             f"- student: `{cfg.student}`; teacher: `{cfg.teacher if cfg.uses_teacher else None}`",
             f"- fusion {cfg.fusion}, scene text {cfg.scene_text}, alignment {cfg.alignment}, "
             f"distillation {cfg.uses_teacher}, frozen vision encoder {cfg.freeze_vision}",
             f"- resolution augmentation {cfg.augment_resolution}, JPEG-quality augmentation "
             f"{cfg.augment_jpeg_quality} (p {cfg.augment_p}), roadside dropout {cfg.roadside_dropout} "
             f"(uniform {cfg.roadside_dropout_uniform}), "
             f"modality-weighted fusion {cfg.modality_weights}, roadside crop {cfg.roadside_crop}, "
             "roadside motion " + ('off' if cfg.roadside_motion_s is None
                                   else f'{cfg.roadside_motion_s:g} s ({cfg.roadside_motion_layout})') + ", "
             f"paired-scene weight {cfg.pair_weight}, "
             f"hidden-hazard frame weight {cfg.hazard_weight}, harmless hidden-agent frame weight "
             f"{cfg.harmless_weight}, scenario weights {cfg.scenario_weights}, "
             f"turn commands balanced {cfg.balance_turns}, command twins {cfg.command_twins}",
             f"- trajectory tokens relative to {codec.reference} (x {list(codec.x_range)} m, "
             f"y {list(codec.y_range)} m, {codec.bins} bins), waypoints in {codec.order} order, "
             f"targets spread over {cfg.label_sigma_bins} bins (0: one-hot), "
             f"loss weight of the first waypoint written {cfg.decision_weight}",
             f"- {cfg.epochs} epochs, batch {cfg.batch_size}, lr {cfg.lr}, {steps} steps, "
             f"{seconds / 60:.1f} min",
             ""]
    if val is not None:
        lines += ["## Validation (last epoch)", "",
                  f"- split `{cfg.val_split}`, {val['num_samples']} samples, protocol {val.get('protocol')} "
                  f"({val.get('comparability')}), "
                  f"collision test {val.get('collision_method', cfg.collision)}",
                  "- L2 (m) 2.5/3.5/4.5/avg: " + " / ".join(f"{val['l2'][h]:.2f}" for h in HORIZON_KEYS),
                  "- collision (%) 2.5/3.5/4.5/avg: "
                  + " / ".join(f"{val['collision'][h]:.2f}" for h in HORIZON_KEYS), ""]
    return "\n".join(lines) + "\n"


# -- the loop ----------------------------------------------------------------------------


def train(cfg: TrainConfig, progress: bool = True) -> dict:
    """Run Algorithm 2; returns a summary (steps, last losses, validation, rank sync)."""
    procs = start_processes(cfg.device)
    try:
        return _train(cfg, procs, progress)
    finally:
        procs.close()


def _train(cfg: TrainConfig, procs: Processes, progress: bool) -> dict:
    torch.manual_seed(cfg.seed)
    out = Path(cfg.output_dir)
    if procs.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1))
    procs.barrier()

    train_ds = DairV2XDataset(cfg.data_root, split=cfg.train_split, split_file=cfg.split_file)
    val_ds = DairV2XDataset(cfg.data_root, split=cfg.val_split, split_file=cfg.split_file,
                            config=DatasetConfig(protocol=cfg.val_protocol)) if cfg.val_split else None
    if val_ds is not None and val_ds.protocol == "univ2x" and cfg.collision != "univ2x":
        raise ValueError(f"collision {cfg.collision!r} belongs to the time protocol; the univ2x "
                         "validation uses UniV2X's raster test (set val_protocol: time)")
    descriptions = read_descriptions(cfg.descriptions) if cfg.descriptions else None
    resume = cfg.resume and has_checkpoint(out)
    if resume:
        student = load_model(out / CHECKPOINT / "student")
        student.settings.fusion, student.settings.scene_text = cfg.fusion, cfg.scene_text
        student.settings.roadside_crop = cfg.roadside_crop
    else:
        student = build_student(cfg, train_ds, descriptions)
    teacher = load_teacher(cfg, student, procs.device) if cfg.uses_teacher else None

    vision_stage = cfg.stage == "vision"
    d_model = student.model.config.text_config.d_model
    heads = AlignmentHeads(d_model, d_model, cfg.align_dim) if cfg.alignment and not vision_stage else None
    fusion = None
    if cfg.modality_weights and not vision_stage:  # learned, starting from the checkpoint's when resuming
        fusion = ModalityWeights(student.settings.modality_weights or (1.0, 1.0, 1.0))
        install_modality_weights(student.model, student.settings, source=fusion)
    hazard_labels = hazard_head = None
    if cfg.lambda_hazard > 0:
        hazard_labels = roadside_hazard_labels(train_ds)
        if hazard_labels is None or not any(v >= 0 for v in hazard_labels):
            raise ValueError(f"lambda_hazard needs the probe's labels: {cfg.data_root} has no "
                             "visibility.json (a synthetic world's sidecar)")
        # the projector's width (= the text's = the decoder's)
        hazard_head = PlanStateHazardHead(d_model) if cfg.hazard_probe_on == "decoder" \
            else RoadsideHazardHead(d_model)
    object_boxes = objects_head = None
    if cfg.lambda_objects > 0:
        object_boxes = roadside_object_boxes(train_ds)
        if object_boxes is None or all(b is None for b in object_boxes):
            raise ValueError(f"lambda_objects needs roadside boxes: {cfg.data_root}/visibility.json is "
                             "missing or was written without 'roadside_boxes' (regenerate the world "
                             "with v2x-vlm synth)")
        objects_head = RoadsideObjectsHead(d_model)
    smoothing = None
    if cfg.label_sigma_bins > 0:
        smoothing = BinLabelSmoothing(loc_token_ids(student.tokenizer)[: student.settings.codec.bins],
                                      cfg.label_sigma_bins)
    module = PlannerTrainModule(student.model, heads, cfg.freeze_vision, cfg.kappa, fusion,
                                hazard_head, objects_head, vision_only=vision_stage,
                                smoothing=smoothing, decision_weight=cfg.decision_weight).to(procs.device)
    if vision_stage:  # the text encoder and decoder get no gradient: not trained, not decayed
        student.model.model.language_model.requires_grad_(False)
        student.model.lm_head.requires_grad_(False)
    trained = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=cfg.lr, weight_decay=cfg.weight_decay)

    sampler = EpochSampler(len(train_ds), cfg.seed, cfg.epoch_fraction, procs.rank, procs.world,
                           weights=pair_weights(train_ds, cfg.pair_weight, cfg.hazard_weight,
                                                cfg.scenario_weights, cfg.balance_turns,
                                                cfg.harmless_weight))
    steps_per_epoch = math.ceil(len(sampler) / cfg.batch_size)
    schedule_steps = cfg.epochs * steps_per_epoch
    # max_steps stops a run early; it does not reshape the schedule, so a run stopped and
    # resumed follows the same learning rates as one that never stopped
    total_steps = min(schedule_steps, cfg.max_steps or schedule_steps)

    def schedule(step: int) -> float:  # linear warm-up, then linear decay to 0
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        return max(0.0, (schedule_steps - step) / max(1, schedule_steps - cfg.warmup_steps))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    state = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "best_l2": None}
    if resume:
        state = load_training_state(out, heads, optimizer, scheduler, hazard_head, objects_head)
        log.info("resumed from %s at epoch %d step %d", out / CHECKPOINT, state["epoch"],
                 state["global_step"])
    first_step = state["global_step"]

    wrapped = module
    if procs.world > 1:
        wrapped = torch.nn.parallel.DistributedDataParallel(
            module, device_ids=[procs.device.index] if procs.device.type == "cuda" else None)
    weights = LossWeights(cfg.lambda_align if cfg.alignment else 0.0, cfg.lambda_kd if teacher else 0.0,
                          cfg.lambda_hazard, cfg.lambda_objects)
    collate = PairedCollate(_builder(student), None, distill=teacher is not None)
    teacher_inputs_differ = teacher is not None and teacher_needs_own_inputs(teacher, student)
    if teacher_inputs_differ:
        collate.teacher = _builder(teacher)
    teacher_features = None
    if teacher is not None and cfg.freeze_vision and not teacher_inputs_differ \
            and same_vision_tower(student.model, teacher.model):
        teacher_features = TeacherImageFeatures(teacher.model)
        log.info("the teacher reuses the student's frozen vision tower output (same weights)")
    augment = Augmentation(cfg.augment_resolution, cfg.augment_jpeg_quality, cfg.augment_p)
    examples = PlanningExamples(train_ds, descriptions, fusion=cfg.fusion, augment=augment,
                                roadside_dropout=cfg.roadside_dropout, seed=cfg.seed,
                                roadside_dropout_uniform=cfg.roadside_dropout_uniform,
                                hazard_labels=hazard_labels, roadside_boxes=object_boxes,
                                command_twins=cfg.command_twins,
                                command_twin_ok=command_twin_frames(train_ds) if cfg.command_twins else None,
                                motion_s=cfg.roadside_motion_s)
    train_log = eval_log = probe_log = None
    probe_examples = None
    if vision_stage and val_ds is not None and len(val_ds):
        probe_examples = PlanningExamples(val_ds, descriptions, fusion=True,
                                          roadside_boxes=roadside_object_boxes(val_ds))
    if procs.main:
        train_log = CsvLog(out / "train_log.csv",
                           ["epoch", "step", "loss", "traj", "align", "kd", "lr", "seconds",
                            "w_ego", "w_roadside", "w_text", "hazard", "objects"], first_step)
        probe_log = CsvLog(out / "probe_log.csv", PROBE_FIELDS, first_step) if vision_stage else None
        if not vision_stage:  # the vision stage plans nothing: scored in probe_log.csv
            eval_log = CsvLog(out / "eval_log.csv",
                              ["epoch", "step", "samples", *(f"l2_{h}" for h in HORIZON_KEYS),
                               *(f"col_{h}" for h in HORIZON_KEYS)], first_step)
    # training time over every run of this output directory (a resumed run goes on counting)
    began = time.perf_counter() - float(state.get("seconds", 0.0))

    def elapsed() -> float:
        return round(time.perf_counter() - began, 1)
    last: dict = {}
    val_result = probe_result = None

    def weights_into_settings() -> dict:
        """The learned modality weights, into the settings saved with the model; for the log."""
        if fusion is None:
            return {}
        student.settings.modality_weights = fusion.as_tuple()
        return dict(zip(("w_ego", "w_roadside", "w_text"), student.settings.modality_weights))

    def save(done_epoch: int, step_in_epoch: int) -> None:
        weights_into_settings()
        if procs.main:
            save_checkpoint(out, module.student, student.tokenizer, student.settings, heads, optimizer,
                            scheduler, {**state, "epoch": done_epoch, "step_in_epoch": step_in_epoch,
                                        "seconds": elapsed()}, hazard_head, objects_head)

    for epoch in range(state["epoch"], cfg.epochs):
        if state["global_step"] >= total_steps:
            break
        sampler.set_epoch(epoch)
        examples.set_epoch(epoch)
        skip = state["step_in_epoch"] * cfg.batch_size if epoch == state["epoch"] else 0
        order = sampler.indices()[skip:]
        # its own generator: a DataLoader iterator draws a seed, and from the global RNG that
        # draw would shift dropout masks after a resume
        loader = torch.utils.data.DataLoader(examples, batch_size=cfg.batch_size, sampler=order,
                                             collate_fn=collate, num_workers=cfg.num_workers,
                                             generator=torch.Generator().manual_seed(cfg.seed + epoch))
        module.train()
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step",
                   disable=not (progress and procs.main))
        step_in_epoch = state["step_in_epoch"] if epoch == state["epoch"] else 0
        for batch in bar:
            batch = _to(batch, procs.device)
            logits, traj, align, hazard, objects = wrapped(batch)
            kd = None
            if teacher is not None:
                with torch.no_grad():
                    t_batch = batch.get("teacher", batch)
                    if teacher_features is None:
                        t_logits, _, _, _ = forward_planner(teacher.model, t_batch)
                    else:
                        tower = module.tower_output
                        t_logits, _, _, _ = forward_planner(
                            teacher.model, t_batch, lambda px: teacher_features(px, tower))
                module.tower_output = None
                kd = distillation_loss(logits, t_logits, batch["traj_mask"], cfg.temperature,
                                       decision_weights(batch["labels"], cfg.decision_weight))
            losses = total_loss(traj, align, kd, weights, hazard, objects)
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(trained, cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            state["global_step"] += 1
            step_in_epoch += 1
            last = {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in losses.items()}
            bar.set_postfix(loss=f"{last['loss']:.3f}")
            if procs.main and (state["global_step"] % cfg.log_every == 0 or state["global_step"] == 1):
                train_log.write({"epoch": epoch + 1, "step": state["global_step"], **last,
                                 "lr": scheduler.get_last_lr()[0],
                                 "seconds": elapsed(), **weights_into_settings()})
            if cfg.checkpoint_every and state["global_step"] % cfg.checkpoint_every == 0:
                save(epoch, step_in_epoch)
            if state["global_step"] >= total_steps:
                break
        finished_epoch = step_in_epoch >= steps_per_epoch
        state["epoch"], state["step_in_epoch"] = (epoch + 1, 0) if finished_epoch else (epoch, step_in_epoch)

        weights_into_settings()  # the exported model carries the weights it was validated with
        if procs.main and vision_stage:  # scored by the probe; the latest encoder is the model
            if probe_examples is not None and probe_examples.roadside_boxes is not None:
                probe_result = objects_probe_report(module, probe_examples, collate,
                                                    read_visibility(val_ds.root),
                                                    max_frames=cfg.eval_max_samples or len(val_ds))
                probe_log.write(probe_row(epoch + 1, state["global_step"], probe_result))
            save_model(out / "model", module.student, student.tokenizer, student.settings,
                       model_card(cfg, None, state["global_step"], elapsed(), student.settings.codec),
                       dtype=getattr(torch, cfg.export_dtype))
        elif procs.main and val_ds is not None and len(val_ds):
            module.eval()
            current = LoadedModel(module.student, student.tokenizer, student.settings, "training")
            batch = max(cfg.batch_size, 16)
            # no CUDA graphs: a validation pass would capture one per prompt length for a
            # single use, and a capture that fails leaves CUDA's random generator unusable for
            # the dropout of the training steps that follow
            planner = ModelPlanner(current, device=procs.device, batch_size=batch, cuda_graphs=False)
            val_result = validate(planner, val_ds, cfg.eval_max_samples, cfg.collision, batch)
            eval_log.write({"epoch": epoch + 1, "step": state["global_step"],
                            "samples": val_result["num_samples"],
                            **{f"l2_{h}": val_result["l2"][h] for h in HORIZON_KEYS},
                            **{f"col_{h}": val_result["collision"][h] for h in HORIZON_KEYS}})
            if state["best_l2"] is None or val_result["l2"]["avg"] <= state["best_l2"]:
                state["best_l2"] = val_result["l2"]["avg"]
                card = model_card(cfg, val_result, state["global_step"], elapsed(), student.settings.codec)
                save_model(out / "model", module.student, student.tokenizer, student.settings, card,
                           dtype=getattr(torch, cfg.export_dtype))
        elif procs.main:
            save_model(out / "model", module.student, student.tokenizer, student.settings,
                       model_card(cfg, None, state["global_step"], elapsed(), student.settings.codec),
                       dtype=getattr(torch, cfg.export_dtype))
        if procs.main and cfg.export_each_epoch and finished_epoch:
            save_model(out / "epochs" / f"epoch-{epoch + 1}", module.student, student.tokenizer,
                       student.settings, model_card(cfg, val_result, state["global_step"], elapsed(),
                                                    student.settings.codec),
                       dtype=getattr(torch, cfg.export_dtype))
        save(state["epoch"], state["step_in_epoch"])
        procs.barrier()

    if state["global_step"] == first_step and (out / "summary.json").exists():
        # resumed with nothing left to train: the finished run's summary stands (this
        # invocation saw no loss, validation or example counts to put in its place)
        log.info("%s: nothing left to train (step %d of %d); its summary.json is kept", out,
                 state["global_step"], total_steps)
        return json.loads((out / "summary.json").read_text())
    summary = {"global_step": state["global_step"], "total_steps": total_steps, "world_size": procs.world,
               "last_losses": last, "validation": val_result, "best_val_l2": state["best_l2"],
               "probe": probe_result,
               "modality_weights": student.settings.modality_weights if fusion is not None else None,
               "roadside_dropped": examples.dropped, "roadside_uniform": examples.uniform,
               "command_twins": examples.twinned,
               # teacher examples planned on the student's frozen tower output / on its own
               "teacher_tower_reused": teacher_features.reused if teacher_features else 0,
               "teacher_tower_computed": teacher_features.computed if teacher_features else None,
               "ranks_in_sync": ranks_in_sync(module) if procs.world > 1 else True,
               "seconds": elapsed()}
    if procs.main:
        (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    return summary


def ranks_in_sync(module: nn.Module) -> bool:
    """True when every process holds the same trained parameters (DDP's promise)."""
    flat = torch.cat([p.detach().float().reshape(-1).cpu() for p in module.parameters()])
    mine = torch.tensor([flat.sum().item(), (flat * flat).sum().item(), flat[::97].sum().item()],
                        dtype=torch.float64)
    gathered = [torch.zeros_like(mine) for _ in range(torch_dist.get_world_size())]
    torch_dist.all_gather(gathered, mine)
    return all(torch.equal(g, gathered[0]) for g in gathered)


__all__ = ["PlannerTrainModule", "TrainConfig", "forward_planner", "train"]
