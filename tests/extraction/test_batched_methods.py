"""Tests for the batched (all layers at once) extraction methods.

Truth: scikit-learn's ``LogisticRegression`` fit here per layer for the probe, and the
per-layer functions in ``trait_interp.extraction.methods`` for the other methods. Data: several layers
stacked, each with its own planted direction and strength, paired content, and a few
"massive" no-signal dimensions with std 100 (as in tests/extraction/test_methods.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from trait_interp.extraction import batched_methods as batched
from trait_interp.extraction import methods

MASSIVE_DIMS = (3, 17, 40)
MASSIVE_STD = 100.0
ALL_METHODS = ("probe", "mean_diff", "gradient", "pca", "random_baseline")
DTYPES = (torch.float32, torch.bfloat16)


@dataclass(frozen=True)
class Stack:
    pos: torch.Tensor  # [L, n_pos, hidden]
    neg: torch.Tensor  # [L, n_neg, hidden]
    layers: tuple[int, ...]


def _stack(
    n_pos: int,
    n_neg: int,
    hidden: int,
    signals: tuple[float, ...],
    seed: int,
    dtype: torch.dtype = torch.float32,
    massive: bool = True,
) -> Stack:
    """One layer per entry of ``signals``: ``pos = content + noise + s u``, ``neg = content + noise - s u``.

    Each layer has its own planted unit direction ``u`` (zero on the massive dims) and
    strength ``s``; row i of pos and neg share a content vector (paired). With ``massive``,
    MASSIVE_DIMS get independent N(0, 100^2) noise in both classes: huge variance, no signal.
    """
    generator = torch.Generator().manual_seed(seed)
    n = max(n_pos, n_neg)
    dims = [d for d in MASSIVE_DIMS if d < hidden]
    pos_layers, neg_layers = [], []
    for strength in signals:
        u = torch.randn(hidden, generator=generator)  # [hidden]
        u[dims] = 0.0
        u = u / u.norm()
        content = torch.randn(n, hidden, generator=generator)  # [n, hidden]
        pos = content[:n_pos] + torch.randn(n_pos, hidden, generator=generator) + strength * u  # [n_pos, hidden]
        neg = content[:n_neg] + torch.randn(n_neg, hidden, generator=generator) - strength * u  # [n_neg, hidden]
        if massive:
            pos[:, dims] += MASSIVE_STD * torch.randn(n_pos, len(dims), generator=generator)
            neg[:, dims] += MASSIVE_STD * torch.randn(n_neg, len(dims), generator=generator)
        pos_layers.append(pos)
        neg_layers.append(neg)
    layers = tuple(2 * i + 1 for i in range(len(signals)))  # not 0..L-1: the seeds depend on the layer number
    return Stack(pos=torch.stack(pos_layers).to(dtype), neg=torch.stack(neg_layers).to(dtype), layers=layers)


def _extract(stack: Stack, method: str, settings: methods.MethodSettings) -> tuple[torch.Tensor, dict[str, dict[str, float]]]:
    return batched.extract_all_layers(stack.pos, stack.neg, method, settings, stack.layers)


def _per_layer(stack: Stack, method: str, settings: methods.MethodSettings) -> list[methods.MethodResult]:
    fn = methods.get_method(method)
    return [fn(stack.pos[i], stack.neg[i], settings, layer) for i, layer in enumerate(stack.layers)]


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=0))


# --------------------------------------------------------------------------- probe vs scikit-learn


def _sklearn_probe(
    pos: torch.Tensor, neg: torch.Tensor, settings: methods.MethodSettings, tol: float
) -> tuple[np.ndarray, float]:
    """scikit-learn's per-layer fit on the probe features: activation-space ``w`` and train accuracy."""
    x = torch.cat([pos, neg]).to(torch.float64).numpy()  # [n, hidden]
    y = np.concatenate([np.ones(pos.shape[0]), np.zeros(neg.shape[0])])  # [n]
    if settings.probe_scaling == "row_norm":
        features, back_scale = x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-8), np.ones(x.shape[1])
    else:
        back_scale = np.maximum(x.std(axis=0), 1e-6)
        features = (x - x.mean(axis=0)) / back_scale
    classifier = LogisticRegression(
        C=settings.probe_c, solver="lbfgs", max_iter=100_000, tol=tol, class_weight="balanced", fit_intercept=True
    )
    classifier.fit(features, y)
    return classifier.coef_[0] / back_scale, float(classifier.score(features, y))


# (n_pos, n_neg, hidden, signals): n << hidden (the n-dimensional solve; separable),
# n > hidden with overlapping classes (the primal solve), n > hidden and separable.
PROBE_CASES = {
    "n_much_less_than_hidden": (24, 16, 512, (0.5, 1.0, 2.0)),
    "n_greater_than_hidden": (150, 100, 64, (0.3, 0.6, 1.2)),
    "separable_n_greater_than_hidden": (60, 40, 32, (8.0, 12.0)),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("scaling", ("row_norm", "standardize"))
@pytest.mark.parametrize("case", PROBE_CASES)
def test_probe_matches_sklearn(case: str, scaling: str, dtype: torch.dtype) -> None:
    n_pos, n_neg, hidden, signals = PROBE_CASES[case]
    stack = _stack(n_pos, n_neg, hidden, signals, seed=11, dtype=dtype, massive=hidden > max(MASSIVE_DIMS))
    settings = methods.MethodSettings(probe_scaling=scaling)
    vectors, info = _extract(stack, "probe", settings)
    assert torch.isfinite(vectors).all()
    for i, layer in enumerate(stack.layers):
        # Today's settings (lbfgs stops at tol=1e-4) and the same problem solved to convergence.
        default_w, default_accuracy = _sklearn_probe(stack.pos[i], stack.neg[i], settings, tol=1e-4)
        exact_w, exact_accuracy = _sklearn_probe(stack.pos[i], stack.neg[i], settings, tol=1e-10)
        assert _cos(vectors[i], torch.from_numpy(default_w)) >= 0.999
        assert _cos(vectors[i], torch.from_numpy(exact_w)) >= 1 - 1e-9
        assert info[str(layer)]["train_accuracy"] == default_accuracy == exact_accuracy


@pytest.mark.parametrize("scaling", ("row_norm", "standardize"))
@pytest.mark.parametrize(("n_pos", "n_neg", "hidden"), ((24, 16, 512), (60, 40, 32)))
def test_probe_separable_weak_penalty_reaches_the_optimum(scaling: str, n_pos: int, n_neg: int, hidden: int) -> None:
    """Separable classes and C = 100: large margins, saturated sigmoids, the optimum far from 0.

    Compared with scikit-learn run to convergence only: at tol=1e-4 lbfgs stops about
    1e-2 short in cosine here (standardize), so that fit is not the optimum either.
    """
    stack = _stack(n_pos, n_neg, hidden, (8.0, 12.0), seed=11, massive=hidden > max(MASSIVE_DIMS))
    settings = methods.MethodSettings(probe_scaling=scaling, probe_c=100.0)
    vectors, info = _extract(stack, "probe", settings)
    assert torch.isfinite(vectors).all()
    for i, layer in enumerate(stack.layers):
        exact_w, exact_accuracy = _sklearn_probe(stack.pos[i], stack.neg[i], settings, tol=1e-10)
        assert _cos(vectors[i], torch.from_numpy(exact_w)) >= 1 - 1e-9
        assert info[str(layer)]["train_accuracy"] == exact_accuracy == 1.0


def test_probe_after_set_num_threads() -> None:
    """Batched LU on CPU breaks once ``torch.set_num_threads(2)`` has been called (pytorch#142815);
    the probe's Newton systems (here 160 x 160 in the row span, 177 x 177 in the primal) must not."""
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for n_pos, n_neg, hidden in ((90, 70, 256), (110, 90, 176)):
            stack = _stack(n_pos, n_neg, hidden, (0.3, 0.6), seed=21)
            settings = methods.MethodSettings(probe_scaling="standardize")
            vectors, info = _extract(stack, "probe", settings)
            for i, layer in enumerate(stack.layers):
                exact_w, exact_accuracy = _sklearn_probe(stack.pos[i], stack.neg[i], settings, tol=1e-10)
                assert _cos(vectors[i], torch.from_numpy(exact_w)) >= 1 - 1e-9
                assert info[str(layer)]["train_accuracy"] == exact_accuracy
    finally:
        torch.set_num_threads(previous)


def test_probe_newton_blocks_match_one_block() -> None:
    """On CPU the Newton iteration runs one block of layers per torch thread (each block on its
    own Python thread); every layer must come out bit for bit as in one block of all layers."""
    stack = _stack(40, 30, 300, (0.2, 0.5, 0.9, 1.4, 2.0), seed=29)
    previous = torch.get_num_threads()
    try:
        for scaling in ("row_norm", "standardize"):
            settings = methods.MethodSettings(probe_scaling=scaling)
            torch.set_num_threads(1)
            one_vectors, one_info = _extract(stack, "probe", settings)
            torch.set_num_threads(2)
            two_vectors, two_info = _extract(stack, "probe", settings)
            assert torch.get_num_threads() == 2  # the one-thread pools are restored
            assert torch.equal(one_vectors, two_vectors)
            assert one_info == two_info
    finally:
        torch.set_num_threads(previous)


def test_probe_matches_todays_method_on_separable_data() -> None:
    """Against ``trait_interp.extraction.methods.probe`` itself (lbfgs at tol 1e-4): vectors and train accuracy."""
    stack = _stack(30, 30, 256, (0.5, 1.5), seed=5)
    for scaling in ("row_norm", "standardize"):
        settings = methods.MethodSettings(probe_scaling=scaling)
        vectors, info = _extract(stack, "probe", settings)
        for i, result in enumerate(_per_layer(stack, "probe", settings)):
            assert _cos(vectors[i], result.vector) >= 0.999
            assert info[str(stack.layers[i])] == result.info


def test_unknown_probe_scaling_raises() -> None:
    stack = _stack(10, 10, 16, (1.0,), seed=1, massive=False)
    with pytest.raises(ValueError, match="probe_scaling"):
        _extract(stack, "probe", methods.MethodSettings(probe_scaling="zscore"))


# --------------------------------------------------------------------------- mean_diff, pca, random_baseline


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("method", ("mean_diff", "random_baseline"))
def test_matches_per_layer_with_unequal_classes(method: str, dtype: torch.dtype) -> None:
    stack = _stack(30, 20, 128, (0.5, 1.0, 2.0), seed=3, dtype=dtype)
    settings = methods.MethodSettings(seed=4)
    vectors, info = _extract(stack, method, settings)
    for i, result in enumerate(_per_layer(stack, method, settings)):
        if method == "random_baseline":
            assert torch.equal(vectors[i], result.vector)
        else:
            torch.testing.assert_close(vectors[i], result.vector, rtol=0.0, atol=1e-5)
        assert info[str(stack.layers[i])] == result.info == {}


# n_pairs < hidden decomposes D D^T, n_pairs > hidden D^T D.
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("n_pairs", "hidden"), ((20, 256), (60, 32)))
def test_pca_matches_per_layer(n_pairs: int, hidden: int, dtype: torch.dtype) -> None:
    stack = _stack(n_pairs, n_pairs, hidden, (0.5, 1.0, 2.0), seed=7, dtype=dtype)
    vectors, info = _extract(stack, "pca", methods.MethodSettings())
    for i, result in enumerate(_per_layer(stack, "pca", methods.MethodSettings())):
        torch.testing.assert_close(vectors[i], result.vector, rtol=0.0, atol=1e-5)  # sign included
        ratio = info[str(stack.layers[i])]["explained_variance_ratio"]
        assert ratio == pytest.approx(result.info["explained_variance_ratio"], rel=1e-6)  # float32 Gram on CPU


def test_pca_sign_follows_class_labels() -> None:
    stack = _stack(20, 20, 64, (1.0, 2.0), seed=8)
    swapped = Stack(pos=stack.neg, neg=stack.pos, layers=stack.layers)
    assert torch.allclose(_extract(swapped, "pca", methods.MethodSettings())[0], -_extract(stack, "pca", methods.MethodSettings())[0], atol=1e-6)


def test_pca_requires_paired_examples() -> None:
    stack = _stack(20, 19, 64, (1.0,), seed=9)
    with pytest.raises(ValueError, match="paired"):
        _extract(stack, "pca", methods.MethodSettings())


def test_pca_all_zero_differences_raise() -> None:
    stack = _stack(10, 10, 32, (1.0, 1.0), seed=9)
    with pytest.raises(ValueError, match="all zero"):
        batched.extract_all_layers(stack.pos, stack.pos.clone(), "pca", methods.MethodSettings(), stack.layers)


# --------------------------------------------------------------------------- gradient


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_gradient_matches_per_layer(dtype: torch.dtype) -> None:
    """Same start, Adam steps and stopping rule as the per-layer loop, layer by layer.

    With ``gradient_max_steps=110`` the first layer is stationary after 106 steps and leaves
    the batch early, while the second (120 steps) is still stepping when the budget runs out,
    so both kinds of layer are exercised. (Two layers only: the per-layer loop is slow.)
    """
    stack = _stack(25, 15, 128, (0.5, 1.0), seed=12, dtype=dtype)
    settings = methods.MethodSettings(seed=2, gradient_max_steps=110)
    vectors, info = _extract(stack, "gradient", settings)
    results = _per_layer(stack, "gradient", settings)
    assert [result.info["converged"] for result in results] == [1.0, 0.0]  # both kinds of layer exercised
    for i, result in enumerate(results):
        layer_info = info[str(stack.layers[i])]
        assert _cos(vectors[i], result.vector) >= 0.999
        assert layer_info["steps"] == result.info["steps"]
        assert layer_info["converged"] == result.info["converged"]
        assert layer_info["final_separation"] == pytest.approx(result.info["final_separation"], rel=1e-5)
    # On CPU the batched loop repeats the per-layer float32 arithmetic exactly.
    assert torch.equal(vectors, torch.stack([result.vector for result in results]))


def _adam_run(pos: torch.Tensor, neg: torch.Tensor, settings: methods.MethodSettings, layer: int,
              steps: int, tail: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The gradient method's objective, start and optimiser, written out here and run for ``steps`` steps
    with no stopping rule: the direction it ends at and the mean of its last ``tail`` unit iterates."""
    gap = pos.mean(dim=0) - neg.mean(dim=0)
    w = torch.randn(gap.shape[0], generator=torch.Generator().manual_seed(settings.seed + layer)).requires_grad_(True)
    optimizer = torch.optim.Adam([w], lr=settings.gradient_lr)
    tail_sum = torch.zeros_like(gap)
    for step in range(steps):
        optimizer.zero_grad()
        norm = torch.linalg.vector_norm(w)
        (-(gap @ (w / norm)) + 0.01 * norm).backward()
        optimizer.step()
        if step >= steps - tail:
            tail_sum += w.detach() / torch.linalg.vector_norm(w.detach())
    return w.detach() / torch.linalg.vector_norm(w.detach()), tail_sum / tail


def test_gradient_stops_where_the_long_adam_run_ends_up() -> None:
    """The stationarity rule stops Adam within ~200 steps; the result is the direction that thousands of
    steps give (the rule of before, which at this width never stopped), and the objective's optimum, the
    class-mean gap.

    "Where thousands of steps end up" is the centre the long run oscillates about, the mean of its last
    1000 iterates, not its last iterate: with a fixed learning rate and the norm penalty shrinking ``||w||``,
    that last iterate wanders by about 1e-3 in cosine from one step count to the next and from one CPU's
    float rounding to another's (measured: 0.99876 to the stopped direction after 6000 steps on an AMD
    EPYC, 0.99897 after 3000 on an Intel Xeon, 0.99978 after 3000 on the AMD)."""
    stack = _stack(40, 40, 2048, (0.5, 1.0, 2.0), seed=21)
    settings = methods.MethodSettings()
    vectors, info = _extract(stack, "gradient", settings)
    long_run = methods.MethodSettings(gradient_tolerance=0.0, gradient_max_steps=3000)  # never stationary: all steps
    for i, layer in enumerate(stack.layers):
        assert info[str(layer)]["converged"] == 1.0 and info[str(layer)]["steps"] < 400
        result = methods.gradient(stack.pos[i], stack.neg[i], long_run, layer)
        assert result.info["steps"] == 3000
        last, centre = _adam_run(stack.pos[i], stack.neg[i], settings, layer, steps=3000, tail=1000)
        assert _cos(last, result.vector) >= 1 - 1e-6  # the run written out above is the method's own long run
        assert _cos(vectors[i], centre) >= 0.999
        gap = stack.pos[i].mean(dim=0) - stack.neg[i].mean(dim=0)
        assert _cos(vectors[i], gap) >= (1 - settings.gradient_tolerance**2) ** 0.5  # sin < tolerance


def test_gradient_in_several_cpu_blocks() -> None:
    """Wide layers and two torch threads: the CPU loop splits the layers into blocks (here
    one row each) run on worker threads with one-thread torch pools; each layer must still
    follow its per-layer trajectory exactly."""
    stack = _stack(6, 4, 12_000, (0.5, 1.0, 2.0), seed=17, massive=False)
    settings = methods.MethodSettings(gradient_max_steps=12)
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert len(batched._adam_blocks(len(stack.layers), 12_000, torch.device("cpu"))) == 3
        vectors, info = _extract(stack, "gradient", settings)
        assert torch.get_num_threads() == 2  # the one-thread pools are restored
        per_layer = _per_layer(stack, "gradient", settings)  # its final dot on as many threads as the batched one
    finally:
        torch.set_num_threads(previous)
    for i, result in enumerate(per_layer):
        assert torch.equal(vectors[i], result.vector)
        assert info[str(stack.layers[i])] == result.info


@pytest.mark.parametrize("max_steps", (0, 1, 2))
def test_gradient_tiny_step_budgets(max_steps: int) -> None:
    """No step at all (the start point is returned) and budgets shorter than the patience."""
    stack = _stack(6, 4, 16, (1.0, 2.0), seed=16, massive=False)
    settings = methods.MethodSettings(gradient_max_steps=max_steps)
    vectors, info = _extract(stack, "gradient", settings)
    for i, result in enumerate(_per_layer(stack, "gradient", settings)):
        assert torch.equal(vectors[i], result.vector)
        assert info[str(stack.layers[i])] == result.info


# --------------------------------------------------------------------------- contract


@pytest.mark.parametrize("dtype", (torch.float16, torch.bfloat16, torch.float64), ids=str)
@pytest.mark.parametrize("method", ALL_METHODS)
def test_output_contract(method: str, dtype: torch.dtype) -> None:
    stack = _stack(12, 12, 32, (1.0, 2.0), seed=14, dtype=dtype, massive=False)
    settings = methods.MethodSettings(gradient_max_steps=50)
    vectors, info = _extract(stack, method, settings)
    assert vectors.dtype == torch.float32 and vectors.device.type == "cpu"
    assert vectors.shape == (len(stack.layers), 32)
    torch.testing.assert_close(vectors.double().norm(dim=1), torch.ones(len(stack.layers), dtype=torch.float64), rtol=0, atol=1e-6)
    assert list(info) == [str(layer) for layer in stack.layers]
    expected_keys = set(_per_layer(stack, method, settings)[0].info)
    assert all(set(layer_info) == expected_keys for layer_info in info.values())
    # Every vector points from the negative towards the positive class (random_baseline excepted).
    if method != "random_baseline":
        gap = stack.pos.float().mean(dim=1) - stack.neg.float().mean(dim=1)  # [L, hidden]
        assert ((gap * vectors).sum(dim=1) > 0).all()


def test_unknown_method_lists_available_names() -> None:
    stack = _stack(4, 4, 8, (1.0,), seed=1, massive=False)
    with pytest.raises(ValueError) as excinfo:
        _extract(stack, "lda", methods.MethodSettings())
    message = str(excinfo.value)
    assert "unknown method 'lda'; available:" in message
    for name in ALL_METHODS:
        assert name in message


@pytest.mark.parametrize(
    ("pos_shape", "neg_shape", "n_layers", "match"),
    (
        ((6, 8), (6, 8), 1, "3-D"),
        ((1, 6, 8), (1, 6, 9), 1, "hidden size mismatch"),
        ((1, 0, 8), (1, 6, 8), 1, "at least one row"),
        ((2, 6, 8), (2, 6, 8), 3, "layer count mismatch"),
        ((2, 6, 8), (1, 6, 8), 2, "layer count mismatch"),
    ),
)
def test_bad_shapes_raise(pos_shape: tuple[int, ...], neg_shape: tuple[int, ...], n_layers: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        batched.extract_all_layers(
            torch.randn(pos_shape), torch.randn(neg_shape), "mean_diff", methods.MethodSettings(), tuple(range(n_layers))
        )


def test_degenerate_layer_is_named() -> None:
    stack = _stack(8, 8, 16, (1.0, 1.0), seed=2, massive=False)
    neg = stack.neg.clone()
    neg[1] = stack.pos[1]  # layer 3: identical classes, zero mean difference
    with pytest.raises(ValueError, match=r"mean_diff: direction has zero or non-finite norm \(layers \[3\]\)"):
        batched.extract_all_layers(stack.pos, neg, "mean_diff", methods.MethodSettings(), stack.layers)


def test_small_chunks_give_the_same_result() -> None:
    """Chunking over layers (to bound the float64 working copy) must not change any result."""
    stack = _stack(16, 16, 64, (0.5, 1.0, 2.0), seed=15)
    for method in ("probe", "pca", "mean_diff"):
        whole, whole_info = _extract(stack, method, methods.MethodSettings())
        chunked, chunked_info = batched.extract_all_layers(
            stack.pos, stack.neg, method, methods.MethodSettings(), stack.layers, chunk_bytes=1
        )
        torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-6)
        assert chunked_info == whole_info
