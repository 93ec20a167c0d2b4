"""Model settings and size presets.

Two kinds of configuration live here:

- ``ModelSettings``: what the planner needs beyond transformers' own files (input size,
  fusion, prompt contents, trajectory codec). It is saved as ``v2x_vlm.json`` beside
  ``config.json`` in every model directory this project writes; a plain Florence-2
  checkpoint without it gets the defaults (768 x 768, fused, loc-token codec).
- ``florence2_config(preset, ...)``: transformers ``Florence2Config`` for the presets
  ``base`` and ``large`` (the sizes of Florence-2-base / -large, REFERENCE §4) and the small
  recipes ``small-teacher``, ``small-student`` and ``tiny`` (tests) that train on a CPU.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from transformers import BartConfig, Florence2Config
from transformers.models.florence2.configuration_florence2 import Florence2VisionConfig

from v2x_vlm_ros.model.codec import CodecConfig, check_token_choice

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SETTINGS_FILE = "v2x_vlm.json"
#: Total stride of the DaViT vision tower: each image token covers 32 x 32 input pixels.
VISION_STRIDE = 32


#: The earliest roadside frame a model may ask for (within ``data.records.ROADSIDE_HISTORY_S``).
MAX_ROADSIDE_MOTION_S = 2.0


def check_motion_s(value, name: str) -> float:
    """``value`` as seconds in (0, MAX_ROADSIDE_MOTION_S]; a ValueError naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 < value <= MAX_ROADSIDE_MOTION_S:
        raise ValueError(f"{name} must be seconds in (0, {MAX_ROADSIDE_MOTION_S:g}], got {value!r}")
    return float(value)


#: Layouts of the two roadside frames (``ModelSettings.roadside_motion_layout``).
MOTION_LAYOUTS = ("stack", "blue")


def check_motion_layout(value, name: str) -> str:
    """``value`` if it is one of ``MOTION_LAYOUTS``; a ValueError naming ``name`` otherwise."""
    if not isinstance(value, str) or value not in MOTION_LAYOUTS:
        raise ValueError(f"{name} must be one of {', '.join(MOTION_LAYOUTS)}, got {value!r}")
    return value


def check_crop(box, name: str) -> tuple[float, float, float, float]:
    """``box`` as four floats (x0, y0, x1, y1), fractions with 0 <= x0 < x1 <= 1 and
    0 <= y0 < y1 <= 1; a ValueError naming ``name`` otherwise."""
    try:
        values = tuple(float(v) for v in box)
        if any(isinstance(v, bool) for v in box):
            raise TypeError
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be four numbers [x0, y0, x1, y1], got {box!r}") from None
    if len(values) != 4:
        raise ValueError(f"{name} must be four numbers [x0, y0, x1, y1], got {box!r}")
    x0, y0, x1, y1 = values
    if not all(math.isfinite(v) for v in values) or not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
        raise ValueError(f"{name} must be fractions of the image with 0 <= x0 < x1 <= 1 and "
                         f"0 <= y0 < y1 <= 1, got {list(values)}")
    return values


@dataclass
class ModelSettings:
    """The planner's own settings, stored with the model (``v2x_vlm.json``)."""

    #: (height, width) of the model input; the fused image [I_v, I_i] is resized to it.
    image_size: tuple[int, int] = (768, 768)
    #: Normalisation of the pixel values (Florence-2 uses ImageNet's).
    image_mean: tuple[float, float, float] = IMAGENET_MEAN
    image_std: tuple[float, float, float] = IMAGENET_STD
    #: True: ego and roadside images side by side. False (the "no fusion" ablation): the
    #: roadside half of the canvas is blank, so geometry and token count stay the same.
    fusion: bool = True
    #: Put the scene description in the prompt ("no scene prompting" ablation: False).
    scene_text: bool = True
    #: Descriptions longer than this many characters are cut before tokenisation (bounds
    #: the work a 100 kB description can cause); the token budget then cuts further.
    description_max_chars: int = 2000
    #: How trajectories become tokens.
    codec: CodecConfig = field(default_factory=CodecConfig)
    #: Learned modality-weighted fusion (``model.fusion``): the weights of the ego image,
    #: roadside image and text features before the decoder; None: no weighting.
    modality_weights: tuple[float, float, float] | None = None
    #: How location tokens are chosen when planning (``TOKEN_CHOICES``); the vehicle, replay
    #: and eval all read it from here. Training does not use it (teacher forcing).
    token_choice: str = "greedy"
    #: The part of the roadside image the model sees, (x0, y0, x1, y1) as fractions of its
    #: width and height (x1, y1 exclusive), or None for all of it. The box is cut out and
    #: resized to the roadside half's usual size, so the canvas keeps its layout and a
    #: road user inside the box gets more pixels: a roadside camera's region of interest
    #: (a fixed pole sees the same junction in every frame; its near-field road matters less
    #: than the far lanes where hidden road users come from).
    roadside_crop: tuple[float, float, float, float] | None = None
    #: Motion in the roadside view: with a number of seconds here, the roadside part of the
    #: canvas holds two roadside frames, the one taken that long before and the current one
    #: (each its ``roadside_crop`` box, laid out as ``roadside_motion_layout`` says, then
    #: resized to the part's usual size), so that the model sees which way and how fast road
    #: users move: one frame cannot tell a car that will stop at its line from one that will
    #: cross. None: one frame.
    roadside_motion_s: float | None = None
    #: How the two roadside frames share the roadside part (with ``roadside_motion_s`` set):
    #: "stack", the earlier box above the current one (each at half its vertical scale);
    #: "blue", the current box with its blue channel taken from the earlier box, so that
    #: static content looks as in one frame, what moved shows as a colour fringe, and the box
    #: keeps its full scale (the stacking gives back what the crop's magnification bought).
    roadside_motion_layout: str = "stack"

    def __post_init__(self):
        if isinstance(self.codec, dict):
            self.codec = CodecConfig(**{k: tuple(v) if isinstance(v, list) else v
                                        for k, v in self.codec.items()})
        self.image_size = tuple(int(v) for v in self.image_size)
        self.image_mean = tuple(float(v) for v in self.image_mean)
        self.image_std = tuple(float(v) for v in self.image_std)
        h, w = self.image_size
        if h < VISION_STRIDE or w < VISION_STRIDE or h % VISION_STRIDE or w % VISION_STRIDE:
            raise ValueError(f"image_size {self.image_size} must be positive multiples of {VISION_STRIDE}")
        if min(self.image_std) <= 0:
            raise ValueError("image_std must be positive")
        if self.modality_weights is not None:
            self.modality_weights = tuple(float(v) for v in self.modality_weights)
            if len(self.modality_weights) != 3 or min(self.modality_weights) <= 0:
                raise ValueError(f"modality_weights must be three positive numbers, "
                                 f"got {self.modality_weights}")
        check_token_choice(self.token_choice)
        if self.roadside_crop is not None:
            self.roadside_crop = check_crop(self.roadside_crop, "roadside_crop")
        if self.roadside_motion_s is not None:
            self.roadside_motion_s = check_motion_s(self.roadside_motion_s, "roadside_motion_s")
        check_motion_layout(self.roadside_motion_layout, "roadside_motion_layout")

    @property
    def num_image_tokens(self) -> int:
        """Image tokens the vision tower yields: one per 32 x 32 cell plus the pooled one."""
        h, w = self.image_size
        return (h // VISION_STRIDE) * (w // VISION_STRIDE) + 1

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        if data["modality_weights"] is None:  # written only when used: older readers stay able to load
            del data["modality_weights"]
        if data["token_choice"] == "greedy":  # the same: a model that decodes greedily stays loadable
            del data["token_choice"]
        if data["roadside_crop"] is None:  # the same: a model that sees the whole roadside image
            del data["roadside_crop"]
        if data["roadside_motion_s"] is None:  # the same: a model that sees one roadside frame
            del data["roadside_motion_s"]
        if data["roadside_motion_layout"] == "stack":  # the same: the layout older readers know
            del data["roadside_motion_layout"]
        return json.dumps(data, indent=2) + "\n"

    def save(self, directory) -> None:
        Path(directory, SETTINGS_FILE).write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def load(cls, directory) -> "ModelSettings":
        """Settings of a model directory; defaults when it has none (a plain Florence-2)."""
        path = Path(directory, SETTINGS_FILE)
        if not path.exists():
            return cls()
        data = json.loads(path.read_text(encoding="utf-8"))
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{path}: unknown setting(s) {unknown}")
        return cls(**data)


@dataclass(frozen=True)
class Preset:
    """Sizes of one model recipe."""

    vision_dims: tuple[int, int, int, int]
    vision_depths: tuple[int, int, int, int]
    vision_heads: tuple[int, int, int, int]
    window_size: int
    d_model: int
    layers: int  # encoder and decoder layers each
    heads: int
    ffn: int
    max_positions: int
    image_size: tuple[int, int]
    vocab_size: int | None = None  # None: the tokenizer's size


PRESETS = {
    # Florence-2-base / -large sizes (REFERENCE §4); vocab of the real BART tokenizer
    "base": Preset((128, 256, 512, 1024), (1, 1, 9, 1), (4, 8, 16, 32), 12, 768, 6, 12, 3072,
                   1024, (768, 768), 51329),
    "large": Preset((256, 512, 1024, 2048), (1, 1, 9, 1), (8, 16, 32, 64), 12, 1024, 12, 16, 4096,
                    1024, (768, 768), 51329),
    # CPU-trainable recipes for the synthetic world (fused input 96 x 256: 25 image tokens)
    "small-teacher": Preset((32, 64, 128, 256), (1, 1, 2, 1), (2, 4, 4, 8), 4, 256, 3, 8, 768,
                            512, (96, 256)),
    "small-student": Preset((32, 64, 128, 256), (1, 1, 2, 1), (2, 4, 4, 8), 4, 160, 2, 4, 480,
                            512, (96, 256)),
    # unit tests
    "tiny": Preset((16, 32, 48, 64), (1, 1, 1, 1), (1, 2, 2, 4), 4, 64, 1, 2, 128, 256, (64, 128)),
}


def florence2_config(preset: str | Preset, vocab_size: int, image_token_id: int,
                     drop_path_rate: float = 0.0) -> Florence2Config:
    """A ``Florence2Config`` of the given size for a tokenizer with ``vocab_size`` tokens."""
    p = PRESETS[preset] if isinstance(preset, str) else preset
    vocab = max(vocab_size, p.vocab_size or 0)
    vision = Florence2VisionConfig(
        depths=list(p.vision_depths), embed_dim=list(p.vision_dims), num_heads=list(p.vision_heads),
        num_groups=list(p.vision_heads), window_size=p.window_size, projection_dim=p.d_model,
        drop_path_rate=drop_path_rate,
    )
    text = BartConfig(
        vocab_size=vocab, d_model=p.d_model, encoder_layers=p.layers, decoder_layers=p.layers,
        encoder_attention_heads=p.heads, decoder_attention_heads=p.heads,
        encoder_ffn_dim=p.ffn, decoder_ffn_dim=p.ffn, max_position_embeddings=p.max_positions,
        pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2,
        forced_eos_token_id=2, dropout=0.1, activation_function="gelu",
    )
    return Florence2Config(vision_config=vision, text_config=text, image_token_id=image_token_id)
