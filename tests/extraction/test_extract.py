"""From pooled activations and the split index to per-layer vectors and their held-out scores."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from trait_interp.core.errors import UserInputError
from trait_interp.extraction.evaluation import best_index, best_vector, evaluate_layers
from trait_interp.extraction.extract import class_sets, extract_layers, mean_norms
from trait_interp.extraction.methods import MethodSettings

N_PAIRS, N_LAYERS, HIDDEN = 12, 3, 16


def _planted() -> tuple[torch.Tensor, pd.DataFrame, torch.Tensor]:
    """Pairs whose positive side is shifted along a planted direction at every layer (stronger deeper)."""
    generator = torch.Generator().manual_seed(0)
    direction = torch.nn.functional.normalize(torch.randn(HIDDEN, generator=generator), dim=0)
    content = torch.randn(N_PAIRS, N_LAYERS, HIDDEN, generator=generator)
    strength = torch.tensor([3.0, 5.0, 8.0])[None, :, None]
    pos = content + strength * direction + 0.1 * torch.randn(N_PAIRS, N_LAYERS, HIDDEN, generator=generator)
    neg = content - strength * direction + 0.1 * torch.randn(N_PAIRS, N_LAYERS, HIDDEN, generator=generator)
    acts = torch.cat([pos, neg])  # rows 0..11 positive, 12..23 negative
    examples = pd.DataFrame({
        "row": range(2 * N_PAIRS), "pair_index": list(range(N_PAIRS)) * 2,
        "polarity": ["positive"] * N_PAIRS + ["negative"] * N_PAIRS,
        "split": (["train"] * 9 + ["val"] * 3) * 2, "n_tokens": [5] * (2 * N_PAIRS - 1) + [0],
    })
    return acts, examples, direction


def test_class_sets_keep_complete_pairs_in_pair_order():
    acts, examples, _ = _planted()
    val = class_sets(acts, examples, "val", paired=True)
    assert val.positive.shape == (2, N_LAYERS, HIDDEN)  # pair 11's negative selected no token: the pair goes
    assert torch.equal(val.positive[0], acts[9]) and torch.equal(val.negative[1], acts[N_PAIRS + 10])
    assert class_sets(acts, examples, "val", paired=False).positive.shape[0] == 3
    with pytest.raises(UserInputError, match="no usable val examples"):
        class_sets(acts, examples.assign(split="train"), "val", paired=True)


def test_vectors_recover_the_planted_direction_and_score_it_on_held_out_pairs():
    acts, examples, direction = _planted()
    train, val = (class_sets(acts, examples, split, paired=True) for split in ("train", "val"))
    vectors, info = extract_layers(train, "mean_diff", MethodSettings(), (0, 1, 2))
    assert vectors.shape == (N_LAYERS, HIDDEN) and set(info) == {"0", "1", "2"}
    assert all(float(vectors[i] @ direction) > 0.9 for i in range(N_LAYERS))
    records = pd.DataFrame(evaluate_layers(train, val, vectors, (0, 1, 2)))
    assert (records["val_accuracy"] == 1.0).all() and (records["n_val_positive"] == 2).all()
    assert (records["cohens_d"] > 2).all() and records["polarity_correct"].all()
    norms = mean_norms(train, (0, 1, 2))
    assert norms["0"] == pytest.approx(float(torch.cat([train.positive, train.negative])[:, 0].norm(dim=-1).mean()))


def test_best_vector_ignores_the_random_baseline_and_breaks_ties_by_effect_then_layer():
    table = pd.DataFrame({
        "method": ["random_baseline", "probe", "probe", "mean_diff"], "site": ["residual"] * 4,
        "layer": [0, 2, 1, 3], "val_accuracy": [1.0, 0.9, 0.9, 0.9], "cohens_d": [9.0, -4.0, 4.0, 2.0],
    })
    assert best_index(table) == 0  # overall, the baseline would win
    best = best_vector(table)
    assert (best["method"], best["layer"]) == ("probe", 1)  # |d| ties between layers 2 and 1: the lower layer
