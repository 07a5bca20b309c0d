"""The user config file: defaults, TOML and YAML, precedence, every class of error, and what it builds."""

from __future__ import annotations

import copy
import json
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from cmamba import cli
from cmamba.app.config import CHOICES, SECTION_HELP, CmambaConfig, dump_default, load_config
from cmamba.errors import ConfigError
from cmamba.extractors.audio import AudioConfig
from cmamba.extractors.opensmile import OpenSmileConfig
from cmamba.fusion.config import FusionConfig, TrainConfig
from cmamba.pipeline.config import ExtractionConfig

TOML = """
[video]
fps = 5
[align]
mode = "word"
[extract]
modalities = ["text", "audio"]
workers = 2
[model]
fusion = "mamba"
[model.extra]
note = "run 7"
[train]
epochs = 20
batch_size = 64
seeds = [1, 2]
"""

YAML = """
video: {fps: 5}
align: {mode: word}
extract: {modalities: [text, audio], workers: 2}
model: {fusion: mamba, extra: {note: run 7}}
train: {epochs: 20, batch_size: 64, seeds: [1, 2]}
"""


def write(tmp_path: Path, text: str, name: str = "cmamba.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error(tmp_path: Path, text: str, name: str = "cmamba.toml") -> str:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text, name))
    return str(info.value)


@pytest.mark.parametrize("fmt, name", [("toml", "default.toml"), ("yaml", "default.yaml")])
def test_dump_default_loads_back_to_the_defaults(tmp_path, fmt, name):
    text = dump_default(fmt)
    assert load_config(write(tmp_path, text, name)) == CmambaConfig() == load_config()
    for section, about in SECTION_HELP.items():
        assert f"# {about}\n[{section}]" in text if fmt == "toml" else f"# [{section}] {about}\n{section}:" in text


def test_dump_default_comments_out_nulls_and_lists_choices():
    text = dump_default()
    parsed = tomllib.loads(text)
    assert "model_path" not in parsed["video"] and "# model_path = ..." in text  # TOML has no null
    assert parsed["extract"]["modalities"] == ["text", "audio", "video"]
    assert 'fusion = "coupled"  # coupled | mamba' in text
    assert set(SECTION_HELP) == set(parsed) == set(CmambaConfig().to_dict())
    with pytest.raises(ConfigError, match="toml or yaml"):
        dump_default("json")


def test_toml_and_yaml_files_read_the_same(tmp_path):
    from_toml = load_config(write(tmp_path, TOML))
    assert from_toml == load_config(write(tmp_path, YAML, "cmamba.yaml")) == load_config(write(tmp_path, YAML, "c.yml"))
    assert from_toml.video.fps == 5.0 and isinstance(from_toml.video.fps, float)  # an int is a valid float
    assert from_toml.extract.modalities == ("text", "audio")  # a list is a valid tuple
    assert from_toml.model.extra == {"note": "run 7"} and from_toml.seeds == (1, 2)


def test_an_empty_file_is_all_defaults(tmp_path):
    assert load_config(write(tmp_path, "", "empty.yaml")) == load_config(write(tmp_path, "")) == CmambaConfig()


def test_the_file_beats_the_defaults_and_overrides_beat_the_file(tmp_path):
    overrides = {"train.epochs": 5, "align.mode": "clock", "extract.modalities": ["video"], "extract.workers": None}
    before = copy.deepcopy(overrides)
    config = load_config(write(tmp_path, TOML), overrides)
    assert overrides == before  # inputs are never modified
    assert config.train.epochs == 5 and config.train.batch_size == 64 and config.train.lr == TrainConfig().lr
    assert config.align.mode == "clock" and config.extract.modalities == ("video",)
    assert config.extract.workers is None  # None in overrides sets null
    assert config.model.fusion == "mamba" and config.video.fps == 5.0
    assert load_config(overrides={"model.fusion": "concat"}).model.fusion == "concat"


def test_it_builds_the_library_configs(tmp_path):
    config = load_config(write(tmp_path, TOML), {"audio.preset": "sims33", "extract.use_asr": False})
    extraction = config.extraction()
    assert isinstance(extraction, ExtractionConfig)
    assert extraction.align == "word" and extraction.modalities == ("text", "audio") and not extraction.use_asr
    assert extraction.audio == AudioConfig(preset="sims33") and extraction.video.fps == 5.0
    assert ExtractionConfig.from_dict(extraction.to_dict()) == extraction
    train = config.train_config()
    assert type(train) is TrainConfig and train.epochs == 20 and train.batch_size == 64
    model = FusionConfig(**config.model_overrides(), modalities={"text": 384, "audio": 47})
    assert model.fusion == "mamba" and model.extra == {"note": "run 7"}
    assert config.extract_options == {"workers": 2, "clips_per_shard": 1000, "scheduler": None}
    assert config.seeds == (1, 2)


def test_to_dict_is_json(tmp_path):
    data = load_config(write(tmp_path, TOML)).to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["extract"]["modalities"] == ["text", "audio"] and data["train"]["seeds"] == [1, 2]
    assert set(data["model"]) == set(FusionConfig.__dataclass_fields__) - {"modalities"}


def test_an_unknown_section_lists_the_sections(tmp_path):
    message = error(tmp_path, "[trian]\nepochs = 3")
    assert "cmamba.toml" in message and "[trian]" in message and "did you mean 'train'" in message
    assert "allowed sections: video, audio, text, asr, align, segment, extract, model, train" in message


def test_an_unknown_key_lists_the_keys_and_suggests_one(tmp_path):
    message = error(tmp_path, "[train]\nepoch = 3")
    assert message.startswith(f"{tmp_path / 'cmamba.toml'}: train.epoch: unknown key in [train]")
    assert "did you mean 'epochs'" in message and "batch_size" in message and "seeds" in message


@pytest.mark.parametrize(
    "text, key, expected, got",
    [
        ('[train]\nepochs = "5"', "train.epochs", "expected int", "got str '5'"),
        ("[train]\nepochs = true", "train.epochs", "expected int", "got bool True"),  # bool is not an int
        ("[train]\nlr = true", "train.lr", "expected float", "got bool True"),
        ("[video]\nlandmarks = 1", "video.landmarks", "expected bool", "got int 1"),
        ('[extract]\nmodalities = "text"', "extract.modalities", "expected a list of str", "got str"),
        ("[extract]\nmodalities = [1]", "extract.modalities", "expected a list of str", "got list [1]"),
        ("[audio]\nsample_rate = 1.5", "audio.sample_rate", "expected int or null", "got float 1.5"),
        ("[model]\nextra = {when = 1979-05-27}", "model.extra", "expected a table of JSON-like", "datetime.date"),
        ("[train]\nseeds = [1.0]", "train.seeds", "expected a list of int", "got list [1.0]"),
        ("[model]\ndropout = [0.1]", "model.dropout", "expected float", "got list"),
    ],
)
def test_a_wrong_type_names_the_key_and_the_expected_type(tmp_path, text, key, expected, got):
    message = error(tmp_path, text)
    assert "cmamba.toml" in message and f"{key}: {expected}" in message and got in message


def test_a_quoted_yaml_exponent_gets_a_hint(tmp_path):
    message = error(tmp_path, "train:\n  lr: 5e-4\n", "cmamba.yaml")  # YAML 1.1 reads 5e-4 as a string
    assert "train.lr: expected float, got str '5e-4'" in message and "5.0e-4" in message


@pytest.mark.parametrize("key", sorted(CHOICES))
def test_a_value_outside_the_choices_lists_them(tmp_path, key):
    section, name = key.split(".")
    value = '["text", "smell"]' if key == "extract.modalities" else '"bogus"'
    message = error(tmp_path, f"[{section}]\n{name} = {value}")
    assert f"{key}: " in message and "is not allowed" in message and ", ".join(CHOICES[key]) in message


def test_a_repeated_modality_is_refused(tmp_path):
    assert "names a value twice" in error(tmp_path, '[extract]\nmodalities = ["text", "text"]')


@pytest.mark.parametrize(
    "text, section, reason",
    [
        ("[video]\nfps = 0", "video", "fps must lie in (0, 60.0]"),
        # settings that would hold unbounded rows or frames are refused before any work
        ("[video]\nfps = 1000", "video", "fps must lie in (0, 60.0]"),
        ("[video]\nmax_side = 100000", "video", "max_side must lie in [32, 4096]"),
        ("[audio]\nhop_length = 1", "audio", "hop_length must lie in [1 ms = 16, n_fft = 512]"),
        ("[audio]\nn_fft = 10000000", "audio", "n_fft must lie in [64, 16384]"),
        ("[audio]\nsample_rate = 1000000", "audio", "sample_rate must lie in [8000, 96000]"),
        ("[text]\nmax_tokens = 4", "text", "max_tokens must lie in [16, 8192]"),
        ("[model]\ndropout = 1.5", "model", "dropout must lie in [0, 1)"),
        ("[train]\npatience = -1", "train", "patience must be >= 0"),
        ("[train]\nweight_decay = -1.0", "train", "weight_decay must be a finite number >= 0"),
        ("[train]\nlr = 0.0", "train", "lr must be a finite number > 0"),
        ("[train]\nlr = inf", "train", "lr must be a finite number > 0"),
        ("[train]\ninput_threads = -1", "train", "input_threads must lie in [0, 32]"),
        ("[align]\nclock_rate = nan", "align", "clock_rate must be positive"),
        ('[train]\ndevice = "gpu"', "train", "device must be auto, cpu, cuda or cuda:N"),
        ("[align]\nclock_rate = -1", "align", "clock_rate must be positive"),
        ("[extract]\nmodalities = []", "extract", "choose one or more"),
        ("[extract]\nclips_per_shard = 0", "extract", "clips_per_shard must be >= 1"),
        ("[model]\nd_model = 130", "model", "must be divisible by n_heads"),
        ('[model]\ntask = "classification"\nnum_classes = 1', "model", "does not fit task"),
        ("[train]\nepochs = 0", "train", "epochs and batch_size must be >= 1"),
        ("[train]\nseeds = [1, 1]", "train", "distinct"),
    ],
)
def test_the_dataclasses_own_checks_are_wrapped_with_the_section(tmp_path, text, section, reason):
    message = error(tmp_path, text)
    assert message.startswith(f"{tmp_path / 'cmamba.toml'}: [{section}]: ") and reason in message


def test_bad_overrides_are_named(tmp_path):
    for overrides, part in [
        ({"epochs": 3}, "'epochs' is not a dotted key"),
        ({"train.epochs": None}, "train.epochs: expected int, got NoneType"),
        ({"train.epochs": "5"}, "train.epochs: expected int"),
        ({"model.fusion": "x"}, "model.fusion: 'x' is not allowed"),
        ({"video.fps": 0}, "cmamba.toml + overrides: [video]: fps must lie in (0, 60.0]"),  # both set [video]
    ]:
        with pytest.raises(ConfigError) as info:
            load_config(write(tmp_path, TOML), overrides)
        assert "overrides: " in str(info.value) and part in str(info.value)


def test_unreadable_files_are_named(tmp_path):
    for text, name, part in [
        ("[train\n", "bad.toml", "not valid TOML"),
        ("train: [1\n", "bad.yaml", "not valid YAML"),
        ("- 1\n", "list.yaml", "expected a mapping of sections"),
        ("train = 3\n", "scalar.toml", "[train] must be a table"),
        ("", "cmamba.json", "unknown config format '.json'"),
    ]:
        assert part in error(tmp_path, text, name) and name in error(tmp_path, text, name)
    with pytest.raises(ConfigError, match=r"missing\.toml: cannot read"):
        load_config(tmp_path / "missing.toml")


def test_cli_dump_default_prints_the_default_toml(capsys):
    assert cli.main(["config", "dump-default"]) == 0
    out = capsys.readouterr().out
    assert out == dump_default() and tomllib.loads(out)["train"]["epochs"] == TrainConfig().epochs
    assert cli.main(["config", "dump-default", "--format", "yaml"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["align"]["mode"] == "native"


def test_cli_help_shows_an_example(capsys):
    with pytest.raises(SystemExit):
        cli.main(["config", "dump-default", "--help"])
    assert "Example: cmamba config dump-default > cmamba.toml" in capsys.readouterr().out.replace("\n", " ")


def test_yaml_without_pyyaml_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "yaml", None)  # makes `import yaml` raise ImportError
    with pytest.raises(ConfigError, match="pip install pyyaml"):
        load_config(write(tmp_path, "", "cmamba.yaml"))
    assert load_config(write(tmp_path, "[train]\nepochs = 3")).train.epochs == 3  # TOML needs no PyYAML


def test_a_modality_section_picks_its_extractor_and_validates_that_extractor_s_keys(tmp_path):
    config = load_config(write(tmp_path, '[audio]\nextractor = "opensmile-egemaps"\nsample_rate = 48000\n'))
    assert config.audio == OpenSmileConfig(sample_rate=48000)
    assert config.extraction().extractor("audio").name == "opensmile-egemaps"
    assert config.to_dict()["audio"] == {"extractor": "opensmile-egemaps", "sample_rate": 48000}
    round_trip = ExtractionConfig.from_dict(json.loads(json.dumps(config.extraction().to_dict())))
    assert round_trip == config.extraction()
    message = error(tmp_path, '[audio]\nextractor = "opensmile-egemaps"\npreset = "sims33"\n')
    assert "audio.preset: unknown key in [audio] for the extractor 'opensmile-egemaps'" in message
    assert "allowed keys: extractor, sample_rate" in message
    message = error(tmp_path, '[audio]\nextractor = "opensmile"\n')
    assert "audio.extractor: 'opensmile' is not allowed; choose from librosa-audio, opensmile-egemaps" in message
    message = error(tmp_path, '[video]\nextractor = "librosa-audio"\n')
    assert "video.extractor: 'librosa-audio' is not allowed; choose from mediapipe-face" in message
    # the last layer that names an extractor wins; the file's librosa keys then no longer apply
    overridden = load_config(write(tmp_path, "[audio]\nn_mfcc = 13\n"), {"audio.extractor": "librosa-audio"})
    assert overridden.audio == AudioConfig(n_mfcc=13)


def test_recorded_configs_without_an_extractor_key_read_as_the_default_extractor():
    recorded = ExtractionConfig().to_dict()
    for m in ("video", "audio", "text"):
        del recorded[m]["extractor"]  # caches and checkpoints written before extractors were selectable
    assert ExtractionConfig.from_dict(recorded) == ExtractionConfig()
    with pytest.raises(ValueError, match=r"audio.extractor='mediapipe-face': choose one of \['librosa-audio', "):
        ExtractionConfig.from_dict({"audio": {"extractor": "mediapipe-face"}})
