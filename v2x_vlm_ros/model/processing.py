"""Model inputs: the fused image [I_v, I_i] as pixel values, and the prompt as token ids.

Images. The ego image I_v and the roadside image I_i are put side by side at the ego's
height (the roadside one resized, aspect kept, if its height differs, e.g. after the
roadside node downsampled it), then the fused image is resized to the model's input size
(aspect not kept, as Florence-2's processor does), scaled to [0, 1] and normalised. All of
it runs in torch on the target device. The resize reproduces Pillow's bicubic resampling,
which transformers' Florence-2 processor uses: a horizontal pass, then a vertical one,
each with antialiasing and rounded to 8 bits in between; done that way the pixel values
match the processor's within one uint8 level (a single float resize differs by up to 24
levels on sharp content). With ``fusion`` off (the ego-only ablation) the roadside half
of the canvas is filled with the normalisation mean colour (8-bit), nearly zero once
normalised, whatever the roadside camera saw. With ``roadside_crop`` set, only that box of
the roadside image is used, resized to the width and height the whole image would have
taken (the canvas keeps its layout; the box's content gets more pixels). With
``roadside_motion_s`` set, an earlier roadside frame's box is stacked above the current
one's before that resize (the earlier frame missing: the current one twice, no motion), or,
with ``roadside_motion_layout`` "blue", gives the current box its blue channel (the earlier
frame missing: the current box unchanged).

Prompt. ``<image>`` x n, then ``<s>`` description, ego state, navigation command, planning
task ``</s>``: the paper's scene description + planning basis + task (REFERENCE §1), plus
the route's command. The state, command and task are never cut; when the whole does not
fit the text model's positions, the description loses its end (truncation rule).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
import torch.nn.functional as F

from v2x_vlm_ros.data.records import Command, EgoMotion
from v2x_vlm_ros.model.configuration import ModelSettings

TASK_TEXT = "Task: plan the ego trajectory for the next 5 seconds as 10 waypoints."
COMMAND_TEXT = {Command.LEFT: "Command: turn left.", Command.RIGHT: "Command: turn right.",
                Command.FORWARD: "Command: go forward."}
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


# -- images ------------------------------------------------------------------------------


def _pil_resize(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pillow-compatible bicubic resize of (B, C, H, W) float images holding 0..255."""
    out = images
    if out.shape[-1] != width:
        out = F.interpolate(out, size=(out.shape[-2], width), mode="bicubic", antialias=True,
                            align_corners=False).clamp_(0, 255).round_()
    if out.shape[-2] != height:
        out = F.interpolate(out, size=(height, width), mode="bicubic", antialias=True,
                            align_corners=False).clamp_(0, 255).round_()
    return out


def _checked(image) -> np.ndarray:
    """An HxWx3 uint8 array, C-contiguous (a clear error otherwise)."""
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"expected an HxWx3 image, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {arr.dtype}")
    return np.ascontiguousarray(arr)


def as_chw(image, device, bgr: bool = True) -> torch.Tensor:
    """(3, H, W) float tensor of 0..255 RGB from an HxWx3 uint8 array (BGR as OpenCV
    decodes, unless ``bgr`` is False) or a (3, H, W) tensor already in RGB."""
    if isinstance(image, torch.Tensor) and image.ndim == 3 and image.shape[0] == 3:
        return image.to(device=device, dtype=torch.float32)
    arr = _checked(image)
    if not arr.flags.writeable:  # torch wants its own writable buffer
        arr = arr.copy()
    t = torch.from_numpy(arr).to(device).permute(2, 0, 1).float()
    return t.flip(0) if bgr else t


def _nchw_view(arr: np.ndarray) -> torch.Tensor:
    """(1, 3, H, W) uint8 view of an HxWx3 array: channels-last memory, no copy."""
    if not arr.flags.writeable:
        arr = arr.copy()
    return torch.from_numpy(arr).permute(2, 0, 1)[None]


def _resize_u8(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pillow's bicubic on 8-bit pixels: torch's uint8 kernel is a port of Pillow's (two
    passes, horizontal first, 8-bit in between), several times faster than float on a CPU."""
    if tuple(image.shape[-2:]) == (height, width):
        return image
    return F.interpolate(image, size=(height, width), mode="bicubic", antialias=True, align_corners=False)


def roadside_width(roadside_h: int, roadside_w: int, ego_h: int) -> int:
    """Width of the roadside part of the canvas: the whole roadside image at the ego's
    height, aspect kept (a crop is resized to the same width, so the layout stays)."""
    return max(1, round(roadside_w * ego_h / roadside_h))


def crop_slices(height: int, width: int, crop) -> tuple[slice, slice]:
    """Row and column slices of ``ModelSettings.roadside_crop`` in an image of this size:
    the box's fractions rounded outwards to whole pixels, at least one pixel each way."""
    if crop is None:
        return slice(None), slice(None)
    x0, y0, x1, y1 = crop
    c0, r0 = min(int(math.floor(x0 * width)), width - 1), min(int(math.floor(y0 * height)), height - 1)
    c1, r1 = max(int(math.ceil(x1 * width)), c0 + 1), max(int(math.ceil(y1 * height)), r0 + 1)
    return slice(r0, min(r1, height)), slice(c0, min(c1, width))


class ImagePreprocessor:
    """Ego + roadside images -> (B, 3, H, W) pixel values on ``device``.

    On a CPU the camera-sized work (fusion, resize) stays in 8 bits until the image has the
    model's size (``_resize_u8``); on a GPU the frame is uploaded as 8 bits and resized in
    float there (``_pil_resize``). Both match Pillow within one level."""

    def __init__(self, settings: ModelSettings, device="cpu"):
        self.settings = settings
        self.device = torch.device(device)
        self.mean = torch.tensor(settings.image_mean, device=self.device).view(1, 3, 1, 1) * 255.0
        self.std = torch.tensor(settings.image_std, device=self.device).view(1, 3, 1, 1) * 255.0
        self._mean_u8 = np.round(np.array(settings.image_mean) * 255.0).astype(np.uint8)

    @property
    def motion(self) -> bool:
        """Whether the roadside part holds two frames (``ModelSettings.roadside_motion_s``)."""
        return self.settings.roadside_motion_s is not None

    def fuse(self, ego: torch.Tensor, roadside: torch.Tensor | None,
             previous: torch.Tensor | None = None) -> torch.Tensor:
        """The fused (3, H_v, W_v + W_i') canvas of 0..255 floats."""
        h, w = ego.shape[-2:]
        if not self.settings.fusion or roadside is None:
            # ego only: the roadside slot (ego-sized) holds the mean colour
            blank = self.mean.view(3, 1, 1).expand(3, h, w)
            return torch.cat([ego, blank.round()], dim=-1)
        new_w = roadside_width(roadside.shape[-2], roadside.shape[-1], h)
        rows, cols = crop_slices(roadside.shape[-2], roadside.shape[-1], self.settings.roadside_crop)
        roadside = roadside[:, rows, cols]
        if self.motion and self.settings.roadside_motion_layout == "blue":
            roadside = roadside.clone()
            roadside[2] = self._earlier(previous, roadside)[2]  # RGB here: blue is the third
        elif self.motion:
            roadside = torch.cat([self._earlier(previous, roadside), roadside], dim=-2)
        if tuple(roadside.shape[-2:]) != (h, new_w):
            roadside = _pil_resize(roadside[None], h, new_w)[0]
        return torch.cat([ego, roadside], dim=-1)

    def _earlier(self, previous: torch.Tensor | None, current: torch.Tensor) -> torch.Tensor:
        """The earlier roadside frame's box at the size of the current frame's box (``current``);
        ``current`` itself when there is no earlier frame."""
        if previous is None:
            return current
        rows, cols = crop_slices(previous.shape[-2], previous.shape[-1], self.settings.roadside_crop)
        box = previous[:, rows, cols]
        if box.shape[-2:] != current.shape[-2:]:
            box = _pil_resize(box[None], current.shape[-2], current.shape[-1])[0]
        return box

    def _earlier_u8(self, previous: np.ndarray | None, current: np.ndarray) -> np.ndarray:
        """``_earlier`` on 8-bit HxWx3 arrays."""
        if previous is None:
            return current
        rows, cols = crop_slices(previous.shape[0], previous.shape[1], self.settings.roadside_crop)
        box = previous[rows, cols]
        if box.shape[:2] != current.shape[:2]:
            box = _resize_u8(_nchw_view(np.ascontiguousarray(box)), current.shape[0], current.shape[1])
            box = box.contiguous(memory_format=torch.channels_last)[0].permute(1, 2, 0).numpy()
        return box

    def fuse_u8(self, ego: np.ndarray, roadside: np.ndarray | None, bgr: bool,
                previous: np.ndarray | None = None) -> np.ndarray:
        """The fused HxWx3 8-bit canvas, in the input's channel order."""
        h, w = ego.shape[:2]
        if not self.settings.fusion or roadside is None:
            colour = self._mean_u8[::-1] if bgr else self._mean_u8
            right = np.broadcast_to(colour, (h, w, 3))
        else:
            new_w = roadside_width(roadside.shape[0], roadside.shape[1], h)
            rows, cols = crop_slices(roadside.shape[0], roadside.shape[1], self.settings.roadside_crop)
            right = roadside[rows, cols]
            if self.motion and self.settings.roadside_motion_layout == "blue":
                right = right.copy()  # a crop is a view of the caller's image
                blue = 0 if bgr else 2
                right[..., blue] = self._earlier_u8(previous, right)[..., blue]
            elif self.motion:
                right = np.concatenate([self._earlier_u8(previous, right), right], axis=0)
            if right.shape[:2] != (h, new_w):
                right = np.ascontiguousarray(right)  # a crop is a strided view
                right = _resize_u8(_nchw_view(right), h, new_w)
                # torch's 8-bit kernel returns NCHW memory; laid out channels-last, the HxWx3
                # view is contiguous and the concatenation a plain copy (1920x1080: 6.8 -> 2.6 ms
                # on 2 CPU cores, the same pixels)
                right = right.contiguous(memory_format=torch.channels_last)[0].permute(1, 2, 0).numpy()
        return np.concatenate([ego, right], axis=1)

    def __call__(self, pairs, bgr: bool = True) -> torch.Tensor:
        """``pairs``: iterable of (ego, roadside) images (roadside may be None without
        fusion), or (ego, roadside, earlier roadside frame or None) for a model that reads
        motion (the third is ignored by one that does not). Returns normalised pixel values,
        float32 (B, 3, H, W)."""
        height, width = self.settings.image_size
        out = []
        for ego, roadside, *rest in pairs:
            use_roadside = roadside is not None and self.settings.fusion
            # the earlier roadside frame, when the model reads motion and one was given
            previous = rest[0] if rest and use_roadside and self.motion else None
            tensors = isinstance(ego, torch.Tensor) or isinstance(previous, torch.Tensor) or (
                use_roadside and isinstance(roadside, torch.Tensor))
            if self.device.type == "cpu" and not tensors:
                fused = self.fuse_u8(_checked(ego), _checked(roadside) if use_roadside else None, bgr,
                                     None if previous is None else _checked(previous))
                small = _resize_u8(_nchw_view(fused), height, width).float()
                out.append(small.flip(1) if bgr else small)
                continue
            e = as_chw(ego, self.device, bgr)
            r = as_chw(roadside, self.device, bgr) if use_roadside else None
            p = None if previous is None else as_chw(previous, self.device, bgr)
            out.append(_pil_resize(self.fuse(e, r, p)[None], height, width))
        pixels = torch.cat(out, dim=0)
        return (pixels - self.mean) / self.std


def florence2_processor(tokenizer, settings: ModelSettings):
    """transformers' own Florence-2 processor configured like ``ImagePreprocessor`` (for the
    parity test, the user-written baseline, and the processor files of a model dir)."""
    from transformers import Florence2Processor
    from transformers.image_utils import PILImageResampling
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    h, w = settings.image_size
    image_processor = CLIPImageProcessorPil(
        size={"height": h, "width": w}, crop_size={"height": h, "width": w}, do_center_crop=False,
        resample=PILImageResampling.BICUBIC, image_mean=list(settings.image_mean),
        image_std=list(settings.image_std), image_seq_length=settings.num_image_tokens,
    )
    return Florence2Processor(image_processor=image_processor, tokenizer=tokenizer)


# -- prompt ------------------------------------------------------------------------------


def valid_utf8(text: str) -> str:
    """``text`` with lone surrogates (a JSON "\\udcff", bytes decoded with surrogateescape)
    replaced: tokenizers and ROS strings refuse them."""
    return text.encode("utf-8", "replace").decode("utf-8")


def clean_description(text: str | None, max_chars: int) -> str:
    """Control characters out, whitespace collapsed, at most ``max_chars`` characters."""
    if not text:
        return ""
    text = _CONTROL.sub(" ", valid_utf8(str(text)[: max_chars * 2]))
    return " ".join(text.split())[:max_chars]


def state_text(motion: EgoMotion) -> str:
    """The planning basis: the ego at the origin of its own frame, with its motion."""
    heading = math.degrees(motion.heading_rad) % 360.0
    return (f"Ego state: position (0.0, 0.0) m, speed {motion.speed_mps:.1f} m/s, "
            f"heading {heading:.0f} deg, yaw rate {motion.yaw_rate_rps:+.2f} rad/s.")


@dataclass
class PromptTokens:
    input_ids: list[int]  # <image> x n, <s>, prompt, </s>
    text_ids: list[int]  # <s>, prompt, </s> (the text encoder's view, for alignment)
    truncated: bool  # the description was cut to fit


class PromptEncoder:
    """Token ids of the prompt within the text model's position budget."""

    def __init__(self, tokenizer, settings: ModelSettings, max_positions: int):
        self.tokenizer = tokenizer
        self.settings = settings
        self.budget = max_positions - settings.num_image_tokens
        self._description_cache: dict[str, list[int]] = {}
        fixed = len(self._ids(TASK_TEXT)) + max(len(self._ids(c)) for c in COMMAND_TEXT.values())
        if self.budget < fixed + 48:  # the state text is ~40 tokens
            raise ValueError(f"{settings.num_image_tokens} image tokens leave {self.budget} of "
                             f"{max_positions} positions: too few for the prompt")

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    @cached_property
    def _task_ids(self) -> list[int]:
        return self._ids(" " + TASK_TEXT)

    @cached_property
    def _command_ids(self) -> dict[Command, list[int]]:
        return {c: self._ids(" " + t) for c, t in COMMAND_TEXT.items()}

    def _description_ids(self, text: str) -> list[int]:
        """Token ids of a cleaned description, cached: a description is reused for many
        frames (the describer runs far slower than the camera), so it is tokenized once."""
        cache = self._description_cache
        ids = cache.get(text)
        if ids is None:
            if len(cache) >= 64:
                cache.pop(next(iter(cache)))  # the oldest
            ids = cache[text] = self._ids(text + " ")
        return ids

    def encode(self, description: str | None, motion: EgoMotion, command: Command) -> PromptTokens:
        tail = self._ids(state_text(motion)) + self._command_ids[Command(command)] + self._task_ids
        desc: list[int] = []
        if self.settings.scene_text:
            text = clean_description(description, self.settings.description_max_chars)
            desc = self._description_ids(text) if text else []
        room = self.budget - 2 - len(tail)  # <s> and </s>
        truncated = len(desc) > room
        body = desc[: max(room, 0)] + tail
        text_ids = [self.tokenizer.bos_token_id, *body, self.tokenizer.eos_token_id]
        image = [self.tokenizer.image_token_id] * self.settings.num_image_tokens
        return PromptTokens(image + text_ids, text_ids, truncated)
