"""Model inputs: fused pixels against transformers' Florence-2 processor, and the prompt."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from v2x_vlm_ros.data.records import Command, EgoMotion
from v2x_vlm_ros.model.configuration import ModelSettings
from v2x_vlm_ros.model.processing import (COMMAND_TEXT, TASK_TEXT, ImagePreprocessor, PromptEncoder,
                                          clean_description, crop_slices, florence2_processor)

SETTINGS = ModelSettings(image_size=(96, 256))
LEVEL = 1.0 / 255.0


def scene(h, w, seed):
    """An image with smooth shading, hard edges and noise (BGR, uint8)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([(xx * 255 / w), (yy * 255 / h), ((xx + yy) % 64) * 4], axis=-1)
    img[h // 3: h // 2, w // 4: w // 2] = (20, 200, 240)
    img = img + rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def reference(tokenizer, ego_bgr, roadside_bgr, settings=SETTINGS):
    """What a user of transformers would do: fuse with Pillow, run Florence2Processor."""
    ego = Image.fromarray(ego_bgr[..., ::-1].copy())
    road = Image.fromarray(roadside_bgr[..., ::-1].copy())
    if road.height != ego.height:
        road = road.resize((round(road.width * ego.height / road.height), ego.height), Image.BICUBIC)
    fused = Image.new("RGB", (ego.width + road.width, ego.height))
    fused.paste(ego, (0, 0))
    fused.paste(road, (ego.width, 0))
    proc = florence2_processor(tokenizer, settings)
    return proc(images=fused, text="x", return_tensors="pt")["pixel_values"]


def in_levels(ours, ref, settings=SETTINGS):
    std = torch.tensor(settings.image_std).view(1, 3, 1, 1)
    return float(((ours - ref).abs() * std).max() / LEVEL)


@pytest.mark.parametrize("hw", [(81, 144), (216, 384), (1080 // 4, 1920 // 4)])
def test_pixels_match_the_florence2_processor_within_one_level(tiny_tokenizer, hw):
    ego, road = scene(*hw, 0), scene(*hw, 1)
    ours = ImagePreprocessor(SETTINGS)([(ego, road)])
    ref = reference(tiny_tokenizer, ego, road)
    assert ours.shape == ref.shape == (1, 3, 96, 256)
    assert in_levels(ours, ref) <= 1.0 + 1e-4


def test_roadside_at_another_height_matches_the_processor_within_one_level(tiny_tokenizer):
    ego, road = scene(216, 384, 0), scene(108, 192, 1)  # the roadside node sent it at s = 0.5
    ours = ImagePreprocessor(SETTINGS)([(ego, road)])
    assert in_levels(ours, reference(tiny_tokenizer, ego, road)) <= 1.0 + 1e-4


def test_the_8_bit_cpu_path_and_the_float_device_path_agree():
    """The CPU resizes in 8 bits; a GPU gets the float path (used here for tensors on a CPU)."""
    prep = ImagePreprocessor(SETTINGS)
    for ego, road in [(scene(216, 384, 6), scene(216, 384, 7)), (scene(216, 384, 6), scene(108, 192, 7))]:
        u8 = prep([(ego, road)])
        as_float = [torch.from_numpy(x[..., ::-1].copy()).permute(2, 0, 1) for x in (ego, road)]
        fl = prep([tuple(as_float)])
        assert in_levels(u8, fl) <= 1.0 + 1e-4
    settings = ModelSettings(image_size=(96, 256), fusion=False)
    ego = scene(81, 144, 8)
    tensor = torch.from_numpy(ego[..., ::-1].copy()).permute(2, 0, 1)
    prep = ImagePreprocessor(settings)
    assert in_levels(prep([(ego, None)]), prep([(tensor, None)]), settings) <= 1.0 + 1e-4


def test_roadside_height_matching_is_pillows_bicubic_within_one_level():
    ego, road = scene(216, 384, 0), scene(108, 192, 1)  # the roadside node sent it at s = 0.5
    prep = ImagePreprocessor(SETTINGS)
    fused = prep.fuse(torch.from_numpy(ego[..., ::-1].copy()).permute(2, 0, 1).float(),
                      torch.from_numpy(road[..., ::-1].copy()).permute(2, 0, 1).float())
    assert tuple(fused.shape) == (3, 216, 384 + 384)
    pil = np.asarray(Image.fromarray(road[..., ::-1].copy()).resize((384, 216), Image.BICUBIC))
    ours = fused[:, :, 384:].permute(1, 2, 0).numpy()
    assert np.abs(ours - pil.astype(np.float32)).max() <= 1.0


def test_a_single_float_resize_would_not_match(tiny_tokenizer):
    """The reason for the two-pass resize: one bicubic pass in float differs a lot."""
    import torch.nn.functional as F

    ego, road = scene(81, 144, 2), scene(81, 144, 3)
    fused = torch.from_numpy(np.concatenate([ego, road], axis=1)[..., ::-1].copy()).permute(2, 0, 1)[None]
    one = F.interpolate(fused.float(), size=(96, 256), mode="bicubic", antialias=True) / 255
    mean = torch.tensor(SETTINGS.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(SETTINGS.image_std).view(1, 3, 1, 1)
    assert in_levels((one - mean) / std, reference(tiny_tokenizer, ego, road)) > 3


def test_ego_only_blanks_the_roadside_half_whatever_it_saw():
    settings = ModelSettings(image_size=(96, 256), fusion=False)
    prep = ImagePreprocessor(settings)
    ego = scene(81, 144, 4)
    a = prep([(ego, scene(81, 144, 5))])
    b = prep([(ego, None)])
    assert torch.equal(a, b)
    right = a[..., 140:]  # beyond the seam's blur
    assert right.abs().max() < 0.02
    fused = ImagePreprocessor(SETTINGS)([(ego, scene(81, 144, 5))])
    assert torch.allclose(fused[..., :100], a[..., :100])  # the ego half is the same


def test_bgr_input_becomes_rgb_and_bad_images_are_named():
    blue = np.zeros((81, 144, 3), np.uint8)
    blue[..., 0] = 255  # blue in OpenCV's BGR order
    px = ImagePreprocessor(SETTINGS)([(blue, blue)])
    std = torch.tensor(SETTINGS.image_std)
    mean = torch.tensor(SETTINGS.image_mean)
    rgb = px[0, :, 40, 60] * std + mean
    assert rgb.tolist() == pytest.approx([0.0, 0.0, 1.0], abs=1e-3)
    with pytest.raises(ValueError, match="expected an HxWx3 image"):
        ImagePreprocessor(SETTINGS)([(np.zeros((0, 5, 3), np.uint8), blue)])
    with pytest.raises(ValueError, match="expected uint8"):
        ImagePreprocessor(SETTINGS)([(blue.astype(np.float32), blue)])


def test_prompt_layout_budget_and_truncation(tiny_tokenizer):
    enc = PromptEncoder(tiny_tokenizer, SETTINGS, max_positions=256)
    motion = EgoMotion(8.4, 2.0, -0.05, 0.5)
    short = enc.encode("A white truck parked at the right.", motion, Command.LEFT)
    n = SETTINGS.num_image_tokens
    assert short.input_ids[:n] == [tiny_tokenizer.image_token_id] * n
    assert short.input_ids[n:] == short.text_ids and not short.truncated
    text = tiny_tokenizer.decode(short.text_ids[1:-1])
    assert text.startswith("A white truck parked at the right.")
    assert "speed 8.4 m/s" in text and COMMAND_TEXT[Command.LEFT] in text and text.endswith(TASK_TEXT)
    huge = enc.encode("A white truck. " * 7000, motion, Command.RIGHT)  # ~100 kB
    assert huge.truncated and len(huge.input_ids) == 256
    assert tiny_tokenizer.decode(huge.text_ids[1:-1]).endswith(COMMAND_TEXT[Command.RIGHT] + " " + TASK_TEXT)


def test_descriptions_are_cleaned_and_can_be_left_out(tiny_tokenizer):
    assert clean_description("a\x00b\x1b[31m  c\n\td\x7f", 100) == "a b [31m c d"
    assert clean_description(None, 10) == "" and len(clean_description("x" * 500, 40)) == 40
    no_text = ModelSettings(image_size=(96, 256), scene_text=False)
    enc = PromptEncoder(tiny_tokenizer, no_text, max_positions=256)
    ids = enc.encode("A white truck parked.", EgoMotion(1.0, 0.0, 0.0, 0.5), Command.FORWARD).text_ids
    assert tiny_tokenizer.decode(ids[1:-1]).startswith("Ego state:")


def test_too_many_image_tokens_for_the_text_positions(tiny_tokenizer):
    with pytest.raises(ValueError, match="too few for the prompt"):
        PromptEncoder(tiny_tokenizer, ModelSettings(image_size=(768, 768)), max_positions=600)


def test_a_repeated_description_is_tokenized_once_and_the_cache_is_bounded(tiny_tokenizer):
    enc = PromptEncoder(tiny_tokenizer, SETTINGS, 1024)
    motion = EgoMotion(8.0, 0.1, 0.0, 0.5)
    first = enc.encode("A white truck parked at the right roadside.", motion, Command.LEFT)
    calls = []
    original = enc._ids
    enc._ids = lambda text: calls.append(text) or original(text)
    again = enc.encode("A white truck parked at the right roadside.", motion, Command.LEFT)
    assert again.input_ids == first.input_ids
    assert not any("truck" in c for c in calls)  # only the per-frame state text was tokenized
    for i in range(100):
        enc.encode(f"Description number {i}.", motion, Command.FORWARD)
    assert len(enc._description_cache) == 64


# -- the roadside crop (ModelSettings.roadside_crop) --------------------------------------

CROP = (0.25, 0.0, 0.75, 0.6)


def test_crop_slices_round_outwards_to_whole_pixels():
    assert crop_slices(1080, 1920, None) == (slice(None), slice(None))
    assert crop_slices(1080, 1920, (0.0, 0.0, 1.0, 0.6)) == (slice(0, 648), slice(0, 1920))
    assert crop_slices(216, 384, CROP) == (slice(0, 130), slice(96, 288))  # 0.6 * 216 = 129.6
    assert crop_slices(10, 10, (0.33, 0.5, 0.34, 0.5001)) == (slice(5, 6), slice(3, 4))
    assert crop_slices(10, 10, (0.99, 0.999, 1.0, 1.0)) == (slice(9, 10), slice(9, 10))


def test_the_crop_is_pillows_bicubic_of_the_box_at_the_whole_images_size():
    ego, road = scene(216, 384, 0), scene(216, 384, 1)
    prep = ImagePreprocessor(ModelSettings(image_size=(96, 256), roadside_crop=CROP))
    box = Image.fromarray(road[0:130, 96:288][..., ::-1].copy())  # the box, cut by hand
    pil = np.asarray(box.resize((384, 216), Image.BICUBIC)).astype(np.float32)
    u8 = prep.fuse_u8(ego, road, bgr=True)
    assert u8.shape == (216, 768, 3)
    assert np.array_equal(u8[:, :384], ego)  # the ego half is untouched
    assert np.abs(u8[:, 384:][..., ::-1].astype(np.float32) - pil).max() <= 1.0
    as_float = [torch.from_numpy(x[..., ::-1].copy()).permute(2, 0, 1).float() for x in (ego, road)]
    fl = prep.fuse(*as_float)  # the device path: float, rounded between its two passes
    diff = np.abs(fl[:, :, 384:].permute(1, 2, 0).numpy() - pil)
    assert diff.max() <= 2.0 and (diff > 1.0).mean() < 1e-4  # stretching, a level more at an edge
    # the model inputs of both paths agree, also for a roadside image at another size
    for r in (road, scene(108, 192, 2)):
        tensors = [torch.from_numpy(x[..., ::-1].copy()).permute(2, 0, 1) for x in (ego, r)]
        assert in_levels(prep([(ego, r)]), prep([tuple(tensors)])) <= 1.0 + 1e-4


def test_the_crop_keeps_only_its_box_of_the_roadside_view():
    road = np.zeros((216, 384, 3), np.uint8)
    road[:130] = (0, 0, 255)  # red (BGR) where the box is
    road[130:] = (255, 0, 0)  # blue below it
    ego = scene(216, 384, 3)
    cropped = ImagePreprocessor(ModelSettings(image_size=(96, 256), roadside_crop=(0.0, 0.0, 1.0, 0.6)))
    right = cropped.fuse_u8(ego, road, bgr=True)[:, 384:]
    assert (right == (0, 0, 255)).all()  # every pixel red: the blue rows are gone
    whole = ImagePreprocessor(SETTINGS).fuse_u8(ego, road, bgr=True)[:, 384:]
    assert (whole == (255, 0, 0)).all(axis=-1).sum() == 86 * 384
    # without fusion the crop changes nothing: the roadside half is the mean colour
    off = ImagePreprocessor(ModelSettings(image_size=(96, 256), fusion=False, roadside_crop=CROP))
    plain = ImagePreprocessor(ModelSettings(image_size=(96, 256), fusion=False))
    assert torch.equal(off([(ego, road)]), plain([(ego, road)]))


def test_the_crop_is_stored_with_the_settings_and_omitted_when_unset(tmp_path):
    settings = ModelSettings(image_size=(96, 256), roadside_crop=[0, 0, 1, 0.6])
    assert settings.roadside_crop == (0.0, 0.0, 1.0, 0.6)
    settings.save(tmp_path)
    assert ModelSettings.load(tmp_path).roadside_crop == (0.0, 0.0, 1.0, 0.6)
    assert json.loads((tmp_path / "v2x_vlm.json").read_text())["roadside_crop"] == [0.0, 0.0, 1.0, 0.6]
    assert "roadside_crop" not in json.loads(ModelSettings(image_size=(96, 256)).to_json())


@pytest.mark.parametrize("crop, message", [
    ([0, 0, 1], "roadside_crop must be four numbers [x0, y0, x1, y1], got [0, 0, 1]"),
    ("abcd", "roadside_crop must be four numbers [x0, y0, x1, y1], got 'abcd'"),
    ([True, 0, 1, 1], "roadside_crop must be four numbers [x0, y0, x1, y1], got [True, 0, 1, 1]"),
    ([0.5, 0, 0.4, 1], "roadside_crop must be fractions of the image with 0 <= x0 < x1 <= 1 and "
                       "0 <= y0 < y1 <= 1, got [0.5, 0.0, 0.4, 1.0]"),
    ([0, 0, 1, 1.2], "roadside_crop must be fractions of the image with 0 <= x0 < x1 <= 1 and "
                     "0 <= y0 < y1 <= 1, got [0.0, 0.0, 1.0, 1.2]"),
    ([0, float("nan"), 1, 1], "roadside_crop must be fractions of the image with 0 <= x0 < x1 <= 1 and "
                              "0 <= y0 < y1 <= 1, got [0.0, nan, 1.0, 1.0]"),
])
def test_bad_crops_are_refused_naming_the_setting(crop, message):
    with pytest.raises(ValueError) as err:
        ModelSettings(image_size=(96, 256), roadside_crop=crop)
    assert str(err.value) == message
