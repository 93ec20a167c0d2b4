"""One planning step, the same everywhere: the vehicle service, replay and ``v2x-vlm eval``.

``PlannerEngine.plan(inputs)`` takes frames already in memory (decoded ego and roadside
images, the description, the ego's motion and the navigation command) and returns, per
frame, the refined trajectory, the raw decoded one and the time each stage took:

- ``preprocess``: the fused image to pixel values, the prompt to token ids;
- ``vision``, ``encoder``, ``decoder``: the vision tower with its projector, the text
  encoder, and the decode loop over a static KV cache (``runtime.fast_decode``),
  constrained to the codec's grammar, each location token the most likely bin or the mean
  or median bin (the model's ``token_choice``, or the one the engine is given);
  with ``decoder="generate"`` (the reference path, and the only one for the text codec)
  the three are one ``model`` stage, transformers' ``generate`` with the same grammar, the
  same choice and the same tokens;
- ``decode``: tokens to waypoints (a malformed answer falls back to constant velocity
  and is counted);
- ``refine``: kinematic repair and smoothing (``runtime.refine``), when enabled.

The model stages run on the backend ``runtime.backends.choose_backend`` picked. Stage
times of a batch are split evenly over its frames.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import LogitsProcessorList

from v2x_vlm_ros.data.records import Command, EgoMotion
from v2x_vlm_ros.model.codec import LocTokenCodec, TrajectoryDecodeError, build_codec, check_token_choice
from v2x_vlm_ros.model.grammar import BinChoice, TrajectoryGrammar
from v2x_vlm_ros.model.modeling import LoadedModel
from v2x_vlm_ros.model.processing import ImagePreprocessor, PromptEncoder
from v2x_vlm_ros.model.tokenizer import loc_token_ids
from v2x_vlm_ros.preprocessing.blank_image import is_blank_image
from v2x_vlm_ros.runtime.backends import BackendReport, choose_backend
from v2x_vlm_ros.runtime.baselines import ConstantVelocityPlanner
from v2x_vlm_ros.runtime.fast_decode import GraphedDecode, StaticDecoder, compile_static

DECODERS = ("static", "generate")
#: Prompt tokens (after the image tokens) that engines are built for; longer descriptions
#: are cut by the prompt budget.
DEFAULT_PROMPT_TOKENS = 160
#: With CUDA graphs, prompts are padded to a multiple of this many tokens so that a few
#: captured graphs serve every description length.
GRAPH_LENGTH_BUCKET = 32
#: Captured graphs kept (per batch size and padded length); the oldest is dropped.
MAX_GRAPHS = 8


@dataclass
class EngineOptions:
    """Where built engines are, and the shapes and precision to look them up by."""

    cache_dir: str = str(Path.home() / ".cache" / "v2x_vlm_ros" / "engines")
    precision: str = "fp16"
    batch: int = 1
    prompt_length: int | None = None  # encoder length; None: image tokens + DEFAULT_PROMPT_TOKENS
    compiler: str = "tensorrt"  # "export" builds portable torch.export programs (tests, CPU)


@dataclass
class PlanInput:
    ego: np.ndarray  # HxWx3 uint8, BGR (as OpenCV decodes)
    roadside: np.ndarray | None  # None: no roadside image (ego-only canvas)
    description: str | None
    motion: EgoMotion
    command: Command
    #: For a model that reads motion (``ModelSettings.roadside_motion_s``): the roadside frame
    #: taken that long before ``roadside``; None: not there (the current frame is shown twice,
    #: no motion, and the output says so). Ignored by a model that reads one frame.
    roadside_previous: np.ndarray | None = None


@dataclass
class PlanOutput:
    xy: np.ndarray  # (T, 2) refined trajectory, current ego frame
    raw_xy: np.ndarray  # (T, 2) as decoded
    decode_failed: bool = False
    refine_report: object = None
    stage_ms: dict = field(default_factory=dict)
    truncated_prompt: bool = False
    roadside_blank: bool = False  # a blank roadside image, planned as none (roadside_views)
    roadside_previous_missing: bool = False  # a model that reads motion got no earlier frame


class PlannerEngine:
    """A loaded model plus everything around it for one planning step."""

    def __init__(self, loaded: LoadedModel, device="cpu", refiner=None, decoder: str = "static",
                 backend: str = "eager", engines: "EngineOptions | None" = None,
                 cuda_graphs: bool = True, token_choice: str | None = None):
        """``token_choice``: how location tokens are chosen (``TOKEN_CHOICES``); None: the
        model's own (``ModelSettings.token_choice``)."""
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
        self.token_choice = check_token_choice(token_choice or loaded.settings.token_choice)
        self.loaded = loaded
        self.device = torch.device(device)
        self.refiner = refiner
        #: plan a blank roadside image as it is instead of as none (roadside_views)
        self.keep_blank_roadside = False
        model, tok, settings = loaded.model, loaded.tokenizer, loaded.settings
        self.settings = settings
        self.images = ImagePreprocessor(settings, self.device)
        self.prompts = PromptEncoder(tok, settings, model.config.text_config.max_position_embeddings)
        self.codec = build_codec(settings.codec, loc_token_ids(tok))
        self.fallback = ConstantVelocityPlanner(settings.codec.num_waypoints)
        self.grammar = None
        if isinstance(self.codec, LocTokenCodec):
            self.grammar = TrajectoryGrammar(self.codec, tok.bos_token_id, tok.eos_token_id,
                                             tok.pad_token_id, model.config.text_config.vocab_size)
        self.generation_config = copy.deepcopy(model.generation_config)
        self.generation_config.max_new_tokens = (
            self.codec.num_tokens + 2 if self.grammar is not None else 16 * settings.codec.num_waypoints)
        if self.grammar is None and self.token_choice != "greedy":
            raise ValueError(f"token_choice {self.token_choice!r} needs location tokens; the text codec "
                             f"decodes greedily")
        processors = [self.grammar] if self.grammar is not None else []
        if self.token_choice != "greedy":
            processors.append(BinChoice(self.codec, self.token_choice))
        self.processors = LogitsProcessorList(processors)
        self.static = None
        if decoder == "static" and self.grammar is not None:
            self.static = StaticDecoder(model, self.codec.allowed_token_ids(0), self.codec.num_tokens,
                                        tok.bos_token_id, tok.eos_token_id, self.token_choice)
        self.backend = choose_backend(backend, self.device)
        self.fixed_length: int | None = None
        if engines is not None and engines.compiler == "export":  # portable engines: run anywhere
            self.backend = BackendReport(backend, "export", ["torch.export programs from the engine cache"])
            self._use_engines(engines)
        elif self.backend.used == "tensorrt":
            self._use_engines(engines or EngineOptions())
        if self.static is not None:
            compile_static(self.static, self.backend.used)
        # inductor captures its own graphs (mode="reduce-overhead"); eager and TensorRT
        # engines get a captured decoder step here
        self.graphs: dict[tuple[int, int], GraphedDecode] | None = None
        if (cuda_graphs and self.static is not None and self.device.type == "cuda"
                and self.backend.used != "inductor"):
            self.graphs = {}

    def _use_engines(self, options: "EngineOptions") -> None:
        """Built engines for the vision tower and the text encoder, or a fall back (noted)."""
        from v2x_vlm_ros.runtime.engine_build import COMPILERS, load_engines
        from v2x_vlm_ros.runtime.engine_cache import EngineCache

        settings, model = self.settings, self.loaded.model
        length = options.prompt_length or settings.num_image_tokens + DEFAULT_PROMPT_TOKENS
        try:
            if self.static is None:
                raise RuntimeError("engines need the static decoder and the loc-token codec")
            parts, parity = load_engines(model, self.loaded.source, self.device, options.precision,
                                         options.batch, settings.image_size, length,
                                         settings.num_image_tokens, EngineCache(options.cache_dir),
                                         COMPILERS[options.compiler]())
        except Exception as exc:  # a missing, stale or failing engine must not stop the vehicle
            reason = getattr(exc, "reason", f"{type(exc).__name__}: {exc}")
            self.backend.notes.append(f"tensorrt engines not usable: {reason}")
            self.backend.used = choose_backend("inductor", self.device).used
            return
        self.static.image_features = parts["vision"]
        self.static.text_encoder = parts["encoder"]
        self.fixed_length = length
        self.prompts = PromptEncoder(self.loaded.tokenizer, settings, length)
        self.backend.notes.append(f"engines {options.precision}, batch {options.batch}, "
                                  f"length {length}, parity {parity}")

    def _sync(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    @property
    def uses_roadside(self) -> bool:
        return self.settings.fusion

    @property
    def roadside_motion_s(self) -> float | None:
        """How long before the current roadside frame the model's earlier one was taken
        (``PlanInput.roadside_previous``); None: the model reads one frame."""
        return self.settings.roadside_motion_s if self.uses_roadside else None

    def roadside_views(self, inputs: list[PlanInput]) -> tuple[list, list[bool]]:
        """The roadside image each frame is planned with, and which were blank: a blank one
        (one colour, ``preprocessing.blank_image``: a dead camera) carries no information and
        is planned as no roadside image, unless ``keep_blank_roadside`` (``eval
        --keep-blank-roadside``: what the model itself reads into one; the twin test passes
        its views to ``encode`` as they are)."""
        if not self.uses_roadside:
            return [None] * len(inputs), [False] * len(inputs)
        blank = [f.roadside is not None and not self.keep_blank_roadside and is_blank_image(f.roadside)
                 for f in inputs]
        return [None if b else f.roadside for f, b in zip(inputs, blank)], blank

    def encode(self, inputs: list[PlanInput], roadside: list | None = None) -> tuple[dict, list[bool]]:
        """Model inputs for a batch, and which prompts had their description cut.
        ``roadside``: the images to fuse (``roadside_views``; computed when None)."""
        if roadside is None:
            roadside = self.roadside_views(inputs)[0]
        pixels = self.images([(f.ego, r, None if r is None else f.roadside_previous)
                              for f, r in zip(inputs, roadside)])
        prompts = [self.prompts.encode(f.description, f.motion, f.command) for f in inputs]
        width = self.fixed_length or max(len(p.input_ids) for p in prompts)
        if self.graphs is not None and not self.fixed_length:
            bucket = -(-width // GRAPH_LENGTH_BUCKET) * GRAPH_LENGTH_BUCKET
            width = min(bucket, self.prompts.budget + self.settings.num_image_tokens)
        ids = torch.full((len(prompts), width), self.loaded.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, : len(p.input_ids)] = torch.tensor(p.input_ids)
            mask[i, : len(p.input_ids)] = 1
        batch = {"pixel_values": pixels, "input_ids": ids.to(self.device),
                 "attention_mask": mask.to(self.device)}
        return batch, [p.truncated for p in prompts]

    @torch.no_grad()
    def generate(self, batch: dict) -> torch.Tensor:
        return self.loaded.model.generate(**batch, logits_processor=self.processors,
                                          generation_config=self.generation_config)

    @torch.no_grad()
    def tokens(self, batch: dict) -> tuple[list[list[int]], dict]:
        """Answer tokens of a batch (the trajectory's, specials stripped) and stage times (s)."""
        if self.static is None:
            t0 = self._sync()
            sequences = self.generate(batch)
            t1 = self._sync()
            tok = self.loaded.tokenizer
            specials = {tok.bos_token_id, tok.eos_token_id, tok.pad_token_id}
            rows = [[int(t) for t in seq.tolist()[1:] if int(t) not in specials] for seq in sequences]
            return rows, {"model": t1 - t0}
        t0 = self._sync()
        features = self.static.image_features(batch["pixel_values"])
        t1 = self._sync()
        states = self.static.text_encoder(features, batch["input_ids"], batch["attention_mask"])
        t2 = self._sync()
        out = self._decode(states, batch["attention_mask"])
        t3 = self._sync()
        return out.tolist(), {"vision": t1 - t0, "encoder": t2 - t1, "decoder": t3 - t2}

    def _decode(self, states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.graphs is None:
            return self.static.decode(self.static.prepare(states, attention_mask))
        key = tuple(attention_mask.shape)
        graphed = self.graphs.pop(key, None)
        if graphed is None:
            try:
                graphed = GraphedDecode(self.static, key[0], key[1], states.dtype, self.device,
                                        capture=self.device.type == "cuda")
            except Exception as exc:  # a graph that cannot be captured must not stop planning
                self.backend.notes.append(f"CUDA graph capture failed, decoding without: "
                                          f"{type(exc).__name__}: {exc}")
                self.graphs = None
                return self.static.decode(self.static.prepare(states, attention_mask))
            if len(self.graphs) >= MAX_GRAPHS:
                self.graphs.pop(next(iter(self.graphs)))
        self.graphs[key] = graphed  # most recently used last
        return graphed.decode(states, attention_mask)

    def decode_tokens(self, body: list[int], speed_mps: float) -> np.ndarray:
        """The plan in metres; ``speed_mps`` is the ego speed the prompt gave (the codec's
        reference, if it has one)."""
        if self.grammar is not None:
            return self.codec.decode(body, speed_mps)
        return self.codec.decode(self.loaded.tokenizer.decode(body, skip_special_tokens=True), speed_mps)

    def plan(self, inputs: list[PlanInput]) -> list[PlanOutput]:
        n = len(inputs)
        t0 = self._sync()
        roadside, blank = self.roadside_views(inputs)
        batch, truncated = self.encode(inputs, roadside)
        t1 = self._sync()
        rows, model_s = self.tokens(batch)
        t2 = time.perf_counter()
        outputs = []
        motion = self.roadside_motion_s is not None
        for frame, view, body, cut, was_blank in zip(inputs, roadside, rows, truncated, blank):
            try:
                xy, failed = self.decode_tokens(body, frame.motion.speed_mps), False
            except TrajectoryDecodeError:
                xy, failed = self.fallback.plan_from_speed(frame.motion.speed_mps), True
            outputs.append(PlanOutput(xy=xy, raw_xy=xy, decode_failed=failed, truncated_prompt=cut,
                                      roadside_blank=was_blank,
                                      roadside_previous_missing=motion and view is not None
                                      and frame.roadside_previous is None))
        t3 = time.perf_counter()
        if self.refiner is not None:
            for frame, out in zip(inputs, outputs):
                # a speed measured over no time (a sequence's first frame) is unknown, not 0
                speed = frame.motion.speed_mps if frame.motion.history_s > 0 else None
                out.xy, out.refine_report = self.refiner(out.raw_xy, speed)
        t4 = time.perf_counter()
        seconds = {"preprocess": t1 - t0, **model_s, "decode": t3 - t2, "refine": t4 - t3}
        for out in outputs:
            out.stage_ms = {stage: 1000.0 * dt / n for stage, dt in seconds.items()}
        return outputs

    def warm_up(self, frames: int = 2) -> None:
        """Run dummy frames through every stage (compiles, allocates) before reporting ready."""
        h, w = 81, 144
        # textured: a one-colour roadside frame would be planned as none (roadside_views)
        frame = (96 + 64 * (np.indices((h, w)).sum(axis=0) % 2)).astype(np.uint8)[..., None].repeat(3, axis=2)
        dummy = PlanInput(frame, frame, "", EgoMotion(5.0, 0.0, 0.0, 0.5), Command.FORWARD)
        for _ in range(frames):
            self.plan([dummy])
