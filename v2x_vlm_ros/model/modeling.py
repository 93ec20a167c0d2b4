"""Build, load and save Florence-2 planners with transformers' native classes.

Loading is safe by construction: weights come only from safetensors files
(``use_safetensors=True`` makes transformers refuse pickle checkpoints), and
``trust_remote_code`` stays off unless a caller asks for it by name. A source is either a
local HF-format directory (``config.json`` + ``*.safetensors`` + tokenizer files) or a hub
id such as ``florence-community/Florence-2-base`` for users who have access to the hub.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoTokenizer, Florence2ForConditionalGeneration, GenerationConfig
from transformers.utils import logging as hf_logging

from v2x_vlm_ros.model.configuration import ModelSettings, florence2_config
from v2x_vlm_ros.model.fusion import install as install_modality_weights
from v2x_vlm_ros.model.tokenizer import check_tokenizer

log = logging.getLogger(__name__)
# Loading a few-megabyte model should not draw progress bars into node logs.
hf_logging.disable_progress_bar()

HUB_IDS = ("florence-community/Florence-2-base", "florence-community/Florence-2-large")


class ModelLoadError(ValueError):
    pass


@dataclass
class LoadedModel:
    model: Florence2ForConditionalGeneration
    tokenizer: object
    settings: ModelSettings
    source: str


def build_model(preset: str, tokenizer, seed: int | None = None) -> Florence2ForConditionalGeneration:
    """A randomly initialised Florence-2 of size ``preset`` for ``tokenizer``."""
    check_tokenizer(tokenizer)
    config = florence2_config(preset, len(tokenizer), tokenizer.image_token_id)
    if seed is not None:
        torch.manual_seed(seed)
    model = Florence2ForConditionalGeneration(config)
    model.generation_config = planning_generation_config(tokenizer)
    return model


def planning_generation_config(tokenizer) -> GenerationConfig:
    """An explicit greedy config. Microsoft's Florence-2 configs ask for 3 beams and
    no_repeat_ngram_size=3, which forbids repeating a coordinate token (REFERENCE §4)."""
    return GenerationConfig(
        num_beams=1, do_sample=False, no_repeat_ngram_size=0, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        decoder_start_token_id=tokenizer.eos_token_id, forced_eos_token_id=None,
    )


def _check_local_dir(path: Path) -> None:
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{path}: no config.json (not a Hugging Face model directory)")
    if not list(path.glob("*.safetensors")):
        pickles = [p.name for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt")]
        hint = f" (found {pickles}: pickle checkpoints are not loaded; convert them to safetensors)" \
            if pickles else ""
        raise ModelLoadError(f"{path}: no *.safetensors weights{hint}")


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")


def load_model(source, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
               trust_remote_code: bool = False) -> LoadedModel:
    """Load a planner from a local directory or a hub id (safetensors only), in ``dtype``
    whatever the stored precision (a model exported in float16 runs in float32 on a CPU)."""
    path = Path(source)
    local = path.is_dir()
    if local:
        _check_local_dir(path)
    elif path.exists():
        raise ModelLoadError(f"{source}: not a model directory")
    elif not _HUB_ID.fullmatch(str(source)):  # "/data/model", "./model", "model": paths, not ids
        raise ModelLoadError(f"{source}: no such directory, and not a hub id like {HUB_IDS[0]}")
    if trust_remote_code:
        log.warning("trust_remote_code=True: running the checkpoint's own Python code")
    kwargs = dict(use_safetensors=True, trust_remote_code=trust_remote_code)
    try:
        model = Florence2ForConditionalGeneration.from_pretrained(str(source), dtype=dtype, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(str(source), trust_remote_code=trust_remote_code)
    except OSError as exc:  # missing files, no network for a hub id, ...
        raise ModelLoadError(f"{source}: {exc}") from None
    check_tokenizer(tokenizer)
    settings = ModelSettings.load(path) if local else ModelSettings()
    model.generation_config = planning_generation_config(tokenizer)
    install_modality_weights(model, settings)  # learned fusion weights, when the model has them
    return LoadedModel(model.to(device).eval(), tokenizer, settings, str(source))


_TEXT_LAYER = re.compile(r"(model\.language_model\.(?:encoder|decoder)\.layers\.)(\d+)(\..*)")


def keep_text_layers(loaded: LoadedModel, keep) -> LoadedModel:
    """A copy of ``loaded`` whose language model keeps only the encoder and decoder layers
    numbered ``keep`` (each the same list), the rest of the weights as they are: a student
    of the teacher's width started from the teacher, as DistilBERT starts from one layer in
    two of BERT (Sanh et al., 2019). A fresh model of the smaller config takes the renumbered
    weights, so each layer's cache index (``layer_idx``) is its new position."""
    keep = [int(i) for i in keep]
    text = loaded.model.config.text_config
    layers = min(text.encoder_layers, text.decoder_layers)
    if not keep or sorted(set(keep)) != keep or keep[0] < 0 or keep[-1] >= layers:
        raise ValueError(f"layers to keep {keep}: give increasing layer numbers in [0, {layers - 1}] "
                         f"(the model has {text.encoder_layers} encoder and {text.decoder_layers} "
                         "decoder layers)")
    config = loaded.model.config.__class__.from_dict(loaded.model.config.to_dict())
    config.text_config.encoder_layers = config.text_config.decoder_layers = len(keep)
    state = {}
    for key, value in loaded.model.state_dict().items():
        match = _TEXT_LAYER.fullmatch(key)
        if match:
            if int(match.group(2)) not in keep:
                continue
            key = f"{match.group(1)}{keep.index(int(match.group(2)))}{match.group(3)}"
        state[key] = value
    model = Florence2ForConditionalGeneration(config).to(loaded.model.dtype)
    model.load_state_dict(state, strict=True)
    model.generation_config = loaded.model.generation_config
    install_modality_weights(model, loaded.settings)
    return LoadedModel(model.to(loaded.model.device).eval(), loaded.tokenizer, loaded.settings,
                       f"{loaded.source} (layers {keep})")


def save_model(directory, model, tokenizer, settings: ModelSettings, card: str | None = None,
               dtype: torch.dtype | None = None) -> Path:
    """Write a self-contained HF-format directory: config, safetensors weights (in ``dtype``
    if given, e.g. float16 to halve a shipped model; the model itself is not changed),
    tokenizer, transformers' own processor config, our settings and an optional card."""
    from v2x_vlm_ros.model.processing import florence2_processor  # avoids an import cycle

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    state = None
    if dtype is not None:
        # convert each storage once, so tied weights stay tied (and are written once)
        converted: dict = {}
        state = {}
        for key, value in model.state_dict().items():
            ident = (value.data_ptr(), tuple(value.shape), value.dtype)
            if ident not in converted:
                converted[ident] = value.to(dtype) if value.is_floating_point() else value
            state[key] = converted[ident]
    model.save_pretrained(out, safe_serialization=True, state_dict=state)
    tokenizer.save_pretrained(out)
    florence2_processor(tokenizer, settings).save_pretrained(out)
    settings.save(out)
    if card is not None:
        (out / "README.md").write_text(card, encoding="utf-8")
    return out
