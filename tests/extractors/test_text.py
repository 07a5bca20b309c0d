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


def _one_pass_vectors(words: list[str]) -> np.ndarray:
    """Word vectors from one encoder pass over the whole text (what fits the model's maximum length)."""
    import torch

    from cmamba.extractors.base import shared_model
    from cmamba.extractors.text import _load

    directory = TransformerText().directory
    tokenizer, model = shared_model(("text-model", directory), lambda: _load(directory))
    enc = tokenizer(words, is_split_into_words=True, return_tensors="pt")
    with torch.no_grad():
        states = model(**enc).last_hidden_state[0].numpy()
    word_ids = np.array([-1 if w is None else w for w in enc.word_ids(0)])
    return np.stack([states[word_ids == w].mean(0) for w in range(len(words))])


def test_a_text_within_the_model_length_is_one_window():
    words = split_words(" ".join(["and you always want to see it in the superlative degree"] * 3))
    seq = TransformerText().extract(Words(words, times(len(words))))
    assert seq.info["windows"] == 1
    np.testing.assert_allclose(seq.values, _one_pass_vectors(words), atol=1e-5)


def test_a_long_transcript_is_encoded_in_overlapping_windows_not_truncated():
    """3,000 words exceed MiniLM's 512 tokens: every word still gets a vector, from a window where it has context."""
    sentence = "and you always want to see it in the superlative degree".split()
    words = (sentence * 273)[:3000]
    seq = validate_sequence(TransformerText().extract(Words(words, times(len(words)))), "text-transformer", 384)
    assert seq.mask.all() and seq.info["words_without_tokens"] == 0 and seq.info["windows"] > 6
    assert (np.abs(seq.values).sum(1) > 0).all()  # no zero vectors
    assert seq.info["text_bert"].shape[1] >= 3000 + 2  # every token kept (none truncated), with [CLS] and [SEP]
    # windowed vectors of a short text (32-token windows) stay close to the one-pass vectors
    short = words[:60]
    windowed = TransformerText(TextConfig(max_tokens=32)).extract(Words(short, times(len(short))))
    assert windowed.info["windows"] > 2
    whole = _one_pass_vectors(short)
    cosine = (windowed.values * whole).sum(1) / np.linalg.norm(windowed.values, axis=1) / np.linalg.norm(whole, axis=1)
    assert cosine.mean() > 0.9 and cosine.min() > 0.7, (cosine.mean(), cosine.min())
