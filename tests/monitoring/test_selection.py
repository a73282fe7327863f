"""Which vectors monitoring projects on: per trait, the chosen layers, from explicit folders."""

from __future__ import annotations

import pytest
import torch

from tests.steering.test_best import BEST
from trait_interp.core.errors import UserInputError
from trait_interp.extraction.vectors import VectorMetadata, VectorSet, save_vectors
from trait_interp.monitoring.selection import (
    MonitoringSettings,
    choose_layers,
    monitor_vectors,
    steering_best_layer,
)
from trait_interp.steering.best import BestSteering, write_best


def _vectors(folder, trait: str, n_layers: int = 4) -> torch.Tensor:
    rows = torch.arange(n_layers * 8, dtype=torch.float32).reshape(n_layers, 8) + hash(trait) % 7
    meta = VectorMetadata(trait=trait, variant="v", model="m", revision=None, adapter=None, site="residual",
                          position="response[:5]", method="probe", method_params={}, dataset_hash="h", n_train=4,
                          n_val=2, layers=list(range(n_layers)), train_metrics={}, activation_norms={})
    save_vectors(folder, VectorSet(rows, meta))
    return rows


def test_each_trait_at_its_own_chosen_layers(tmp_path):
    dirs = {t: tmp_path / t / "vectors" for t in ("a/x", "b/y")}
    rows = {t: _vectors(d, t) for t, d in dirs.items()}
    bests = {"a/x": tmp_path / "a.json", "b/y": tmp_path / "b.json"}
    write_best(bests["a/x"], BestSteering(**{**BEST.__dict__, "layers": (1,)}))
    write_best(bests["b/y"], BestSteering(**{**BEST.__dict__, "layers": (3,)}))
    best = steering_best_layer(bests)

    def chosen(choice: object) -> list:
        return monitor_vectors(dirs, choose_layers(list(dirs), choice, 4, best), MonitoringSettings())

    assert [(v.trait, v.layer) for v in chosen("best")] == [("a/x", 1), ("b/y", 3)]
    assert torch.equal(chosen("best")[1].vector, rows["b/y"][3])
    assert [(v.trait, v.layer) for v in chosen([0, 2])] == [("a/x", 0), ("a/x", 2), ("b/y", 0), ("b/y", 2)]
    assert len(chosen("all")) == 8


def test_a_trait_without_chosen_layers_says_to_choose_again(tmp_path):
    dirs = {"a/x": tmp_path / "a/x/vectors"}
    _vectors(dirs["a/x"], "a/x")
    with pytest.raises(UserInputError, match="no layers chosen for trait a/x"):
        monitor_vectors(dirs, {}, MonitoringSettings())


def test_best_without_a_steering_result_names_the_file(tmp_path):
    best = steering_best_layer({"a/x": tmp_path / "missing.json"})
    with pytest.raises(UserInputError, match=r"missing\.json: layer: best needs a steering result for a/x"):
        best("a/x")
