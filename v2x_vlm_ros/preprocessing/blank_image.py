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


def is_blank_image(image: np.ndarray, spread: int = BLANK_SPREAD) -> bool:
    """Whether ``image`` (HxW or HxWxC, 8-bit) is one colour: per channel, max - min <= spread."""
    if image.ndim not in (2, 3) or image.size == 0:
        raise ValueError(f"expected an HxW or HxWxC image, got shape {image.shape}")
    channels = image.reshape(image.shape[0], image.shape[1], -1)
    for view in (channels[::_GRID, ::_GRID], channels):  # cheap rejection first
        flat = view.reshape(-1, channels.shape[2])
        if np.any(flat.max(axis=0).astype(np.int32) - flat.min(axis=0) > spread):
            return False
    return True
