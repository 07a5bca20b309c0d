"""MMSA pickles ⇄ feature cache ⇄ MMSA / MulT pickles, and the restricted unpickler, on small synthetic pickles."""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from cmamba.datasets.mmsa import export_mmsa, export_mult, import_mmsa
from cmamba.datasets.mmsa.safe_pickle import safe_load_pickle
from cmamba.errors import MMSAFormatError, UnsafePickleError
from cmamba.extractors.base import FeatureSequence
from cmamba.pipeline.cache.schema import iter_shard_rows, modality_columns
from cmamba.pipeline.cache.store import finish_cache, shard_paths

SIZES = {"train": 4, "valid": 2, "test": 3}
DIMS = {"text": 12, "audio": 5, "vision": 7}


def _split(rng, split: str, n: int, L: dict[str, int], aligned: bool) -> dict:
    """An MMSA split with zero padding after each clip's length, like MMSA-FET writes."""
    text_len = rng.integers(3, L["text"] + 1, n)
    text_len[0] = L["text"]  # one clip fills the text axis, so an export without max_len keeps its width
    part = {
        "id": np.array([f"vid{split}{i // 2}$_${i:04d}" for i in range(n)], dtype=object),
        "raw_text": np.array([f"words of clip {i}" for i in range(n)], dtype=object),
        "regression_labels": rng.uniform(-3, 3, n),
        "annotations": np.array(["Positive", "Negative"] * n)[:n],
    }
    bert = np.zeros((n, 3, L["text"]))
    for i, t in enumerate(text_len):
        bert[i, 0, :t] = rng.integers(100, 30000, t)
        bert[i, 1, :t] = 1
    part["text_bert"] = bert
    lengths = {"text": text_len}
    for key in ("audio", "vision"):
        lengths[key] = text_len if aligned else rng.integers(1, L[key] + 1, n)
        if not aligned:
            lengths[key][1] = L[key]
            part[f"{key}_lengths"] = lengths[key]
    for key in ("text", "audio", "vision"):
        values = np.zeros((n, L[key], DIMS[key]))
        for i, t in enumerate(lengths[key]):
            values[i, :t] = rng.normal(size=(t, DIMS[key]))
        part[key] = values
    return part


def mmsa_pickle(path: Path, aligned: bool, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    L = {"text": 50, "audio": 50, "vision": 50} if aligned else {"text": 39, "audio": 30, "vision": 12}
    data = {split: _split(rng, split, n, L, aligned) for split, n in SIZES.items()}
    if not aligned:
        audio = data["train"]["audio"]
        audio[0, 0, 1] = audio[0, 2, 3] = -np.inf  # COVAREP-style, inside clip 0's audio
        audio[2, data["train"]["audio_lengths"][2] :, 0] = -np.inf  # and in clip 2's padding
        for u in "TAV":
            for split, part in data.items():
                part[f"regression_labels_{u}"] = rng.uniform(-1, 1, SIZES[split])
        data["config"] = {"audio": {"tool": "librosa"}}
    with open(path, "wb") as handle:
        pickle.dump(data, handle, protocol=4)
    return data


def cache_rows(cache: Path) -> dict[str, dict]:
    return {r["clip_id"]: r for r in iter_shard_rows(shard_paths(cache))}


@pytest.fixture(scope="module")
def unaligned(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("unaligned")
    data = mmsa_pickle(tmp / "unaligned_39.pkl", aligned=False)
    manifest = import_mmsa(tmp / "unaligned_39.pkl", tmp / "cache", clips_per_shard=4)
    return tmp, data, manifest


def test_safe_load_refuses_code_and_never_runs_it(tmp_path):
    marker = tmp_path / "pwned"

    class Shell:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    class Eval:
        def __reduce__(self):
            return eval, (f"open({str(marker)!r}, 'w')",)

    for payload, name in [(Shell(), f"{os.system.__module__}.system"), (Eval(), "builtins.eval")]:
        path = tmp_path / "evil.pkl"
        path.write_bytes(pickle.dumps({"train": {"id": np.array(["a"]), "text": payload}}))
        with pytest.raises(UnsafePickleError, match=f"it tries to import {name}; only numpy arrays") as err:
            safe_load_pickle(path)
        assert err.value.name == name and not marker.exists()
        with pytest.raises(UnsafePickleError):
            import_mmsa(path, tmp_path / "cache")
        assert not marker.exists() and not (tmp_path / "cache" / "manifest.json").exists()


def test_safe_load_admits_numpy_arrays_of_every_protocol_and_refuses_objects_in_object_arrays(tmp_path):
    data = {
        "id": np.array(["v$_$1", "v$_$2"], dtype=object),
        "raw_text": np.array(["一 二", "three"]),
        "x": np.arange(6, dtype=np.float32).reshape(2, 3),
        "s": [np.float64(1.5), np.int64(3), (1, "a"), {"k": None}],
    }
    path = tmp_path / "ok.pkl"
    for protocol in (2, 4, 5):
        path.write_bytes(pickle.dumps(data, protocol=protocol))
        loaded = safe_load_pickle(path)
        assert list(loaded["id"]) == ["v$_$1", "v$_$2"] and list(loaded["raw_text"]) == ["一 二", "three"]
        np.testing.assert_array_equal(loaded["x"], data["x"])
        assert loaded["s"] == data["s"]
    path.write_bytes(pickle.dumps({"id": np.array(["a", {"nested": 1}], dtype=object)}))
    with pytest.raises(UnsafePickleError, match="object array with a dict element"):
        safe_load_pickle(path)


def test_import_unaligned_honours_lengths_and_repairs_non_finite_audio(unaligned):
    tmp, data, manifest = unaligned
    assert manifest["dims"] == {"text": 12, "audio": 5, "video": 7}
    assert manifest["counts"]["by_split"] == SIZES and manifest["counts"]["clips"] == 9
    assert manifest["time_unit"] == "step" and manifest["align"] == "native" and manifest["aligned"] is False
    source = manifest["source"]
    assert source["kind"] == "mmsa-pickle" and source["path"] == str((tmp / "unaligned_39.pkl").resolve())
    assert source["sha256"] == hashlib.sha256((tmp / "unaligned_39.pkl").read_bytes()).hexdigest()
    mmsa = manifest["mmsa"]
    assert mmsa["config"] == {"audio": {"tool": "librosa"}} and mmsa["repaired"] == {"text": 0, "audio": 2, "video": 0}
    assert mmsa["splits"]["train"]["nonzero_rows_dropped"] == {"text": 0, "audio": 1, "video": 0}
    assert mmsa["splits"]["train"]["seq_lens"] == {"text": 39, "audio": 30, "video": 12}
    assert mmsa["splits"]["test"]["unimodal_labels"] == ["A", "T", "V"]
    rows = cache_rows(tmp / "cache")
    assert len(rows) == 9 and len(shard_paths(tmp / "cache")) == 3
    for split, part in data.items():
        if split == "config":
            continue
        for i, clip_id in enumerate(part["id"]):
            row = rows[clip_id]
            assert row["split"] == split and row["video_id"] == clip_id.split("$_$")[0]
            assert row["label"] == pytest.approx(part["regression_labels"][i])
            assert row["label_T"] == pytest.approx(part["regression_labels_T"][i])
            assert row["annotation"] == part["annotations"][i] and row["text_raw"] == part["raw_text"][i]
            T = int(part["text_bert"][i, 1].sum())
            assert row["token_ids"] == part["text_bert"][i, 0, :T].astype(int).tolist() and row["token_mask"] == [1] * T
            for m, key, length in [("text", "text", T), ("audio", "audio", None), ("video", "vision", None)]:
                length = length or int(part[f"{key}_lengths"][i])
                expected = np.nan_to_num(part[key][i, :length], neginf=0.0).astype(np.float32)
                np.testing.assert_array_equal(np.array(row[f"{m}_values"], np.float32), expected)
                assert row[f"{m}_length"] == length and row[f"{m}_timestamps"] == list(range(length))
    assert rows[data["train"]["id"][0]]["audio_repaired"] == 2
    assert rows[data["train"]["id"][2]]["audio_repaired"] == 0  # its -inf lies in the padding


def test_import_aligned_gives_audio_and_vision_the_text_length(tmp_path):
    data = mmsa_pickle(tmp_path / "aligned_50.pkl", aligned=True)
    manifest = import_mmsa(tmp_path / "aligned_50.pkl", tmp_path / "cache")
    assert manifest["aligned"] is True and manifest["align"] == "word" and manifest["dims"]["video"] == 7
    assert all(
        s["nonzero_rows_dropped"] == {"text": 0, "audio": 0, "video": 0} for s in manifest["mmsa"]["splits"].values()
    )
    rows = cache_rows(tmp_path / "cache")
    part = data["valid"]
    for i, clip_id in enumerate(part["id"]):
        T = int(part["text_bert"][i, 1].sum())
        row = rows[clip_id]
        assert row["text_length"] == row["audio_length"] == row["video_length"] == T
        np.testing.assert_array_equal(np.array(row["video_values"]), part["vision"][i, :T].astype(np.float32))
        assert row["label_T"] is None


def test_mmsa_round_trip_is_equal_up_to_padding(unaligned, tmp_path):
    tmp, data, _ = unaligned
    out = tmp_path / "out.pkl"
    config = export_mmsa(tmp / "cache", out)
    back = safe_load_pickle(out)
    assert config == back["config"] and config["cmamba"]["clips"] == SIZES
    assert config["cmamba"]["seq_lens"] == {"text": 39, "audio": 30, "video": 12, "text_bert": 39}
    for split in SIZES:
        src, got = data[split], back[split]
        order = np.argsort(src["id"])  # the cache keeps clips sorted by id
        assert list(got["id"]) == list(src["id"][order]) and list(got["raw_text"]) == list(src["raw_text"][order])
        for key in ("audio_lengths", "vision_lengths"):
            assert got[key].dtype == np.int64 and list(got[key]) == list(src[key][order])
        for key in ("text", "audio", "vision", "text_bert"):
            expected = np.nan_to_num(src[key][order], neginf=0.0).astype(np.float32)
            assert got[key].dtype == np.float32 and got[key].shape == expected.shape
            np.testing.assert_array_equal(got[key], expected)
        for key in ("regression_labels", "regression_labels_T", "regression_labels_A", "regression_labels_V"):
            np.testing.assert_array_equal(got[key], src[key][order].astype(np.float32))
        assert list(got["annotations"]) == list(src["annotations"][order])
    reimported = import_mmsa(out, tmp_path / "again")
    assert reimported["counts"] == import_mmsa(tmp / "unaligned_39.pkl", tmp_path / "first")["counts"]
    assert reimported["mmsa"]["config"]["cmamba"]["format"] == "mmsa-pkl"


def test_export_max_len_cuts_and_pads_and_numpy1_names_are_written(unaligned, tmp_path):
    tmp, _, _ = unaligned
    out = tmp_path / "short.pkl"
    export_mmsa(tmp / "cache", out, max_len={"vision": 4, "audio": 40})
    back = safe_load_pickle(out)["train"]
    assert back["vision"].shape == (4, 4, 7) and back["audio"].shape == (4, 40, 5)
    assert back["vision_lengths"].max() == 4 and np.all(back["audio"][:, 30:] == 0)
    raw = out.read_bytes()
    assert b"numpy.core.multiarray" in raw and b"numpy._core" not in raw  # numpy 1.x can load it too
    with pytest.raises(ValueError, match="max_len takes positive lengths"):
        export_mmsa(tmp / "cache", out, max_len={"face": 3})


def test_mult_export_is_left_padded_with_3_field_ids(unaligned, tmp_path):
    tmp, data, _ = unaligned
    out = tmp_path / "mosi_data_noalign.pkl"
    export_mult(tmp / "cache", out)
    back = safe_load_pickle(out)
    src, got = data["train"], back["train"]
    order = np.argsort(src["id"])
    assert set(got) == {"vision", "text", "audio", "labels", "id"}
    assert got["labels"].shape == (4, 1, 1) and got["labels"].dtype == np.float32
    np.testing.assert_array_equal(got["labels"][:, 0, 0], src["regression_labels"][order].astype(np.float32))
    assert got["id"].shape == (4, 3)
    first = src["id"][order][0]
    assert [f.decode() for f in got["id"][0]] == [first.split("$_$")[0], first.split("$_$")[1], first]
    for j, i in enumerate(order):
        T = int(src["vision_lengths"][i])
        np.testing.assert_array_equal(got["vision"][j, 12 - T :], src["vision"][i, :T].astype(np.float32))
        assert np.all(got["vision"][j, : 12 - T] == 0)


def test_missing_or_malformed_keys_are_named(tmp_path):
    data = mmsa_pickle(tmp_path / "p.pkl", aligned=False)
    del data["valid"]["audio"]
    (tmp_path / "p.pkl").write_bytes(pickle.dumps(data))
    with pytest.raises(MMSAFormatError, match="split 'valid', key 'audio': missing"):
        import_mmsa(tmp_path / "p.pkl", tmp_path / "cache")
    data = mmsa_pickle(tmp_path / "p.pkl", aligned=False)
    del data["test"]["vision_lengths"]
    (tmp_path / "p.pkl").write_bytes(pickle.dumps(data))
    with pytest.raises(MMSAFormatError, match="split 'test', key 'vision_lengths': missing while 'audio_lengths'"):
        import_mmsa(tmp_path / "p.pkl", tmp_path / "cache")
    data["test"]["vision_lengths"] = data["test"]["audio_lengths"] + 100
    (tmp_path / "p.pkl").write_bytes(pickle.dumps(data))
    with pytest.raises(MMSAFormatError, match=r"key 'vision_lengths': lengths span .* but vision has 12 rows"):
        import_mmsa(tmp_path / "p.pkl", tmp_path / "cache")


def test_step_caches_export_only_native(unaligned, tmp_path):
    tmp, _, _ = unaligned
    with pytest.raises(MMSAFormatError, match=r"steps, not seconds.*align='native'"):
        export_mmsa(tmp / "cache", tmp_path / "x.pkl", align="word")


def _timed_cache(path: Path) -> None:
    """Two clips extracted at real rates: 4 words, audio at 100 Hz, video at 10 fps; valid lacks tokens."""
    rows = []
    for k, split in enumerate(["train", "valid"]):
        words = np.array([[0.0, 0.25], [0.25, 0.5], [0.5, 0.75], [0.75, 1.0]])
        seqs = {
            "text": FeatureSequence(np.full((4, 3), k, np.float32), words[:, 0], np.ones(4, bool), ("t0", "t1", "t2")),
            "audio": FeatureSequence(
                np.arange(100, dtype=np.float32)[:, None], np.arange(100) / 100, np.ones(100, bool), ("a0",)
            ),
            "video": FeatureSequence(np.ones((10, 2), np.float32), np.arange(10) / 10, np.ones(10, bool), ("v0", "v1")),
        }
        row = {"clip_id": f"v$_${k}", "video_id": "v", "split": split, "label": 1.0, "duration": 1.0}
        row |= {"words": list("abcd"), "word_start": words[:, 0], "word_end": words[:, 1], "text_raw": "a b c d"}
        if split == "train":
            row |= {"token_ids": [101, 7, 8, 102], "token_mask": [1, 1, 1, 1], "token_type_ids": [0, 0, 0, 0]}
        for m, seq in seqs.items():
            row.update(modality_columns(m, seq, None))
        rows.append(row)
    dims = {"text": 3, "audio": 1, "video": 2}
    finish_cache(path, rows, dims, {m: [] for m in dims}, [], {"time_unit": "second", "align": "native"})


def test_word_aligned_export_of_a_timed_cache(tmp_path):
    _timed_cache(tmp_path / "cache")
    export_mmsa(tmp_path / "cache", tmp_path / "word.pkl", align="word")
    back = safe_load_pickle(tmp_path / "word.pkl")
    train = back["train"]
    assert train["audio"].shape == (1, 4, 1) and list(train["audio_lengths"]) == [4]
    np.testing.assert_allclose(train["audio"][0, :, 0], [12, 37, 62, 87])  # mean of 25 hops per word
    np.testing.assert_array_equal(train["text_bert"][0], [[101, 7, 8, 102], [1, 1, 1, 1], [0, 0, 0, 0]])
    assert np.all(back["valid"]["text_bert"] == 0)  # no tokens: zero ids and an empty mask
    assert "regression_labels_T" not in train and "annotations" not in train
    export_mmsa(tmp_path / "cache", tmp_path / "native.pkl")
    native = safe_load_pickle(tmp_path / "native.pkl")
    assert native["train"]["audio"].shape == (1, 100, 1) and list(native["valid"]["vision_lengths"]) == [10]


def test_export_refuses_clips_without_split_or_label(tmp_path):
    rows = []
    for k, (split, label) in enumerate([("train", 0.5), (None, 1.0)]):
        row = {"clip_id": f"c{k}", "split": split, "label": label}
        for m, dim in (("text", 2), ("audio", 1), ("video", 1)):
            row.update(
                modality_columns(
                    m, FeatureSequence(np.ones((2, dim), np.float32), np.arange(2.0), np.ones(2, bool), ()), None
                )
            )
        rows.append(row)
    finish_cache(tmp_path / "cache", rows, {"text": 2, "audio": 1, "video": 1}, {}, [], {})
    with pytest.raises(MMSAFormatError, match="clip 'c1' has split None"):
        export_mult(tmp_path / "cache", tmp_path / "x.pkl")


def test_imported_pickle_is_a_train_ready_dataset(unaligned, tmp_path):
    from cmamba.datasets.shards import ShardDataset
    from cmamba.fusion.config import FusionConfig
    from cmamba.fusion.train import TrainConfig, train

    cache = unaligned[0] / "cache"
    train_set, valid_set = ShardDataset(cache, split="train"), ShardDataset(cache, split="valid")
    assert train_set.dims() == {"text": 12, "audio": 5, "video": 7} and len(train_set) == SIZES["train"]
    with pytest.raises(ValueError, match="only align='native'"):
        ShardDataset(cache, align="word")
    config = FusionConfig(modalities=train_set.dims(), d_model=8, d_state=4, n_layers=1)
    result = train(config, TrainConfig(epochs=2, batch_size=2, progress=False), train_set, valid_set, tmp_path / "run")
    assert result["epochs_run"] == 2 and np.isfinite(result["valid"]["MAE"])
