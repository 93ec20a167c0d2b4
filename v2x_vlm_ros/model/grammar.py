"""Constrained decoding: the loc-token trajectory grammar as a transformers LogitsProcessor.

Decoder positions after the start token: 0 -> ``<s>``, 1..2T -> the codec's location
tokens, 2T+1 -> ``</s>``, later -> ``<pad>`` (rows of a batch that already finished). Every
other token gets -inf, so even random weights give a well-formed trajectory.

``BinChoice``, after the grammar, leaves only the location token of the bin that
``choose_bins`` picks from the distribution over the codec's bins (``token_choice``: mean or
median; ``model.codec.TOKEN_CHOICES``) for ``generate``'s greedy step to pick: the reference
of what ``runtime.fast_decode`` does with that choice.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor

from v2x_vlm_ros.model.codec import LocTokenCodec, check_token_choice


def choose_bins(logits: torch.Tensor, token_choice: str) -> torch.Tensor:
    """(B,) the bin of each row of ``logits`` (B, A) over bins 0..A-1 that ``token_choice``
    picks: ``greedy`` the most likely; ``mean`` the one nearest the mean of their softmax;
    ``median`` the first whose cumulative probability reaches one half. In float32 whatever
    the logits' precision, and without leaving the device (a CUDA graph may capture it)."""
    if check_token_choice(token_choice) == "greedy":
        return logits.argmax(dim=-1)
    probs = logits.float().softmax(dim=-1)
    last = probs.shape[-1] - 1
    if token_choice == "mean":
        index = torch.arange(probs.shape[-1], dtype=probs.dtype, device=probs.device)
        return (probs @ index).round().long().clamp_(0, last)
    return (probs.cumsum(dim=-1) < 0.5).sum(dim=-1).clamp_(max=last)  # median


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


class BinChoice(LogitsProcessor):
    """At the location steps, every score but that of the bin ``choose_bins`` picks from
    the scores of the codec's bins becomes -inf; other steps pass unchanged. Goes after
    ``TrajectoryGrammar``."""

    def __init__(self, codec: LocTokenCodec, token_choice: str):
        self.token_choice = check_token_choice(token_choice)
        self.ids = torch.tensor(codec.allowed_token_ids(0))  # bin order: bin i is ids[i]
        self.num_tokens = codec.num_tokens

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        step = input_ids.shape[1] - 1  # as in TrajectoryGrammar
        if not 1 <= step <= self.num_tokens:
            return scores
        ids = self.ids.to(scores.device)
        chosen = ids[choose_bins(scores.index_select(1, ids), self.token_choice)]
        out = torch.full_like(scores, float("-inf"))
        out.scatter_(1, chosen[:, None], 0.0)
        return out
