"""The three V2X-VLM training losses (You et al. 2025, Algorithm 2).

    L = L_traj + lambda_align * L_align + lambda_kd * L_KD,  lambda_align = 0.1, lambda_kd = 0.5

- ``trajectory_loss``: next-token cross-entropy on the trajectory tokens (optionally against
  ``BinLabelSmoothing``'s targets spread over neighbouring location bins).
- ``info_nce``: image-to-text contrastive alignment of the pooled fused-image feature
  and the pooled prompt feature over a batch (``AlignmentHeads`` projects both to a
  common dimension).
- ``distillation_loss``: T^2 KL(p_teacher || p_student) on softened trajectory-token
  distributions, teacher = Florence-2-large, student = Florence-2-base.

Every loss returns a scalar tensor; an empty selection (no target tokens) gives a zero
that is still connected to the inputs' graph, so ``backward()`` works for every batch
and never produces NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = -100  # the label value HF models and F.cross_entropy skip


def _upcast(x: torch.Tensor) -> torch.Tensor:
    """fp16 / bf16 -> float32 (softmax over a 50k vocabulary in half precision loses the
    small probabilities); float32 / float64 are kept as they are."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _zero(like: torch.Tensor) -> torch.Tensor:
    """A 0 scalar with a grad_fn connected to ``like`` (0 * sum, not a fresh constant)."""
    return _upcast(like).sum() * 0.0


class BinLabelSmoothing:
    """HL-Gauss targets for the location tokens (Imani & White 2018; Farebrother et al. 2024,
    "Stop Regressing"): a label in bin b becomes the mass a normal distribution centred on
    bin b's centre with standard deviation ``sigma_bins`` bins puts on each bin (renormalised
    over the bins in range), instead of all of it on bin b.

    Why: with one-hot targets a waypoint one bin off and one fifty bins off cost the same,
    so the loc tokens' embeddings learn no order and a briefly trained planner writes a few
    frequent endpoints. Spread targets make neighbouring bins share what they learn. Measured
    on the acceptance world it did not make a better planner (docs/TRAINING.md, "Targets
    spread over neighbouring bins"), so it stays off by default.

    Args:
        bin_ids: the token id of each bin, in bin order (``tokenizer.loc_token_ids`` cut to
            the codec's ``bins``).
        sigma_bins: the spread in bins (> 0).
    """

    def __init__(self, bin_ids, sigma_bins: float):
        if not (isinstance(sigma_bins, (int, float)) and math.isfinite(sigma_bins) and sigma_bins > 0):
            raise ValueError(f"sigma_bins must be a positive number, got {sigma_bins!r}")
        self.bin_ids = torch.as_tensor(list(bin_ids), dtype=torch.long)
        ids = self.bin_ids.tolist()
        if self.bin_ids.dim() != 1 or len(ids) < 2 or len(set(ids)) != len(ids):
            raise ValueError("bin_ids must be at least 2 distinct token ids")
        self.sigma_bins = float(sigma_bins)
        n = len(self.bin_ids)
        edges = torch.arange(n + 1, dtype=torch.float64)  # bin j spans [j, j + 1)
        centres = torch.arange(n, dtype=torch.float64) + 0.5
        cdf = torch.special.ndtr((edges[None, :] - centres[:, None]) / self.sigma_bins)  # (n, n + 1)
        mass = cdf[:, 1:] - cdf[:, :-1]
        self.targets = (mass / mass.sum(dim=1, keepdim=True)).float()  # (n, n), row b: label in bin b

    def bin_of(self, token_ids: torch.Tensor) -> torch.Tensor:
        """The bin of each token id, -1 for ids that are not location tokens."""
        lookup = torch.full((max(int(token_ids.max()), int(self.bin_ids.max())) + 1,), -1,
                            dtype=torch.long, device=token_ids.device)
        lookup[self.bin_ids.to(token_ids.device)] = torch.arange(len(self.bin_ids), device=token_ids.device)
        return lookup[token_ids.clamp_min(0)]


def trajectory_loss(logits: torch.Tensor, labels: torch.Tensor,
                    smoothing: BinLabelSmoothing | None = None,
                    weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean next-token cross-entropy over the positions whose label is not -100.

    Args:
        logits: (B, L, V) decoder logits.
        labels: (B, L) long, already aligned with ``logits`` (``logits[:, t]`` predicts
            ``labels[:, t]``, as HF seq2seq models give them); -100 = ignore.
        smoothing: where the label is a location token, the cross-entropy is taken against
            its spread targets (the softmax still over the whole vocabulary); other labels
            (BOS, EOS) stay one-hot. None: one-hot everywhere (the paper's).
        weights: (B, L) per-position weights (``decision_weights``): the sum of weighted
            cross-entropies over the N counted positions, divided by N. None: all 1.
    """
    if logits.dim() != 3 or labels.shape != logits.shape[:2]:
        raise ValueError(f"expected logits (B, L, V) and labels (B, L), got {tuple(logits.shape)} "
                         f"and {tuple(labels.shape)}")
    if labels.dtype != torch.long:
        raise ValueError(f"labels must be torch.long, got {labels.dtype}")
    valid = labels != IGNORE_INDEX
    count = int(valid.sum())
    if count == 0:
        return _zero(logits)
    targets = labels[valid]
    vocab = logits.shape[-1]
    if int(targets.min()) < 0 or int(targets.max()) >= vocab:
        raise ValueError(f"labels must be -100 or in 0..{vocab - 1}")
    _check_weights(weights, labels.shape)
    chosen = _upcast(logits[valid])
    if smoothing is None:
        per_position = F.cross_entropy(chosen, targets, reduction="none")
    else:
        per_position = _spread_cross_entropy(chosen, targets, smoothing)
    if weights is not None:
        per_position = per_position * weights[valid].to(per_position.dtype)
    return per_position.sum() / count


def _spread_cross_entropy(chosen: torch.Tensor, targets: torch.Tensor,
                          smoothing: BinLabelSmoothing) -> torch.Tensor:
    """(N,) cross-entropies of (N, V) logits: against the spread targets where the label is a
    location token, one-hot elsewhere."""
    vocab = chosen.shape[-1]
    if int(smoothing.bin_ids.max()) >= vocab:
        raise ValueError(f"location token ids reach {int(smoothing.bin_ids.max())}, "
                         f"the vocabulary has {vocab}")
    bins = smoothing.bin_of(targets)
    on_bins = bins >= 0
    log_p = F.log_softmax(chosen, dim=-1)
    per_position = -log_p.gather(1, targets[:, None])[:, 0]
    if bool(on_bins.any()):
        spread = smoothing.targets.to(log_p.device, log_p.dtype)[bins[on_bins]]  # (N, bins)
        per_position[on_bins] = -(spread * log_p[on_bins][:, smoothing.bin_ids.to(log_p.device)]).sum(-1)
    return per_position


def _check_weights(weights: torch.Tensor | None, shape) -> None:
    if weights is None:
        return
    if weights.shape != shape or not weights.is_floating_point():
        raise ValueError(f"weights must be float ({', '.join(map(str, shape))}), got {weights.dtype} "
                         f"{tuple(weights.shape)}")


def decision_weights(labels: torch.Tensor, weight: float) -> torch.Tensor | None:
    """(B, L) per-position loss weights: ``weight`` at the two tokens of the first waypoint
    written (label positions 1 and 2, after ``<s>``), 1 elsewhere; None when ``weight`` is 1
    (the losses' plain mean)."""
    if weight == 1.0:
        return None
    if labels.dim() != 2 or labels.shape[1] < 3:
        raise ValueError(f"need (batch, length >= 3) labels, got {tuple(labels.shape)}")
    weights = torch.ones(labels.shape, dtype=torch.float32, device=labels.device)
    weights[:, 1:3] = weight
    return weights


def info_nce_from_similarity(similarity: torch.Tensor) -> torch.Tensor:
    """L = -(1/K) sum_i log(exp S_ii / sum_j exp S_ij) for a (K, K) similarity matrix
    (rows = images, columns = texts; image-to-text only, as in the paper).

    The gradient is dL/dS_ii = -(1 - sigma_ii)/K and dL/dS_ij = sigma_ij/K with sigma the
    row-wise softmax of S.
    """
    if similarity.dim() != 2 or similarity.shape[0] != similarity.shape[1] or similarity.shape[0] < 1:
        raise ValueError(f"similarity must be (K, K) with K >= 1, got {tuple(similarity.shape)}")
    s = _upcast(similarity)
    # Cross-entropy with target i on row i is exactly -log softmax(S_i)_i, averaged over i.
    return F.cross_entropy(s, torch.arange(s.shape[0], device=s.device))


def info_nce(image_emb: torch.Tensor, text_emb: torch.Tensor, kappa: float) -> torch.Tensor:
    """InfoNCE between K paired image and text embeddings (both (K, D)).

    Both are L2-normalised, S_ij = z_i . h_j / kappa, then ``info_nce_from_similarity``.
    K = 1 is allowed: the only candidate is the positive, so the loss is 0.
    """
    if not (isinstance(kappa, (int, float)) and math.isfinite(kappa) and kappa > 0):
        raise ValueError(f"kappa must be a finite number > 0, got {kappa!r}")
    if image_emb.dim() != 2 or image_emb.shape != text_emb.shape:
        raise ValueError(f"expected two (K, D) tensors of the same shape, got {tuple(image_emb.shape)} "
                         f"and {tuple(text_emb.shape)}")
    z = F.normalize(_upcast(image_emb), dim=-1)
    h = F.normalize(_upcast(text_emb), dim=-1)
    return info_nce_from_similarity(z @ h.T / kappa)


class AlignmentHeads(nn.Module):
    """Bias-free linear projections of the pooled image and text features to a common
    dimension for ``info_nce`` (the two encoders' widths need not match; without a bias
    a zero feature stays zero instead of becoming a learned constant direction)."""

    def __init__(self, image_dim: int, text_dim: int, dim: int):
        super().__init__()
        if min(image_dim, text_dim, dim) < 1:
            raise ValueError(f"dimensions must be >= 1, got {image_dim}, {text_dim}, {dim}")
        self.image_proj = nn.Linear(image_dim, dim, bias=False)
        self.text_proj = nn.Linear(text_dim, dim, bias=False)

    def forward(self, image_pooled: torch.Tensor,
                text_pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(K, image_dim), (K, text_dim) -> z (K, dim), h (K, dim); not normalised
        (``info_nce`` normalises)."""
        return self.image_proj(image_pooled), self.text_proj(text_pooled)


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor,
                      temperature: float = 2.0, weights: torch.Tensor | None = None) -> torch.Tensor:
    """T^2 * KL(p_T || p_S), p = softmax(logits / T) over the vocabulary, KL summed over
    the vocabulary and averaged over the N positions where ``mask`` is True (the
    trajectory tokens).

    The teacher is a constant (detached). Computed with log_softmax in at least float32.
    The gradient w.r.t. the student logits is T * (p_S - p_T) / N per masked position:
    the softened softmax contributes a 1/T that the paper's eq. 20 (T^2 (p_S - p_T) / N)
    drops. The T^2 factor keeps the gradient scale comparable across temperatures.

    Args:
        student_logits, teacher_logits: (B, L, V), the same shape (the same tokenizer and
            the same target sequence, as Florence-2-base and -large share).
        mask: (B, L) bool.
        temperature: T > 0.
        weights: (B, L) per-position weights (``decision_weights``): the weighted KL summed
            over the N masked positions, divided by N. None: all 1.
    """
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    if student_logits.dim() != 3 or teacher_logits.shape != student_logits.shape:
        raise ValueError(f"expected student and teacher logits (B, L, V) of the same shape, got "
                         f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}")
    if mask.dtype != torch.bool or mask.shape != student_logits.shape[:2]:
        raise ValueError(f"mask must be bool (B, L), got {mask.dtype} {tuple(mask.shape)}")
    _check_weights(weights, mask.shape)
    count = int(mask.sum())
    if count == 0:
        return _zero(student_logits)
    # Select the N positions first: (N, V) instead of the whole (B, L, V) in float32.
    log_ps = F.log_softmax(_upcast(student_logits[mask]) / temperature, dim=-1)
    log_pt = F.log_softmax(_upcast(teacher_logits.detach()[mask]) / temperature, dim=-1)
    pt = log_pt.exp()
    # 0 * log 0 = 0: a teacher logit of -inf (a banned token) must not make the loss NaN.
    kl = torch.where(pt > 0, pt * (log_pt - log_ps), torch.zeros_like(pt))
    if weights is not None:
        kl = kl * weights[mask].to(kl.dtype)[:, None]
    return temperature ** 2 * kl.sum() / count


@dataclass(frozen=True)
class LossWeights:
    """Weights of the auxiliary losses (the paper's lambda_1 and lambda_2)."""

    lambda_align: float = 0.1
    lambda_kd: float = 0.5
    lambda_hazard: float = 0.0  # the roadside-hazard probe (not in the paper)
    lambda_objects: float = 0.0  # the roadside road-user cells (not in the paper)

    def __post_init__(self):
        for name in ("lambda_align", "lambda_kd", "lambda_hazard", "lambda_objects"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be finite and >= 0, got {value!r}")


def total_loss(traj: torch.Tensor | None, align: torch.Tensor | None = None, kd: torch.Tensor | None = None,
               weights: LossWeights = LossWeights(), hazard: torch.Tensor | None = None,
               objects: torch.Tensor | None = None) -> dict:
    """L = traj + lambda_align * align + lambda_kd * kd + lambda_hazard * hazard
    + lambda_objects * objects (absent terms contribute 0).

    Returns {"loss": tensor to backpropagate, "traj", "align", "kd", "hazard", "objects":
    unweighted values as floats for logging, 0.0 for absent terms}.
    ``traj`` is None in the vision stage (no decoder; ``TrainConfig.stage``).
    """
    present = [t for t in (traj, align, kd, hazard, objects) if t is not None]
    if not present:
        raise ValueError("total_loss needs at least one loss term")
    loss = traj if traj is not None else torch.zeros((), device=present[0].device)
    if align is not None:
        loss = loss + weights.lambda_align * align
    if kd is not None:
        loss = loss + weights.lambda_kd * kd
    if hazard is not None:
        loss = loss + weights.lambda_hazard * hazard
    if objects is not None:
        loss = loss + weights.lambda_objects * objects
    as_float = lambda t: 0.0 if t is None else float(t.detach())
    return {"loss": loss, "traj": as_float(traj), "align": as_float(align), "kd": as_float(kd),
            "hazard": as_float(hazard), "objects": as_float(objects)}


class RoadsideHazardHead(nn.Module):
    """A training-only probe: does the roadside camera show a road user the ground truth
    yields to? One linear score per image cell of the fused image's right (roadside) half,
    the largest wins (a small car anywhere in the view decides, as a detector's would).
    Its loss makes the vision encoder and projector represent that road user, which the
    planning loss alone did not (docs/TRAINING.md); the planner never reads the probe."""

    def __init__(self, dim: int):
        super().__init__()
        self.score = nn.Linear(dim, 1)

    def forward(self, cells: torch.Tensor) -> torch.Tensor:
        """(B, rows, cols, dim) image cells, ego half left -> (B,) logits."""
        if cells.dim() != 4 or cells.shape[2] < 2:
            raise ValueError(f"need (batch, rows, cols >= 2, dim) image cells, got {tuple(cells.shape)}")
        roadside = cells[:, :, cells.shape[2] // 2:, :]
        return self.score(roadside).flatten(1).amax(dim=1)


class PlanStateHazardHead(nn.Module):
    """The roadside-hazard probe on the decoder (``TrainConfig.hazard_probe_on: decoder``): one
    linear score of the decoder's last hidden state at the position that writes the plan's
    first token. The state is what the first token is read from, so the loss makes the
    decoder's cross-attention look for a hidden road user before it commits to a plan (with
    the endpoint written first, that token decides whether the plan brakes). Training only."""

    def __init__(self, dim: int):
        super().__init__()
        self.score = nn.Linear(dim, 1)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        """(B, dim) decoder states -> (B,) logits."""
        if state.dim() != 2:
            raise ValueError(f"need (batch, dim) decoder states, got {tuple(state.shape)}")
        return self.score(state).squeeze(-1)


def hazard_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of the probe's logits against labels 1 / 0, averaged over the
    samples whose label is known (>= 0); 0 (still part of the graph) when none is."""
    known = labels >= 0
    if not bool(known.any()):
        return logits.sum() * 0.0
    return nn.functional.binary_cross_entropy_with_logits(logits[known].float(), labels[known].float())


class RoadsideObjectsHead(nn.Module):
    """A training-only dense probe: which image cells of the fused image's right (roadside)
    half hold a road user the roadside camera sees? One linear score per cell, trained per
    cell (``objects_loss``) against the boxes of ``visibility.json``. A per-image label
    (``RoadsideHazardHead``) reaches the encoder through one cell, the highest-scoring,
    which was a static one: the cells holding the hidden car barely changed (docs/TRAINING.md).
    Per-cell targets reach the car's own cells. The planner never reads the probe."""

    def __init__(self, dim: int):
        super().__init__()
        self.score = nn.Linear(dim, 1)

    def forward(self, cells: torch.Tensor) -> torch.Tensor:
        """(B, rows, cols, dim) image cells, ego half left -> (B, rows, cols // 2) logits of
        the roadside half's cells (its columns ``cols - cols // 2`` onwards)."""
        if cells.dim() != 4 or cells.shape[2] < 2:
            raise ValueError(f"need (batch, rows, cols >= 2, dim) image cells, got {tuple(cells.shape)}")
        half = cells.shape[2] // 2
        return self.score(cells[:, :, cells.shape[2] - half:, :]).squeeze(-1)


def roadside_cell_targets(boxes: torch.Tensor, rows: int, cols: int, min_cover: float = 0.25) -> torch.Tensor:
    """(B, K, 4) boxes [x0, y0, x1, y1] as fractions of the roadside image (NaN rows:
    padding) -> (B, rows, cols) 0 / 1 targets: a cell is 1 when a box covers at least
    ``min_cover`` of it or the box's centre lies in it (a road user smaller than a cell
    still marks one)."""
    if boxes.dim() != 3 or boxes.shape[-1] != 4:
        raise ValueError(f"need (batch, boxes, 4) boxes, got {tuple(boxes.shape)}")
    b = boxes.float()
    valid = ~torch.isnan(b).any(-1)  # (B, K)
    b = torch.nan_to_num(b, nan=0.0)
    x = torch.arange(cols + 1, dtype=torch.float32, device=b.device) / cols  # cell edges
    y = torch.arange(rows + 1, dtype=torch.float32, device=b.device) / rows
    x0, y0, x1, y1 = (b[..., i, None] for i in range(4))  # (B, K, 1)
    over_x = (torch.minimum(x1, x[1:]) - torch.maximum(x0, x[:-1])).clamp_min(0) * cols  # (B, K, cols)
    over_y = (torch.minimum(y1, y[1:]) - torch.maximum(y0, y[:-1])).clamp_min(0) * rows  # (B, K, rows)
    cover = over_y[..., :, None] * over_x[..., None, :]  # (B, K, rows, cols), fraction of a cell
    cx = ((x0 + x1) / 2).clamp(0, 1 - 1e-6)
    cy = ((y0 + y1) / 2).clamp(0, 1 - 1e-6)
    col = (cx * cols).long()[..., None]  # (B, K, 1, 1): the centre's cell
    row = (cy * rows).long()[..., None]
    centre = (torch.arange(rows, device=b.device)[:, None] == row) & \
        (torch.arange(cols, device=b.device)[None, :] == col)  # (B, K, rows, cols)
    hit = ((cover >= min_cover) | centre) & valid[..., None, None]
    return hit.any(dim=1).float()


def objects_loss(logits: torch.Tensor, boxes: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Per-cell binary cross-entropy of ``RoadsideObjectsHead``'s (B, rows, cols) logits
    against ``roadside_cell_targets`` of the boxes, averaged over the cells of the samples
    whose boxes are known (a roadside image reached the model and the sidecar lists the
    frame); 0 (still part of the graph) when none is."""
    if not bool(known.any()):
        return logits.sum() * 0.0
    targets = roadside_cell_targets(boxes, logits.shape[1], logits.shape[2])
    return F.binary_cross_entropy_with_logits(logits[known].float(), targets[known])
