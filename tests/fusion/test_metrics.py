"""MMSA metrics against values computed by hand (comments show the working)."""

import numpy as np
import pytest
import torch

from cmamba.fusion.metrics import compute_metrics


def test_mosi_regression_by_hand():
    preds = [2.5, -0.5, 0.5, 1.5, -2.6, 0.0]
    labels = [3.0, -1.0, 0.0, 1.4, -3.2, -0.4]
    m = compute_metrics(torch.tensor(preds), torch.tensor(labels), "mosi")
    assert set(m) == {"Has0_acc_2", "Has0_F1_score", "Non0_acc_2", "Non0_F1_score", "Mult_acc_5", "Mult_acc_7",
                      "MAE", "Corr"}  # fmt: skip
    # >= 0: preds T F T T F T, labels T F T T F F → 5/6. F1: class T P=3/4 R=1 → 6/7; class F P=1 R=2/3 → 0.8.
    assert m["Has0_acc_2"] == 0.8333
    assert m["Has0_F1_score"] == round((3 * 6 / 7 + 3 * 0.8) / 6, 4)
    # label 0 (third sample) removed; the rest agree in sign.
    assert m["Non0_acc_2"] == 1.0 and m["Non0_F1_score"] == 1.0
    # clip to ±3, round half to even: preds 2 -0 0 2 -3 0, labels 3 -1 0 1 -3 -0 → 3 of 6.
    assert m["Mult_acc_7"] == 0.5
    # clip to ±2: preds 2 -0 0 2 -2 0, labels 2 -1 0 1 -2 -0 → 4 of 6.
    assert m["Mult_acc_5"] == 0.6667
    assert m["MAE"] == round((0.5 + 0.5 + 0.5 + 0.1 + 0.6 + 0.4) / 6, 4)
    p, y = np.array(preds), np.array(labels)
    pearson = ((p - p.mean()) * (y - y.mean())).sum() / np.sqrt(
        ((p - p.mean()) ** 2).sum() * ((y - y.mean()) ** 2).sum()
    )
    assert m["Corr"] == round(pearson, 4)


def test_mosei_uses_the_same_definitions_as_mosi():
    preds, labels = [0.2, -1.7, 2.9, 0.0], [0.4, -2.0, 3.0, 0.6]
    assert compute_metrics(preds, labels, "mosei") == compute_metrics(preds, labels, "mosi")


def test_sims_regression_by_hand():
    preds = [-1.5, -0.05, 0.0, 0.05, 0.1, 0.69, 0.71, 1.2]
    labels = [-1.0, 0.0, -0.2, 0.2, 0.1, 0.8, 0.6, 1.0]
    m = compute_metrics(preds, labels, "sims")
    assert set(m) == {"Mult_acc_2", "Mult_acc_3", "Mult_acc_5", "F1_score", "MAE", "Corr"}
    # <= 0 → 0 (zero is negative): preds 0 0 0 1 1 1 1 1 = labels.
    assert m["Mult_acc_2"] == 1.0 and m["F1_score"] == 1.0
    # 3 bins: preds 0 1 1 1 1 2 2 2 (0.1 is in (-0.1, 0.1]); labels 0 1 0 2 1 2 2 2 → 6 of 8.
    assert m["Mult_acc_3"] == 0.75
    # 5 bins: preds 0 2 2 2 2 3 4 4; labels 0 2 1 3 2 4 3 4 → 4 of 8.
    assert m["Mult_acc_5"] == 0.5
    # predictions clipped to [-1, 1] first: |0| .05 .2 .15 0 .11 .11 0 → 0.62 / 8.
    assert m["MAE"] == 0.0775
    assert compute_metrics(preds, labels, "simsv2") == m


def test_classification_by_hand_and_the_mmsa_quirk():
    labels = [0, 1, 2, 2, 0, 1]
    logits = torch.tensor([[2, 0, 1], [0, 3, 1], [0, 1, 2], [3, 1, 2], [1, 0, 2], [2, 1, 0]], dtype=torch.float32)
    m = compute_metrics(logits, labels, "mosei", task="classification")
    # argmax: 0 1 2 0 2 0 vs 0 1 2 2 0 1 → 3 of 6.
    assert m["Acc_3"] == 0.5
    # [neg, pos] argmax: 0 1 1 0 1 0; label > 1: 0 0 1 1 0 0 → 3 of 6.
    assert m["Has0_acc_2"] == 0.5
    # neutral removed (samples 0, 2, 3, 4): positives remapped to 1: truth 0 1 1 0 vs 0 1 0 1 → 2 of 4.
    assert m["Non0_acc_2"] == 0.5
    quirk = compute_metrics(logits, labels, "mosei", task="classification", mmsa_compat=True)
    # MMSA compares labels {0, 2} with predictions {0, 1}: only sample 0 counts → 1 of 4.
    assert quirk["Non0_acc_2"] == 0.25
    assert quirk["Acc_3"] == m["Acc_3"] and quirk["Has0_acc_2"] == m["Has0_acc_2"]


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"dataset='iemocap' is not one of \('mosi', 'mosei', 'sims', 'simsv2'\)"):
        compute_metrics([0.1], [0.2], "iemocap")
    with pytest.raises(ValueError, match="task='ranking'"):
        compute_metrics([0.1], [0.2], "mosi", task="ranking")
    with pytest.raises(ValueError, match="preds has 2 values but labels has 3"):
        compute_metrics([0.1, 0.2], [0.2, 0.3, 0.4], "mosi")
    with pytest.raises(ValueError, match=r"logits \(N, 3\)"):
        compute_metrics([0.1, 0.2], [0, 1], "mosi", task="classification")
