"""Tiny text towers for tests and laptops: a WordPiece tokenizer fitted to a few reports and a small BERT.

``tiny_text_tower(reports)`` gives a :class:`~greenfm.models.text.TextTower` with
the same contract as a real one (Hugging Face ``BertModel`` + fast tokenizer,
``save`` / ``create_text_tower`` round trip) in well under a second, so recipes
can be tested end to end on CPU without downloading a language model.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch

from greenfm.errors import BadInputError, ConfigError
from greenfm.models.text import TextTower

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
TINY_SOURCE = "greenfm-tiny-bert"


def train_wordpiece_tokenizer(texts: Iterable[str], vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """A lower-casing BERT-style WordPiece tokenizer whose vocabulary is fitted to ``texts``.

    The vocabulary is the special tokens, every character seen (as a word start
    and as a ``##`` continuation, so no text maps to ``[UNK]``), then the most
    frequent whole words (ties broken alphabetically) up to ``vocab_size``.
    We count words ourselves rather than use the ``tokenizers`` trainer because
    the trainer breaks ties between equally frequent merges in hash-map order,
    so its vocabulary changes from run to run; this one is a function of ``texts``.
    Normalisation, pre-tokenisation, WordPiece matching and the ``[CLS] ... [SEP]``
    template are the ``tokenizers`` library's own BERT components.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    normalizer = normalizers.BertNormalizer(lowercase=True, clean_text=True, handle_chinese_chars=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    words: Counter[str] = Counter()
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise BadInputError(f"text {i} is a {type(text).__name__}, not a str")
        words.update(w for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    if not words:
        raise BadInputError("no words to fit a tokenizer to: pass at least one non-empty text")

    chars = sorted({c for w in words for c in w})
    vocab = list(SPECIAL_TOKENS) + chars + [f"##{c}" for c in chars]
    known = set(vocab)
    for word, _ in sorted(words.items(), key=lambda kv: (-kv[1], kv[0])):
        if len(vocab) >= vocab_size:
            break
        if word not in known:
            vocab.append(word)
            known.add(word)

    ids = {token: i for i, token in enumerate(vocab)}
    backend = Tokenizer(models.WordPiece(ids, unk_token="[UNK]"))
    backend.normalizer = normalizer
    backend.pre_tokenizer = pre_tokenizer
    backend.post_processor = processors.BertProcessing(("[SEP]", ids["[SEP]"]), ("[CLS]", ids["[CLS]"]))
    backend.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
        padding_side="right",
    )


def tiny_text_tower(
    texts: Iterable[str],
    *,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 2,
    max_length: int = 64,
    pool: str = "cls",
    vocab_size: int = 512,
    seed: int = 0,
) -> TextTower:
    """A randomly initialised small ``BertModel`` with a WordPiece tokenizer fitted to ``texts``.

    Deterministic given ``texts`` and ``seed``; the caller's torch RNG is left untouched.
    """
    from transformers import BertConfig, BertModel

    if hidden % heads:
        raise ConfigError(f"tiny text tower: hidden ({hidden}) must be a multiple of heads ({heads})")
    if max_length < 3:
        raise ConfigError(f"tiny text tower: max_length must be at least 3 ([CLS], one token, [SEP]), got {max_length}")
    tokenizer = train_wordpiece_tokenizer(texts, vocab_size=vocab_size)
    tokenizer.model_max_length = max_length
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        max_position_embeddings=max_length,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertModel(config)
    return TextTower(
        model,
        tokenizer,
        pool=pool,
        max_length=max_length,
        source=TINY_SOURCE,
        weights_source={"kind": "random", "architecture": TINY_SOURCE, "seed": seed},
    )
