"""The learned planner: samples in, trajectories out, through transformers' ``generate``.

Decoding is greedy and constrained to the codec's grammar (``<s>``, 2T location tokens,
``</s>``), so the loc-token codec always gets a well-formed answer, even from random
weights. The text codec cannot be constrained that simply; its malformed answers raise
``TrajectoryDecodeError`` inside ``decode_tokens`` and the planner falls back to the
constant-velocity plan for that sample, counting it (``decode_failures``).

The fast path (static KV cache, own decode loop, TensorRT) belongs to the inference
engine; this module is the reference it is compared with.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from v2x_vlm_ros.data.images import load_image
from v2x_vlm_ros.data.records import CooperativeSample
from v2x_vlm_ros.eval.baselines import ConstantVelocityPlanner
from v2x_vlm_ros.model.codec import LocTokenCodec, TrajectoryDecodeError, build_codec
from v2x_vlm_ros.model.modeling import LoadedModel, load_model
from v2x_vlm_ros.model.processing import ImagePreprocessor, PromptEncoder
from v2x_vlm_ros.model.tokenizer import loc_token_ids


class TrajectoryGrammar(LogitsProcessor):
    """Masks every token the loc-token grammar does not allow at the current step.

    Decoder positions after the start token: 0 -> ``<s>``, 1..2T -> the codec's location
    tokens, 2T+1 -> ``</s>``, later -> ``<pad>`` (rows that already finished)."""

    def __init__(self, codec: LocTokenCodec, bos: int, eos: int, pad: int, vocab_size: int):
        self.allowed = []
        for step in range(codec.num_tokens + 3):
            mask = torch.full((vocab_size,), float("-inf"))
            if step == 0:
                ids = [bos]
            elif step <= codec.num_tokens:
                ids = codec.allowed_token_ids(step - 1)
            elif step == codec.num_tokens + 1:
                ids = [eos]
            else:
                ids = [pad]
            mask[ids] = 0.0
            self.allowed.append(mask)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        step = min(input_ids.shape[1] - 1, len(self.allowed) - 1)  # input_ids start with the start token
        return scores + self.allowed[step].to(scores.device, scores.dtype)


class ModelPlanner:
    """A Florence-2 planner directory used as a ``v2x-vlm eval`` planner."""

    name = "model"

    def __init__(self, model, device: str = "cpu", batch_size: int = 16, roadside_rate_hz: float = 2.0):
        self.loaded: LoadedModel = model if isinstance(model, LoadedModel) else load_model(model, device)
        self.device = torch.device(device)
        m, tok, settings = self.loaded.model, self.loaded.tokenizer, self.loaded.settings
        self.settings = settings
        self.uses_roadside = settings.fusion
        self.batch_size = batch_size
        self.roadside_rate_hz = roadside_rate_hz
        self.images = ImagePreprocessor(settings, self.device)
        self.prompts = PromptEncoder(tok, settings, m.config.text_config.max_position_embeddings)
        self.codec = build_codec(settings.codec, loc_token_ids(tok))
        self.fallback = ConstantVelocityPlanner(settings.codec.num_waypoints)
        self.decode_failures = 0
        self._grammar = None
        if isinstance(self.codec, LocTokenCodec):
            self._grammar = TrajectoryGrammar(self.codec, tok.bos_token_id, tok.eos_token_id,
                                              tok.pad_token_id, m.config.text_config.vocab_size)

    @property
    def max_new_tokens(self) -> int:
        if self._grammar is not None:
            return self.codec.num_tokens + 2
        return 16 * self.settings.codec.num_waypoints  # text: ~12 characters per waypoint

    def model_inputs(self, samples: list[CooperativeSample]) -> dict:
        """Pixel values and padded prompt ids for a batch of samples."""
        pairs = [(load_image(s.ego_image_path),
                  load_image(s.roadside_image_path) if self.uses_roadside else None) for s in samples]
        prompts = [self.prompts.encode(s.description, s.motion, s.command).input_ids for s in samples]
        width = max(len(p) for p in prompts)
        pad = self.loaded.tokenizer.pad_token_id
        ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, : len(p)] = torch.tensor(p)
            mask[i, : len(p)] = 1
        return {"pixel_values": self.images(pairs), "input_ids": ids.to(self.device),
                "attention_mask": mask.to(self.device)}

    @torch.no_grad()
    def generate(self, inputs: dict) -> torch.Tensor:
        processors = LogitsProcessorList([self._grammar] if self._grammar is not None else [])
        config = copy.deepcopy(self.loaded.model.generation_config)
        config.max_new_tokens = self.max_new_tokens
        return self.loaded.model.generate(**inputs, logits_processor=processors, generation_config=config)

    def decode_tokens(self, sequence: torch.Tensor) -> np.ndarray:
        """Trajectory from one generated sequence (start token, ``<s>``, tokens, ``</s>``)."""
        tok = self.loaded.tokenizer
        ids = [int(t) for t in sequence.tolist()]
        specials = {tok.bos_token_id, tok.eos_token_id, tok.pad_token_id}
        body = [t for t in ids[1:] if t not in specials]  # ids[0] is the decoder start token
        if self._grammar is not None:
            return self.codec.decode(body)
        return self.codec.decode(tok.decode(body, skip_special_tokens=True))

    def plan_batch(self, samples: list[CooperativeSample]) -> list[np.ndarray]:
        out = []
        for start in range(0, len(samples), self.batch_size):
            chunk = samples[start: start + self.batch_size]
            sequences = self.generate(self.model_inputs(chunk))
            for sample, seq in zip(chunk, sequences):
                try:
                    out.append(self.decode_tokens(seq))
                except TrajectoryDecodeError:
                    self.decode_failures += 1
                    out.append(self.fallback.plan(sample))
        return out

    def plan(self, sample: CooperativeSample) -> np.ndarray:
        return self.plan_batch([sample])[0]
