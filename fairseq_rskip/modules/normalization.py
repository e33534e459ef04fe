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

from typing import List

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NORM_TYPES = ("layernorm", "simple", "adanorm", "none")


def check_norm_type(norm_type: str) -> None:
    if norm_type not in NORM_TYPES:
        raise ValueError(
            f"--norm-type must be one of {', '.join(NORM_TYPES)}; got {norm_type!r}"
        )


def _adanorm_reference(x: Tensor, scale: float, k: float, eps: float) -> Tensor:
    """The formula under autograd: TorchScript's path, and the definition that
    :class:`_AdaNormFunction` computes faster."""
    h = x.to(torch.promote_types(x.dtype, torch.float32)).contiguous()
    centred = h - h.mean(dim=-1, keepdim=True)
    sigma = (centred.pow(2).sum(dim=-1, keepdim=True) / (h.size(-1) - 1)).sqrt()
    y = centred / (sigma + eps)
    z = torch.addcmul(y, y.detach(), y, value=-k)
    if scale != 1.0:
        z = z * scale
    return z.type_as(x)


class _AdaNormFunction(torch.autograd.Function):
    """AdaNorm with its gradient written out.

    Autograd through :func:`_adanorm_reference` keeps both ``x - mu`` and
    ``y`` (two tensors of the input's size, where LayerNorm keeps one) and
    runs about ten element-wise kernels backward. This keeps ``y`` (in the
    input's precision, as LayerNorm keeps its input) and ``sigma``, and works
    in place. With ``g = C * (1 - k * y) * dL/dz`` (the factor is a constant)
    and ``d`` the hidden size::

        dL/dx = (g - mean(g)) / (sigma + eps)  -  y * sum(g * y) / ((d - 1) * sigma)
    """

    @staticmethod
    def forward(ctx, x: Tensor, scale: float, k: float, eps: float) -> Tensor:
        h = x.to(torch.promote_types(x.dtype, torch.float32)).contiguous()
        y = h - h.mean(dim=-1, keepdim=True)
        sigma = torch.linalg.vector_norm(y, dim=-1, keepdim=True).div_((h.size(-1) - 1) ** 0.5)
        y.div_(sigma + eps)
        z = torch.addcmul(y, y, y, value=-k)
        if scale != 1.0:
            z.mul_(scale)
        ctx.save_for_backward(y.to(x.dtype), sigma)
        ctx.scale, ctx.k, ctx.eps, ctx.in_dtype = scale, k, eps, x.dtype
        return z.to(x.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_z: Tensor):
        y, sigma = ctx.saved_tensors
        y = y.to(sigma.dtype)
        grad_z = grad_z.to(sigma.dtype)
        g = torch.addcmul(grad_z, grad_z, y, value=-ctx.k)
        if ctx.scale != 1.0:
            g.mul_(ctx.scale)
        gy = g * y
        # sigma = 0 only where the row is constant, so y = 0 and the term is 0
        coef = gy.sum(dim=-1, keepdim=True).div_(
            (y.size(-1) - 1) * sigma.clamp_min(torch.finfo(sigma.dtype).tiny)
        )
        torch.mul(y, coef, out=gy)
        g.sub_(g.mean(dim=-1, keepdim=True)).div_(sigma + ctx.eps).sub_(gy)
        return g.to(ctx.in_dtype), None, None, None


@torch.jit.unused
def _adanorm_function(x: Tensor, scale: float, k: float, eps: float) -> Tensor:
    return _AdaNormFunction.apply(x, scale, k, eps)


def adanorm(x: Tensor, scale: float, k: float, eps: float) -> Tensor:
    """AdaNorm: ``C * (1 - k * y).detach() * y``, ``y = (x - mu) / (sigma + eps)``.

    Computed in at least float32 (and cast back) so that half-precision
    training keeps an accurate standard deviation; the output is contiguous,
    like LayerNorm's, even for fairseq's transposed encoder input (else the
    next linear layer would copy it and keep the copy for backward). Outside
    TorchScript this is :class:`_AdaNormFunction`, which saves half the
    activations that autograd would and runs backward about 4x faster on CPU.
    """
    if torch.jit.is_scripting():
        return _adanorm_reference(x, scale, k, eps)
    return _adanorm_function(x, scale, k, eps)


class Normalization(nn.Module):
    """One normalisation of ``dim`` features; ``norm_type`` is one of ``NORM_TYPES``.

    With ``norm_type="layernorm"`` this is exactly ``torch.nn.LayerNorm(dim)``
    (what fairseq's ``LayerNorm`` builds on CPU): the same ``weight`` and
    ``bias`` parameters and the same ``F.layer_norm`` call.
    """

    def __init__(
        self,
        dim: int,
        norm_type: str = "layernorm",
        eps: float = 1e-5,
        adanorm_scale: float = 1.0,
        adanorm_k: float = 0.1,
    ):
        super().__init__()
        check_norm_type(norm_type)
        self.norm_type = norm_type
        self.normalized_shape: List[int] = [dim]
        self.eps = eps
        self.adanorm_scale = float(adanorm_scale)
        self.adanorm_k = float(adanorm_k)
        if norm_type == "layernorm":
            self.weight = nn.Parameter(torch.ones(dim))
            self.bias = nn.Parameter(torch.zeros(dim))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def normalize(self, x: Tensor) -> Tensor:
        if self.norm_type == "layernorm" or self.norm_type == "simple":
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
