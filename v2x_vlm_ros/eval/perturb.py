"""What ``v2x-vlm experiments`` does to a planner's inputs (Tables 1-3), defined exactly.

Every transform takes ``(sample, frame)`` -- the dataset sample and the ``PlanInput`` built
from it (decoded ego and roadside images, description, motion, command) -- and returns a
new ``PlanInput``; the input frame is never modified. Random transforms draw from a
generator seeded by ``(seed, stream, sequence id / sample id)`` only (``sample_rng``), so a
sample is perturbed the same way whatever the batch size, the order of the samples, or
which other samples are evaluated.

- ``BlankRoadside`` (``v2x-vlm eval --roadside none``): no roadside image; the fused
  model's canvas then holds the normalisation mean colour in the roadside half, exactly
  what a ``fusion: false`` model sees (``model.processing``).
- ``GreyRoadside`` (``--roadside grey``): the roadside image replaced by a uniform grey
  image (value ``GREY`` in every channel) of the same size.
- ``SwapRoadside`` (``--roadside swap``): the roadside image replaced by another
  sequence's: the next sequence in id order (cyclic), at the same frame index (its last
  frame when it is shorter). In a synthetic world a hidden-hazard sequence's next one is
  its twin, the same scene without the hazard.
- ``EmptyDescription`` (``--description empty``): the scene description removed.
- ``SwapTurnCommand`` (``--command swap``): the navigation command LEFT planned as RIGHT and
  RIGHT as LEFT (FORWARD kept). A planner that follows its command turns the other way on
  the turn frames; one that plans both turns alike does not change.
- ``RoadsideLink(s)`` (Table 2): the roadside image as the roadside node sends it --
  ``RoadsideService`` downsamples it by ``s`` (area averaging) and JPEG-encodes it with
  ``RoadsideConfig``'s default quality -- then decoded as the vehicle decodes it; the model's
  fusion resizes it to the ego image's height. The bytes actually encoded are accounted.
- ``RoadsideNoise(std)`` (Table 3): i.i.d. Gaussian noise of standard deviation ``std``
  on the 0..255 pixel values of the roadside image as decoded from the dataset (every
  pixel and channel), rounded to the nearest integer and clipped to 0..255. The noise
  field of a sample is one standard-normal draw scaled by ``std``, so std 5 and std 10
  perturb a sample along the same direction. ``std = 0`` is the identity.
- ``DescriptionPerturbation(p)`` (Table 3): only the scene description is touched; the ego
  state, the navigation command and the planning-task text of the prompt are built from
  ``motion`` / ``command`` and fixed strings, and stay exactly as they are. The
  description is split on whitespace into words (punctuation stays attached, "away." is
  one word); each word is independently, with probability ``p``, perturbed: with
  probability 1/2 dropped, otherwise replaced by a word drawn uniformly from the
  vocabulary (the sorted distinct words of all the dataset's descriptions, or of the
  description itself when the dataset has none; the draw may return the same word).
  The words are joined with single spaces (the prompt encoder collapses whitespace anyway).
  ``p = 0`` returns the description unchanged. So about ``p`` of the words are hit:
  ``p / 2`` dropped and ``p / 2`` replaced.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Iterable
from dataclasses import replace

import numpy as np

from v2x_vlm_ros.data.images import load_image
from v2x_vlm_ros.data.records import Command, roadside_before
from v2x_vlm_ros.preprocessing.image_codec import decode_image, downsample, encode_image
from v2x_vlm_ros.runtime.engine import PlanInput
from v2x_vlm_ros.runtime.roadside import RoadsideConfig, RoadsideService
from v2x_vlm_ros.runtime.transmission import formula_bps


def sample_key(sample) -> str:
    """What identifies a sample for seeding: its sequence and its vehicle frame."""
    return f"{sample.sequence_id}/{sample.sample_id}"


def sample_rng(seed: int, stream: str, key: str) -> np.random.Generator:
    """A generator that depends on ``seed``, the perturbation ``stream`` and the sample
    ``key`` only (SHA-256 of the three, so nearby seeds give unrelated draws)."""
    digest = hashlib.sha256(f"{int(seed)}|{stream}|{key}".encode("utf-8")).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


# -- the definitions ----------------------------------------------------------------------


def gaussian_noise(image: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    """``image`` (uint8) + N(0, std^2) per value, rounded and clipped to 0..255; a new array
    (``std = 0``: an unchanged copy)."""
    std = float(std)
    if not (math.isfinite(std) and std >= 0):
        raise ValueError(f"noise std must be a finite number >= 0, got {std!r}")
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {arr.dtype}")
    if std == 0:
        return arr.copy()
    z = rng.standard_normal(arr.shape, dtype=np.float32)
    noisy = arr.astype(np.float32) + np.float32(std) * z
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def description_vocabulary(texts: Iterable[str | None]) -> list[str]:
    """Sorted distinct whitespace-separated words of ``texts``."""
    return sorted({word for text in texts if text for word in text.split()})


def perturb_words(text: str | None, p: float, rng: np.random.Generator,
                  vocabulary: list[str] | None = None) -> tuple[str | None, int, int]:
    """(perturbed text, words perturbed, words in the original) -- see the module docstring.
    The draws per word are made up front (three per word), so word i's fate depends only
    on the generator and i."""
    p = float(p)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"text perturbation probability must be in [0, 1], got {p!r}")
    if not text:
        return text, 0, 0
    words = text.split()
    if p == 0.0 or not words:
        return text, 0, len(words)
    vocab = list(vocabulary) if vocabulary else sorted(set(words))
    hit = rng.random(len(words)) < p
    drop = rng.random(len(words)) < 0.5
    pick = rng.integers(0, len(vocab), len(words))
    out = []
    for i, word in enumerate(words):
        if not hit[i]:
            out.append(word)
        elif not drop[i]:
            out.append(vocab[pick[i]])
    return " ".join(out), int(hit.sum()), len(words)


# -- transforms of a PlanInput --------------------------------------------------------------


class BlankRoadside:
    """No roadside image: the roadside half of the canvas is the mean colour."""

    label = "roadside blanked"

    def __call__(self, sample, frame: PlanInput) -> PlanInput:
        return replace(frame, roadside=None, roadside_previous=None)


GREY = 128


class GreyRoadside:
    """The roadside image replaced by a uniform grey image of the same size."""

    label = "roadside grey"

    def __call__(self, sample, frame: PlanInput) -> PlanInput:
        if frame.roadside is None:
            return frame
        previous = None if frame.roadside_previous is None else np.full_like(frame.roadside_previous, GREY)
        return replace(frame, roadside=np.full_like(frame.roadside, GREY), roadside_previous=previous)


class SwapRoadside:
    """The roadside image of another sequence (see the module docstring) from ``samples``:
    an iterable of objects with ``sequence_id``, ``frame_index`` and ``roadside_image_path``
    (dataset samples), covering every sequence that will be planned. For a model that reads
    motion (``motion_s``: its ``roadside_motion_s``), the earlier frame is the other
    sequence's too (``data.records.roadside_before`` of the sample swapped in)."""

    label = "roadside swapped"

    def __init__(self, samples, motion_s: float | None = None):
        frames: dict[str, dict[int, object]] = {}
        for s in samples:
            frames.setdefault(str(s.sequence_id), {})[int(s.frame_index)] = s
        if len(frames) < 2:
            raise ValueError(f"--roadside swap needs at least two sequences, got {len(frames)}")
        order = sorted(frames)
        self._other = {seq: order[(i + 1) % len(order)] for i, seq in enumerate(order)}
        self._frames = {seq: [by_index[k] for k in sorted(by_index)] for seq, by_index in frames.items()}
        self.motion_s = motion_s

    def source_sample(self, sample):
        """The sample whose roadside view replaces ``sample``'s."""
        other = self._frames[self._other[str(sample.sequence_id)]]
        return other[min(int(sample.frame_index), len(other) - 1)]

    def source(self, sample):
        """The roadside image path that replaces ``sample``'s."""
        return self.source_sample(sample).roadside_image_path

    def __call__(self, sample, frame: PlanInput) -> PlanInput:
        if frame.roadside is None:
            return frame
        other = self.source_sample(sample)
        previous = None
        if frame.roadside_previous is not None and self.motion_s is not None:
            earlier = roadside_before(other, self.motion_s)
            previous = None if earlier is None else load_image(earlier[1])
        return replace(frame, roadside=load_image(other.roadside_image_path), roadside_previous=previous)


class EmptyDescription:
    """No scene description in the prompt."""

    label = "description empty"

    def __call__(self, sample, frame: PlanInput) -> PlanInput:
        return replace(frame, description="")


class SwapTurnCommand:
    """The turn commands swapped: LEFT <-> RIGHT, FORWARD kept."""

    label = "turn command swapped"

    def __call__(self, sample, frame: PlanInput) -> PlanInput:
        return replace(frame, command=Command(frame.command).opposite)


#: ``v2x-vlm eval --roadside`` / ``--description`` / ``--command`` choices -> transform factories.
ROADSIDE_ABLATIONS = ("grey", "swap", "none")
DESCRIPTION_ABLATIONS = ("empty",)
COMMAND_ABLATIONS = ("swap",)


def ablation_transforms(roadside: str | None, description: str | None, samples=(),
                        command: str | None = None, motion_s: float | None = None) -> list:
    """The input transforms of the inference-time ablations (``samples``: what
    ``SwapRoadside`` draws from; ``motion_s``: the planned model's ``roadside_motion_s``)."""
    out = []
    if roadside == "grey":
        out.append(GreyRoadside())
    elif roadside == "swap":
        out.append(SwapRoadside(samples, motion_s))
    elif roadside == "none":
        out.append(BlankRoadside())
    elif roadside is not None:
        raise ValueError(f"roadside ablation must be one of {ROADSIDE_ABLATIONS}, got {roadside!r}")
    if description == "empty":
        out.append(EmptyDescription())
    elif description is not None:
        raise ValueError(f"description ablation must be one of {DESCRIPTION_ABLATIONS}, got {description!r}")
    if command == "swap":
        out.append(SwapTurnCommand())
    elif command is not None:
        raise ValueError(f"command ablation must be one of {COMMAND_ABLATIONS}, got {command!r}")
    return out


class RoadsideNoise:
    label = "roadside noise"

    def __init__(self, std: float, seed: int):
        gaussian_noise(np.zeros((1, 1, 3), np.uint8), std, np.random.default_rng(0))  # validates std
        self.std = float(std)
        self.seed = int(seed)

    def __call__(self, sample, frame: PlanInput) -> PlanInput:
        if frame.roadside is None or self.std == 0:
            return frame
        rng = sample_rng(self.seed, "roadside-noise", sample_key(sample))
        previous = frame.roadside_previous
        if previous is not None:  # its own draw: the two frames' noise is independent
            previous = gaussian_noise(previous, self.std,
                                      sample_rng(self.seed, "roadside-noise-previous", sample_key(sample)))
        return replace(frame, roadside=gaussian_noise(frame.roadside, self.std, rng),
                       roadside_previous=previous)


class DescriptionPerturbation:
    label = "description words"

    def __init__(self, p: float, seed: int, vocabulary: list[str] | None = None):
        perturb_words("x", p, np.random.default_rng(0))  # validates p
        self.p = float(p)
        self.seed = int(seed)
        self.vocabulary = list(vocabulary or [])
        self.words_perturbed = 0
        self.words_total = 0

    def __call__(self, sample, frame: PlanInput) -> PlanInput:
        rng = sample_rng(self.seed, "description", sample_key(sample))
        text, hit, total = perturb_words(frame.description, self.p, rng, self.vocabulary)
        self.words_perturbed += hit
        self.words_total += total
        return replace(frame, description=text)

    def stats(self) -> dict:
        total = self.words_total
        return {"p": self.p, "words_total": total, "words_perturbed": self.words_perturbed,
                "perturbed_fraction": self.words_perturbed / total if total else None,
                "vocabulary_size": len(self.vocabulary)}


class RoadsideLink:
    """The roadside image through ``RoadsideService`` at scale ``s`` and back (Table 2)."""

    label = "roadside link"

    def __init__(self, scale: float, rate_hz: float | None = None):
        defaults = RoadsideConfig()
        self.rate_hz = float(defaults.rate_hz if rate_hz is None else rate_hz)
        self.service = RoadsideService(RoadsideConfig(scale=scale, codec=defaults.codec,
                                                      quality=defaults.quality, rate_hz=self.rate_hz))
        self.scale = float(scale)
        self._formula: list[float] = []
        self._sent_size: tuple[int, int] | None = None
        self._original_size: tuple[int, int] | None = None
        self.encode_ms: list[float] = []
        self.decode_ms: list[float] = []

    def __call__(self, sample, frame: PlanInput) -> PlanInput:
        if frame.roadside is None:
            return frame
        image = frame.roadside
        sent = self.service.encode(int(sample.roadside_timestamp_us) * 1000, image)
        t0 = time.perf_counter()
        received = decode_image(sent.data, f"roadside link (s = {self.scale:g})")
        self.decode_ms.append(1000.0 * (time.perf_counter() - t0))
        self.encode_ms.append(sent.encode_ms)
        h, w = image.shape[:2]
        self._formula.append(formula_bps(self.scale, w, h, image.shape[2], self.rate_hz))
        self._original_size, self._sent_size = (w, h), (sent.width, sent.height)
        previous = frame.roadside_previous
        if previous is not None:  # a model that reads motion: the earlier frame as the link delivered it
            cfg = self.service.config  # sent earlier: its bytes are the earlier message's, not counted twice
            data = encode_image(downsample(previous, cfg.scale), cfg.codec, cfg.quality)
            previous = decode_image(data, f"roadside link (s = {self.scale:g}), earlier frame")
        return replace(frame, roadside=received, roadside_previous=previous)

    def cost(self) -> dict:
        """The stream's cost at ``rate_hz``: the paper's formula on the original size, and
        the mean encoded message size x rate (what the link carries)."""
        stats = self.service.stats()
        mean_bytes = stats["measured_mean_bytes"]
        cfg = self.service.config
        return {
            "scale": self.scale, "codec": cfg.codec, "quality": cfg.quality, "rate_hz": self.rate_hz,
            "messages": stats["sent"],
            "original_size": _list(self._original_size), "sent_size": _list(self._sent_size),
            "formula_bps": float(np.mean(self._formula)) if self._formula else None,
            "measured_bps": None if mean_bytes is None else mean_bytes * self.rate_hz,
            "mean_bytes": mean_bytes, "total_bytes": stats["measured_total_bytes"],
        }

    def timing(self) -> dict:
        return {"encode_ms": float(np.mean(self.encode_ms)) if self.encode_ms else None,
                "decode_ms": float(np.mean(self.decode_ms)) if self.decode_ms else None}


def _list(size: tuple[int, int] | None) -> list[int] | None:
    return None if size is None else list(size)
