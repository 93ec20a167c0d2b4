"""Which inference backend runs, and why.

A requested backend that cannot run here falls back along ``tensorrt -> inductor -> eager``,
and every step of the fall is said in the report's notes (the nodes log them and put the
backend in use into /diagnostics). Nothing here raises for a missing backend.

- ``tensorrt``: torch-tensorrt on a CUDA device. Importing ``torch_tensorrt`` without the
  TensorRT libraries raises a plain ``Exception`` (REFERENCE §5), so any exception counts
  as "not available".
- ``inductor``: ``torch.compile``; on a CPU it needs a C++ compiler for the code it writes.
- ``eager``: always.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field

import torch

BACKENDS = ("tensorrt", "inductor", "eager")


@dataclass
class BackendReport:
    requested: str
    used: str
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        fell = f" (requested {self.requested})" if self.used != self.requested else ""
        return f"backend {self.used}{fell}" + (": " + "; ".join(self.notes) if self.notes else "")


def tensorrt_available(device: torch.device) -> tuple[bool, str]:
    if device.type != "cuda":
        return False, "TensorRT needs a CUDA device"
    try:
        import torch_tensorrt
    except Exception as exc:  # the package raises a bare Exception when its libraries are missing
        return False, f"torch_tensorrt does not import ({type(exc).__name__}: {str(exc)[:120]})"
    return True, f"torch_tensorrt {getattr(torch_tensorrt, '__version__', '?')}"


def inductor_available(device: torch.device) -> tuple[bool, str]:
    if not hasattr(torch, "compile"):
        return False, "this torch has no torch.compile"
    if device.type == "cpu":
        compilers = [os.environ.get("CXX", ""), "g++", "c++", "clang++"]
        if not any(c and shutil.which(c) for c in compilers):
            return False, "inductor on a CPU needs a C++ compiler (none on PATH)"
    return True, "torch.compile (inductor)"


AVAILABILITY = {"tensorrt": tensorrt_available, "inductor": inductor_available,
                "eager": lambda device: (True, "eager PyTorch")}


def choose_backend(requested: str, device) -> BackendReport:
    """The first available backend from ``requested`` down the chain."""
    if requested not in BACKENDS:
        raise ValueError(f"unknown backend {requested!r}; choose one of {', '.join(BACKENDS)}")
    device = torch.device(device)
    report = BackendReport(requested, "eager")
    for name in BACKENDS[BACKENDS.index(requested):]:
        ok, why = AVAILABILITY[name](device)
        if ok:
            report.used = name
            return report
        report.notes.append(f"{name} unavailable: {why}")
    return report
