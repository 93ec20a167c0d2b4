"""Compiling the model's two fixed-shape parts into engines, and loading them back.

The parts are the vision tower with its projector (pixels -> image features) and the text
encoder (image features in the ``<image>`` slots + prompt -> encoder states), at one batch
size, one image size and one padded prompt length. The decoder step stays in PyTorch (a
CUDA graph replays it); it is small and its shapes never change.

Precision comes from the modules' dtype (``.half()`` / ``.bfloat16()``): TensorRT 10+ builds
strongly typed engines and torch-tensorrt 2.13 ignores ``enabled_precisions`` (REFERENCE §5).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from v2x_vlm_ros.runtime.engine_cache import (PARTS, PRECISIONS, EngineCache, EngineKey, current_versions,
                                              device_name, model_fingerprint, validate)


class VisionPart(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.tower = model.model.vision_tower
        self.projector = model.model.multi_modal_projector

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.projector(self.tower(pixel_values).last_hidden_state)


class EncoderPart(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.embed = model.get_input_embeddings()
        self.encoder = model.model.language_model.encoder
        self.image_token_id = model.config.image_token_id

    def forward(self, features, input_ids, attention_mask):
        embeds = self.embed(input_ids)
        slots = (input_ids == self.image_token_id).unsqueeze(-1)
        embeds = embeds.masked_scatter(slots, features.to(embeds.dtype))
        return self.encoder(inputs_embeds=embeds, attention_mask=attention_mask).last_hidden_state


class ExportCompiler:
    """``torch.export`` programs: runs anywhere, used to test the cache without TensorRT."""

    name = "export"
    suffix = ".pt2"

    def compile(self, module, inputs):
        return torch.export.export(module, tuple(inputs), strict=False)

    def save(self, compiled, path: Path, inputs) -> None:
        torch.export.save(compiled, str(path))

    def load(self, path: Path):
        return torch.export.load(str(path)).module()


class TensorRTCompiler:
    """torch-tensorrt's dynamo path (``compile``, ``save``, ``torch.export.load``)."""

    name = "tensorrt"
    suffix = ".ep"

    def compile(self, module, inputs):
        import torch_tensorrt

        return torch_tensorrt.compile(module, ir="dynamo", arg_inputs=list(inputs))

    def save(self, compiled, path: Path, inputs) -> None:
        import torch_tensorrt

        torch_tensorrt.save(compiled, str(path), arg_inputs=list(inputs))

    def load(self, path: Path):
        import torch_tensorrt  # noqa: F401  registers the TensorRT runtime ops before loading

        return torch.export.load(str(path)).module()


COMPILERS = {"tensorrt": TensorRTCompiler, "export": ExportCompiler}


def engine_key(model_dir, batch: int, image_size, prompt_length: int, precision: str, device) -> EngineKey:
    v = current_versions()
    return EngineKey(model_fingerprint(model_dir), batch, tuple(image_size), prompt_length, precision,
                     device_name(device), v["tensorrt"], v["torch_tensorrt"], v["torch"])


def probe_inputs(model, batch: int, image_size, prompt_length: int, num_image_tokens: int, device, dtype,
                 seed: int = 0):
    """Deterministic probe inputs of the engines' shapes (a realistic layout: image slots
    first, then prompt tokens, the tail padded)."""
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randn(batch, 3, *image_size, generator=g).to(device, dtype)
    vocab = model.config.text_config.vocab_size
    ids = torch.randint(4, min(vocab, 1000), (batch, prompt_length), generator=g)
    ids[:, :num_image_tokens] = model.config.image_token_id
    mask = torch.ones(batch, prompt_length, dtype=torch.long)
    mask[:, prompt_length - max(1, prompt_length // 8):] = 0
    return pixels, ids.to(device), mask.to(device)


def _parts(model, precision: str, device):
    dtype = PRECISIONS[precision]
    return {"vision": VisionPart(model).to(device, dtype).eval(),
            "encoder": EncoderPart(model).to(device, dtype).eval()}


def build_engines(model, model_dir, device, precision: str, batch: int, image_size, prompt_length: int,
                  num_image_tokens: int, cache: EngineCache, compiler) -> dict:
    """Compile, save, reload and validate both parts; returns a summary (folder, parity)."""
    device = torch.device(device)
    key = engine_key(model_dir, batch, image_size, prompt_length, precision, device)
    folder = cache.folder(key)
    cache.clear(key)
    folder.mkdir(parents=True)
    dtype = PRECISIONS[precision]
    pixels, ids, mask = probe_inputs(model, batch, image_size, prompt_length, num_image_tokens, device, dtype)
    parts = _parts(model, precision, device)
    with torch.no_grad():
        features = parts["vision"](pixels)
    inputs = {"vision": (pixels,), "encoder": (features, ids, mask)}
    files = {}
    for name in PARTS:
        with torch.no_grad():
            compiled = compiler.compile(parts[name], inputs[name])
        files[name] = folder / f"{name}{compiler.suffix}"
        compiler.save(compiled, files[name], inputs[name])
    cache.save(key, files, {"compiler": compiler.name})
    loaded, parity = load_engines(model, model_dir, device, precision, batch, image_size, prompt_length,
                                  num_image_tokens, cache, compiler)
    return {"folder": str(folder), "key": key.fields(), "parity_max_abs": parity, "compiler": compiler.name}


def load_engines(model, model_dir, device, precision: str, batch: int, image_size, prompt_length: int,
                 num_image_tokens: int, cache: EngineCache, compiler):
    """({part: callable}, {part: parity}) from the cache, verified and validated against
    eager float32; ``EngineCacheMiss`` when anything does not hold."""
    device = torch.device(device)
    key = engine_key(model_dir, batch, image_size, prompt_length, precision, device)
    files = cache.lookup(key)
    dtype = PRECISIONS[precision]
    modules = {name: compiler.load(path) for name, path in files.items()}
    reference = _parts(model, "fp32", device)
    pixels, ids, mask = probe_inputs(model, batch, image_size, prompt_length, num_image_tokens, device,
                                     torch.float32)
    with torch.no_grad():
        features = reference["vision"](pixels)

    def vision(px):
        return modules["vision"](px.to(dtype)).float()

    def encoder(feats, input_ids, attention_mask):
        return modules["encoder"](feats.to(dtype), input_ids, attention_mask).float()

    parity = {"vision": validate(vision, reference["vision"], (pixels,), precision),
              "encoder": validate(encoder, reference["encoder"], (features, ids, mask), precision)}
    return {"vision": vision, "encoder": encoder}, parity
