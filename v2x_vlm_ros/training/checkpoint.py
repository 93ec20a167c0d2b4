"""Resumable training checkpoints, in safetensors and JSON only (no pickle anywhere).

Layout of ``<output_dir>/checkpoint/``:
- ``student/``: the student as a complete model directory (``modeling.save_model``);
- ``heads.safetensors``: the alignment projections;
- ``hazard_head.safetensors``: the roadside-hazard probe on the image cells, or
  ``plan_state_hazard_head.safetensors``: the same probe on the decoder (when trained with it);
- ``objects_head.safetensors``: the dense roadside probe (when trained with it);
- ``optimizer.safetensors`` + the optimizer's param groups in ``state.json``;
- ``rng.safetensors``: torch's CPU (and CUDA) generator states;
- ``state.json``: epoch, step in the epoch, global step, scheduler state, best score.

A checkpoint is written to a temporary folder and renamed into place, so a crash while
saving leaves the previous one intact.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from v2x_vlm_ros.model.modeling import save_model
from v2x_vlm_ros.training.losses import PlanStateHazardHead, RoadsideHazardHead, RoadsideObjectsHead

CHECKPOINT = "checkpoint"


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    state = optimizer.state_dict()
    tensors, meta = {}, {}
    for index, slots in state["state"].items():
        for name, value in slots.items():
            key = f"{index}.{name}"
            if torch.is_tensor(value):
                tensors[key] = value.detach().cpu().contiguous()
            else:
                meta[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": meta}


def save_checkpoint(output_dir, student, tokenizer, settings, heads, optimizer, scheduler,
                    progress: dict, hazard_head=None, objects_head=None) -> Path:
    out = Path(output_dir)
    tmp = out / (CHECKPOINT + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(tmp / "student", student, tokenizer, settings)
    if heads is not None:
        save_file({k: v.detach().cpu().contiguous() for k, v in heads.state_dict().items()},
                  tmp / "heads.safetensors")
    for head in (hazard_head, objects_head):
        if head is not None:
            save_file({k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()},
                      tmp / probe_file(head))
    tensors, opt_meta = _optimizer_tensors(optimizer)
    save_file(tensors, tmp / "optimizer.safetensors")
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng.update({f"cuda{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    save_file(rng, tmp / "rng.safetensors")
    state = {"progress": progress, "optimizer": opt_meta, "scheduler": scheduler.state_dict()}
    (tmp / "state.json").write_text(json.dumps(state, indent=1), encoding="utf-8")
    final = out / CHECKPOINT
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final


def probe_file(head) -> str:
    """The checkpoint file of a training-only probe: named after its class, so that a probe
    moved elsewhere (``hazard_probe_on``) never loads another one's weights of the same shape."""
    names = {RoadsideHazardHead: "hazard_head", PlanStateHazardHead: "plan_state_hazard_head",
             RoadsideObjectsHead: "objects_head"}
    return names[type(head)] + ".safetensors"


def has_checkpoint(output_dir) -> bool:
    return (Path(output_dir) / CHECKPOINT / "state.json").is_file()


def load_training_state(output_dir, heads, optimizer, scheduler, hazard_head=None, objects_head=None) -> dict:
    """Restore heads, optimizer, scheduler and RNG in place (the student is reloaded from
    ``checkpoint/student`` by the caller); returns the saved progress."""
    ckpt = Path(output_dir) / CHECKPOINT
    state = json.loads((ckpt / "state.json").read_text(encoding="utf-8"))
    if heads is not None:
        heads.load_state_dict(load_file(ckpt / "heads.safetensors"))
    for head in (hazard_head, objects_head):
        if head is not None:
            if not (ckpt / probe_file(head)).is_file():
                raise ValueError(f"{ckpt}: no {probe_file(head)}: this run trains a probe the checkpoint was "
                                 f"written without (lambda_hazard, hazard_probe_on or lambda_objects changed "
                                 f"since); resume with the settings it was written with, or start a new "
                                 f"output_dir with student: {ckpt / 'student'}")
            head.load_state_dict(load_file(ckpt / probe_file(head)))
    tensors = load_file(ckpt / "optimizer.safetensors")
    slots: dict[int, dict] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        slots.setdefault(int(index), {})[name] = value
    for key, value in state["optimizer"]["scalars"].items():
        index, name = key.split(".", 1)
        slots.setdefault(int(index), {})[name] = value
    try:
        optimizer.load_state_dict({"state": slots, "param_groups": state["optimizer"]["param_groups"]})
    except ValueError:  # torch: "... doesn't match the size of optimizer's group"
        saved = sum(len(g["params"]) for g in state["optimizer"]["param_groups"])
        now = sum(len(g["params"]) for g in optimizer.param_groups)
        raise ValueError(f"{ckpt}: the checkpoint's optimizer holds {saved} trained tensors, this run "
                         f"trains {now} (freeze_vision or a probe changed since it was written); resume "
                         f"with the settings it was written with, or start a new output_dir with "
                         f"student: {ckpt / 'student'}") from None
    scheduler.load_state_dict(state["scheduler"])
    rng = load_file(ckpt / "rng.safetensors")
    torch.set_rng_state(rng["cpu"])
    if torch.cuda.is_available():
        cuda = [rng[k] for k in sorted(rng) if k.startswith("cuda")]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
    return state["progress"]
