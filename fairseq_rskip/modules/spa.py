"""Signal-preserving attention (E-SPA, U-SPA): the attention matrices, pure functions.

He, Martens, Zhang, Botev, Brock, Smith, Teh, "Deep Transformers without
Shortcuts", ICLR 2023 (arXiv 2302.10322), Section 4.

**Target kernels.** For the tokens ``i, j`` of one sequence and layer
``l = 0 .. L``, both kernels are set by one number ``rho_l``, the correlation
of neighbouring tokens, with ``rho_0 = 0`` (``Sigma_0 = I``)::

    exponential (E-SPA)  Sigma_l[i, j] = rho_l ** |i - j|,   rho_l = exp(-gamma_l)
    uniform (U-SPA)      Sigma_l[i, j] = rho_l (i != j),      1 (i == j)

Schedules (:func:`correlation_schedule`), from the final value of a flag:
E-SPA ``1 - rho_l**2 = (1 - rho_L**2) ** (l / L)`` with ``rho_L =
exp(-gamma_L)`` (a public re-implementation's schedule, ``gamma_L = 0.005``;
the paper's is unconfirmed); U-SPA ``1 - rho_l = (1 - rho_L) ** (l / L)`` (ours,
by analogy).

**Attention matrices.** With ``L_l`` a square root of ``Sigma_l``
(``L_l L_l^T = Sigma_l``), ``A_l = L_l L_{l-1}^{-1}`` gives ``A_l .. A_1 =
L_L``, so a stack whose layer ``l`` mixes tokens by ``A_l`` (and keeps the
kernel otherwise) has kernel ``Sigma_l`` after layer ``l``. Causal attention
(decoder): ``L_l`` is the Cholesky factor and ``A_l`` is lower triangular;
E-SPA's has a closed form, computed in log space (entries reach 1e-29 at 64
tokens). Bidirectional attention (encoder, the paper's Section 4 remark on
non-causal attention): ``L_l`` is the symmetric square root, and ``A_l``
depends on the sequence length. A softmax is row-stochastic, so ``A_l =
D_l P_l`` with ``D_l = diag(A_l 1)`` and the fixed attention bias ``B_l =
log P_l`` (:func:`bias_and_log_scale`): with zero queries, ``D_l
softmax(B_l) = A_l``.

Every matrix is computed in float64; the functions are TorchScript-compatible.
"""

import math
from functools import lru_cache
from typing import List, Tuple

import torch
from torch import Tensor

KERNELS = ("exponential", "uniform")


def correlation_schedule(kernel: str, final: float, depth: int) -> List[float]:
    """``[rho_0, .., rho_L]`` for ``L = depth`` layers: ``rho_0 = 0`` rising to
    ``rho_L`` (E-SPA: ``final`` is ``gamma_L`` and ``rho_L = exp(-gamma_L)``;
    U-SPA: ``final`` is ``rho_L``)."""
    if kernel == "exponential":
        innovation = -math.expm1(-2.0 * final)  # 1 - rho_L^2
        return [math.sqrt(-math.expm1(l / depth * math.log(innovation))) for l in range(depth + 1)]
    if kernel == "uniform":
        independent = 1.0 - final  # 1 - rho_L
        return [1.0 - independent ** (l / depth) for l in range(depth + 1)]
    raise ValueError(f"unknown SPA kernel {kernel!r}; one of {KERNELS}")


def kernel_matrix(kernel: str, rho: float, n: int) -> Tensor:
    """``Sigma`` (``n x n``, float64) of the kernel with neighbour correlation ``rho``."""
    i = torch.arange(n, dtype=torch.float64)
    if kernel == "exponential":
        distance = (i.unsqueeze(1) - i.unsqueeze(0)).abs()
        return torch.pow(torch.full_like(distance, rho), distance)  # 0 ** 0 = 1
    eye = torch.eye(n, dtype=torch.float64)
    return eye * (1.0 - rho) + rho


def _log_exponential_causal(rho: float, rho_prev: float, n: int) -> Tensor:
    """``log A_l`` of causal E-SPA in closed form.

    With ``s = sqrt(1 - rho^2)``, the Cholesky factor of ``Sigma`` is ``L[i, 0]
    = rho^i``, ``L[i, j] = s rho^(i-j)`` (``1 <= j <= i``), and ``L^{-1}`` is
    bidiagonal (``1/s`` on the diagonal, ``-rho/s`` below it, ``L^{-1}[0, 0] =
    1``). So, with primes for layer ``l - 1``::

        A[0, 0] = 1,   A[i, i] = s / s'                                  (i >= 1)
        A[i, j] = (s / s') rho^(i-j-1) (rho - rho')                      (1 <= j < i)
        A[i, 0] = rho^(i-1) (rho - rho' s / s')                          (i >= 1)

    all non-negative when ``rho >= rho'``; zero above the diagonal.
    """
    s = math.sqrt(1.0 - rho * rho)
    s_prev = math.sqrt(1.0 - rho_prev * rho_prev)
    log_rho = math.log(rho)
    log_ratio = math.log(s / s_prev)
    i = torch.arange(n, dtype=torch.float64).unsqueeze(1)
    j = torch.arange(n, dtype=torch.float64).unsqueeze(0)
    below = log_ratio + (i - j - 1.0) * log_rho + math.log(rho - rho_prev)
    first_column = (i - 1.0) * log_rho + math.log(rho - rho_prev * s / s_prev)
    log_a = torch.where(j == 0, first_column, below)
    log_a = torch.where(i == j, torch.full_like(log_a, log_ratio), log_a)
    log_a = torch.where(j > i, torch.full_like(log_a, -math.inf), log_a)
    log_a[0, 0] = 0.0
    return log_a


def _uniform_cholesky_columns(rho: float, n: int) -> Tuple[List[float], List[float]]:
    """``(d, c)``: the Cholesky factor of the uniform kernel is ``L[j, j] = d_j``,
    ``L[i, j] = c_j`` for ``i > j``, with ``d_j = sqrt((1 - rho)(1 + j rho) / (1 +
    (j - 1) rho))`` and ``c_j = rho sqrt(1 - rho) / sqrt((1 + (j - 1) rho)(1 + j rho))``."""
    d: List[float] = []
    c: List[float] = []
    for j in range(n):
        before, now = 1.0 + (j - 1) * rho, 1.0 + j * rho
        d.append(math.sqrt((1.0 - rho) * now / before))
        c.append(rho * math.sqrt(1.0 - rho) / math.sqrt(before * now))
    return d, c


def _log_uniform_causal(rho: float, rho_prev: float, n: int) -> Tensor:
    """``log A_l`` of causal U-SPA in closed form.

    ``L^{-1}`` of the uniform kernel whitens by innovations: row ``j`` is
    ``(x_j - b_j sum_{k<j} x_k) / d_j`` with ``b_j = rho / (1 + (j - 1) rho)``
    (``b_0 = 0``). So, with primes for layer ``l - 1`` and ``P_m = sum_{j=1..m}
    c_j b'_j / d'_j``::

        A[i, i] = d_i / d'_i
        A[i, k] = c_k / d'_k - (P_{i-1} - P_k) - d_i b'_i / d'_i      (k < i)

    Built from Python floats and element-wise float64 operations only, so that a
    length's numbers never depend on anything else (no LAPACK).
    """
    d, c = _uniform_cholesky_columns(rho, n)
    d_prev, _ = _uniform_cholesky_columns(rho_prev, n)
    b_prev = [0.0] + [rho_prev / (1.0 + (j - 1) * rho_prev) for j in range(1, n)]
    prefix: List[float] = [0.0]
    total = 0.0
    for j in range(1, n):
        total += c[j] * b_prev[j] / d_prev[j]
        prefix.append(total)
    column = torch.tensor([c[k] / d_prev[k] + prefix[k] for k in range(n)], dtype=torch.float64)
    row = torch.tensor([prefix[i - 1] + d[i] * b_prev[i] / d_prev[i] if i > 0 else 0.0 for i in range(n)],
                       dtype=torch.float64)
    a = column.unsqueeze(0) - row.unsqueeze(1)
    a = torch.where(torch.ones(n, n, dtype=torch.bool).tril(-1), a, torch.zeros_like(a))
    a = a + torch.diag(torch.tensor([d[i] / d_prev[i] for i in range(n)], dtype=torch.float64))
    return torch.where(a > 0, a, torch.zeros_like(a)).log()


def _log_uniform_bidirectional(rho: float, rho_prev: float, n: int) -> Tensor:
    """``log A_l`` of bidirectional U-SPA in closed form: uniform kernels share
    their eigenvectors (``1`` and its complement), so ``A_l = a I + c 11^T`` with
    ``a = sqrt((1 - rho) / (1 - rho'))`` and ``a + n c = sqrt((1 - rho + n rho) /
    (1 - rho' + n rho'))``; ``c >= 0`` when ``rho >= rho'``. (An eigendecomposition
    would pick one of many bases of the repeated eigenvalue, and its round-off
    with it.)"""
    a = math.sqrt((1.0 - rho) / (1.0 - rho_prev))
    c = (math.sqrt((1.0 - rho + n * rho) / (1.0 - rho_prev + n * rho_prev)) - a) / n
    log_c = math.log(c) if c > 0 else -math.inf
    log_a = torch.full((n, n), log_c, dtype=torch.float64)
    return log_a.fill_diagonal_(math.log(a + c))


def _symmetric_roots(sigma: Tensor) -> Tuple[Tensor, Tensor]:
    """``(Sigma^(1/2), Sigma^(-1/2))`` from one eigendecomposition."""
    eigenvalues, vectors = torch.linalg.eigh(sigma)
    root = (vectors * eigenvalues.sqrt().unsqueeze(0)) @ vectors.t()
    inverse = (vectors * eigenvalues.rsqrt().unsqueeze(0)) @ vectors.t()
    return root, inverse


@torch.jit.unused
@lru_cache(maxsize=4)
def _kept_symmetric_roots(kernel: str, rho: float, n: int) -> Tuple[Tensor, Tensor]:
    """:func:`_symmetric_roots` of a kernel, kept: layer ``l`` needs ``Sigma_l``'s
    inverse root, layer ``l + 1`` its root (callers must not modify them)."""
    return _symmetric_roots(kernel_matrix(kernel, rho, n))


def _symmetric_sqrt(kernel: str, rho: float, n: int, inverse: bool) -> Tensor:
    if torch.jit.is_scripting():
        return _symmetric_roots(kernel_matrix(kernel, rho, n))[int(inverse)]
    return _kept_symmetric_roots(kernel, rho, n)[int(inverse)]


def attention_matrix(kernel: str, rho: float, rho_prev: float, n: int, causal: bool) -> Tensor:
    """``A_l = L_l L_{l-1}^{-1}`` (``n x n``, float64) by the general construction:
    Cholesky factors (``causal``) or symmetric square roots. Not clamped."""
    if causal:
        # A L_{l-1} = L_l, solved from the right
        return torch.linalg.solve_triangular(
            torch.linalg.cholesky(kernel_matrix(kernel, rho_prev, n)),
            torch.linalg.cholesky(kernel_matrix(kernel, rho, n)),
            upper=False,
            left=False,
        )
    return _symmetric_sqrt(kernel, rho, n, False) @ _symmetric_sqrt(kernel, rho_prev, n, True)


def round_off_floor(n: int) -> float:
    """Entries of a bidirectional ``A_l`` below this (relative to its largest
    entry) are float64 round-off of the eigendecomposition, ``n * eps``."""
    return n * 2.220446049250313e-16


def log_attention_matrix(kernel: str, rho: float, rho_prev: float, n: int, causal: bool) -> Tensor:
    """``log A_l`` (``n x n``, float64; ``-inf`` above the diagonal when ``causal``).

    Causal E-SPA and U-SPA, bidirectional U-SPA: closed forms (E-SPA's exact in
    log space), which give exact zeros above the diagonal. Bidirectional E-SPA:
    symmetric square roots (LAPACK's eigendecomposition); their entries below ``round_off_floor(n)`` times the largest
    one, the tiny negative ones among them, are round-off (the exact ``A_l`` is
    non-negative; the tests check this at depths up to 48) and are raised to
    that floor, which keeps the bias finite.
    """
    if causal and kernel == "exponential":
        return _log_exponential_causal(rho, rho_prev, n)
    if kernel == "uniform":
        if causal:
            return _log_uniform_causal(rho, rho_prev, n)
        return _log_uniform_bidirectional(rho, rho_prev, n)
    a = attention_matrix(kernel, rho, rho_prev, n, causal)
    floor = round_off_floor(n) * float(a.max())
    return a.clamp(min=floor).log()


def bias_and_log_scale(log_a: Tensor) -> Tuple[Tensor, Tensor]:
    """``(B, log d)`` with ``A = diag(d) softmax(B)``: ``d = A 1`` (row sums),
    ``B = log A - log d`` (rows of ``exp(B)`` sum to one)."""
    log_d = torch.logsumexp(log_a, dim=-1)
    return log_a - log_d.unsqueeze(-1), log_d
