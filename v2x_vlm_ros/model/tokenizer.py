"""Tokenizers for small Florence-2 models, built with the ``tokenizers`` library.

The real Florence-2 checkpoints ship their own BART tokenizer (51k tokens). A model trained
from scratch on the synthetic world does not need 51k tokens: a byte-level BPE trained on
the prompts and descriptions it will read keeps the embedding matrix small. Whatever the
vocabulary, the tokenizer carries what the model code relies on:

- BART's specials at BART's ids: ``<s>`` 0, ``<pad>`` 1, ``</s>`` 2, ``<unk>`` 3;
- Florence-2's task tokens (``<OD>``, ``<MORE_DETAILED_CAPTION>``, ...), its markup tokens
  and the location tokens ``<loc_0>`` .. ``<loc_999>`` (the trajectory codec's alphabet);
- ``<image>``, the placeholder the model replaces with image features (``image_token``).

Digits are split one per token, so that numbers in the prompt (speed, heading) are
composed the same way whatever their value.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

BART_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")
TASK_TOKENS = (
    "<OCR>", "<OCR_WITH_REGION>", "<CAPTION>", "<DETAILED_CAPTION>", "<MORE_DETAILED_CAPTION>",
    "<OD>", "<DENSE_REGION_CAPTION>", "<CAPTION_TO_PHRASE_GROUNDING>",
    "<REFERRING_EXPRESSION_SEGMENTATION>", "<REGION_TO_SEGMENTATION>",
    "<OPEN_VOCABULARY_DETECTION>", "<REGION_TO_CATEGORY>", "<REGION_TO_DESCRIPTION>",
    "<REGION_TO_OCR>", "<REGION_PROPOSAL>",
)
# Florence-2's markup tokens (its processor adds these to the BART vocabulary).
MARKUP_TOKENS = (
    "<od>", "</od>", "<ocr>", "</ocr>", "<cap>", "</cap>", "<ncap>", "</ncap>", "<dcap>", "</dcap>",
    "<grounding>", "</grounding>", "<seg>", "</seg>", "<sep>", "<region_cap>", "</region_cap>",
    "<region_to_desciption>", "</region_to_desciption>", "<proposal>", "</proposal>", "<poly>",
    "</poly>", "<and>",
)
NUM_LOC_TOKENS = 1000
IMAGE_TOKEN = "<image>"
MASK_TOKEN = "<mask>"


def loc_token(i: int) -> str:
    return f"<loc_{i}>"


def build_tokenizer(corpus: Iterable[str], vocab_size: int = 2000) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE of ``vocab_size`` merges-plus-alphabet on ``corpus`` and add
    the Florence-2 special tokens. Deterministic for a given corpus."""
    if vocab_size < 300:
        raise ValueError(f"vocab_size must be >= 300 (256 bytes + specials), got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(BART_SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(list(corpus), trainer)
    extra = [*TASK_TOKENS, *MARKUP_TOKENS, *(loc_token(i) for i in range(NUM_LOC_TOKENS)),
             IMAGE_TOKEN, MASK_TOKEN]
    tok.add_special_tokens(extra)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        unk_token="<unk>", mask_token=MASK_TOKEN, extra_special_tokens={"image_token": IMAGE_TOKEN},
    )
    check_tokenizer(fast)
    return fast


def loc_token_ids(tokenizer, count: int = NUM_LOC_TOKENS) -> list[int]:
    """Ids of ``<loc_0>`` .. ``<loc_{count-1}>``, looked up (never assumed)."""
    ids = tokenizer.convert_tokens_to_ids([loc_token(i) for i in range(count)])
    unk = tokenizer.unk_token_id
    missing = [i for i, t in enumerate(ids) if t is None or t == unk]
    if missing:
        raise ValueError(f"tokenizer lacks location tokens, e.g. {loc_token(missing[0])}")
    return list(ids)


def check_tokenizer(tokenizer) -> None:
    """Fail early, naming what is missing, if a tokenizer cannot drive the model code."""
    for name, want in (("bos_token_id", 0), ("pad_token_id", 1), ("eos_token_id", 2)):
        got = getattr(tokenizer, name)
        if got != want:
            raise ValueError(f"tokenizer {name} is {got}, BART expects {want}")
    image_id = getattr(tokenizer, "image_token_id", None)
    if image_id is None or tokenizer.convert_ids_to_tokens(image_id) != IMAGE_TOKEN:
        raise ValueError(f"tokenizer has no {IMAGE_TOKEN} image token")
    loc_token_ids(tokenizer)
