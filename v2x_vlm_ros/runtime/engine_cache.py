"""Built engines on disk: keyed, verified, validated, never rebuilt on start.

What users of TensorRT nodes complain about most is engines rebuilt at every start and
engines that silently break across GPUs or TensorRT versions (REFERENCE §5). So:

- ``v2x-vlm build-engine`` compiles the vision tower (with its projector) and the text
  encoder at fixed shapes, in the requested precision, and saves them here; the vehicle
  only loads.
- The key is everything an engine depends on: the model's files (SHA-256 of config.json
  and the safetensors weights), batch, image size, prompt length, precision, the GPU's
  name, and the TensorRT, torch-tensorrt and torch versions. A different key is a
  different folder: an engine is never used outside the conditions it was built for.
- ``meta.json`` records the key and the SHA-256 of every engine file; a file that does not
  match is not loaded (engine files are only ever files this tool wrote).
- After loading, ``validate`` runs a probe input through each engine and through eager
  PyTorch: the output shapes must agree, and the largest difference must stay within the
  precision's tolerance. A failed check is a cache miss with its reason, and the caller
  falls back to the next backend.

The mechanism is backend-neutral: engines are saved and loaded through a ``Compiler``
(torch-tensorrt with TensorRT; ``torch.export`` for the CPU tests, which exercise the same
keys, files, checks and fallbacks).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
#: Largest |engine - eager| accepted by the parity check, per precision (outputs are
#: layer-normed features of order 1).
TOLERANCE = {"fp32": 1e-3, "fp16": 5e-2, "bf16": 1e-1}
PARTS = ("vision", "encoder")


class EngineCacheMiss(LookupError):
    """No usable engine for a key; ``reason`` says why (the caller logs it and falls back)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def model_fingerprint(model_dir) -> str:
    """SHA-256 over the model's config and weights (file names and contents)."""
    digest = hashlib.sha256()
    files = [Path(model_dir) / "config.json", *sorted(Path(model_dir).glob("*.safetensors"))]
    for path in files:
        digest.update(path.name.encode())
        digest.update(sha256_file(path).encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class EngineKey:
    model_sha256: str
    batch: int
    image_size: tuple[int, int]
    prompt_length: int  # encoder sequence length (image tokens + padded prompt)
    precision: str
    device_name: str
    tensorrt: str
    torch_tensorrt: str
    torch: str

    def fields(self) -> dict:
        out = dataclasses.asdict(self)
        out["image_size"] = list(self.image_size)
        return out

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.fields(), sort_keys=True).encode()).hexdigest()


def current_versions() -> dict[str, str]:
    """Versions and device that go into a key (missing packages are "none")."""
    versions = {"torch": torch.__version__, "tensorrt": "none", "torch_tensorrt": "none"}
    try:
        import tensorrt

        versions["tensorrt"] = tensorrt.__version__
    except Exception:  # not installed: the key says so
        pass
    try:
        import torch_tensorrt

        versions["torch_tensorrt"] = torch_tensorrt.__version__
    except Exception:  # not installed, or its libraries missing: the key says so
        pass
    return versions


def device_name(device: torch.device) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"cpu:{platform.machine()}"


class EngineCache:
    def __init__(self, root):
        self.root = Path(root)

    def folder(self, key: EngineKey) -> Path:
        return self.root / key.digest()[:24]

    def save(self, key: EngineKey, files: dict[str, Path], extra: dict | None = None) -> Path:
        """Record engine ``files`` (already written into ``folder(key)``) under ``key``."""
        folder = self.folder(key)
        meta = {"key": key.fields(), "files": {name: {"file": Path(p).name, "sha256": sha256_file(p)}
                                               for name, p in files.items()},
                "created": time.strftime("%Y-%m-%dT%H:%M:%S"), **(extra or {})}
        (folder / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        return folder

    def lookup(self, key: EngineKey) -> dict[str, Path]:
        """Verified engine files of ``key``, or ``EngineCacheMiss`` with the reason."""
        folder = self.folder(key)
        meta_path = folder / "meta.json"
        if not meta_path.is_file():
            raise EngineCacheMiss(f"no engine built for this model, shapes, precision and GPU "
                                  f"({folder}); run `v2x-vlm build-engine`")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise EngineCacheMiss(f"{meta_path}: unreadable ({exc})") from None
        if meta.get("key") != key.fields():
            raise EngineCacheMiss(f"{meta_path}: built for a different key")
        files = {}
        for name in PARTS:
            entry = meta.get("files", {}).get(name)
            if entry is None:
                raise EngineCacheMiss(f"{meta_path}: no {name} engine recorded")
            path = folder / entry["file"]
            if not path.is_file():
                raise EngineCacheMiss(f"{path}: missing")
            if sha256_file(path) != entry["sha256"]:
                raise EngineCacheMiss(f"{path}: contents changed since it was built; not loaded")
            files[name] = path
        return files

    def clear(self, key: EngineKey) -> None:
        shutil.rmtree(self.folder(key), ignore_errors=True)


def validate(engine, reference, probe: tuple, precision: str) -> float:
    """Largest |engine(probe) - reference(probe)|; ``EngineCacheMiss`` if shapes differ or
    the difference exceeds the precision's tolerance."""
    with torch.no_grad():
        got = engine(*probe)
        want = reference(*probe)
    if tuple(got.shape) != tuple(want.shape):
        raise EngineCacheMiss(f"engine output shape {tuple(got.shape)} != eager {tuple(want.shape)}")
    diff = float((got.float() - want.float()).abs().max())
    if not diff <= TOLERANCE[precision]:
        raise EngineCacheMiss(f"engine differs from eager by {diff:.3g} (> {TOLERANCE[precision]} "
                              f"allowed in {precision})")
    return diff
