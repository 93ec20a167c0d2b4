"""Tokenizers for small Florence-2 models: BART ids, Florence-2 tokens, digits, round trip."""

import pytest
from transformers import AutoTokenizer

from v2x_vlm_ros.model.tokenizer import (IMAGE_TOKEN, TASK_TOKENS, build_tokenizer, check_tokenizer,
                                         loc_token_ids)


def test_bart_specials_florence_tokens_and_locations(tiny_tokenizer):
    tok = tiny_tokenizer
    assert (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    locs = loc_token_ids(tok)
    assert len(locs) == 1000 and len(set(locs)) == 1000
    assert tok.convert_ids_to_tokens(locs[999]) == "<loc_999>"
    assert tok.convert_ids_to_tokens(tok.image_token_id) == IMAGE_TOKEN
    for task in TASK_TOKENS:  # each a single token
        assert len(tok(task, add_special_tokens=False)["input_ids"]) == 1


def test_digits_are_single_tokens_and_text_round_trips(tiny_tokenizer):
    ids = tiny_tokenizer("speed 12.45 m/s", add_special_tokens=False)["input_ids"]
    pieces = tiny_tokenizer.convert_ids_to_tokens(ids)
    assert [p for p in pieces if any(c.isdigit() for c in p)] == ["1", "2", "4", "5"]
    assert tiny_tokenizer.decode(ids) == "speed 12.45 m/s"
    with_specials = tiny_tokenizer("go")["input_ids"]
    assert with_specials[0] == 0 and with_specials[-1] == 2


def test_save_and_reload_keeps_every_id(tmp_path, tiny_tokenizer):
    tiny_tokenizer.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    check_tokenizer(again)
    assert len(again) == len(tiny_tokenizer)
    assert loc_token_ids(again) == loc_token_ids(tiny_tokenizer)
    assert again.image_token_id == tiny_tokenizer.image_token_id


def test_building_is_deterministic_and_validated():
    a = build_tokenizer(["one two three 123"] * 3, vocab_size=300)
    b = build_tokenizer(["one two three 123"] * 3, vocab_size=300)
    assert a.get_vocab() == b.get_vocab()
    with pytest.raises(ValueError, match="vocab_size must be >= 300"):
        build_tokenizer(["x"], vocab_size=100)


def test_check_tokenizer_names_what_is_missing():
    tok = build_tokenizer(["abc"] * 2, vocab_size=300)
    tok.pad_token = "</s>"
    with pytest.raises(ValueError, match="pad_token_id is 2, BART expects 1"):
        check_tokenizer(tok)
