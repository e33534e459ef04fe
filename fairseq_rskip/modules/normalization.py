"""The normalisations over the hidden (last) dimension: one small class each,
chosen once by name (``--norm-type``, ``--stack-norm-type``) from :data:`NORMS`.

With ``N(x) = (x - mu) / sigma`` over the last dimension:

=============  =================================================================
``layernorm``  ``LN(x) = g * N(x) + b`` (learned gain ``g`` and bias ``b``);
               fairseq's ``LayerNorm``, same parameter names ``weight``/``bias``
``simple``     LayerNorm-simple (Xu et al. 2019): ``N(x)``, no gain, no bias
``adanorm``    AdaNorm (Xu et al. 2019): ``z = C * (1 - k * y) * y`` with
               ``y = (x - mu) / (sigma + eps)``, ``sigma`` the *unbiased* standard
               deviation, and the factor ``C * (1 - k * y)`` detached (a constant
               in the backward pass); ``mu`` and ``sigma`` are not detached
``rmsnorm``    RMSNorm (Zhang & Sennrich 2019): ``g * x / RMS(x)``, no centring
``dyt``        Dynamic Tanh (Zhu et al. 2025): ``g * tanh(alpha * x) + b``, one
               scalar ``alpha``
``none``       identity (a plain skip connection without normalisation)
=============  =================================================================

A new normalisation is one subclass of :class:`Normalization` (its parameters
and :meth:`~Normalization.normalize`) and its entry in :data:`NORMS`; its name
goes into ``NORM_TYPES`` of :mod:`fairseq_rskip.config`, which a test holds
equal to :data:`NORMS`. Every placement takes it: the sublayer norms
(:class:`~fairseq_rskip.modules.residual_norm.ResidualNorm`), rSkip's
recursions and the stacks' own norms (:func:`build_norm`).
"""

from typing import Dict, List, Optional, Type

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fairseq_rskip.config import SkipNormConfig
from fairseq_rskip.modules.norm_functions import AdaNormFunction, RMSNormFunction


class Normalization(nn.Module):
    """A normalisation of ``dim`` features over the last dimension.

    ``before_attention``: the norm's output is an attention's input (the
    self- and cross-attention sublayers of a Pre-LN layer), for norms whose
    initialisation depends on it (DyT).
    """

    norm_type = ""
    # F.layer_norm computes it: rSkip's recursions over such norms run as one
    # fused, recomputed function (RecursiveLayerNormFunction)
    layer_norm_based = False

    def __init__(self, dim: int, config: SkipNormConfig, before_attention: bool = False,
                 eps: float = 1e-5):
        if type(self) is Normalization:
            raise TypeError("Normalization is the base of the norms: build one with build_norm")
        super().__init__()
        self.normalized_shape: List[int] = [dim]
        self.eps = eps

    def normalize(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return self.normalize(x)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape[0]}, norm_type={self.norm_type}, eps={self.eps}"


class LayerNorm(Normalization):
    """``g * N(x) + b``: exactly ``torch.nn.LayerNorm(dim)``, what fairseq's
    ``LayerNorm`` builds on CPU (the same parameters and ``F.layer_norm`` call)."""

    norm_type = "layernorm"
    layer_norm_based = True

    def __init__(self, dim: int, config: SkipNormConfig, before_attention: bool = False,
                 eps: float = 1e-5):
        super().__init__(dim, config, before_attention, eps)
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def normalize(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)


class SimpleLayerNorm(Normalization):
    """LayerNorm-simple: ``N(x)``, no gain and no bias."""

    norm_type = "simple"
    layer_norm_based = True

    def __init__(self, dim: int, config: SkipNormConfig, before_attention: bool = False,
                 eps: float = 1e-5):
        super().__init__(dim, config, before_attention, eps)
        self.register_parameter("weight", None)
        self.register_parameter("bias", None)

    def normalize(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.normalized_shape, None, None, self.eps)


def _adanorm_reference(x: Tensor, scale: float, k: float, eps: float) -> Tensor:
    """The formula under autograd: TorchScript's path, and the definition that
    :class:`~fairseq_rskip.modules.norm_functions.AdaNormFunction` computes faster."""
    h = x.to(torch.promote_types(x.dtype, torch.float32)).contiguous()
    centred = h - h.mean(dim=-1, keepdim=True)
    sigma = (centred.pow(2).sum(dim=-1, keepdim=True) / (h.size(-1) - 1)).sqrt()
    y = centred / (sigma + eps)
    z = torch.addcmul(y, y.detach(), y, value=-k)
    if scale != 1.0:
        z = z * scale
    return z.type_as(x)


@torch.jit.unused
def _adanorm_function(x: Tensor, scale: float, k: float, eps: float) -> Tensor:
    return AdaNormFunction.apply(x, scale, k, eps)


def adanorm(x: Tensor, scale: float, k: float, eps: float) -> Tensor:
    """AdaNorm: ``C * (1 - k * y).detach() * y``, ``y = (x - mu) / (sigma + eps)``.

    Computed in at least float32 (and cast back) so that half-precision
    training keeps an accurate standard deviation; the output is contiguous,
    like LayerNorm's, even for fairseq's transposed encoder input (else the
    next linear layer would copy it and keep the copy for backward). Outside
    TorchScript this is :class:`AdaNormFunction`, which saves half the
    activations that autograd would and runs backward about 4x faster on CPU.
    """
    if torch.jit.is_scripting():
        return _adanorm_reference(x, scale, k, eps)
    return _adanorm_function(x, scale, k, eps)


class AdaNorm(Normalization):
    """AdaNorm with ``C = --adanorm-scale`` and ``k = --adanorm-k``; no parameters."""

    norm_type = "adanorm"

    def __init__(self, dim: int, config: SkipNormConfig, before_attention: bool = False,
                 eps: float = 1e-5):
        super().__init__(dim, config, before_attention, eps)
        self.adanorm_scale = float(config.adanorm_scale)
        self.adanorm_k = float(config.adanorm_k)

    def normalize(self, x: Tensor) -> Tensor:
        return adanorm(x, self.adanorm_scale, self.adanorm_k, self.eps)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", scale={self.adanorm_scale}, k={self.adanorm_k}"


@torch.jit.unused
def _rms_norm_eager(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    if (
        x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64)
        and torch.is_grad_enabled()
        and (x.requires_grad or weight.requires_grad)
        and not torch.is_autocast_enabled("cpu")
    ):
        return RMSNormFunction.apply(x, weight, eps)
    return F.rms_norm(x, [x.size(-1)], weight, eps)


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """``F.rms_norm`` over the last dimension; where autograd would run its
    composite backward (CPU, float32 or float64, gradients wanted, outside
    autocast and TorchScript) :class:`RMSNormFunction`: the same values, LayerNorm's
    saved tensors and backward kernel."""
    if torch.jit.is_scripting():
        return F.rms_norm(x, [x.size(-1)], weight, eps)
    return _rms_norm_eager(x, weight, eps)


class RMSNorm(Normalization):
    """RMSNorm: ``g * x / RMS(x)``, ``g = 1`` at start, over the first ``m`` features
    (``m = floor(p * d)`` with ``--rmsnorm-partial p``, else ``m = d``):

    - ``--rmsnorm-eps-placement inside``: ``RMS(x) = sqrt(mean(x_1..m^2) + 1e-5)``,
      torch's fused ``F.rms_norm`` (as ``torch.nn.RMSNorm``) where ``m = d`` and
      the input and gain share a dtype (:func:`rms_norm`: on CPU with LayerNorm's
      backward);
    - ``outside``: ``RMS(x) = sqrt(mean(x_1..m^2)) + 1e-8``, the authors'
      (bzhangGo/rmsnorm, ``rmsnorm_torch.py``).

    Outside the fused call the statistics are taken in at least float32 and the
    output has the input's dtype, as AdaNorm's.
    """

    norm_type = "rmsnorm"

    def __init__(self, dim: int, config: SkipNormConfig, before_attention: bool = False,
                 eps: float = 1e-5):
        self.eps_inside = config.rmsnorm_eps_placement == "inside"
        super().__init__(dim, config, before_attention, eps if self.eps_inside else 1e-8)
        partial = config.rmsnorm_partial
        self.features: int = dim if partial is None else max(1, int(partial * dim))
        self.weight = nn.Parameter(torch.ones(dim))

    def normalize(self, x: Tensor) -> Tensor:
        whole = self.features == self.normalized_shape[0]
        if self.eps_inside and whole and x.dtype == self.weight.dtype:
            return rms_norm(x, self.weight, self.eps)
        h = x.to(torch.promote_types(x.dtype, torch.float32))
        part = h if whole else h[..., : self.features]
        mean_square = part.pow(2).mean(dim=-1, keepdim=True)
        if self.eps_inside:
            rms = (mean_square + self.eps).sqrt()
        else:
            rms = mean_square.sqrt() + self.eps
        return (h / rms * self.weight).to(x.dtype)

    def extra_repr(self) -> str:
        placement = "inside" if self.eps_inside else "outside"
        return super().extra_repr() + f", eps_placement={placement}, features={self.features}"


class DynamicTanh(Normalization):
    """DyT: ``g * tanh(alpha * x) + b``, one trainable scalar ``alpha`` (at start
    ``--dyt-alpha-init``, or ``--dyt-attention-alpha-init`` before an attention),
    ``g = 1`` and ``b = 0`` (jiachenzhu/DyT, ``dynamic_tanh.py``); computed in at
    least float32, the output in the input's dtype."""

    norm_type = "dyt"

    def __init__(self, dim: int, config: SkipNormConfig, before_attention: bool = False,
                 eps: float = 1e-5):
        super().__init__(dim, config, before_attention, eps)
        alpha = config.dyt_alpha_init
        if before_attention and config.dyt_attention_alpha_init is not None:
            alpha = config.dyt_attention_alpha_init
        self.alpha = nn.Parameter(torch.full((1,), float(alpha)))
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def normalize(self, x: Tensor) -> Tensor:
        # in at least float32, cast back: in half precision the gradient of the
        # one scalar alpha, a sum over every element, loses ~10 % in bfloat16
        h = x.to(torch.promote_types(x.dtype, torch.float32))
        return torch.addcmul(self.bias, torch.tanh(self.alpha * h), self.weight).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape[0]}, norm_type={self.norm_type}, alpha={self.alpha.item():g}"


class Identity(Normalization):
    """No normalisation: ``x``."""

    norm_type = "none"

    def normalize(self, x: Tensor) -> Tensor:
        return x


NORMS: Dict[str, Type[Normalization]] = {
    cls.norm_type: cls
    for cls in (LayerNorm, SimpleLayerNorm, AdaNorm, RMSNorm, DynamicTanh, Identity)
}


def build_norm(
    dim: int, config: SkipNormConfig, norm_type: Optional[str] = None, before_attention: bool = False
) -> Normalization:
    """The normalisation ``norm_type`` (default ``config.norm_type``) of ``dim`` features."""
    norm_type = config.norm_type if norm_type is None else norm_type
    if norm_type not in NORMS:  # users' values are validated by SkipNormConfig
        raise ValueError(f"unknown norm type {norm_type!r}; one of {tuple(NORMS)}")
    return NORMS[norm_type](dim, config, before_attention)
