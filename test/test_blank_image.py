"""A blank (one-colour) camera frame, and what the planning step and the vehicle service do
with a blank roadside frame: plan it as none and count it."""

import cv2
import numpy as np
import pytest

from v2x_vlm_ros.data.records import Command, EgoMotion
from v2x_vlm_ros.model.modeling import load_model
from v2x_vlm_ros.preprocessing.blank_image import BLANK_SPREAD, is_blank_image
from v2x_vlm_ros.runtime.engine import PlanInput, PlannerEngine


def _scene(h=81, w=144, seed=0):
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.uint8)
    img[: h // 2] = (200, 170, 140)
    img[h // 2:] = (70, 70, 70)
    return np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("level", [0, 64, 128, 255])
def test_one_colour_frames_are_blank_before_and_after_jpeg(level):
    frame = np.full((72, 128, 3), level, np.uint8)
    assert is_blank_image(frame)
    decoded = cv2.imdecode(cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 30])[1], cv2.IMREAD_COLOR)
    assert is_blank_image(decoded)
    coloured = np.empty_like(frame)
    coloured[:] = (level, 255 - level, 90)  # one colour, not grey
    assert is_blank_image(coloured)
    assert is_blank_image(frame[..., 0])  # single channel


def test_pictures_are_not_blank_even_dark_or_flat():
    assert not is_blank_image(_scene())
    rng = np.random.default_rng(1)
    night = np.clip(6 + rng.normal(0, 1.5, (72, 128, 3)), 0, 255).astype(np.uint8)  # dark, sensor noise
    assert not is_blank_image(night)
    # one pixel off the coarse grid, one level more than the spread allows: the full check sees it
    frame = np.full((72, 128, 3), 100, np.uint8)
    frame[71, 127, 2] = 100 + BLANK_SPREAD + 1
    assert not is_blank_image(frame)
    frame[71, 127, 2] = 100 + BLANK_SPREAD
    assert is_blank_image(frame)


@pytest.mark.parametrize("channel", [0, 1, 2])
def test_each_channel_is_judged_alone_also_in_strided_views(channel):
    # a camera-sized frame, seen through a view that is not contiguous (a crop, every other
    # column): the spread is per channel, wherever the odd pixel lies
    frame = np.empty((1080, 1920, 3), np.uint8)
    frame[:] = (10, 128, 250)
    view = frame[100:900, ::2]
    assert is_blank_image(view)
    frame[537, 1002, channel] += BLANK_SPREAD + 1  # off the coarse grid, inside the view
    assert not is_blank_image(view) and not is_blank_image(frame)
    assert is_blank_image(frame[:, :1000])  # the view that leaves it out


@pytest.mark.parametrize("shape", [(0, 4, 3), (4, 0), (2, 2, 2, 3), (5,)])
def test_bad_shapes_are_named(shape):
    with pytest.raises(ValueError, match=r"expected an HxW or HxWxC image, got shape"):
        is_blank_image(np.zeros(shape, np.uint8))


def test_the_engine_plans_a_blank_roadside_frame_as_none_and_says_so(tiny_model_dir):
    engine = PlannerEngine(load_model(tiny_model_dir))
    ego, road = _scene(seed=2), _scene(seed=3)
    grey = np.full_like(road, 128)
    motion = EgoMotion(6.0, 0.0, 0.0, 0.5)
    frames = [PlanInput(ego, r, "a road", motion, Command.FORWARD) for r in (road, grey, None)]
    views, blank = engine.roadside_views(frames)
    assert blank == [False, True, False] and views[0] is road and views[1] is None and views[2] is None
    batch, _ = engine.encode(frames)
    px = batch["pixel_values"]
    assert torch_equal(px[1], px[2]) and not torch_equal(px[0], px[2])
    out = engine.plan(frames)
    assert [o.roadside_blank for o in out] == [False, True, False]
    assert np.array_equal(out[1].raw_xy, out[2].raw_xy)
    engine.keep_blank_roadside = True  # the model's own reading of the grey image
    views, blank = engine.roadside_views(frames)
    assert blank == [False, False, False] and views[1] is grey
    px = engine.encode(frames)[0]["pixel_values"]
    assert not torch_equal(px[1], px[2])
    assert [o.roadside_blank for o in engine.plan(frames)] == [False, False, False]


def torch_equal(a, b) -> bool:
    return bool((a == b).all())
