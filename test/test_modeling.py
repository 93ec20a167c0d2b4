"""Building, saving and loading Florence-2 planners (native transformers, safetensors only)."""

import dataclasses
import json

import pytest
import torch
from transformers import Florence2ForConditionalGeneration

from v2x_vlm_ros.model.configuration import PRESETS, ModelSettings, florence2_config
from v2x_vlm_ros.model.modeling import (LoadedModel, ModelLoadError, build_model, keep_text_layers,
                                        load_model, save_model)


def _inputs(loaded, batch=2):
    s = loaded.settings
    torch.manual_seed(1)
    px = torch.randn(batch, 3, *s.image_size)
    n = s.num_image_tokens
    ids = torch.cat([torch.full((batch, n), loaded.tokenizer.image_token_id),
                     torch.randint(4, 300, (batch, 12))], dim=1)
    return {"pixel_values": px, "input_ids": ids, "decoder_input_ids": torch.tensor([[2, 0, 5]] * batch)}


def test_save_load_round_trip_gives_the_same_logits(tiny_model_dir, tmp_path):
    a = load_model(tiny_model_dir)
    with torch.no_grad():
        before = a.model(**_inputs(a)).logits
    save_model(tmp_path / "copy", a.model, a.tokenizer, a.settings)
    b = load_model(tmp_path / "copy")
    with torch.no_grad():
        after = b.model(**_inputs(b)).logits
    assert torch.equal(before, after)
    assert b.settings == a.settings
    files = {p.name for p in (tmp_path / "copy").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "v2x_vlm.json",
            "processor_config.json"} <= files
    assert not any(f.endswith((".bin", ".pt", ".pth")) for f in files)


def test_float16_export_halves_the_file_keeps_ties_and_loads_as_float32(tiny_model_dir, tmp_path):
    a = load_model(tiny_model_dir)
    save_model(tmp_path / "half", a.model, a.tokenizer, a.settings, dtype=torch.float16)
    full = (tiny_model_dir / "model.safetensors").stat().st_size
    half = (tmp_path / "half" / "model.safetensors").stat().st_size
    assert half < 0.55 * full
    b = load_model(tmp_path / "half")
    w_a = a.model.model.language_model.shared.weight
    w_b = b.model.model.language_model.shared.weight
    assert w_b.dtype == torch.float32 and torch.equal(w_b, w_a.half().float())
    assert b.model.lm_head.weight.data_ptr() == w_b.data_ptr()  # still tied
    assert next(a.model.parameters()).dtype == torch.float32  # the saved model is untouched


def test_pickle_checkpoints_are_refused(tmp_path, tiny_model_dir):
    (tmp_path / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04not loaded")
    with pytest.raises(ModelLoadError, match="pickle checkpoints are not loaded"):
        load_model(tmp_path)


def test_bad_sources_are_named(tmp_path, monkeypatch):
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(tmp_path)
    with pytest.raises(ModelLoadError, match="not a hub id"):
        load_model(tmp_path / "no" / "such" / "dir")
    import huggingface_hub.constants

    # a hub id without network or cache (the constant is read at import, not the env var)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelLoadError, match="florence-community/Florence-2-base"):
        load_model("florence-community/Florence-2-base")


def test_settings_round_trip_defaults_and_validation(tmp_path):
    assert ModelSettings.load(tmp_path) == ModelSettings()  # a plain Florence-2 directory
    s = ModelSettings(image_size=(96, 256), fusion=False)
    s.save(tmp_path)
    assert ModelSettings.load(tmp_path) == s and ModelSettings.load(tmp_path).codec == s.codec
    data = json.loads((tmp_path / "v2x_vlm.json").read_text())
    data["fusoin"] = True
    (tmp_path / "v2x_vlm.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['fusoin'\]"):
        ModelSettings.load(tmp_path)
    with pytest.raises(ValueError, match="multiples of 32"):
        ModelSettings(image_size=(100, 256))


def test_image_token_count_matches_the_vision_tower(tiny_tokenizer):
    model = build_model("tiny", tiny_tokenizer, seed=0).eval()
    settings = ModelSettings(image_size=PRESETS["tiny"].image_size)
    with torch.no_grad():
        feats = model.model.get_image_features(torch.zeros(1, 3, *settings.image_size)).pooler_output
    assert feats.shape[1] == settings.num_image_tokens == (64 // 32) * (128 // 32) + 1


@pytest.mark.parametrize("preset,total,vision,language", [("base", 231.4, 90.4, 140.2),
                                                          ("large", 770.2, 360.6, 407.4)])
def test_presets_have_the_florence2_sizes(preset, total, vision, language):
    config = florence2_config(preset, vocab_size=51329, image_token_id=51289)
    with torch.device("meta"):  # no memory for the weights
        model = Florence2ForConditionalGeneration(config)
    count = lambda m: sum(p.numel() for p in m.parameters()) / 1e6  # noqa: E731
    assert count(model) == pytest.approx(total, abs=0.1)
    assert count(model.model.vision_tower) == pytest.approx(vision, abs=0.1)
    assert count(model.model.language_model) == pytest.approx(language, abs=0.1)


def test_generation_config_is_explicit_greedy(tiny_model_dir):
    g = load_model(tiny_model_dir).model.generation_config
    assert g.num_beams == 1 and not g.do_sample and g.no_repeat_ngram_size in (0, None)
    assert g.forced_eos_token_id is None and g.decoder_start_token_id == 2


def _three_layer(tiny_tokenizer) -> LoadedModel:
    preset = dataclasses.replace(PRESETS["tiny"], layers=3)
    model = build_model(preset, tiny_tokenizer, seed=3).eval()
    return LoadedModel(model, tiny_tokenizer, ModelSettings(image_size=preset.image_size), "three")


def test_a_student_keeps_the_teachers_chosen_layers(tiny_tokenizer, tmp_path):
    teacher = _three_layer(tiny_tokenizer)
    student = keep_text_layers(teacher, [0, 2])
    text = student.model.config.text_config
    assert (text.encoder_layers, text.decoder_layers) == (2, 2)
    decoder_layers = student.model.model.language_model.decoder.layers
    assert [layer.self_attn.layer_idx for layer in decoder_layers] == [0, 1]
    # the reference: the teacher itself with its middle layers cut out of the module lists
    reference = _three_layer(tiny_tokenizer).model
    for stack in (reference.model.language_model.encoder, reference.model.language_model.decoder):
        stack.layers = torch.nn.ModuleList([stack.layers[0], stack.layers[2]])
    inputs = _inputs(student)
    with torch.no_grad():
        got = student.model(**inputs, use_cache=False).logits
        want = reference(**inputs, use_cache=False).logits
        full = teacher.model(**inputs, use_cache=False).logits
    assert torch.equal(got, want) and not torch.allclose(got, full)
    # generation with the key/value cache (indexed by layer_idx) writes what it writes without
    gen = dict(pixel_values=inputs["pixel_values"], input_ids=inputs["input_ids"], max_new_tokens=6,
               min_new_tokens=6)
    with torch.no_grad():
        cached = student.model.generate(**gen, use_cache=True)
        uncached = student.model.generate(**gen, use_cache=False)
    assert torch.equal(cached, uncached)
    # it saves and loads as a plain 2-layer Florence-2
    save_model(tmp_path / "student", student.model, student.tokenizer, student.settings)
    again = load_model(tmp_path / "student")
    assert again.model.config.text_config.decoder_layers == 2
    with torch.no_grad():
        assert torch.equal(again.model(**inputs, use_cache=False).logits, got)


@pytest.mark.parametrize("keep", [[], [2, 0], [0, 0], [-1, 1], [0, 3]])
def test_layers_to_keep_must_exist_in_order(tiny_tokenizer, keep):
    with pytest.raises(ValueError) as err:
        keep_text_layers(_three_layer(tiny_tokenizer), keep)
    assert str(err.value) == (f"layers to keep {keep}: give increasing layer numbers in [0, 2] "
                              "(the model has 3 encoder and 3 decoder layers)")


def test_token_choice_is_stored_only_when_not_greedy_and_validated(tmp_path):
    greedy = ModelSettings()
    assert greedy.token_choice == "greedy" and "token_choice" not in json.loads(greedy.to_json())
    mean = ModelSettings(token_choice="mean")
    mean.save(tmp_path)
    assert json.loads((tmp_path / "v2x_vlm.json").read_text())["token_choice"] == "mean"
    assert ModelSettings.load(tmp_path).token_choice == "mean"
    with pytest.raises(ValueError,
                       match=r"token_choice must be one of \('greedy', 'mean', 'median'\), got 'average'"):
        ModelSettings(token_choice="average")
