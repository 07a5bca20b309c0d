"""The fusion model: every variant runs forward and backward, inputs are handled as documented."""

from __future__ import annotations

import json

import pytest
import torch

from cmamba.fusion.config import COUPLINGS, FUSIONS, FusionConfig
from cmamba.fusion.layers import MambaBlockParams, resample
from cmamba.fusion.model import build_model

DIMS = {"text": 12, "audio": 5, "vision": 7}


def small_config(**kw) -> FusionConfig:
    return FusionConfig(modalities=kw.pop("modalities", DIMS), d_model=16, d_state=8, n_layers=2, n_heads=2, **kw)


def batch(B: int = 3, lengths=(9, 20, 14), dims=DIMS, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    out = {n: torch.randn(B, L, d, generator=g) for (n, d), L in zip(dims.items(), lengths, strict=True)}
    return out


def test_paper_block_has_the_paper_parameter_count():
    """One Mamba mixer at d_model 128, d_state 64, expand 2, dt_rank 16 has 157,440 parameters (as in mamba-ssm)."""
    block = MambaBlockParams(FusionConfig(modalities={"x": 1}))
    assert sum(p.numel() for n, p in block.named_parameters() if not n.startswith("norm")) == 157_440


@pytest.mark.parametrize("fusion", FUSIONS)
def test_every_fusion_runs_forward_and_backward(fusion):
    model = build_model(small_config(fusion=fusion))
    out = model(batch())
    assert out.shape == (3,) and torch.isfinite(out).all()
    out.sum().backward()
    trained = [n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert any(n.startswith("project.text") for n in trained) and any(n.startswith("head") for n in trained)


@pytest.mark.parametrize("coupling", COUPLINGS)
def test_coupling_modes(coupling):
    model = build_model(small_config(coupling=coupling))
    out = model(batch())
    out.sum().backward()
    assert torch.isfinite(out).all()
    if coupling == "learned":
        assert model.layers[0].coupling_logits.grad is not None


def test_classification_returns_logits():
    model = build_model(small_config(task="classification"))
    assert model(batch()).shape == (3, 3)


@pytest.mark.parametrize("M", [1, 2, 4])
def test_any_number_of_modalities(M):
    dims = {f"m{i}": 3 + i for i in range(M)}
    model = build_model(small_config(modalities=dims))
    out = model(batch(2, tuple(5 + i for i in range(M)), dims))
    assert out.shape == (2,)


def test_coupled_layer_exchanges_state_and_mamba_does_not():
    """Changing only the audio input changes the text chain's outputs under coupling, never without it."""
    torch.manual_seed(0)
    for fusion, expect_change in (("coupled", True), ("mamba", False)):
        model = build_model(small_config(fusion=fusion, enhance=False))
        x = batch(lengths=(10, 10, 10))
        h, _valid, _ = model._inputs(x)
        x2 = dict(x, audio=x["audio"] + 1.0)
        h2, _, _ = model._inputs(x2)
        out1, out2 = model.layers[0](h), model.layers[0](h2)
        changed = not torch.allclose(out1[:, 0], out2[:, 0])  # text stream (index 0)
        assert changed == expect_change, fusion


def test_padding_is_ignored_by_resampling():
    x = torch.randn(1, 6, 4)
    padded = torch.cat([x, 1000 * torch.ones(1, 10, 4)], 1)
    torch.testing.assert_close(resample(padded, torch.tensor([6]), 3), resample(x, torch.tensor([6]), 3))
    # 6 frames onto 3 steps: each step is the mean of two frames.
    torch.testing.assert_close(resample(x, torch.tensor([6]), 3), x.view(1, 3, 2, 4).mean(2))
    # Shorter than the target: frames are stretched, not mixed with padding.
    torch.testing.assert_close(resample(padded, torch.tensor([2]), 4), x[:, [0, 0, 1, 1]])


def test_model_output_ignores_padding_values():
    model = build_model(small_config()).eval()
    x = batch(2)
    lengths = {"audio": torch.tensor([20, 11])}
    y = model(dict(x, lengths=lengths))
    x["audio"][1, 11:] = 99.0
    torch.testing.assert_close(model(dict(x, lengths=lengths)), y)


def test_aligned_inputs_pass_through_unchanged():
    model = build_model(small_config(seq_len=7))
    h, valid, _ = model._inputs(batch(lengths=(11, 11, 11)))
    assert h.shape[2] == 11 and valid.all()


def test_missing_modality_still_gets_a_prediction_and_is_not_used():
    model = build_model(small_config()).eval()
    x = batch(2)
    present = {"vision": torch.tensor([True, False])}
    y = model(dict(x, present=present))
    assert torch.isfinite(y).all()
    x["vision"][1] = torch.randn_like(x["vision"][1]) * 50  # the absent sample's vision values are never read
    torch.testing.assert_close(model(dict(x, present=present))[1], y[1])


def test_config_round_trips_through_json(tmp_path):
    cfg = small_config(fusion="released", coupling="learned", task="classification", extra={"note": "x"})
    assert FusionConfig.from_json(cfg.to_json()) == cfg
    cfg.to_json(tmp_path / "c.json")
    assert FusionConfig.from_json(tmp_path / "c.json") == cfg
    assert json.loads(cfg.resolved().to_json())["dt_rank"] == 2  # ceil(16 / 8)
    assert cfg.dt_rank is None  # resolving returns a copy, the user's config is unchanged


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"fusion": "gated"}, r"fusion='gated' is not one of \('coupled', 'mamba'"),
        ({"coupling": "max"}, r"coupling='max' is not one of \('mean', 'sum', 'none', 'learned'\)"),
        ({"modalities": {"text": 0}}, r"modalities\['text'\] = 0"),
        ({"modalities": {}}, "modalities must map"),
        ({"task": "regression", "num_classes": 3}, "num_classes=3 does not fit task='regression'"),
    ],
)
def test_bad_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FusionConfig(**{"modalities": DIMS, **kwargs})


def test_bad_batches():
    model = build_model(small_config())
    x = batch()
    with pytest.raises(ValueError, match=r"modality 'audio' has shape \(3, 20, 6\); expected \(batch, length, 5\)"):
        model(dict(x, audio=torch.randn(3, 20, 6)))
    with pytest.raises(ValueError, match=r"batch lacks modalities \['vision'\]"):
        model({k: v for k, v in x.items() if k != "vision"})
    x["text"][0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="modality 'text' contains NaN or inf"):
        model(x)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the optional CUDA kernels need a CUDA device")
def test_cuda_kernels_match_the_pytorch_blocks(monkeypatch):
    from cmamba.fusion.layers import use_cuda_kernels

    model = build_model(small_config()).cuda().eval()
    x = {k: v.cuda() for k, v in batch().items()}
    assert use_cuda_kernels(x["text"]), "install mamba-ssm and causal-conv1d to run this comparison"
    fast = model(x)
    monkeypatch.setenv("CMAMBA_PYTORCH_BLOCKS", "1")
    torch.testing.assert_close(fast, model(x), rtol=1e-3, atol=1e-3)
