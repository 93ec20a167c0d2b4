"""Learnable modality-weighted fusion (VLM-E2E, Liu et al. 2025): three learned weights
balance the ego image, the roadside image and the text features before the decoder.

The text encoder's output (what the decoder attends to) is scaled token by token: the
image cells of the ego half of the fused canvas by ``w_ego``, those of the roadside half by
``w_roadside``, the pooled image token (the mean over all cells) by their mean, and the
prompt tokens by ``w_text``. The weights are ``3 * softmax(logits)`` (they start at 1 and
keep summing to 3), so the fusion can shift attention between modalities without changing
the overall scale.

The model itself stays a plain Florence-2 (transformers' native classes, safetensors);
the learned weights are stored in ``v2x_vlm.json`` (``ModelSettings.modality_weights``) and
applied by a forward hook on the text encoder that ``modeling.load_model`` installs, so
every path that runs the encoder (training, ``generate``, the static decoder, exported
engines) sees them. A model without them is unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from v2x_vlm_ros.model.configuration import VISION_STRIDE, ModelSettings

MODALITIES = ("ego", "roadside", "text")


class ModalityWeights(nn.Module):
    """The three fusion weights as a learnable module (``weights()``: ego, roadside, text)."""

    def __init__(self, initial=(1.0, 1.0, 1.0)):
        super().__init__()
        init = torch.as_tensor(initial, dtype=torch.float32)
        if init.shape != (3,) or not torch.all(init > 0):
            raise ValueError(f"modality weights must be three positive numbers, got {initial!r}")
        self.logits = nn.Parameter(torch.log(init / init.sum()))

    def weights(self) -> torch.Tensor:
        return 3.0 * torch.softmax(self.logits, dim=0)

    def as_tuple(self) -> tuple[float, float, float]:
        return tuple(float(w) for w in self.weights().detach().cpu())


def token_scale(weights: torch.Tensor, settings: ModelSettings, length: int) -> torch.Tensor:
    """(length,) per-position scale of the encoder output for ``weights`` (ego, roadside,
    text): the image tokens come first in the prompt (``processing.PromptEncoder``)."""
    h, w = settings.image_size
    rows, cols = h // VISION_STRIDE, w // VISION_STRIDE
    n_image = rows * cols + 1
    w_ego, w_road, w_text = weights[0], weights[1], weights[2]
    ego_cell = (torch.arange(rows * cols, device=weights.device) % cols) < cols // 2
    cells = torch.where(ego_cell, w_ego, w_road)
    pooled = (0.5 * (w_ego + w_road)).reshape(1)
    text = w_text.expand(max(length - n_image, 0))
    return torch.cat([pooled, cells, text])[:length]


def install(model, settings: ModelSettings, source=None):
    """Scale the text encoder's output of ``model`` by the modality weights: ``source`` (a
    ``ModalityWeights``, learned in training) or the constants in ``settings``. Returns the
    hook handle (``remove()`` undoes it); None when there is nothing to apply."""
    previous = getattr(model, "_modality_weights_hook", None)
    if previous is not None:  # one weighting at a time (a resumed run replaces the stored one)
        previous.remove()
        model._modality_weights_hook = None
    if source is None and settings.modality_weights is None:
        return None
    constant = None if source is not None else torch.tensor(settings.modality_weights, dtype=torch.float32)

    def hook(module, args, output):
        states = output[0]  # last_hidden_state (a ModelOutput or a tuple)
        weights = source.weights() if source is not None else constant.to(states.device)
        scaled = states * token_scale(weights, settings, states.shape[1]).to(states.dtype).view(1, -1, 1)
        if isinstance(output, tuple):
            return (scaled, *output[1:])
        output.last_hidden_state = scaled
        return output

    model._modality_weights_hook = model.model.language_model.encoder.register_forward_hook(hook)
    return model._modality_weights_hook
