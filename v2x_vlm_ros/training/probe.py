"""Does the vision encoder represent what the roadside camera sees? Read through the dense
roadside probe (``losses.RoadsideObjectsHead``) on a synthetic world with paired scenes.

Two figures, both rank statistics (AUC: the probability that a random positive scores above
a random negative, ties counting half):

- ``cells_auc``: the probe's per-cell logits of the roadside half, cells a road user covers
  (``roadside_cell_targets``) against empty cells, over sampled frames. Position alone
  can reach a high value here: road users are more often in some cells than in others.
- ``hidden``: on each hidden-hazard frame and the same frame of its twin (the scene without
  the hidden agent, identical otherwise), the mean logit over the cells that only the
  hidden agent covers. Position cannot tell these apart; only the pixels can. ``auc`` over
  the two lists and ``higher``, the share of pairs where the frame with the agent scores
  above its twin. 0.5 / 0.5: the encoder does not see the hidden agent (docs/TRAINING.md).
"""

from __future__ import annotations

import numpy as np
import torch

from v2x_vlm_ros.training.losses import roadside_cell_targets


def rank_auc(positive, negative) -> float | None:
    """Mann-Whitney AUC of scores ``positive`` against ``negative`` (ties count half);
    None when either list is empty."""
    pos = np.asarray(positive, dtype=np.float64).ravel()
    neg = np.asarray(negative, dtype=np.float64).ravel()
    if pos.size == 0 or neg.size == 0:
        return None
    both = np.concatenate([pos, neg])
    # average ranks (1-based): tied scores share the mean of the ranks they span
    _, inverse, counts = np.unique(both, return_inverse=True, return_counts=True)
    first = np.cumsum(counts) - counts  # ranks before each distinct value
    ranks = (first + (counts + 1) / 2.0)[inverse]
    return float((ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2) / (pos.size * neg.size))


def hidden_pairs(dataset, visibility: dict) -> list[tuple[int, int]]:
    """(sample index of a hidden-hazard frame, sample index of the same frame of its twin)
    for every such frame of ``dataset`` whose twin frame is in it too."""
    from v2x_vlm_ros.data.synth.visibility import hazard_twin_pairs

    index = {(e.sequence.sequence_id, e.sequence.frames[e.position].frame_id): i
             for i, e in enumerate(dataset._index)}
    return [(index[hazard], index[twin]) for hazard, twin in sorted(hazard_twin_pairs(visibility).items())
            if hazard in index and twin in index]


@torch.no_grad()
def roadside_cell_logits(module, examples, collate, indices: list[int], batch_size: int = 16):
    """The dense probe's logits (N, rows, cols) and cell targets (N, rows, cols; NaN where
    the frame's boxes are unknown) of ``examples[indices]`` through ``module``
    (a ``trainer.PlannerTrainModule`` with an objects head)."""
    module.eval()
    device = next(module.parameters()).device
    logits, targets = [], []
    for start in range(0, len(indices), batch_size):
        batch = collate([examples[i] for i in indices[start: start + batch_size]])
        module.image_features(batch["pixel_values"].to(device))
        cells = module.objects_head(module._cells).float().cpu()
        module._cells = None
        rows, cols = cells.shape[1:]
        target = roadside_cell_targets(batch["roadside_boxes"], rows, cols)
        target[~batch["roadside_known"]] = float("nan")
        logits.append(cells)
        targets.append(target)
    return torch.cat(logits), torch.cat(targets)


def objects_probe_report(module, examples, collate, visibility: dict, max_frames: int = 400,
                         batch_size: int = 16) -> dict:
    """``cells_auc`` on up to ``max_frames`` frames spread over ``examples`` and the hidden
    agent's cells on every hidden-hazard pair (see the module docstring)."""
    n = len(examples)
    spread = np.unique(np.linspace(0, n - 1, min(n, max_frames)).round().astype(int)).tolist()
    logits, targets = roadside_cell_logits(module, examples, collate, spread, batch_size)
    known = ~torch.isnan(targets)
    cells_auc = rank_auc(logits[known & (targets == 1)], logits[known & (targets == 0)])

    pairs = hidden_pairs(examples.dataset, visibility)
    with_agent, without = [], []
    if pairs:
        flat = [i for pair in pairs for i in pair]
        logits, targets = roadside_cell_logits(module, examples, collate, flat, batch_size)
        for k in range(len(pairs)):
            agent, twin = 2 * k, 2 * k + 1
            only = (targets[agent] == 1) & (targets[twin] == 0)  # the hidden agent's own cells
            if not bool(only.any()):
                continue
            with_agent.append(float(logits[agent][only].mean()))
            without.append(float(logits[twin][only].mean()))
    higher = float(np.mean(np.greater(with_agent, without))) if with_agent else None
    return {
        "frames": len(spread), "cells_auc": cells_auc,
        "hidden": {"pairs": len(with_agent), "auc": rank_auc(with_agent, without), "higher": higher,
                   "mean_with": float(np.mean(with_agent)) if with_agent else None,
                   "mean_without": float(np.mean(without)) if without else None},
    }


def probe_run(run_dir, data_root, split: str | None = None, max_frames: int = 400,
              batch_size: int = 16, device: str = "cpu") -> dict:
    """``objects_probe_report`` of a training run's checkpoint (its student and dense probe,
    ``<run_dir>/checkpoint``) on the world at ``data_root`` (its ``split``, or every frame)."""
    from pathlib import Path

    from safetensors.torch import load_file

    from v2x_vlm_ros.data.dair import DairV2XDataset
    from v2x_vlm_ros.data.synth.visibility import read_visibility
    from v2x_vlm_ros.model.modeling import load_model
    from v2x_vlm_ros.training.checkpoint import CHECKPOINT
    from v2x_vlm_ros.training.data import PairedCollate, PlanningExamples, roadside_object_boxes
    from v2x_vlm_ros.training.losses import RoadsideObjectsHead
    from v2x_vlm_ros.training.trainer import PlannerTrainModule, _builder

    ckpt = Path(run_dir) / CHECKPOINT
    head_file = ckpt / "objects_head.safetensors"
    if not head_file.is_file():
        raise FileNotFoundError(f"{head_file}: no dense roadside probe in this run (train with "
                                "lambda_objects > 0)")
    dataset = DairV2XDataset(data_root, split=split)
    visibility = read_visibility(dataset.root)
    boxes = roadside_object_boxes(dataset)
    if visibility is None or boxes is None:
        raise ValueError(f"{data_root}: needs a visibility.json with roadside_boxes (a world written "
                         "by v2x-vlm synth)")
    student = load_model(ckpt / "student", device)
    head = RoadsideObjectsHead(student.model.config.text_config.d_model)
    head.load_state_dict(load_file(head_file))
    module = PlannerTrainModule(student.model, None, False, 0.07, objects_head=head,
                                vision_only=True).to(device)
    examples = PlanningExamples(dataset, fusion=True, roadside_boxes=boxes)
    collate = PairedCollate(_builder(student), None)
    return objects_probe_report(module, examples, collate, visibility, max_frames, batch_size)


#: Columns of ``probe_log.csv`` (the vision stage's per-epoch score).
PROBE_FIELDS = ["epoch", "step", "frames", "cells_auc", "hidden_pairs", "hidden_auc", "hidden_higher",
                "hidden_mean_with", "hidden_mean_without"]


def probe_row(epoch: int, step: int, report: dict) -> dict:
    """One ``probe_log.csv`` row of an ``objects_probe_report``."""
    hidden = report["hidden"]
    return {"epoch": epoch, "step": step, "frames": report["frames"], "cells_auc": report["cells_auc"],
            "hidden_pairs": hidden["pairs"], "hidden_auc": hidden["auc"], "hidden_higher": hidden["higher"],
            "hidden_mean_with": hidden["mean_with"], "hidden_mean_without": hidden["mean_without"]}


__all__ = ["PROBE_FIELDS", "hidden_pairs", "objects_probe_report", "probe_row", "probe_run", "rank_auc",
           "roadside_cell_logits"]
