"""A blank camera frame: one colour over the whole image.

A roadside camera that died, a lens cap, an encoder that sends a constant frame: the image
arrives, decodes, and carries no information. The planners read such a frame as something,
though: the synthetic demo models, never trained on one, read a uniform grey roadside view
as "brake at every junction" (docs/TRAINING.md), where their answer to a missing roadside
view is the ego-only plan they learned from roadside dropout. So the planning step treats a
blank roadside frame as no roadside frame (the ego-only canvas), and counts it
(``runtime.engine.PlanOutput.roadside_blank``; the vehicle node's ``roadside_blank`` drop).

"Blank" is strict: every channel's values lie within ``BLANK_SPREAD`` levels of each other
over the whole image. A dark night scene, fog or a flat wall still vary by more than that
(sensor noise and JPEG alone do), so no real picture is thrown away; a uniform frame after
JPEG coding stays within it.
"""

from __future__ import annotations

import numpy as np

#: The most two pixel values of one channel of a blank image may differ by (0..255 levels).
BLANK_SPREAD = 2
# A coarse grid is looked at first: almost every real frame differs there already.
_GRID = 16


def _channel_spread(view: np.ndarray) -> np.ndarray:
    """Per channel, max - min over an HxWxC view. Reduced over rows first (one contiguous,
    vectorised pass over the image), then over the W*C column values: a reduction straight
    over (H*W, C) runs an inner loop of C elements and took 57 ms on a 1920x1080 frame where
    this takes under 1 ms (why ``eval --roadside grey``, all blank frames, ran twice as long)."""
    channels = view.shape[2]
    rows = view.reshape(view.shape[0], -1)
    high = rows.max(axis=0).reshape(-1, channels).max(axis=0)
    low = rows.min(axis=0).reshape(-1, channels).min(axis=0)
    return high.astype(np.int32) - low


def is_blank_image(image: np.ndarray, spread: int = BLANK_SPREAD) -> bool:
    """Whether ``image`` (HxW or HxWxC, 8-bit) is one colour: per channel, max - min <= spread."""
    if image.ndim not in (2, 3) or image.size == 0:
        raise ValueError(f"expected an HxW or HxWxC image, got shape {image.shape}")
    channels = image.reshape(image.shape[0], image.shape[1], -1)
    for view in (channels[::_GRID, ::_GRID], channels):  # cheap rejection first
        if np.any(_channel_spread(view) > spread):
            return False
    return True
