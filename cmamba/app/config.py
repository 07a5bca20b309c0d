"""One user config file for the whole pipeline: extraction, model and training settings, in TOML or YAML.

    cmamba config dump-default > cmamba.toml      # every key at its default, commented

Sections (each is a dataclass; its field annotations are the file's types):

- ``video`` / ``audio`` / ``text``: ``extractor`` (which registered extractor runs, e.g. ``audio.extractor =
  "opensmile-egemaps"``) and that extractor's config keys (FaceConfig, AudioConfig, OpenSmileConfig, TextConfig)
- ``asr``: offline speech recognition for clips without a timed transcript (AsrConfig)
- ``align``: ``mode`` (native | word | clock) and ``clock_rate`` (Hz)
- ``segment``: how long recordings are cut into utterances (SegmentConfig; ``mode`` auto | transcript | asr |
  vad | fixed | none)
- ``extract``: ``modalities``, ``use_asr`` and the Dask run's ``workers``, ``clips_per_shard``, ``scheduler``
- ``model``: FusionConfig without ``modalities`` (the input dims come from the feature cache)
- ``train``: TrainConfig plus ``seeds`` (one training run per seed)

Precedence: built-in defaults < the file < ``overrides`` (dotted keys such as ``{"train.epochs": 5}``, what CLI
flags map to). Every problem raises ``ConfigError`` naming the file, the key (``train.epochs``) and what is allowed.
TOML has no null: leave a key out to keep its default; a key whose default is set (``asr.language``,
``train.patience``) can be set to null only from YAML or ``overrides``.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from cmamba.constants import ALIGN_MODES, DATASETS, MODALITIES, SEGMENT_MODES, TASKS, VIEW_DTYPES
from cmamba.errors import ConfigError
from cmamba.extractors import EXTRACTORS, available_extractors, extractor_for
from cmamba.extractors.audio import PRESETS
from cmamba.extractors.transcripts.asr import AsrConfig
from cmamba.fusion.config import COUPLINGS, DEFAULT_SEEDS, FUSIONS, POOLINGS, FusionConfig, TrainConfig
from cmamba.pipeline.config import EXTRACTOR_KEY, ExtractionConfig, SegmentConfig, extractor_section

FORMATS = (".toml", ".yaml", ".yml")
_EXTRACTION = ExtractionConfig()  # the pipeline's defaults, so align/extract never restate them


@dataclass(frozen=True)
class AlignOptions:
    """The time axis the modalities share (``cmamba.extractors.align``)."""

    mode: str = _EXTRACTION.align
    clock_rate: float = _EXTRACTION.clock_rate  # Hz, the grid of mode="clock"

    def __post_init__(self):
        ExtractionConfig(align=self.mode, clock_rate=self.clock_rate)  # the pipeline's own checks


@dataclass(frozen=True)
class ExtractOptions:
    """What to extract, and how the Dask run is laid out (``cmamba.pipeline.run.run_extraction``)."""

    modalities: tuple[str, ...] = _EXTRACTION.modalities
    use_asr: bool = _EXTRACTION.use_asr
    workers: int | None = None  # local worker processes; None: one per core; 0: one thread in this process
    clips_per_shard: int = 1000  # run_extraction's default
    scheduler: str | None = None  # address of an existing Dask scheduler instead of a local cluster

    def __post_init__(self):
        ExtractionConfig(modalities=self.modalities, use_asr=self.use_asr)
        if self.workers is not None and self.workers < 0:
            raise ValueError(f"workers must be >= 0 (0: in-process) or unset (one per core), got {self.workers}")
        if self.clips_per_shard < 1:
            raise ValueError(f"clips_per_shard must be >= 1, got {self.clips_per_shard}")


@dataclass(frozen=True)
class TrainOptions(TrainConfig):
    """TrainConfig plus the seeds of a multi-seed run (each run replaces ``seed`` with one of them)."""

    seeds: tuple[int, ...] = DEFAULT_SEEDS

    def __post_init__(self):
        super().__post_init__()
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be one or more distinct integers, got {list(self.seeds)}")


def _check_model(self) -> None:
    # FusionConfig validates its knobs only together with the modality dims, which come from the data; a
    # placeholder modality makes a bad [model] section fail when the file is loaded, not after hours of extraction.
    FusionConfig(modalities={"placeholder": 1}, **dataclasses.asdict(self))


def _fields_without(cls: type, name: str) -> list[tuple[str, Any, dataclasses.Field]]:
    hints = typing.get_type_hints(cls)
    return [
        (f.name, hints[f.name], field(default=f.default, default_factory=f.default_factory))
        for f in dataclasses.fields(cls)
        if f.name != name
    ]


# Derived rather than written out, so the [model] section follows FusionConfig's fields and defaults as they change.
ModelOptions = dataclasses.make_dataclass(
    "ModelOptions",
    _fields_without(FusionConfig, "modalities"),
    frozen=True,
    namespace={"__post_init__": _check_model, "__module__": __name__, "__doc__": "FusionConfig minus modalities."},
)

# Values a key may take, beyond its type (for a list: every element).
CHOICES: dict[str, tuple[str, ...]] = {
    "audio.preset": PRESETS,
    **{f"{m}.extractor": tuple(available_extractors(m)) for m in MODALITIES},
    "align.mode": ALIGN_MODES,
    "segment.mode": SEGMENT_MODES,
    "extract.modalities": MODALITIES,
    "model.fusion": FUSIONS,
    "model.coupling": COUPLINGS,
    "model.task": TASKS,
    "model.pooling": POOLINGS,
    "train.dataset": DATASETS,
    "train.view_dtype": VIEW_DTYPES,
}

SECTION_HELP = {
    "video": "face features: MediaPipe FaceLandmarker blendshapes + head pose per sampled frame",
    "audio": "voice features: librosa-audio, preset prosody (47 per 10 ms hop) or sims33 (the CH-SIMS recipe); or "
    "opensmile-egemaps (eGeMAPSv02's 25 descriptors per 10 ms; pip install 'cmamba[opensmile]', research licence)",
    "text": "word features: a local Hugging Face encoder (default: the packaged, sha256-pinned MiniLM)",
    "asr": "offline speech recognition for clips without a transcript (needs the [asr] extra)",
    "align": "the time axis the modalities share: native rates, one row per word, or a clock_rate Hz grid",
    "segment": "long recordings: cut into utterance clips (auto: files longer than auto_seconds; by timed transcript, "
    "ASR, voice activity or fixed windows)",
    "extract": "which modalities to extract, and the Dask run: workers, clips per shard, an existing scheduler",
    "model": "the fusion model's architecture (its input dims come from the feature cache)",
    "train": "the training recipe; `cmamba train` runs once per entry of seeds, each in place of seed",
}


@dataclass(frozen=True)
class CmambaConfig:
    """A resolved config: one dataclass per section. ``to_dict()`` is what every output should record."""

    video: Any = _EXTRACTION.video  # the modality sections hold their extractor's config (frozen dataclasses)
    audio: Any = _EXTRACTION.audio
    text: Any = _EXTRACTION.text
    asr: AsrConfig = field(default_factory=AsrConfig)
    align: AlignOptions = field(default_factory=AlignOptions)
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    extract: ExtractOptions = field(default_factory=ExtractOptions)
    model: ModelOptions = field(default_factory=ModelOptions)
    train: TrainOptions = field(default_factory=TrainOptions)

    def extraction(self) -> ExtractionConfig:
        """The pipeline's ExtractionConfig (what decides each clip's features)."""
        return ExtractionConfig(
            video=self.video,
            audio=self.audio,
            text=self.text,
            asr=self.asr,
            use_asr=self.extract.use_asr,
            align=self.align.mode,
            clock_rate=self.align.clock_rate,
            modalities=self.extract.modalities,
        )

    def model_overrides(self) -> dict[str, Any]:
        """FusionConfig's keyword arguments but ``modalities``: ``FusionConfig(**overrides, modalities=dims)``."""
        return dataclasses.asdict(self.model)

    def train_config(self) -> TrainConfig:
        """The TrainConfig of one run (``seeds`` is separate: ``train_seeds(..., seeds=config.seeds)``)."""
        return TrainConfig(**{f.name: getattr(self.train, f.name) for f in dataclasses.fields(TrainConfig)})

    @property
    def seeds(self) -> tuple[int, ...]:
        return self.train.seeds

    @property
    def extract_options(self) -> dict[str, Any]:
        """``workers``, ``clips_per_shard`` and ``scheduler``: keyword arguments of ``cmamba.app.extract.extract``."""
        names = ("workers", "clips_per_shard", "scheduler")
        return {name: getattr(self.extract, name) for name in names}

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """The resolved config as plain JSON types (tuples become lists), one table per section."""
        values = dataclasses.asdict(self)
        for m in MODALITIES:
            values[m] = extractor_section(getattr(self, m))
        # A JSON round trip: anything that could not be saved fails here, not when an output is written.
        return json.loads(json.dumps(values))


# ----------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------


def load_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> CmambaConfig:
    """The config of defaults < the file at ``path`` (.toml, .yaml or .yml) < ``overrides``.

    ``overrides`` maps dotted keys to values, e.g. ``{"train.epochs": 5, "align.mode": "word"}``; a None value
    sets the key to null (drop unset CLI flags before passing them). Neither input is modified.
    Raises ConfigError naming the file (or "overrides"), the key and what is allowed.
    """
    raw = []
    if path is not None:
        raw.append((str(path), _read(Path(path))))
    if overrides:
        raw.append(("overrides", _nested(overrides)))
    chosen = _chosen_extractors(raw)
    layers = [(source, _validated(data, source, chosen)) for source, data in raw]
    sections = {}
    for name in _section_types():
        cls = _section_type(name, chosen)
        values = {key: value for _, layer in layers for key, value in layer.get(name, {}).items()}
        values.pop(EXTRACTOR_KEY, None)
        try:
            sections[name] = cls(**values)
        except (ValueError, TypeError) as exc:  # the dataclass's own checks, e.g. "fps must be positive"
            sources = " + ".join(source for source, layer in layers if name in layer) or "defaults"
            raise ConfigError(f"{sources}: [{name}]: {exc}") from exc
    return CmambaConfig(**sections)


@cache
def _section_types() -> dict[str, type]:
    return typing.get_type_hints(CmambaConfig)


def _chosen_extractors(layers: list[tuple[str, Any]]) -> dict[str, str]:
    """The extractor of each modality section: the default's, unless a layer names another (the last wins)."""
    chosen = {m: extractor_for(getattr(CmambaConfig(), m)).name for m in MODALITIES}
    for source, data in layers:
        for m in MODALITIES:
            section = data.get(m) if isinstance(data, Mapping) else None
            if isinstance(section, Mapping) and EXTRACTOR_KEY in section:
                chosen[m] = _checked_value(f"{m}.{EXTRACTOR_KEY}", section[EXTRACTOR_KEY], str, source)
    return chosen


def _section_type(name: str, chosen: Mapping[str, str]) -> type:
    """The dataclass of section ``name``: for a modality section, the config type of its chosen extractor."""
    return EXTRACTORS[chosen[name]].config_type if name in chosen else _section_types()[name]


def _section_fields(name: str, chosen: Mapping[str, str]) -> dict[str, Any]:
    fields = _field_types(_section_type(name, chosen))
    return {EXTRACTOR_KEY: str, **fields} if name in chosen else fields


@cache
def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _read(path: Path) -> Any:
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ConfigError(f"{path}: unknown config format {suffix or '(no suffix)'!r}; use one of {', '.join(FORMATS)}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc}") from exc
    if suffix == ".toml":
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    yaml = _yaml()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    return {} if data is None else data  # an empty file: all defaults


def _yaml() -> types.ModuleType:
    try:
        import yaml  # PyYAML arrives with dask; imported only for YAML files
    except ImportError as exc:
        raise ConfigError("YAML configs need PyYAML: pip install pyyaml (or use a .toml file)") from exc
    return yaml


def _nested(overrides: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """{"train.epochs": 5} → {"train": {"epochs": 5}}."""
    nested: dict[str, dict[str, Any]] = {}
    for dotted, value in overrides.items():
        parts = dotted.split(".") if isinstance(dotted, str) else []
        if len(parts) != 2 or not all(parts):
            raise ConfigError(f"overrides: {dotted!r} is not a dotted key section.key, e.g. 'train.epochs'")
        nested.setdefault(parts[0], {})[parts[1]] = value
    return nested


def _did_you_mean(word: Any, allowed: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(str(word), list(allowed), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _validated(data: Any, source: str, chosen: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Check sections, keys, types and choices of one layer; returns new dicts of coerced values."""
    sections = _section_types()
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping of sections ({', '.join(sections)}), got {_got(data)}")
    checked = {}
    for name, values in data.items():
        if name not in sections:
            raise ConfigError(
                f"{source}: unknown section [{name}]{_did_you_mean(name, sections)}; "
                f"allowed sections: {', '.join(sections)}"
            )
        if not isinstance(values, Mapping):
            raise ConfigError(f"{source}: [{name}] must be a table of keys, got {_got(values)}")
        fields = _section_fields(name, chosen)
        checked[name] = {}
        for key, value in values.items():
            if key not in fields:
                which = f" for the extractor {chosen[name]!r}" if name in chosen else ""
                raise ConfigError(
                    f"{source}: {name}.{key}: unknown key in [{name}]{which}{_did_you_mean(key, fields)}; "
                    f"allowed keys: {', '.join(fields)}"
                )
            checked[name][key] = _checked_value(f"{name}.{key}", value, fields[key], source)
    return checked


def _checked_value(key: str, value: Any, hint: Any, source: str) -> Any:
    try:
        value = _coerce(value, hint)
    except _MismatchError:
        expected = f"expected {_describe(hint)}, got {_got(value)}{_quoted_number_hint(value, source)}"
        raise ConfigError(f"{source}: {key}: {expected}") from None
    allowed = CHOICES.get(key)
    if allowed is not None:
        items = value if isinstance(value, tuple) else (value,)
        bad = [item for item in items if item not in allowed]
        if bad:
            raise ConfigError(f"{source}: {key}: {bad[0]!r} is not allowed; choose from {', '.join(allowed)}")
        if len(set(items)) != len(items):
            raise ConfigError(f"{source}: {key}: {list(items)} names a value twice; list each of {allowed} once")
    return value


class _MismatchError(Exception):
    """The value does not have the annotated type."""


def _coerce(value: Any, hint: Any) -> Any:
    """``value`` as ``hint`` (int → float, list → tuple), or raise _MismatchError. bool is never taken for a number."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return _json_like(value)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg)
            except _MismatchError:
                pass
        raise _MismatchError
    if origin is tuple and isinstance(value, list | tuple):
        return tuple(_coerce(item, args[0]) for item in value)
    if origin is dict and isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        return {k: _coerce(v, args[1]) for k, v in value.items()}
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint in (bool, str) and isinstance(value, hint):
        return value
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    raise _MismatchError


def _json_like(value: Any) -> Any:
    """Free-form values (model.extra) must stay JSON-able: they are saved with every output."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_json_like(item) for item in value]
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        return {k: _json_like(v) for k, v in value.items()}
    raise _MismatchError


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return "JSON-like values (strings, numbers, bools, lists, tables)"
    if hint is type(None):
        return "null"
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_describe(arg) for arg in args)
    if origin is tuple:
        return f"a list of {_describe(args[0])}"
    if origin is dict:
        return f"a table of {_describe(args[1])}"
    return getattr(hint, "__name__", str(hint))


def _got(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def _quoted_number_hint(value: Any, source: str) -> str:
    if not isinstance(value, str):
        return ""
    try:
        float(value)
    except ValueError:
        return ""
    if source.lower().endswith((".yaml", ".yml")):  # PyYAML (YAML 1.1) reads 5e-4 as a string: floats need a dot
        return "; write numbers without quotes, and exponents with a dot (5.0e-4, not 5e-4)"
    return "; write numbers without quotes"


# ----------------------------------------------------------------------------------------------------------
# Writing the default config
# ----------------------------------------------------------------------------------------------------------

_HEADER = """\
# cmamba config: every key at its default. Keep only the keys you change.
# Precedence: built-in defaults < this file < command-line flags.
"""
_TOML_NULL = """\
# TOML has no null: a commented-out key is unset. A key whose default is set (asr.language, train.patience)
# can be unset only from a YAML config (key: null).
"""


def dump_default(fmt: str = "toml") -> str:
    """The full default config with a comment per section; ``load_config`` reads it back to the defaults."""
    data = CmambaConfig().to_dict()
    if fmt == "toml":
        return _HEADER + _TOML_NULL + "".join(_toml_section(name, values) for name, values in data.items())
    if fmt == "yaml":
        yaml = _yaml()
        sections = (
            f"\n# [{name}] {SECTION_HELP[name]}\n"
            + yaml.safe_dump({name: values}, sort_keys=False, default_flow_style=False)
            for name, values in data.items()
        )
        return _HEADER + "".join(sections)
    raise ConfigError(f"unknown config format {fmt!r}; choose toml or yaml")


def _toml_section(name: str, values: dict[str, Any]) -> str:
    fields = _section_fields(name, {m: values[EXTRACTOR_KEY] for m in MODALITIES if m == name})
    lines = [f"\n# {SECTION_HELP[name]}", f"[{name}]"]
    for key, value in values.items():
        if value is None:
            lines.append(f"# {key} = ...  (unset: {_describe(fields[key])})")
            continue
        line = f"{_toml_key(key)} = {_toml_value(value)}"
        if f"{name}.{key}" in CHOICES:
            line += f"  # {' | '.join(CHOICES[f'{name}.{key}'])}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_string(key)


def _toml_string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\u{ord(m.group()):04x}", escaped) + '"'


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("nan" if math.isnan(value) else "inf" if value > 0 else "-inf")
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise ConfigError(f"TOML cannot hold {_got(value)}")
