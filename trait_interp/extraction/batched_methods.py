"""Extraction methods over all layers at once, on the device the activations are on.

Batched counterparts of ``trait_interp.extraction.methods``: the same five methods, the same
objectives and settings, but one call handles every layer, so the per-layer Python loop
and the per-layer scikit-learn / Adam overhead are gone, and a GPU is used when the
activations live on one.

``extract_all_layers(pos [L, n_pos, hidden], neg [L, n_neg, hidden], method, settings,
layers)`` returns ``vectors [L, hidden]`` (float32, unit rows, on CPU, pointing from the
negative to the positive class) and ``{str(layer): info}`` with the same info keys as the
per-layer methods.

How each method is batched:

- ``mean_diff`` and ``gradient`` only need the class-mean gap per layer.
- ``pca`` takes the top eigenvector of the small side of the paired differences ``D``:
  the ``n x n`` Gram matrix ``D D^T`` when ``n <= hidden`` (then ``v = D^T u``), else
  ``D^T D``; one batched ``eigh`` per layer chunk.
- ``probe`` solves scikit-learn's L2, class-balanced, unpenalised-intercept logistic
  regression to convergence by damped Newton (float64 iteration), batched over layers. When
  ``n <= hidden`` it works in the n-dimensional span of the rows (representer theorem,
  ``w = X^T alpha``) through the Gram matrix ``K = X X^T``; otherwise in the primal.
- ``gradient`` runs the per-layer Adam loop on an ``[L, hidden]`` weight matrix: a layer that
  is stationary is taken out of the batch and stops updating.
- ``random_baseline`` draws exactly today's per-layer vectors.

On CPU, ``mean_diff``, ``gradient`` and ``random_baseline`` reproduce the per-layer methods
bit for bit (the gradient's float32 operations are the per-layer loop's, see
``_AdamState.step``); ``pca`` agrees to ~1e-7 (its n x n product is float32 on CPU). On a
GPU the reductions round differently, so a gradient layer can stop a step earlier or later.
The probe is the regularised optimum (to ~1e-7 relative on CPU, where its Gram matrix is
float32: 1 - cos ~1e-13), where today's lbfgs stops at ``tol=1e-4``, up to ~1e-3 away in
cosine at n = 200, hidden = 8192, so train accuracies can differ from today's at points
near the boundary. With ``row_norm`` scaling the probe's Gram matrix comes from the raw rows
(the scaling is diagonal), so the features are never copied.

Activations are upcast chunk by chunk of layers (working copies of about ``chunk_bytes``,
counted at 8 bytes per value), so a bf16 input never needs a full float64 copy in memory.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import threadpoolctl
import torch

from trait_interp.extraction.methods import MethodSettings

# The same constants as trait_interp.extraction.methods (kept here so this module stands on its own).
_NORM_EPS = 1e-8
_SD_FLOOR = 1e-6
_GRADIENT_NORM_PENALTY = 0.01
_PROBE_SCALINGS = ("row_norm", "standardize")

# torch.optim.Adam defaults, which the per-layer gradient method uses.
_ADAM_BETA1 = 0.9
_ADAM_BETA2 = 0.999
_ADAM_EPS = 1e-8

_CHUNK_BYTES = 256 * 2**20  # float64 working copy of activations per layer chunk
# CPU: pca's layer chunks, about a last-level cache, in one reused buffer: a fresh 256 MB difference
# per chunk costs more in first-touch page faults and memory traffic than the product itself
# (80 x 100 x 8192: difference + product 0.34 s in two large chunks, 0.18 s in chunks of 4 layers).
_PCA_CPU_CHUNK_BYTES = 32 * 2**20
_ADAM_CACHE_BYTES = 8 * 2**20  # CPU: Adam state per block, about a last-level cache
_ADAM_BYTES_PER_ELEMENT = 8 * 4  # eight float32 [rows, hidden] tensors in _AdamState

# Newton for the probe: stop when the Newton decrement says ||w - w*|| <= _NEWTON_RTOL * ||w||.
_NEWTON_RTOL = 1e-10
_ARMIJO = 1e-4
_CURVATURE_FLOOR = 1e-200  # floor on the loss curvature s_i p_i (1 - p_i) in the Newton system
_MAX_HALVINGS = 60


@dataclass(frozen=True)
class BatchResult:
    vectors: torch.Tensor  # [L, hidden] float32 unit rows (any device)
    info: dict[str, torch.Tensor]  # name -> [L] per-layer values


BatchedMethod = Callable[[torch.Tensor, torch.Tensor, MethodSettings, tuple[int, ...], int], BatchResult]
_T = TypeVar("_T")


# --------------------------------------------------------------------------- entry point


def extract_all_layers(
    pos: torch.Tensor,
    neg: torch.Tensor,
    method: str,
    settings: MethodSettings,
    layers: Sequence[int],
    *,
    chunk_bytes: int = _CHUNK_BYTES,
) -> tuple[torch.Tensor, dict[str, dict[str, float]]]:
    """One unit vector per layer: ``[L, hidden]`` float32 on CPU and ``{str(layer): train info}``.

    ``pos`` is ``[L, n_pos, hidden]`` and ``neg`` ``[L, n_neg, hidden]``, row ``i`` of
    both being layer ``layers[i]``; any float dtype, on any (one) device. Computation runs
    on that device: gradient and mean_diff in float32 as the per-layer methods, pca in
    float64, the probe's features and Gram matrix in float32 on CPU (float64 on a GPU) with a
    float64 Newton iteration.
    Raises ``ValueError`` for an unknown method, bad shapes, or a degenerate layer.
    """
    fn = _get_batched_method(method)
    layers = tuple(int(layer) for layer in layers)
    _validate(pos, neg, layers)
    result = fn(pos.detach(), neg.detach(), settings, layers, chunk_bytes)
    vectors = result.vectors.to("cpu", torch.float32)  # [L, hidden]
    info_cpu = {key: value.detach().to("cpu", torch.float64) for key, value in result.info.items()}  # key -> [L]
    info = {str(layer): {key: float(value[i]) for key, value in info_cpu.items()} for i, layer in enumerate(layers)}
    return vectors, info


def _get_batched_method(name: str) -> BatchedMethod:
    try:
        return BATCHED_METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method '{name}'; available: {', '.join(BATCHED_METHODS)}") from None


def _validate(pos: torch.Tensor, neg: torch.Tensor, layers: tuple[int, ...]) -> None:
    """The per-layer ``_prepare`` checks, lifted to ``[L, n, hidden]``, plus layer and device checks."""
    if pos.ndim != 3 or neg.ndim != 3:
        raise ValueError(
            f"pos and neg must be 3-D [layers, n, hidden]; got {tuple(pos.shape)} and {tuple(neg.shape)}"
        )
    if pos.shape[2] != neg.shape[2]:
        raise ValueError(f"hidden size mismatch: pos has {pos.shape[2]}, neg has {neg.shape[2]}")
    if pos.shape[1] == 0 or neg.shape[1] == 0:
        raise ValueError("pos and neg must each contain at least one row")
    if not (pos.shape[0] == neg.shape[0] == len(layers)):
        raise ValueError(
            f"layer count mismatch: pos has {pos.shape[0]}, neg has {neg.shape[0]}, layers has {len(layers)}"
        )
    if len(layers) == 0:
        raise ValueError("at least one layer is required")
    if pos.device != neg.device:
        raise ValueError(f"pos and neg must be on the same device; got {pos.device} and {neg.device}")


# --------------------------------------------------------------------------- helpers


def _layer_chunks(n_layers: int, bytes_per_layer: int, chunk_bytes: int) -> Iterator[slice]:
    """Consecutive layer slices whose working copies take about ``chunk_bytes`` (at least one layer each)."""
    size = max(1, chunk_bytes // max(1, bytes_per_layer))
    for start in range(0, n_layers, size):
        yield slice(start, min(start + size, n_layers))


def _unit_rows(vectors: torch.Tensor, what: str, layers: tuple[int, ...]) -> torch.Tensor:
    """Rows as float32 unit vectors (normalised in float64); a zero or non-finite row is an error."""
    v = vectors.detach().to(torch.float64)  # [L, hidden]
    norms = torch.linalg.vector_norm(v, dim=-1, keepdim=True)  # [L, 1]
    bad = (~torch.isfinite(norms) | (norms == 0)).squeeze(-1)  # [L]
    if bool(bad.any()):
        bad_layers = [layers[i] for i in torch.nonzero(bad).flatten().tolist()]
        raise ValueError(f"{what}: direction has zero or non-finite norm (layers {bad_layers})")
    return (v / norms).to(torch.float32)


def _class_mean_gap(pos: torch.Tensor, neg: torch.Tensor, chunk_bytes: int) -> torch.Tensor:
    """``mean(pos) - mean(neg)`` per layer in float32, as the per-layer methods compute it: ``[L, hidden]``."""
    n_layers, n_pos, hidden = pos.shape
    gap = torch.empty(n_layers, hidden, dtype=torch.float32, device=pos.device)  # [L, hidden]
    bytes_per_layer = 4 * hidden * max(n_pos, neg.shape[1])
    for chunk in _layer_chunks(n_layers, bytes_per_layer, chunk_bytes):
        gap[chunk] = pos[chunk].to(torch.float32).mean(dim=1) - neg[chunk].to(torch.float32).mean(dim=1)
    return gap


# --------------------------------------------------------------------------- mean_diff


def _mean_diff(
    pos: torch.Tensor, neg: torch.Tensor, settings: MethodSettings, layers: tuple[int, ...], chunk_bytes: int
) -> BatchResult:
    """Difference of class means, normalised."""
    gap = _class_mean_gap(pos, neg, chunk_bytes)  # [L, hidden]
    return BatchResult(vectors=_unit_rows(gap, "mean_diff", layers), info={})


# --------------------------------------------------------------------------- pca


def _pca(
    pos: torch.Tensor, neg: torch.Tensor, settings: MethodSettings, layers: tuple[int, ...], chunk_bytes: int
) -> BatchResult:
    """Top right-singular vector of the UNCENTERED paired differences ``D = pos - neg``, per layer.

    The squared singular values of ``D`` are the eigenvalues of ``D D^T`` (``n x n``) and of
    ``D^T D`` (``hidden x hidden``); the smaller one is decomposed. With ``D D^T u = s^2 u``
    the right-singular vector is ``D^T u / s``. The sign is fixed towards the positive class.
    """
    n_layers, n_pairs, hidden = pos.shape
    if n_pairs != neg.shape[1]:
        raise ValueError(f"pca needs paired examples (n_pos == n_neg); got n_pos={n_pairs}, n_neg={neg.shape[1]}")
    device = pos.device
    vectors = torch.empty(n_layers, hidden, dtype=torch.float64, device=device)  # [L, hidden]
    top = torch.empty(n_layers, dtype=torch.float64, device=device)  # [L] largest s^2
    energy = torch.empty(n_layers, dtype=torch.float64, device=device)  # [L] sum of s^2
    if device.type == "cpu":
        chunk_bytes = min(chunk_bytes, _PCA_CPU_CHUNK_BYTES)
    chunks = list(_layer_chunks(n_layers, 8 * n_pairs * hidden, chunk_bytes))
    # One float32 buffer for the differences, reused by every chunk (see _PCA_CPU_CHUNK_BYTES).
    buffer = torch.empty(chunks[0].stop - chunks[0].start, n_pairs, hidden, dtype=torch.float32, device=device)
    for chunk in chunks:
        # The difference in float32, as the per-layer method takes it.
        diffs = torch.sub(
            pos[chunk].to(torch.float32), neg[chunk].to(torch.float32), out=buffer[: chunk.stop - chunk.start]
        )  # [l, n, hidden]
        if n_pairs <= hidden:
            # The n x n product in the features' precision (float32 on CPU: nearly all the time;
            # the vector moves by ~1e-7), decomposed in float64.
            diffs = diffs.to(_feature_dtype(device))
            gram = (diffs @ diffs.mT).to(torch.float64)  # [l, n, n]
            eigenvalues, eigenvectors = torch.linalg.eigh(gram)  # ascending: [l, n], [l, n, n]
            top_u = eigenvectors[:, :, -1]  # [l, n]
            direction = (top_u.to(diffs.dtype).unsqueeze(1) @ diffs).squeeze(1).to(torch.float64)  # [l, hidden] = s_1 v_1
            # mean(pos) - mean(neg) along it: 1^T D D^T u / n = s_1^2 sum(u) / n, so its sign is sum(u)'s.
            separation = top_u.sum(dim=-1)  # [l]
        else:
            diffs = diffs.to(torch.float64)  # hidden < n: the hidden x hidden product is small
            gram = diffs.mT @ diffs  # [l, hidden, hidden]
            eigenvalues, eigenvectors = torch.linalg.eigh(gram)  # [l, hidden], [l, hidden, hidden]
            direction = eigenvectors[:, :, -1]  # [l, hidden]
            separation = (diffs.mean(dim=1) * direction).sum(dim=-1)  # [l]: mean(pos) - mean(neg) along it
        vectors[chunk] = torch.where(separation.unsqueeze(-1) < 0, -direction, direction)
        top[chunk] = eigenvalues[:, -1]
        energy[chunk] = torch.diagonal(gram, dim1=-2, dim2=-1).sum(dim=-1)  # trace = sum of s^2
    empty = energy == 0
    if bool(empty.any()):
        bad_layers = [layers[i] for i in torch.nonzero(empty).flatten().tolist()]
        raise ValueError(f"pca: paired differences are all zero (layers {bad_layers})")
    return BatchResult(vectors=_unit_rows(vectors, "pca", layers), info={"explained_variance_ratio": top / energy})


# --------------------------------------------------------------------------- probe


def _probe_features(x: torch.Tensor, scaling: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scale activations ``[l, n, hidden]`` (a working copy) in place as the per-layer probe does.

    Returns the features and, for ``standardize``, the per-dimension sd ``[l, hidden]`` that
    maps z-space coefficients back to activation space (``w = coef / sd``).
    """
    if scaling == "row_norm":
        x.div_(torch.linalg.vector_norm(x, dim=-1, keepdim=True) + _NORM_EPS)  # [l, n, hidden]
        return x, None
    x.sub_(x.mean(dim=1, keepdim=True))  # [l, n, hidden] centred
    sd = x.square().mean(dim=1, keepdim=True).sqrt_().clamp_min_(_SD_FLOOR)  # [l, 1, hidden]; population sd, as numpy
    x.div_(sd)  # [l, n, hidden]
    return x, sd.squeeze(1)


def _softplus(z: torch.Tensor) -> torch.Tensor:
    """``log(1 + exp(z))`` without overflow and without torch's linear cut-off above 20."""
    return z.clamp_min(0) + torch.log1p(torch.exp(-z.abs()))


@dataclass(frozen=True)
class _LogisticData:
    """Labels and balanced weights shared by every layer: ``s_i = n / (2 n_class(i))``."""

    sign: torch.Tensor  # [n] +1 for pos, -1 for neg
    weight: torch.Tensor  # [n]
    inv_c: float  # 1 / C


def _logistic_data(n_pos: int, n_neg: int, c: float, device: torch.device) -> _LogisticData:
    n = n_pos + n_neg
    sign = torch.cat([torch.ones(n_pos, dtype=torch.float64), -torch.ones(n_neg, dtype=torch.float64)])  # [n]
    weight = torch.cat(
        [torch.full((n_pos,), n / (2 * n_pos), dtype=torch.float64), torch.full((n_neg,), n / (2 * n_neg), dtype=torch.float64)]
    )  # [n]; scikit-learn's class_weight="balanced"
    return _LogisticData(sign=sign.to(device), weight=weight.to(device), inv_c=1.0 / c)


def _objective_change(
    margins: torch.Tensor, d_margins: torch.Tensor, t: torch.Tensor, q1: torch.Tensor, q2: torch.Tensor, data: _LogisticData
) -> torch.Tensor:
    """Change of ``sum_i s_i log(1 + exp(-y_i m_i)) + ||w||^2 / (2C)`` from step length 0 to ``t``: ``[a]``.

    (scikit-learn's lbfgs minimises this objective divided by ``sum_i s_i``: the same optimum.)
    Computed as a sum of per-point changes, ``log1p(sigmoid(z) expm1(dz))`` for small ``dz``,
    so it stays accurate when the change is far below the rounding of the objective itself;
    otherwise the line search stalls near the optimum.
    """
    z = -data.sign * margins  # [a, n]
    dz = -data.sign * (t.unsqueeze(-1) * d_margins)  # [a, n]
    near = torch.log1p(torch.sigmoid(z) * torch.expm1(dz.clamp(max=1.0)))
    far = _softplus(z + dz) - _softplus(z)
    loss_change = torch.where(dz.abs() < 1.0, near, far)  # [a, n]
    return (data.weight * loss_change).sum(dim=-1) + 0.5 * data.inv_c * (2 * t * q1 + t * t * q2)


def _loss_derivatives(margins: torch.Tensor, data: _LogisticData) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted first and second derivatives of the loss with respect to the margins: ``[l, n]`` each."""
    p_wrong = torch.sigmoid(-data.sign * margins)  # [l, n] probability given to the wrong class
    first = -data.weight * data.sign * p_wrong
    second = data.weight * p_wrong * torch.sigmoid(data.sign * margins)
    return first, second


def _cholesky(matrix: torch.Tensor, what: str) -> torch.Tensor:
    """Batched Cholesky factor of symmetric positive definite ``[a, k, k]`` matrices.

    Where rounding leaves a matrix not numerically positive definite, a growing multiple of
    its mean diagonal is added (a positive definite Hessian substitute still gives a
    descent direction and leaves the optimum unchanged). Cholesky rather than LU: batched
    LU on CPU is unreliable once ``torch.set_num_threads`` > 1 has been called (MKL
    ``DLASWP`` errors and wrong results, pytorch/pytorch#142815).
    """
    factor, info = torch.linalg.cholesky_ex(matrix)
    scale = matrix.diagonal(dim1=-2, dim2=-1).mean(dim=-1).abs().clamp_min(1e-300)  # [a]
    jitter = 1e-14
    while bool((info > 0).any()):
        if jitter > 1e-2:
            raise ValueError(f"{what}: Newton system is not positive definite")
        failed = info > 0  # [a]
        repaired = matrix[failed] + (jitter * scale[failed])[:, None, None] * torch.eye(
            matrix.shape[-1], dtype=matrix.dtype, device=matrix.device
        )
        factor_failed, info_failed = torch.linalg.cholesky_ex(repaired)
        factor[failed], info[failed] = factor_failed, info_failed
        jitter *= 100
    return factor


def _dual_newton_direction(
    gram: torch.Tensor, alpha: torch.Tensor, first: torch.Tensor, second: torch.Tensor, data: _LogisticData
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Newton step for ``w = X^T alpha`` and the intercept, in the span of the rows.

    The w-space Newton system ``(X^T S X + I/C) dw + X^T S 1 db = -(X^T r + w/C)``,
    ``1^T S X dw + 1^T S 1 db = -1^T r`` (``S`` = diag(second), ``r`` = first) with
    ``dw = X^T d_alpha`` reduces by the push-through identity to
    ``(S K + I/C) d_alpha + S 1 db = -(r + alpha/C)`` and ``1^T S K d_alpha + 1^T S 1 db = -1^T r``
    (``K = X X^T``). Dividing the first by ``S``, and subtracting the sum of the first from
    the second, gives the symmetric bordered system
    ``(K + D) d_alpha + 1 db = h``, ``1^T d_alpha = -1^T alpha``
    with ``D = 1 / (C S)``, ``h = -(r + alpha/C) / S``, solved by one Cholesky factorisation
    of ``K + D`` and the Schur complement for ``db``. ``S`` is floored so that saturated
    points (``S`` ~ 0) keep ``D`` finite; that only changes the step, not the optimum.
    Returns ``d_alpha [a, n]``, ``d_b [a]`` and ``K d_alpha [a, n]``.
    """
    curvature = second.clamp_min(_CURVATURE_FLOOR)  # [a, n]
    system = gram.clone()  # [a, n, n]
    system.diagonal(dim1=-2, dim2=-1).add_(data.inv_c / curvature)  # K + D, the same values as K + diag(D)
    factor = _cholesky(system, "probe")
    rhs = torch.stack([-(first + data.inv_c * alpha) / curvature, torch.ones_like(alpha)], dim=-1)  # [a, n, 2]
    p, q = torch.cholesky_solve(rhs, factor).unbind(dim=-1)  # [a, n] each: (K + D)^-1 h, (K + D)^-1 1
    d_b = (p.sum(dim=-1) + alpha.sum(dim=-1)) / q.sum(dim=-1)  # [a]
    d_alpha = p - q * d_b.unsqueeze(-1)  # [a, n]
    return d_alpha, d_b, (gram @ d_alpha.unsqueeze(-1)).squeeze(-1)


def _primal_newton_direction(
    features: torch.Tensor, w: torch.Tensor, first: torch.Tensor, second: torch.Tensor, data: _LogisticData
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Newton step on ``(w, b)`` directly (``hidden < n``). Returns ``d_w [a, hidden]``, ``d_b [a]``, ``X d_w [a, n]``."""
    n_layers, n, hidden = features.shape
    ones = torch.ones(n_layers, n, 1, dtype=torch.float64, device=features.device)
    design = torch.cat([features, ones], dim=-1)  # [a, n, hidden+1]
    curvature = second.clamp_min(_CURVATURE_FLOOR)  # [a, n]
    hessian = design.mT @ (curvature.unsqueeze(-1) * design)  # [a, hidden+1, hidden+1]
    hessian[:, :hidden, :hidden].diagonal(dim1=-2, dim2=-1).add_(data.inv_c)
    gradient = (first.unsqueeze(1) @ design).squeeze(1)  # [a, hidden+1]: r^T [X 1]
    gradient[:, :hidden] += data.inv_c * w
    step = torch.cholesky_solve(-gradient.unsqueeze(-1), _cholesky(hessian, "probe")).squeeze(-1)  # [a, hidden+1]
    d_w, d_b = step[:, :hidden], step[:, hidden]
    return d_w, d_b, (features @ d_w.unsqueeze(-1)).squeeze(-1)


def _feature_dtype(device: torch.device) -> torch.dtype:
    """Precision of the probe's features and Gram matrix.

    float32 on CPU: the Gram product is nearly all of the probe's time at n << hidden and
    float32 halves it (and the feature pass); the optimum then moves by ~1e-7 relative
    (1 - cos ~1e-13 against float64). The Newton iteration itself is float64. float64 on a
    GPU, where it is cheap and a TF32 matmul setting cannot reach it.
    """
    return torch.float32 if device.type == "cpu" else torch.float64


def _newton(
    data: _LogisticData,
    max_iter: int,
    layers: tuple[int, ...],
    *,
    gram: torch.Tensor | None = None,
    features: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The regularised optimum per layer by damped Newton, from ``gram [l, n, n]`` or ``features [l, n, hidden]``.

    With ``gram`` the parameter is ``alpha`` (``w = X^T alpha``); with ``features`` (float64)
    it is ``w`` itself. Both share the line search: along a step, margins move linearly
    (``m + t dm``) and ``||w||^2`` is a quadratic ``q0 + 2 t q1 + t^2 q2``, so each trial
    step costs O(n) per layer. Converged layers drop out of the batch.
    Returns ``alpha [l, n]`` or ``w [l, hidden]``, and the intercepts ``[l]`` (float64).
    """
    if (gram is None) == (features is None):
        raise ValueError("_newton needs exactly one of gram and features")
    source = gram if gram is not None else features
    n_layers = source.shape[0]
    if source.device.type != "cpu":
        return _newton_loop(data, max_iter, layers, gram=gram, features=features)
    # CPU: the layers in one contiguous block per torch thread, each block on its own Python thread
    # with one-thread LAPACK (_map_blocks). Every operation is row-wise or per matrix, so a layer's
    # iterates do not depend on which block it is in.
    size = -(-n_layers // max(1, min(torch.get_num_threads(), n_layers)))
    blocks = [slice(begin, min(begin + size, n_layers)) for begin in range(0, n_layers, size)]

    def solve(block: slice) -> tuple[torch.Tensor, torch.Tensor]:
        return _newton_loop(
            data,
            max_iter,
            layers[block],
            gram=None if gram is None else gram[block],
            features=None if features is None else features[block],
        )

    results = _map_blocks(solve, blocks, source.device)
    return torch.cat([params for params, _ in results]), torch.cat([intercept for _, intercept in results])


@contextlib.contextmanager
def _one_cpu_thread() -> Iterator[None]:
    """Torch's and the BLAS libraries' thread pools at one thread, restored afterwards.

    A batched factorisation of many small matrices (the probe's ``[L, n+1, n+1]`` Newton
    systems) is 4-7x faster on one thread here: with two, each small LAPACK call is split
    again (measured: 80 Cholesky factorisations of 200 x 200, 0.14 s on 2 threads, 0.021 s on one).
    """
    with threadpoolctl.threadpool_limits(1):
        yield


def _newton_loop(
    data: _LogisticData,
    max_iter: int,
    layers: tuple[int, ...],
    *,
    gram: torch.Tensor | None,
    features: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``_newton``'s iteration (same arguments)."""
    dual = gram is not None
    source = gram if gram is not None else features
    n_layers, n = source.shape[0], source.shape[1]
    size = n if dual else source.shape[2]
    params = torch.zeros(n_layers, size, dtype=torch.float64, device=source.device)  # alpha or w
    intercept = torch.zeros(n_layers, dtype=torch.float64, device=source.device)  # [l]
    linear = torch.zeros(n_layers, n, dtype=torch.float64, device=source.device)  # [l, n]: K alpha or X w
    active = torch.arange(n_layers, device=source.device)  # rows still iterating
    for _ in range(max_iter):
        if active.numel() == 0:
            break
        p, b, lin = params[active], intercept[active], linear[active]
        margins = lin + b.unsqueeze(-1)  # [a, n]
        first, second = _loss_derivatives(margins, data)
        # while every layer iterates, the source itself rather than an indexed copy of it
        active_source = source if active.numel() == n_layers else source[active]
        if dual:
            d_p, d_b, d_lin = _dual_newton_direction(active_source, p, first, second, data)
        else:
            d_p, d_b, d_lin = _primal_newton_direction(active_source, p, first, second, data)
        d_margins = d_lin + d_b.unsqueeze(-1)  # [a, n]
        # ||w||^2 along the step: dual w = X^T alpha gives alpha^T K alpha etc.
        q0 = (p * lin).sum(-1) if dual else (p * p).sum(-1)  # [a]
        q1 = (p * d_lin).sum(-1) if dual else (p * d_p).sum(-1)
        q2 = (d_p * d_lin).sum(-1) if dual else (d_p * d_p).sum(-1)
        slope = (first * d_margins).sum(-1) + data.inv_c * q1  # [a] directional derivative along the step
        # Newton decrement^2 = step' H step = sum_i S_i dm_i^2 + ||dw||^2 / C (no cancellation), and
        # ||dw||^2 <= C * decrement^2 since H >= I / C in w-space.
        decrement = (second * d_margins**2).sum(-1) + data.inv_c * q2  # [a]
        done = decrement / data.inv_c <= (_NEWTON_RTOL**2) * q0.clamp_min(1e-300)
        t = _armijo_steps(margins, d_margins, q1, q2, slope, data, accept=done)  # [a]
        stalled = (t == 0) & ~done
        params[active] = p + t.unsqueeze(-1) * d_p
        intercept[active] = b + t * d_b
        linear[active] = lin + t.unsqueeze(-1) * d_lin
        finished = done | stalled
        if bool(stalled.any()):
            stalled_layers = [layers[i] for i in active[stalled].tolist()]
            warnings.warn(f"probe: line search stalled before convergence at layers {stalled_layers}", stacklevel=3)
        active = active[~finished]
    else:
        if active.numel() > 0:
            warnings.warn(
                f"probe: Newton did not converge in {max_iter} iterations at layers {[layers[i] for i in active.tolist()]}",
                stacklevel=3,
            )
    return params, intercept


def _armijo_steps(
    margins: torch.Tensor,
    d_margins: torch.Tensor,
    q1: torch.Tensor,
    q2: torch.Tensor,
    slope: torch.Tensor,
    data: _LogisticData,
    accept: torch.Tensor,
) -> torch.Tensor:
    """Backtracking step lengths ``[a]`` (1, 1/2, ...) meeting the Armijo condition; 0 where none does.

    Rows in ``accept`` (converged: the step is below the tolerance) take the full step.
    """
    t = torch.ones_like(slope)
    settled = accept.clone()
    for _ in range(_MAX_HALVINGS):
        settled |= _objective_change(margins, d_margins, t, q1, q2, data) <= _ARMIJO * t * slope
        if bool(settled.all()):
            return t
        t = torch.where(settled, t, 0.5 * t)
    return torch.where(settled, t, torch.zeros_like(t))


def _chunk_features(
    pos: torch.Tensor, neg: torch.Tensor, chunk: slice, scaling: str
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The probe's features of one layer chunk, ``[l, n_pos + n_neg, hidden]``, and the sd for ``standardize``."""
    x = torch.cat([pos[chunk], neg[chunk]], dim=1).to(_feature_dtype(pos.device))  # [l, n, hidden]
    return _probe_features(x, scaling)


def _row_normalised_gram(pos: torch.Tensor, neg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gram matrix of the row-normalised ``[pos; neg]`` rows, ``[l, n, n]``, and the row norms ``[l, n]`` (float64).

    From three products of the raw rows (pos pos^T, pos neg^T, neg neg^T: the fourth block is
    a transpose), a quarter fewer multiplications than one product of the stacked features.
    The norms are ``||x|| + 1e-8``, as the per-layer probe divides by.
    """
    x_pos, x_neg = pos.to(_feature_dtype(pos.device)), neg.to(_feature_dtype(pos.device))  # [l, n_pos | n_neg, hidden]
    n_pos = x_pos.shape[1]
    norms = torch.cat([torch.linalg.vector_norm(x, dim=-1) for x in (x_pos, x_neg)], dim=1).to(torch.float64) + _NORM_EPS
    gram = torch.empty(x_pos.shape[0], norms.shape[1], norms.shape[1], dtype=torch.float64, device=pos.device)
    cross = (x_pos @ x_neg.mT).to(torch.float64)  # [l, n_pos, n_neg]
    gram[:, :n_pos, :n_pos] = x_pos @ x_pos.mT
    gram[:, :n_pos, n_pos:] = cross
    gram[:, n_pos:, :n_pos] = cross.mT
    gram[:, n_pos:, n_pos:] = x_neg @ x_neg.mT
    gram /= norms.unsqueeze(-1) * norms.unsqueeze(-2)
    return gram, norms


def _probe(
    pos: torch.Tensor, neg: torch.Tensor, settings: MethodSettings, layers: tuple[int, ...], chunk_bytes: int
) -> BatchResult:
    """L2 logistic-regression probe (balanced class weights) per layer; the direction is its weight vector.

    Same problem, scalings and back-mapping as ``trait_interp.methods.probe`` (see there for
    why ``standardize`` exists), solved to convergence instead of lbfgs's ``tol``.
    With ``n <= hidden``: one pass over the layer chunks for the Gram matrices, one Newton
    iteration over all layers together (few, larger ops; on CPU one block of layers per core,
    each on one thread), one more pass for ``w = X^T alpha`` (with ``row_norm`` straight from the raw rows; with ``standardize``
    each chunk's features are rebuilt, cheaper than keeping them all).
    """
    if settings.probe_scaling not in _PROBE_SCALINGS:
        raise ValueError(f"unknown probe_scaling '{settings.probe_scaling}'; available: {', '.join(_PROBE_SCALINGS)}")
    n_layers, n_pos, hidden = pos.shape
    n = n_pos + neg.shape[1]
    data = _logistic_data(n_pos, neg.shape[1], settings.probe_c, pos.device)
    vectors = torch.empty(n_layers, hidden, dtype=torch.float64, device=pos.device)  # [L, hidden]
    accuracy = torch.empty(n_layers, dtype=torch.float64, device=pos.device)  # [L]
    chunks = list(_layer_chunks(n_layers, 8 * n * hidden, chunk_bytes))

    def finish(chunk: slice, w: torch.Tensor, features: torch.Tensor, sd: torch.Tensor | None, b: torch.Tensor) -> None:
        margins = (features @ w.to(features.dtype).unsqueeze(-1)).squeeze(-1).to(torch.float64) + b.unsqueeze(-1)  # [l, n]
        # scikit-learn predicts the positive class where the decision function is > 0.
        accuracy[chunk] = ((margins > 0) == (data.sign > 0)).to(torch.float64).mean(dim=-1)
        vectors[chunk] = w if sd is None else w / sd  # [l, hidden]

    if n <= hidden and settings.probe_scaling == "row_norm":
        # Row scaling is diagonal, so the features' Gram matrix is the raw one scaled by the row
        # norms, and w = X~^T alpha = P^T (alpha_p / r_p) + N^T (alpha_n / r_n): no feature copy.
        gram = torch.empty(n_layers, n, n, dtype=torch.float64, device=pos.device)  # [L, n, n]
        row_norms = torch.empty(n_layers, n, dtype=torch.float64, device=pos.device)  # [L, n]
        for chunk in _layer_chunks(n_layers, 4 * n * hidden, chunk_bytes):
            gram[chunk], row_norms[chunk] = _row_normalised_gram(pos[chunk], neg[chunk])
        alpha, intercept = _newton(data, settings.probe_max_iter, layers, gram=gram)  # [L, n], [L]
        margins = (gram @ alpha.unsqueeze(-1)).squeeze(-1) + intercept.unsqueeze(-1)  # [L, n]
        # scikit-learn predicts the positive class where the decision function is > 0.
        accuracy = ((margins > 0) == (data.sign > 0)).to(torch.float64).mean(dim=-1)
        scaled = (alpha / row_norms).to(_feature_dtype(pos.device))  # [L, n]
        for chunk in _layer_chunks(n_layers, 4 * n * hidden, chunk_bytes):
            x_pos, x_neg = (x[chunk].to(_feature_dtype(pos.device)) for x in (pos, neg))
            w = (scaled[chunk, None, :n_pos] @ x_pos).squeeze(1) + (scaled[chunk, None, n_pos:] @ x_neg).squeeze(1)
            vectors[chunk] = w.to(torch.float64)  # [l, hidden]
    elif n <= hidden:
        gram = torch.empty(n_layers, n, n, dtype=torch.float64, device=pos.device)  # [L, n, n]
        for chunk in chunks:
            features, _ = _chunk_features(pos, neg, chunk, settings.probe_scaling)
            gram[chunk] = features @ features.mT
        alpha, intercept = _newton(data, settings.probe_max_iter, layers, gram=gram)  # [L, n], [L]
        for chunk in chunks:
            features, sd = _chunk_features(pos, neg, chunk, settings.probe_scaling)
            w = (alpha[chunk].to(features.dtype).unsqueeze(1) @ features).squeeze(1).to(torch.float64)  # alpha^T X
            finish(chunk, w, features, sd, intercept[chunk])
    else:
        for chunk in chunks:
            features, sd = _chunk_features(pos, neg, chunk, settings.probe_scaling)
            features = features.to(torch.float64)  # the primal Hessian is hidden x hidden: small
            w, intercept = _newton(data, settings.probe_max_iter, layers[chunk], features=features)
            finish(chunk, w, features, sd, intercept)
    return BatchResult(vectors=_unit_rows(vectors, "probe", layers), info={"train_accuracy": accuracy})


# --------------------------------------------------------------------------- gradient


def _gradient(
    pos: torch.Tensor, neg: torch.Tensor, settings: MethodSettings, layers: tuple[int, ...], chunk_bytes: int
) -> BatchResult:
    """Adam on ``-(mean(pos @ w_hat) - mean(neg @ w_hat)) + 0.01 ||w||`` per layer, until stationary.

    The objective, start point (``N(0, I)`` from a CPU generator seeded ``seed + layer``),
    Adam settings and stopping rule are those of ``trait_interp.methods.gradient``. All
    layers step together; a layer leaves the batch (and stops updating) once the sine of
    the angle between ``w`` and its class-mean gap is below ``gradient_tolerance``.
    info: ``steps``, ``converged`` (1.0/0.0), ``final_separation``.
    """
    gap = _class_mean_gap(pos, neg, chunk_bytes)  # [L, hidden] float32
    hidden = gap.shape[1]
    start = torch.stack(
        [torch.randn(hidden, generator=torch.Generator().manual_seed(settings.seed + layer), dtype=torch.float32) for layer in layers]
    ).to(gap.device)  # [L, hidden], drawn on CPU as the per-layer method does
    n_layers = len(layers)
    final = torch.empty_like(start)  # [L, hidden]
    steps = torch.zeros(n_layers, dtype=torch.float64)
    converged = torch.zeros(n_layers, dtype=torch.float64)
    blocks = _adam_blocks(n_layers, hidden, gap.device)
    results = _map_blocks(lambda rows: _adam_to_convergence(gap[rows], start[rows], settings), blocks, gap.device)
    for rows, (block_final, block_steps, block_converged) in zip(blocks, results):
        final[rows], steps[rows], converged[rows] = block_final, block_steps, block_converged
    vectors = _unit_rows(final, "gradient", layers)  # [L, hidden]
    # One 1-D dot per layer, as the per-layer method reports it (a batched sum rounds differently).
    separation = torch.stack([gap[i] @ vectors[i] for i in range(n_layers)])  # [L]
    return BatchResult(vectors=vectors, info={"steps": steps, "converged": converged, "final_separation": separation})


def _adam_blocks(n_layers: int, hidden: int, device: torch.device) -> list[slice]:
    """Layer blocks that step together.

    On a GPU one block of all layers (the loop is launch-bound). On CPU the blocks run on
    one Python thread per torch thread with torch's own pool at one thread (``_map_blocks``),
    two blocks per thread so that a block whose layers need many more steps than the rest
    leaves the others to finish, each block at most about a last-level cache. Hundreds of
    steps of ~15 ops each make per-op overheads the bottleneck: multi-threaded ops wait at
    OpenMP barriers (on a busy machine for a descheduled thread), and blocks of a few rows
    pay the Python dispatch. Measured, 80 layers x 200 steps x 8192 at load ~2.5: 3-row
    blocks with inline ops 1.42 s, 20-row blocks on one-thread pools 0.74 s.
    """
    if device.type != "cpu":
        size = n_layers
    else:
        cache_rows = max(1, _ADAM_CACHE_BYTES // (_ADAM_BYTES_PER_ELEMENT * hidden))
        size = max(1, min(cache_rows, -(-n_layers // (2 * torch.get_num_threads()))))
    return [slice(begin, min(begin + size, n_layers)) for begin in range(0, n_layers, size)]


def _map_blocks(fn: Callable[[slice], _T], blocks: list[slice], device: torch.device) -> list[_T]:
    """``fn`` over the blocks; on CPU spread over ``torch.get_num_threads()`` Python threads.

    Each thread's ops run inline (torch's and the BLAS pools at one thread for the duration)
    and torch releases the GIL inside them, so the threads use the cores without barriers.
    """
    if device.type != "cpu":
        return [fn(block) for block in blocks]
    workers = min(torch.get_num_threads(), len(blocks))
    with _one_cpu_thread():
        if workers <= 1:
            return [fn(block) for block in blocks]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(fn, blocks))


@dataclass
class _AdamState:
    """Adam state of the active rows plus preallocated work buffers (all ``[a, hidden]`` unless noted)."""

    w: torch.Tensor
    gap: torch.Tensor  # g, the class-mean gap
    neg_gap: torch.Tensor  # -g: the gradient's first term is (-g) / s
    gap_norm: torch.Tensor  # [a] ||g|| (float64)
    exp_avg: torch.Tensor
    exp_avg_sq: torch.Tensor
    norm: torch.Tensor  # [a, 1]
    unit: torch.Tensor
    work: torch.Tensor
    grad: torch.Tensor

    @classmethod
    def start(cls, gap: torch.Tensor, w: torch.Tensor) -> _AdamState:
        return cls._with_buffers(
            w=w.clone(),
            gap=gap,
            neg_gap=-gap,
            gap_norm=torch.linalg.vector_norm(gap, dim=-1).to(torch.float64),
            exp_avg=torch.zeros_like(w),
            exp_avg_sq=torch.zeros_like(w),
        )

    @classmethod
    def _with_buffers(cls, **tensors: torch.Tensor) -> _AdamState:
        w = tensors["w"]
        tensors.setdefault("norm", torch.empty(w.shape[0], 1, dtype=w.dtype, device=w.device))
        tensors.setdefault("unit", torch.empty_like(w))
        return cls(**tensors, work=torch.empty_like(w), grad=torch.empty_like(w))

    def keep(self, rows: torch.Tensor) -> _AdamState:
        """The state restricted to ``rows`` (a boolean mask over the active rows), ``sine``'s
        ``norm`` and ``unit`` of this ``w`` included (row-wise: the rows' own values)."""
        names = ("w", "gap", "neg_gap", "gap_norm", "exp_avg", "exp_avg_sq", "norm", "unit")
        return _AdamState._with_buffers(**{name: getattr(self, name)[rows] for name in names})

    def sine(self) -> torch.Tensor:
        """``sin`` of the angle between each row's ``w`` and its gap, ``[a]`` float64 (0 where the gap is 0).

        Leaves ``norm`` (``||w||``) and ``unit`` (``w / ||w||``) set for the next ``step``.
        """
        torch.linalg.vector_norm(self.w, dim=-1, keepdim=True, out=self.norm)  # [a, 1] s
        torch.div(self.w, self.norm, out=self.unit)  # w / s
        along = torch.mul(self.gap, self.unit, out=self.work).sum(dim=-1).to(torch.float64)  # [a] g . w_hat
        cosine = torch.where(self.gap_norm > 0, along / self.gap_norm.clamp_min(1e-300), torch.ones_like(along))
        return (1.0 - cosine * cosine).clamp_min(0.0).sqrt()

    def step(self, step: int, lr: float) -> None:
        """One Adam step on every active row (``sine`` must have set ``norm`` and ``unit`` for this ``w``).

        Every float32 operation is the one the per-layer loop performs (autograd's gradient of
        ``-(g . w / s) + 0.01 s``, then torch's single-tensor Adam), in buffers reused across steps.
        """
        w, norm, unit, work, grad = self.w, self.norm, self.unit, self.work, self.grad
        # sum(g * ((w / s) / s)), as minus the sum of (-g) * ((w / s) / s): negation is exact.
        torch.div(unit, norm, out=work).mul_(self.neg_gap)
        inner = -work.sum(dim=-1, keepdim=True)  # [a, 1]
        torch.div(self.neg_gap, norm, out=grad)  # (-g) / s
        grad.add_(torch.mul(unit, inner + _GRADIENT_NORM_PENALTY, out=work))  # + (w / s) * (0.01 + inner)

        self.exp_avg.lerp_(grad, 1 - _ADAM_BETA1)
        self.exp_avg_sq.mul_(_ADAM_BETA2).addcmul_(grad, grad, value=1 - _ADAM_BETA2)
        step_size = lr / (1 - _ADAM_BETA1**step)
        denom = torch.sqrt(self.exp_avg_sq, out=work).div_((1 - _ADAM_BETA2**step) ** 0.5).add_(_ADAM_EPS)
        w.addcdiv_(self.exp_avg, denom, value=-step_size)


def _adam_to_convergence(
    gap: torch.Tensor, start: torch.Tensor, settings: MethodSettings
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batched ``torch.optim.Adam`` from ``start [b, hidden]``, float32 op for op as the per-layer loop.

    The loss gradient is written exactly as autograd evaluates it for the per-layer loss
    ``-(g . w / s) + 0.01 s`` (``s = ||w||``): ``(-g) / s + (w / s) * (0.01 + sum(g * ((w / s) / s)))``,
    and the Adam update is torch's single-tensor formula. Row-wise norms and sums over the
    last dimension give the same bits as torch's 1-D reductions on CPU, so on CPU every
    layer follows the per-layer trajectory bit for bit. The stationarity test may differ
    from the per-layer 1-D dot in its last bits, which matters only for a layer whose sine
    lands within rounding of the tolerance.
    Returns the final ``w [b, hidden]``, ``steps [b]`` and ``converged [b]`` (float64, CPU).
    """
    n_rows = gap.shape[0]
    final = start.clone()
    steps = torch.zeros(n_rows, dtype=torch.float64)
    converged = torch.zeros(n_rows, dtype=torch.float64)

    state = _AdamState.start(gap, start)
    rows = torch.arange(n_rows)  # [a] original row of each active row (CPU)
    for step in range(0, settings.gradient_max_steps + 1):
        stationary = state.sine() < settings.gradient_tolerance  # [a]
        stop = stationary if step < settings.gradient_max_steps else torch.ones_like(stationary)
        if bool(stop.any()):
            stop_cpu = stop.cpu()
            done_rows = rows[stop_cpu]
            final[done_rows.to(state.w.device)] = state.w[stop]
            steps[done_rows] = float(step)
            converged[done_rows] = stationary[stop].to("cpu", torch.float64)
            if bool(stop_cpu.all()):
                break
            state = state.keep(~stop)
            rows = rows[~stop_cpu]
        state.step(step + 1, settings.gradient_lr)
    return final, steps, converged


# --------------------------------------------------------------------------- random_baseline


def _random_baseline(
    pos: torch.Tensor, neg: torch.Tensor, settings: MethodSettings, layers: tuple[int, ...], chunk_bytes: int
) -> BatchResult:
    """Seeded random unit vectors (seed * 1000 + layer), bit-identical to the per-layer method."""
    hidden = pos.shape[2]
    rows = []
    for layer in layers:
        generator = torch.Generator().manual_seed(settings.seed * 1000 + layer)
        draw = torch.randn(hidden, generator=generator, dtype=torch.float32).to(torch.float64)  # [hidden]
        rows.append((draw / torch.linalg.vector_norm(draw)).to(torch.float32))  # 1-D norm, as the per-layer method
    return BatchResult(vectors=torch.stack(rows), info={})


BATCHED_METHODS: dict[str, BatchedMethod] = {
    "probe": _probe,
    "mean_diff": _mean_diff,
    "gradient": _gradient,
    "pca": _pca,
    "random_baseline": _random_baseline,
}
