"""Training views (issue #14): exactly ShardDataset's samples, from memory-mapped arrays, rebuilt when stale or
damaged; batches gathered whole; every index once per epoch (also split across ranks); and the training
mechanisms the views feed (early stopping, the learning-rate schedule, the no-decay parameter groups)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cmamba.datasets.shards import ShardDataset
from cmamba.datasets.synthetic import synthetic_cache
from cmamba.datasets.view import _stored, training_view
from cmamba.errors import CacheError
from cmamba.fusion.batch import collate

SHAPES = {"text": (12, 6), "audio": (40, 5), "video": (10, 4)}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """150 clips in shards of 100: several Parquet row groups (64 clips each) per shard, uneven lengths."""
    return synthetic_cache(tmp_path_factory.mktemp("view") / "cache", 150, SHAPES, clips_per_shard=100)


def same_sample(a: dict, b: dict) -> None:
    assert a["id"] == b["id"] and a["present"] == b["present"]
    assert a["label"] == b["label"] or (np.isnan(a["label"]) and np.isnan(b["label"]))
    for m in a["features"]:
        np.testing.assert_array_equal(a["features"][m], b["features"][m])


@pytest.mark.parametrize("align, max_len", [("native", None), ("word", None), ("clock", None), ("native", 7)])
def test_a_view_holds_exactly_the_readers_samples(cache, align, max_len):
    reader = ShardDataset(cache, split="train", align=align, max_len=max_len)
    view = training_view(cache, split="train", align=align, max_len=max_len)
    assert len(view) == len(reader) == 50 and view.dims() == reader.dims()
    assert not all(reader[i]["present"]["video"] for i in range(len(reader)))  # absent modalities are covered
    for i in range(len(reader)):
        same_sample(view[i], reader[i])
    indices = np.array([3, 0, 41, 17, 17])
    gathered, collated = view.batch(indices), collate([reader[int(i)] for i in indices])
    for m in reader.names:
        torch.testing.assert_close(gathered[m], collated[m])
        assert gathered["lengths"][m].tolist() == collated["lengths"][m].tolist()
        assert gathered["present"][m].tolist() == collated["present"][m].tolist()
    torch.testing.assert_close(gathered["labels"], collated["labels"])
    assert gathered["ids"] == collated["ids"]


def test_a_view_is_built_once_and_rebuilt_when_stale_or_damaged(cache, tmp_path):
    import shutil

    local = tmp_path / "cache"
    shutil.copytree(cache, local, ignore=shutil.ignore_patterns("views"))
    first = training_view(local, split="valid")
    assert [p for p in (local / "views").iterdir() if p.is_dir()] == [first.directory]  # (beside it: its lock)
    stamp = (first.directory / "view.json").stat().st_mtime_ns
    again = training_view(local, split="valid")
    assert again.directory == first.directory and (again.directory / "view.json").stat().st_mtime_ns == stamp
    audio = first.directory / "audio.f32"
    audio.write_bytes(audio.read_bytes()[:100])  # truncated (a full disk, a crash)
    healed = training_view(local, split="valid")
    assert healed.directory == first.directory and audio.stat().st_size == healed.meta["sizes"]["audio.f32"]
    same_sample(healed[5], ShardDataset(local, split="valid")[5])
    manifest = json.loads((local / "manifest.json").read_text())
    manifest["note"] = "re-extracted"  # any change of the cache gives the view a new key
    (local / "manifest.json").write_text(json.dumps(manifest))
    assert training_view(local, split="valid").directory != first.directory


def test_every_index_once_per_epoch_also_across_ranks(cache):
    view = training_view(cache, split="train")
    epoch = [i for batch in view.loader(8, shuffle=True, seed=3) for i in batch["ids"]]
    assert sorted(epoch) == sorted(view.ids) and epoch != view.ids  # shuffled, each once
    again = [i for batch in view.loader(8, shuffle=True, seed=3) for i in batch["ids"]]
    assert again == epoch  # seeded
    threaded = [i for batch in view.loader(8, shuffle=True, seed=3, workers=2) for i in batch["ids"]]
    assert threaded == epoch  # gathering ahead in threads keeps the order
    ranks = [[i for b in view.loader(8, shuffle=True, seed=3, rank=r, world_size=2) for i in b["ids"]] for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 25 and sorted(ranks[0] + ranks[1]) == sorted(view.ids)


def test_a_float16_view_holds_the_readers_values_rounded_and_refuses_values_out_of_range(cache):
    reader = ShardDataset(cache, split="train", align="word")
    half = training_view(cache, split="train", align="word", dtype="float16")
    full = training_view(cache, split="train", align="word")
    assert half.directory != full.directory and half.values["text"].dtype == np.float16
    assert half.meta["sizes"]["text.f16"] * 2 == full.meta["sizes"]["text.f32"]
    for i in (0, 7, 49):
        for m in reader.names:
            np.testing.assert_array_equal(half[i]["features"][m], reader[i]["features"][m].astype(np.float16))
    batch = half.batch(np.array([4, 2]))
    assert batch["text"].dtype == torch.float16
    torch.testing.assert_close(batch["text"].float(), full.batch(np.array([4, 2]))["text"], rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match="audio features reach 100000, beyond float16's range"):
        _stored(np.array([[1.0, 1e5]], np.float32), np.dtype(np.float16), "audio")  # what both build paths call
    with pytest.raises(ValueError, match="float32 or float16"):
        training_view(cache, split="train", dtype="int8")
    from cmamba.fusion.config import TrainConfig

    with pytest.raises(ValueError, match="view_dtype must be one of"):
        TrainConfig(view_dtype="int8")


@pytest.mark.parametrize("align", ["native", "word"])  # batches of varying width; of one width
def test_batch_memory_is_reused_only_once_the_caller_lets_go(cache, align):
    reader = ShardDataset(cache, split="train", align=align)
    view = training_view(cache, split="train", align=align)
    kept = list(view.loader(8, shuffle=True, seed=5, workers=2))  # every batch held at once: none overwritten
    position = {sample_id: k for k, sample_id in enumerate(view.ids)}
    expected = [collate([reader[position[i]] for i in batch["ids"]]) for batch in kept]
    tail = kept[0]["audio"][:, 1:]  # a view of a batch tensor keeps its memory too
    del kept[0]["audio"]
    for _ in range(3):  # epochs whose batches are dropped: memory comes back from the pool
        for batch in view.loader(8, shuffle=True, seed=6):
            batch["audio"].fill_(-1.0)
    torch.testing.assert_close(tail, expected[0]["audio"][:, 1:])
    for got, want in zip(kept[1:], expected[1:], strict=True):
        for m in reader.names:
            torch.testing.assert_close(got[m], want[m])
    pooled = {key: len(arrays) for key, arrays in view._buffers._arrays.items()}
    assert max(pooled.values()) <= view._buffers.KEEP and all(n >= 1 for n in pooled.values())
    before = {key: [id(a) for a in arrays] for key, arrays in view._buffers._arrays.items()}
    kept.clear()
    for _ in view.loader(8, shuffle=True, seed=7):
        pass
    after = {key: [id(a) for a in arrays] for key, arrays in view._buffers._arrays.items()}
    assert after == before  # a steady epoch allocates nothing new


def test_a_failed_build_leaves_nothing_and_a_view_pickles_without_its_data(cache, tmp_path, monkeypatch):
    import pickle
    import shutil

    import cmamba.datasets.view as view_module

    local = tmp_path / "cache"
    shutil.copytree(cache, local, ignore=shutil.ignore_patterns("views"))

    def refuse(values, dtype, modality):
        raise ValueError(f"the {modality} features reach 1e+05, beyond float16's range")

    monkeypatch.setattr(view_module, "_stored", refuse)
    with pytest.raises(ValueError, match="beyond float16's range"):
        training_view(local, split="test", dtype="float16")
    assert not [p for p in (local / "views").iterdir() if p.is_dir()]  # no partial view left behind

    def full(values, dtype, modality):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(view_module, "_stored", full)
    with pytest.raises(CacheError, match=r"cannot write the training view .*about [\d,]+ MB of float32 features.*"
                                         r"No space left.*--no-view"):  # fmt: skip
        training_view(local, split="test")
    assert not [p for p in (local / "views").iterdir() if p.is_dir()]
    monkeypatch.undo()
    view = training_view(local, split="test")
    view.batch(np.arange(4))  # a pool with arrays in it
    copy = pickle.loads(pickle.dumps(view))  # what a spawned DataLoader worker receives
    assert len(pickle.dumps(view)) < view.meta["sizes"]["text.f32"]  # the files are mapped again, not copied
    for m in view.names:
        torch.testing.assert_close(copy.batch(np.arange(5))[m], view.batch(np.arange(5))[m])


def test_pinned_batches_come_from_the_host_allocator_and_need_cuda(cache, monkeypatch):
    view = training_view(cache, split="train")
    with pytest.raises(ValueError, match="pin_memory=True needs CUDA"):
        next(view.loader(8, pin_memory=True))
    real_empty, pinned = torch.empty, []

    def empty(*args, pin_memory=False, **kwargs):  # this CPU build has no page-locked allocator: record the ask
        pinned.append(pin_memory)
        return real_empty(*args, **kwargs)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch, "empty", empty)
    batch = next(view.loader(8, shuffle=False, pin_memory=True))
    assert pinned == [True] * len(view.names)
    reader = ShardDataset(cache, split="train")
    for m in view.names:
        torch.testing.assert_close(batch[m], collate([reader[i] for i in range(8)])[m])


def test_training_reads_the_view_and_learns_the_same_with_threads_gathering_ahead(cache, tmp_path):
    from cmamba.app.runs import train_cache
    from cmamba.fusion.config import TrainConfig

    def trained(name: str, **recipe) -> list[dict]:
        config = TrainConfig(dataset="mosi", epochs=2, batch_size=16, progress=False, **recipe)
        summary = train_cache(cache, tmp_path / name, {"d_model": 8, "d_state": 4, "n_layers": 1}, config, seeds=(1,))
        assert np.isfinite(summary["valid"]["MAE"]["mean"])
        return json.loads((tmp_path / name / "seed-1" / "metrics.json").read_text())

    alone, ahead = trained("alone", input_threads=0), trained("ahead", input_threads=2)
    assert [r["train_loss"] for r in alone] == [r["train_loss"] for r in ahead]  # the same batches, in order
    assert [r["valid_Loss"] for r in alone] == [r["valid_Loss"] for r in ahead]
    views = sorted((cache / "views").iterdir())
    streamed = trained("streamed", view=False)  # the shards read as they are: no view is built
    assert sorted((cache / "views").iterdir()) == views and np.isfinite(streamed[-1]["train_loss"])
    half = trained("half", view_dtype="float16")
    assert half[-1]["train_loss"] == pytest.approx(alone[-1]["train_loss"], rel=1e-2)  # rounded inputs, same run
    assert {p.suffix for p in (cache / "views").glob("*/text.*")} == {".f32", ".f16"}


def test_early_stopping_the_schedule_and_the_no_decay_groups(tmp_path):
    """Checked by their effect: training stops ``patience`` epochs after the best one, the learning rate halves
    every ``lr_step`` epochs, and the SSM's A and D (marked no-decay) are not pulled towards zero."""
    from cmamba.datasets.synthetic import CUE_FLIP_DIMS, cue_flip
    from cmamba.fusion.config import FusionConfig, TrainConfig
    from cmamba.fusion.model import build_model
    from cmamba.fusion.train import _param_groups, train

    train_set, valid_set = cue_flip(64, seed=0), cue_flip(32, seed=1)
    config = FusionConfig(modalities=dict(CUE_FLIP_DIMS), d_model=8, d_state=4, n_layers=1, n_heads=2)
    # a learning rate too small to change the valid loss: the first epoch stays the best
    recipe = TrainConfig(dataset="mosi", epochs=30, batch_size=32, lr=1e-12, patience=3, lr_step=2, lr_gamma=0.5,
                         progress=False)  # fmt: skip
    result = train(config, recipe, train_set, valid_set, tmp_path / "stop")
    assert result["epochs_run"] == result["best_epoch"] + 3 < 30
    rates = [row["lr"] for row in json.loads((tmp_path / "stop" / "metrics.json").read_text())]
    assert rates[:4] == pytest.approx([recipe.lr, recipe.lr * 0.5, recipe.lr * 0.5, recipe.lr * 0.25], abs=0)
    model = build_model(config)
    groups = _param_groups(model, 0.1)
    no_decay = {id(p) for p in groups[1]["params"]}
    assert groups[1]["weight_decay"] == 0.0 and no_decay
    marked = [n for n, p in model.named_parameters() if id(p) in no_decay]
    assert marked and all(n.endswith(("A_log", "D")) for n in marked), marked
    # the effect of the groups: one Adam step with no loss signal moves decayed weights towards zero, and only them
    optimizer = torch.optim.Adam(groups, lr=0.01)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer.step()
    for name, p in model.named_parameters():
        if name in marked:
            assert torch.equal(p, before[name]), name
        elif before[name].abs().sum() > 0:
            assert p.abs().sum() < before[name].abs().sum(), name
