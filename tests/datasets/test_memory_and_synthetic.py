import numpy as np
import pytest
import torch

from cmamba.datasets.memory import FeatureDataset
from cmamba.datasets.synthetic import CUE_FLIP_DIMS, CUE_FLIP_LENGTHS, MOSEI_DIMS, MOSEI_LENGTHS, cue_flip, mosei_shaped
from cmamba.fusion.batch import collate


def test_collate_pads_right_and_records_lengths_and_presence():
    ds = FeatureDataset(
        {"a": [np.ones((3, 2)), np.ones((5, 2)) * 2], "b": [np.zeros((0, 4)), np.ones((1, 4))]}, labels=[0.5, -1.0]
    )
    batch = collate([ds[0], ds[1]])
    assert batch["a"].shape == (2, 5, 2) and batch["b"].shape == (2, 1, 4)
    assert batch["lengths"]["a"].tolist() == [3, 5] and batch["lengths"]["b"].tolist() == [0, 1]
    assert batch["present"]["b"].tolist() == [False, True]  # an empty sequence means the modality is absent
    assert float(batch["a"][0, 3:].abs().sum()) == 0.0
    torch.testing.assert_close(batch["labels"], torch.tensor([0.5, -1.0]))
    assert ds.schema() == {"modalities": {"a": {"dim": 2}, "b": {"dim": 4}}, "label_range": [-1.0, 0.5]}


def test_collate_can_pad_left_for_mult_style_models():
    ds = FeatureDataset({"a": [np.ones((3, 2)), np.ones((5, 2)) * 2, np.zeros((0, 2))]}, labels=[0.5, -1.0, 0.0])
    batch = collate([ds[0], ds[1], ds[2]], padding="left")
    assert float(batch["a"][0, :2].abs().sum()) == 0.0 and batch["a"][0, 2:].eq(1).all()
    assert batch["a"][1].eq(2).all() and batch["a"][2].eq(0).all() and batch["lengths"]["a"].tolist() == [3, 5, 0]
    with pytest.raises(ValueError, match="choose 'right' or 'left'"):
        collate([ds[0]], padding="middle")


def test_dataset_rejects_inconsistent_inputs():
    with pytest.raises(ValueError, match="modality 'a' has 1 samples but there are 2 labels"):
        FeatureDataset({"a": [np.ones((3, 2))]}, labels=[0.0, 1.0])
    with pytest.raises(ValueError, match="modality 'a': every sample must be a \\(length, dim\\) array of one dim"):
        FeatureDataset({"a": [np.ones((3, 2)), np.ones((3, 3))]}, labels=[0.0, 1.0])


def test_synthetic_shapes_and_determinism():
    a, b = cue_flip(6, seed=4), cue_flip(6, seed=4)
    assert a.dims() == CUE_FLIP_DIMS
    assert {n: len(a.features[n][0]) for n in a.names} == CUE_FLIP_LENGTHS
    np.testing.assert_array_equal(a.labels, b.labels)
    assert np.all(np.abs(a.labels) <= 3.0) and np.all(np.abs(a.labels) >= 0.5)
    m = mosei_shaped(2)
    assert m.dims() == MOSEI_DIMS and {n: len(m.features[n][1]) for n in m.names} == MOSEI_LENGTHS
