"""Normalisations over the hidden (last) dimension, selected by name.

``N(x) = (x - mu) / sigma`` over the last dimension, then:

=============  =================================================================
``layernorm``  ``LN(x) = g * N(x) + b`` (learned gain ``g`` and bias ``b``);
               fairseq's ``LayerNorm``, same parameter names ``weight``/``bias``
``simple``     LayerNorm-simple (Xu et al. 2019): ``N(x)``, no gain, no bias
``adanorm``    AdaNorm (Xu et al. 2019): ``z = C * (1 - k * y) * y`` with
               ``y = (x - mu) / (sigma + eps)``, ``sigma`` the *unbiased* standard
               deviation, and the factor ``C * (1 - k * y)`` detached (a constant
               in the backward pass); ``mu`` and ``sigma`` are not detached
``none``       identity (a plain skip connection without normalisation)
=============  =================================================================
"""

from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fairseq_rskip.config import NORM_TYPES, SkipNormConfig
from fairseq_rskip.modules.norm_functions import AdaNormFunction

# the norms F.layer_norm computes (with or without gain and bias): rSkip's
# recursions over them run as one fused, recomputed function
# (:class:`~fairseq_rskip.modules.norm_functions.RecursiveLayerNormFunction`)
LAYER_NORM_TYPES = ("layernorm", "simple")


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


class Normalization(nn.Module):
    """One normalisation of ``dim`` features, of the type ``config.norm_type``
    (or ``norm_type``, where a stack uses another type), with the config's
    AdaNorm constants.

    With ``layernorm`` this is exactly ``torch.nn.LayerNorm(dim)`` (what
    fairseq's ``LayerNorm`` builds on CPU): the same ``weight`` and ``bias``
    parameters and the same ``F.layer_norm`` call.
    """

    def __init__(
        self, dim: int, config: SkipNormConfig, norm_type: Optional[str] = None, eps: float = 1e-5
    ):
        super().__init__()
        norm_type = config.norm_type if norm_type is None else norm_type
        if norm_type not in NORM_TYPES:  # users' values are validated by SkipNormConfig
            raise ValueError(f"unknown norm type {norm_type!r}; one of {NORM_TYPES}")
        self.norm_type: str = norm_type
        self.layer_norm_based: bool = norm_type in LAYER_NORM_TYPES
        self.normalized_shape: List[int] = [dim]
        self.eps = eps
        self.adanorm_scale = float(config.adanorm_scale)
        self.adanorm_k = float(config.adanorm_k)
        if norm_type == "layernorm":
            self.weight = nn.Parameter(torch.ones(dim))
            self.bias = nn.Parameter(torch.zeros(dim))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def normalize(self, x: Tensor) -> Tensor:
        if self.layer_norm_based:
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        if self.norm_type == "adanorm":
            return adanorm(x, self.adanorm_scale, self.adanorm_k, self.eps)
        return x

    def forward(self, x: Tensor) -> Tensor:
        return self.normalize(x)

    def extra_repr(self) -> str:
        extra = f"{self.normalized_shape[0]}, norm_type={self.norm_type}, eps={self.eps}"
        if self.norm_type == "adanorm":
            extra += f", scale={self.adanorm_scale}, k={self.adanorm_k}"
        return extra
