"""The offline text extractor: per-word pooling of the packaged MiniLM, text_bert layout, Chinese, model checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cmamba.extractors.base import Words, get_extractor, validate_sequence
from cmamba.extractors.text import TextConfig, TransformerText, model_directory
from cmamba.extractors.transcripts import split_words


def times(n: int) -> np.ndarray:
    return np.stack([np.arange(n) * 0.4, np.arange(n) * 0.4 + 0.3], 1)


def test_word_vectors_are_the_mean_of_their_sub_tokens():
    extractor = get_extractor("text-transformer")
    words = "you always want the superlative degree".split()
    seq = validate_sequence(extractor.extract(Words(words, times(len(words)))), extractor.name, 384)
    assert seq.values.shape == (6, 384) and seq.mask.all() and extractor.feature_dim == 384
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(extractor.directory))
    model = AutoModel.from_pretrained(str(extractor.directory)).eval()
    enc = tokenizer(words, is_split_into_words=True, return_tensors="pt")
    with torch.no_grad():
        states = model(**enc).last_hidden_state[0].numpy()
    pieces = [i for i, w in enumerate(enc.word_ids(0)) if w == 4]  # "superlative" has several sub-tokens
    assert len(pieces) > 1
    np.testing.assert_allclose(seq.values[4], states[pieces].mean(0), rtol=1e-5, atol=1e-5)
    text_bert = seq.info["text_bert"]
    assert text_bert.shape == (3, len(states)) and text_bert.dtype == np.int64
    assert text_bert[0, 0] == tokenizer.cls_token_id and text_bert[1].all()
    np.testing.assert_array_equal(seq.timestamps, times(6)[:, 0])


def test_chinese_characters_are_words():
    assert split_words("今天 天气很好 ok") == ["今", "天", "天", "气", "很", "好", "ok"]
    words = split_words("我很开心")
    seq = TransformerText().extract(Words(words, times(len(words))))
    assert seq.values.shape == (4, 384) and seq.info["words_without_tokens"] == 0


def test_models_come_only_from_local_verified_files(tmp_path):
    assert (model_directory(TextConfig()) / "model.safetensors").is_file()
    with pytest.raises(ValueError, match=r"is not a local model directory .* cmamba never downloads models"):
        model_directory(TextConfig(model="bert-base-uncased"))
    packaged = model_directory(TextConfig())
    with pytest.raises(ValueError, match=r"has sha256 53aa5117.*expected 0000"):
        model_directory(TextConfig(model=str(packaged), sha256="0" * 64))


def test_bad_text_input():
    with pytest.raises(ValueError, match="need one \\(start, end\\) per word, got 2 words, 1 times"):
        TransformerText().extract(Words(["a", "b"], np.zeros((1, 2))))
    with pytest.raises(ValueError, match="got 0 words"):
        TransformerText().extract(Words([], np.zeros((0, 2))))
