"""Tailored Activation Transformation (TAT) for leaky ReLUs, and the initialisation
it assumes.

Zhang, Botev and Martens, "Deep Learning without Shortcuts: Shaping the Kernel
with Tailored Rectifiers", ICLR 2022 (arXiv 2203.08120); DeepMind's ``dks``
library (``dks/base/activation_transform.py``) is the reference. The leaky
ReLU ``phi(x) = sqrt(2 / (1 + a^2)) * leaky_relu(x, a)`` keeps ``q = E[x^2]``
and has the local C map :func:`leaky_relu_cmap`; the slope ``a`` is the one
for which the composed C map of the network's nonlinearities sends 0 to
``eta`` (``C_f(0) = eta``; dks's default ``eta`` is 0.9). Weights are scaled
uniform orthogonal (dks's ``scaled_uniform_orthogonal``), biases zero.
"""

import logging
import math
from functools import lru_cache
from typing import Optional, Tuple

import torch.nn.functional as F
from torch import Tensor, nn

logger = logging.getLogger(__name__)

# The default of --tat-eta, where the network has enough nonlinearities to reach it.
DEFAULT_TAT_ETA = 0.9


def leaky_relu_cmap(c: float, negative_slope: float) -> float:
    """The local C map of the leaky ReLU with slope ``a`` (TAT, Zhang et al. 2022,
    for inputs of unit q): ``C(c) = c + (1 - a)^2 / (pi (1 + a^2)) (sqrt(1 - c^2)
    - c arccos c)``."""
    a = negative_slope
    c = min(1.0, max(-1.0, c))
    return c + (1 - a) ** 2 / (math.pi * (1 + a * a)) * (math.sqrt(1 - c * c) - c * math.acos(c))


def composed_cmap_at_zero(negative_slope: float, nonlinearities: int) -> float:
    """``C_f(0)`` of ``nonlinearities`` leaky ReLUs composed."""
    c = 0.0
    for _ in range(nonlinearities):
        c = leaky_relu_cmap(c, negative_slope)
    return c


@lru_cache(maxsize=None)
def relu_reach(nonlinearities: int) -> float:
    """The largest ``C_f(0)`` that ``nonlinearities`` leaky ReLUs reach: ReLU's
    (slope 0, the most nonlinear). An ``eta`` above it is out of reach."""
    return composed_cmap_at_zero(0.0, nonlinearities)


@lru_cache(maxsize=None)
def tat_negative_slope(nonlinearities: int, eta: float) -> float:
    """The leaky ReLU slope ``a`` in [0, 1] with ``C_f(0) = eta``, ``f`` the
    composition of ``nonlinearities`` leaky ReLUs, by bisection (``C_f(0)``
    falls from its ReLU value at ``a = 0`` to 0 at ``a = 1``).

    Raises ``ValueError`` when even ReLU (``a = 0``) stays below ``eta``."""
    reachable = relu_reach(nonlinearities)
    if reachable < eta:
        raise ValueError(
            f"C_f(0) = {eta} is out of reach of {nonlinearities} leaky ReLUs: the most "
            f"nonlinear (ReLU) gives {reachable:.4f}"
        )
    low, high = 0.0, 1.0
    for _ in range(100):
        middle = 0.5 * (low + high)
        if composed_cmap_at_zero(middle, nonlinearities) > eta:
            low = middle
        else:
            high = middle
    return 0.5 * (low + high)


def tat_nonlinearities(tat_depth: str, encoder_layers: int, decoder_layers: int) -> Tuple[int, int]:
    """How many feed-forward nonlinearities TAT composes for the encoder's and
    the decoder's slope: ``whole-network``, the deepest path (encoder layers,
    then cross-attention into the decoder's layers) for both, as DKS/TAT bound
    ``C_f(0)`` over all subnetworks ``f``; ``per-stack``, each stack alone."""
    if tat_depth == "per-stack":
        return encoder_layers, decoder_layers
    return encoder_layers + decoder_layers, encoder_layers + decoder_layers


def tat_slope(eta: Optional[float], nonlinearities: int) -> float:
    """The TAT slope for ``--tat-eta`` (checked reachable), or for its default:
    ``DEFAULT_TAT_ETA`` where reachable, else ReLU (slope 0), the most
    nonlinear leaky ReLU."""
    if eta is None:
        if relu_reach(nonlinearities) < DEFAULT_TAT_ETA:
            return 0.0
        eta = DEFAULT_TAT_ETA
    return tat_negative_slope(nonlinearities, eta)


def check_tat_reach(tat_eta: Optional[float], tat_depth: str, tat_fallback: str,
                    encoder_layers: int, decoder_layers: int) -> None:
    """Where ``tat_eta`` is out of reach of the network's nonlinearities (even ReLU's
    composed C map stays below it): an explicit ``--tat-eta`` is refused; the default
    one falls back to ReLU, logged (``--tat-fallback relu``), or is refused (``error``)."""
    counts = tat_nonlinearities(tat_depth, encoder_layers, decoder_layers)
    nonlinearities = min(counts)
    reachable = relu_reach(nonlinearities)
    eta = DEFAULT_TAT_ETA if tat_eta is None else tat_eta
    if reachable >= eta:
        return
    where = f"{nonlinearities} feed-forward nonlinearities (--tat-depth {tat_depth})"
    if tat_eta is not None or tat_fallback == "error":
        raise ValueError(
            f"--tat-eta {eta} is out of reach of {where}: even ReLU gives C_f(0) = "
            f"{reachable:.4f}; use --tat-eta <= {math.floor(reachable * 1e4) / 1e4} or more layers"
            + ("" if tat_eta is not None else " (or --tat-fallback relu to use ReLU)")
        )
    short = [(side, n, relu_reach(n)) for side, n in zip(("encoder", "decoder"), counts)]
    reached = ", ".join(f"{side}: {n} nonlinearities, C_f(0) = {c:.4f}" for side, n, c in short if c < eta)
    logger.warning(
        f"TAT: C_f(0) = {eta} (the default --tat-eta) is out of reach; using ReLU, the "
        f"leaky ReLU closest to it ({reached}; --tat-depth {tat_depth}); "
        "--tat-fallback error refuses instead"
    )


def tat_output_scale(negative_slope: float) -> float:
    """``sqrt(2 / (1 + a^2))``: keeps ``E[phi(x)^2] = 1`` for ``x ~ N(0, 1)``."""
    return math.sqrt(2.0 / (1.0 + negative_slope * negative_slope))


class TATLeakyReLU(nn.Module):
    """``sqrt(2 / (1 + a^2)) * leaky_relu(x, a)``: TAT's transformed leaky ReLU."""

    def __init__(self, negative_slope: float):
        super().__init__()
        self.negative_slope = float(negative_slope)
        self.output_scale = tat_output_scale(self.negative_slope)

    def forward(self, x: Tensor) -> Tensor:
        # leaky_relu keeps its input for backward, so its output can be scaled in place
        return F.leaky_relu(x, self.negative_slope).mul_(self.output_scale)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope:.6g}, output_scale={self.output_scale:.6g}"


def scaled_orthogonal_(linear: nn.Linear) -> None:
    """A linear layer's weight random orthogonal, scaled by ``max(1, sqrt(out /
    in))`` so that it keeps ``q = ||x||^2 / dim`` (exactly when it widens, in
    expectation when it narrows); its bias zero."""
    out_features, in_features = linear.weight.shape
    nn.init.orthogonal_(linear.weight, gain=max(1.0, math.sqrt(out_features / in_features)))
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)
