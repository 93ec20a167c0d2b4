"""Trajectory <-> token codecs: the one place that owns the planned-trajectory format.

The model writes the plan as tokens; everything that turns a trajectory into training
targets or turns generated tokens back into metres goes through here, so the format
cannot drift between training, evaluation and the ROS node.

Two formats:

- ``"loc"``: two Florence-2 location tokens per waypoint, ``<loc_bx> <loc_by>``, each
  coordinate quantised into ``bins`` equal bins over a fixed range, exactly like
  Florence-2 quantises box coordinates. Fixed length (2 tokens per waypoint), so
  decoding can be constrained to loc tokens and never produces unparsable output.
- ``"text"``: human-readable ``"x1,y1;x2,y2;..."`` with a fixed number of decimals,
  which the BART tokenizer splits into ordinary word pieces.

Trajectories are ``(T, 2)`` arrays in metres in the current ego frame (x forward,
y left). Decoding malformed model output raises ``TrajectoryDecodeError`` instead of
returning something trajectory-shaped but wrong.

What the tokens say about a trajectory (``CodecConfig.reference``):

- ``"none"`` (the paper's): the waypoints themselves.
- ``"constant_speed"``: the waypoints minus driving on at the current speed straight ahead,
  ``(x - v t_i, y)`` with ``t_i = (i + 1) dt_s``. Cruising is then the same tokens at every
  speed, and braking reads as how far the plan falls behind; the model no longer has to turn
  the speed written in its prompt into metres. ``encode`` and ``decode`` take the speed
  (``EgoMotion.speed_mps``: 0 where it is unknown, as at a sequence's first frame, on both
  sides, so training and inference agree).

In which order the waypoints are written (``CodecConfig.order``):

- ``"time"`` (the paper's): waypoint 1, 2, ..., T.
- ``"endpoint_first"``: waypoint T first, then 1, ..., T-1. The decoder writes one token at a
  time, each conditioned on the ones before. In time order, braking for a hazard and driving
  on differ by a bin or two at the first waypoints, and once the model has written those it
  only extends the prefix: the decision to brake rests on one token that barely differs
  either way (docs/TRAINING.md, "Why the decoder did not read the hidden car"). Written
  endpoint first, the decision is the first token, where the two plans are metres apart;
  the rest of the plan follows from it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

MAX_LOC_BINS = 1000  # Florence-2 has <loc_0>..<loc_999>
KINDS = ("loc", "text")
#: How each location token is chosen from the decoder's distribution over the codec's bins
#: (``model.grammar.choose_bins``): ``greedy`` the most likely bin; ``mean`` the bin nearest
#: the distribution's mean (the estimate of that coordinate with the least expected squared
#: error given the tokens already written); ``median`` the bin at its median (least expected
#: absolute error). With a two-peaked distribution, "stop" or "drive on", "left" or "right",
#: the most likely bin is one peak, wrong by the peaks' distance when the other was right.
TOKEN_CHOICES = ("greedy", "mean", "median")

REFERENCES = ("none", "constant_speed")
ORDERS = ("time", "endpoint_first")


def check_token_choice(value) -> str:
    """``value`` if it is one of ``TOKEN_CHOICES``; ValueError naming it otherwise."""
    if value not in TOKEN_CHOICES:
        raise ValueError(f"token_choice must be one of {TOKEN_CHOICES}, got {value!r}")
    return value


class TrajectoryDecodeError(ValueError):
    """Model output that is not a well-formed trajectory; ``reason`` says why."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)

    def __reduce__(self):
        # Keep ``reason`` when pickled across DataLoader / process boundaries.
        return (type(self), (self.reason,))


def loc_token_name(index: int) -> str:
    """Name of the ``index``-th location token, for looking its id up in the tokenizer."""
    return f"<loc_{int(index)}>"


def _check_range(name: str, value) -> None:
    if len(value) != 2:
        raise ValueError(f"{name} must be (lo, hi), got {value!r}")
    lo, hi = (float(v) for v in value)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if not lo < hi:
        raise ValueError(f"{name} must be increasing (lo < hi), got {value!r}")


@dataclass(frozen=True)
class CodecConfig:
    """How a trajectory is written as tokens.

    Attributes:
        kind: ``"loc"`` (two Florence-2 location tokens per waypoint) or ``"text"``
            (``"x,y;x,y;..."`` as plain text).
        num_waypoints: T, the number of waypoints in every trajectory (10 x 0.5 s, the
            UniV2X planning protocol).
        x_range: (lo, hi) metres covered by the loc bins along x (forward). 5 s at up
            to 20 m/s is 100 m ahead; a little room behind for reversing / noise.
        y_range: (lo, hi) metres covered by the loc bins along y (left).
        bins: number of loc bins per coordinate, 1..1000; uses ``<loc_0>``..
            ``<loc_{bins-1}>``. Values outside the range are clamped to the edge bins.
        text_decimals: decimals written per coordinate by the text codec.
        reference: ``"none"`` (tokens are the waypoints) or ``"constant_speed"`` (tokens
            are the waypoints minus straight-ahead driving at the current speed; x_range
            then bounds that difference). See the module docstring.
        dt_s: seconds between waypoints (waypoint i is at (i + 1) * dt_s), for the reference.
        order: ``"time"`` (waypoints 1..T) or ``"endpoint_first"`` (waypoint T, then
            1..T-1). See the module docstring.
    """

    kind: str = "loc"
    num_waypoints: int = 10
    x_range: tuple[float, float] = (-20.0, 100.0)
    y_range: tuple[float, float] = (-50.0, 50.0)
    bins: int = 1000
    text_decimals: int = 1
    reference: str = "none"
    dt_s: float = 0.5
    order: str = "time"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.reference not in REFERENCES:
            raise ValueError(f"reference must be one of {REFERENCES}, got {self.reference!r}")
        if self.order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {self.order!r}")
        if isinstance(self.dt_s, bool) or not isinstance(self.dt_s, (int, float)) \
                or not (math.isfinite(self.dt_s) and self.dt_s > 0):
            raise ValueError(f"dt_s must be a positive number of seconds, got {self.dt_s!r}")
        if isinstance(self.num_waypoints, bool) or not isinstance(self.num_waypoints, int) \
                or self.num_waypoints < 1:
            raise ValueError(f"num_waypoints must be an int >= 1, got {self.num_waypoints!r}")
        _check_range("x_range", self.x_range)
        _check_range("y_range", self.y_range)
        if isinstance(self.bins, bool) or not isinstance(self.bins, int) \
                or not 1 <= self.bins <= MAX_LOC_BINS:
            raise ValueError(f"bins must be an int in 1..{MAX_LOC_BINS}, got {self.bins!r}")
        if isinstance(self.text_decimals, bool) or not isinstance(self.text_decimals, int) \
                or not 0 <= self.text_decimals <= 6:
            raise ValueError(f"text_decimals must be an int in 0..6, got {self.text_decimals!r}")
        # Normalise to float tuples so equal configs compare and hash equal.
        object.__setattr__(self, "x_range", tuple(float(v) for v in self.x_range))
        object.__setattr__(self, "y_range", tuple(float(v) for v in self.y_range))
        object.__setattr__(self, "dt_s", float(self.dt_s))

    def reference_xy(self, speed_mps: float | None) -> np.ndarray:
        """(T, 2) metres the tokens are written relative to: zeros for ``"none"``; driving
        on straight ahead at ``speed_mps`` for ``"constant_speed"`` (an unknown or
        non-finite speed counts as 0)."""
        ref = np.zeros((self.num_waypoints, 2))
        if self.reference == "constant_speed":
            v = float(speed_mps) if speed_mps is not None and math.isfinite(float(speed_mps)) else 0.0
            ref[:, 0] = v * self.dt_s * np.arange(1, self.num_waypoints + 1)
        return ref

    @property
    def waypoint_order(self) -> tuple[int, ...]:
        """The waypoint (0-based, in time) written at each position of the token sequence:
        token pair ``p`` (tokens ``2p``, ``2p + 1``) is waypoint ``waypoint_order[p]``."""
        time_order = tuple(range(self.num_waypoints))
        if self.order == "endpoint_first":
            return time_order[-1:] + time_order[:-1]
        return time_order

    @property
    def resolution(self) -> tuple[float, float]:
        """Loc bin width (dx, dy) in metres: 0.12 m in x and 0.1 m in y by default.

        The largest quantisation error of an in-range value is half a bin.
        """
        (x_lo, x_hi), (y_lo, y_hi) = self.x_range, self.y_range
        return ((x_hi - x_lo) / self.bins, (y_hi - y_lo) / self.bins)


def _as_trajectory(xy, num_waypoints: int) -> np.ndarray:
    """Validate an input trajectory: (T, 2), finite numbers."""
    try:
        arr = np.asarray(xy, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"trajectory must be numeric: {exc}") from None
    if arr.shape != (num_waypoints, 2):
        raise ValueError(f"trajectory must have shape ({num_waypoints}, 2), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("trajectory contains NaN or inf")
    return arr


@dataclass(frozen=True, eq=False)
class EncodedTrajectory:
    """A trajectory as loc token ids.

    Attributes:
        token_ids: 2T ids, x bin then y bin per waypoint.
        clamped: (T,) bool, True for waypoints with a coordinate outside the codec's
            range (encoded as the edge bin, so they will not decode back exactly).
    """

    token_ids: list[int]
    clamped: np.ndarray


class LocTokenCodec:
    """Two location tokens per waypoint, binned like Florence-2 bins box coordinates."""

    def __init__(self, config: CodecConfig, loc_token_ids: Sequence[int]):
        """``loc_token_ids[i]`` is the tokenizer id of ``<loc_i>`` (look them up with
        ``loc_token_name``; ids differ between tokenizers, so never hard-code them)."""
        self.config = config
        ids = list(loc_token_ids.tolist() if hasattr(loc_token_ids, "tolist") else loc_token_ids)
        if len(ids) < config.bins:
            raise ValueError(f"need at least {config.bins} loc token ids, got {len(ids)}")
        if not all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in ids):
            raise ValueError("loc token ids must be ints")
        ids = [int(i) for i in ids]
        if len(set(ids)) != len(ids):
            raise ValueError("loc token ids must be distinct")
        self._ids = ids[:config.bins]
        # Every known loc id -> its index, including the unused ones beyond ``bins``,
        # so an error can say "<loc_900> is outside the 500 bins" rather than "unknown".
        self._index = {tok: i for i, tok in enumerate(ids)}
        ranges = (config.x_range, config.y_range)
        self._lo = np.array([r[0] for r in ranges])
        self._span = np.array([r[1] - r[0] for r in ranges])

    @property
    def num_waypoints(self) -> int:
        return self.config.num_waypoints

    @property
    def num_tokens(self) -> int:
        """Tokens per trajectory: 2T."""
        return 2 * self.config.num_waypoints

    def encode(self, xy, speed_mps: float | None = None) -> EncodedTrajectory:
        """(T, 2) metres -> 2T loc ids; out-of-range coordinates are clamped and flagged.
        ``speed_mps``: the ego's current speed (used by ``reference="constant_speed"``)."""
        arr = _as_trajectory(xy, self.num_waypoints) - self.config.reference_xy(speed_mps)
        hi = self._lo + self._span
        clamped = np.any((arr < self._lo) | (arr > hi), axis=1)
        bins = self.config.bins
        idx = np.clip(np.floor((arr - self._lo) / self._span * bins), 0, bins - 1).astype(np.int64)
        written = idx[list(self.config.waypoint_order)]
        return EncodedTrajectory([self._ids[i] for i in written.reshape(-1)], clamped)

    def decode(self, token_ids, speed_mps: float | None = None) -> np.ndarray:
        """2T loc ids (list, numpy array or torch tensor) -> (T, 2) bin centres in metres
        (plus the reference at ``speed_mps``, the speed the tokens were written against).

        Only the trajectory tokens: the caller strips BOS / EOS / padding first.
        """
        ids = token_ids.tolist() if hasattr(token_ids, "tolist") else token_ids
        try:
            ids = list(ids)
        except TypeError:
            raise TrajectoryDecodeError(f"expected a sequence of token ids, got {type(token_ids).__name__}") \
                from None
        if len(ids) != self.num_tokens:
            raise TrajectoryDecodeError(f"expected {self.num_tokens} tokens, got {len(ids)}")
        bins = self.config.bins
        idx = []
        for k, tok in enumerate(ids):
            if isinstance(tok, bool) or not isinstance(tok, (int, np.integer)):
                raise TrajectoryDecodeError(f"token at position {k} is not an integer id: {tok!r}")
            i = self._index.get(int(tok))
            if i is None:
                raise TrajectoryDecodeError(f"token at position {k} (id {tok}) is not a location token")
            if i >= bins:
                raise TrajectoryDecodeError(
                    f"token at position {k} is {loc_token_name(i)}, outside the {bins} bins in use")
            idx.append(i)
        centres = np.empty((self.num_waypoints, 2))
        centres[list(self.config.waypoint_order)] = np.asarray(idx, dtype=np.float64).reshape(-1, 2) + 0.5
        return self._lo + centres * self._span / bins + self.config.reference_xy(speed_mps)

    def bin_centres(self, axis: int = 0) -> np.ndarray:
        """(bins,) the value in metres each bin of ``axis`` (0 x, 1 y) decodes to, before
        the reference is added: ``decode`` writes these."""
        if axis not in (0, 1):
            raise ValueError(f"axis must be 0 (x) or 1 (y), got {axis!r}")
        bins = self.config.bins
        return self._lo[axis] + (np.arange(bins) + 0.5) * self._span[axis] / bins

    def allowed_token_ids(self, step: int) -> list[int]:
        """Ids allowed at trajectory step ``step`` (0 <= step < 2T), for constrained
        decoding. x and y use the same bins, so the set does not depend on the step."""
        if not 0 <= step < self.num_tokens:
            raise ValueError(f"step must be in 0..{self.num_tokens - 1}, got {step}")
        return list(self._ids)


# One coordinate: optional sign, digits with an optional fraction (or a bare fraction).
# Deliberately stricter than float(): no exponent, nan, inf, underscores or non-ASCII digits.
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")


class TextCodec:
    """``"x1,y1;x2,y2;..."`` with ``text_decimals`` decimals; no range limit, no clamping."""

    def __init__(self, config: CodecConfig):
        self.config = config

    @property
    def num_waypoints(self) -> int:
        return self.config.num_waypoints

    def encode(self, xy, speed_mps: float | None = None) -> str:
        """(T, 2) metres -> text. Rounded to ``text_decimals``; ``-0.0`` is written ``0.0``.
        ``speed_mps``: the ego's current speed (used by ``reference="constant_speed"``)."""
        arr = _as_trajectory(xy, self.num_waypoints) - self.config.reference_xy(speed_mps)
        d = self.config.text_decimals
        # round() first, then + 0.0 turns a rounded -0.0 into 0.0 (one spelling per value).
        fmt = lambda v: f"{round(float(v), d) + 0.0:.{d}f}"
        return ";".join(f"{fmt(x)},{fmt(y)}" for x, y in arr[list(self.config.waypoint_order)])

    def decode(self, text: str, speed_mps: float | None = None) -> np.ndarray:
        """Text -> (T, 2), plus the reference at ``speed_mps``. Whitespace around numbers is
        tolerated; anything else that is not exactly T ``x,y`` pairs of plain decimal numbers
        is an error."""
        if not isinstance(text, str):
            raise TrajectoryDecodeError(f"expected text, got {type(text).__name__}")
        if not text.strip():
            raise TrajectoryDecodeError("empty output")
        pairs = text.split(";")
        if len(pairs) != self.num_waypoints:
            raise TrajectoryDecodeError(f"expected {self.num_waypoints} waypoints, got {len(pairs)}")
        out = np.empty((self.num_waypoints, 2))  # in the written order; time order at the end
        for pos, pair in enumerate(pairs):
            k = self.config.waypoint_order[pos]  # the waypoint (in time) this pair is
            fields = pair.split(",")
            if len(fields) != 2:
                raise TrajectoryDecodeError(f"waypoint {k}: expected 'x,y', got {pair!r}")
            for j, field in enumerate(fields):
                field = field.strip()
                if not _NUMBER.fullmatch(field):
                    raise TrajectoryDecodeError(f"waypoint {k}: {field!r} is not a number")
                value = float(field)
                if not math.isfinite(value):  # e.g. 400 digits overflow to inf
                    raise TrajectoryDecodeError(f"waypoint {k}: {field!r} is not finite")
                out[pos, j] = value
        timed = np.empty_like(out)
        timed[list(self.config.waypoint_order)] = out
        return timed + self.config.reference_xy(speed_mps)


def build_codec(config: CodecConfig, loc_token_ids: Sequence[int] | None = None):
    """The codec for ``config.kind``. ``"loc"`` needs the tokenizer's loc ids; ``"text"``
    ignores them (so callers may always pass them)."""
    if config.kind == "loc":
        if loc_token_ids is None:
            raise ValueError("the loc codec needs loc_token_ids (ids of <loc_0>..<loc_N>)")
        return LocTokenCodec(config, loc_token_ids)
    return TextCodec(config)
