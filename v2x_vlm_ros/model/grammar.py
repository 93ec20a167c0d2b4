"""Constrained decoding: the loc-token trajectory grammar as a transformers LogitsProcessor.

Decoder positions after the start token: 0 -> ``<s>``, 1..2T -> the codec's location
tokens, 2T+1 -> ``</s>``, later -> ``<pad>`` (rows of a batch that already finished). Every
other token gets -inf, so even random weights give a well-formed trajectory.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor

from v2x_vlm_ros.model.codec import LocTokenCodec


class TrajectoryGrammar(LogitsProcessor):
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
