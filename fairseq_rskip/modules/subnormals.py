"""Attention probabilities and gradients too small to matter, made exactly zero.

Float32 numbers below ``2**-126`` (``torch.finfo(torch.float32).tiny``) are
subnormal, and CPUs compute with them many times more slowly than with normal
numbers. Models without shortcuts produce them (docs/results/shortcut_free.md,
"Subnormal floats"): softmax probabilities of far-apart logits (E-SPA's and
U-SPA's fixed biases, the large activations that reach cross-attention), and
gradients that vanish with depth (the vanilla model). So the shortcut-free
models compute, with ``FLOOR = 2**-50``:

- attention probabilities with :func:`floored_softmax`: ``p_i = 0`` where
  ``exp(x_i - max x) <= FLOOR`` (the logit is masked before the exponential,
  so that no subnormal is ever computed), else ``softmax(x)_i``; so every
  zeroed probability was at most ``FLOOR`` and every kept one is above
  ``FLOOR / n`` over ``n`` keys. Its backward ``p * (g - sum(g * p))`` uses
  that ``p`` and makes entries of magnitude at most ``FLOOR`` zero;
- each sublayer's output through :func:`floor_gradient`: the identity, whose
  backward makes gradient entries of magnitude at most ``FLOOR`` zero.

A product of a kept probability and a kept gradient is at least
``2**-110`` at 1,024 keys, ``2**16`` above the subnormal range. An attention
output over ``n`` keys changes by at most ``n * FLOOR * max |v|``
(``2**-40 max |v|`` at 1,024 keys), far below float32's rounding (``2**-24``
relative); a gradient entry by at most ``FLOOR``.

Both are autograd Functions; TorchScript (inference) takes the floored
softmax as plain operations and the identity for the gradient floor.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor

FLOOR = 2.0 ** -50


def _softmax_above(x: Tensor, floor: float) -> Tensor:
    """Float32 ``softmax(x)`` over the last dimension, zero where ``exp(x_i - max x) <= floor``."""
    z = x - x.amax(dim=-1, keepdim=True)
    if floor > 0.0:
        z = F.threshold(z, math.log(floor), float("-inf"), inplace=True)  # z if z > log(floor)
    return torch.softmax(z, dim=-1, dtype=torch.float32)


class FlooredSoftmaxFunction(torch.autograd.Function):
    """``softmax(x)`` over the last dimension, in float32, zero where
    ``exp(x_i - max x) <= floor``; backward ``p * (g - sum(g * p))`` with that
    ``p``, entries of magnitude at most ``floor`` zero."""

    @staticmethod
    def forward(ctx, x: Tensor, floor: float) -> Tensor:
        p = _softmax_above(x, floor)
        ctx.save_for_backward(p)
        ctx.floor, ctx.in_dtype = floor, x.dtype
        return p

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        (p,) = ctx.saved_tensors
        grad_x = torch._softmax_backward_data(grad.to(p.dtype), p, -1, p.dtype)
        if ctx.floor > 0.0:
            grad_x = F.hardshrink(grad_x, ctx.floor)  # 0 where |g| <= floor
        return grad_x.to(ctx.in_dtype), None


class GradientFloorFunction(torch.autograd.Function):
    """The identity; its backward makes gradient entries of magnitude at most
    ``floor`` zero."""

    @staticmethod
    def forward(ctx, x: Tensor, floor: float) -> Tensor:
        ctx.floor = floor
        return x.view_as(x)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        if ctx.floor <= 0.0:
            return grad, None
        return F.hardshrink(grad, ctx.floor), None


def floored_softmax(x: Tensor, floor: float = FLOOR) -> Tensor:
    """Float32 ``softmax(x)`` over the last dimension, zero where ``exp(x_i - max
    x) <= floor`` (forward and backward: :class:`FlooredSoftmaxFunction`)."""
    if torch.jit.is_scripting() or not (torch.is_grad_enabled() and x.requires_grad):
        return _softmax_above(x, floor)
    return _floored_softmax(x, floor)


@torch.jit.unused
def _floored_softmax(x: Tensor, floor: float) -> Tensor:
    return FlooredSoftmaxFunction.apply(x, floor)


def floor_gradient(x: Tensor, floor: float = FLOOR) -> Tensor:
    """``x``, whose gradient has its entries of magnitude at most ``floor`` made
    zero. Where it applies (autograd records ``x``) the result is a view of
    ``x`` that must not be modified in place."""
    if torch.jit.is_scripting() or not (torch.is_grad_enabled() and x.requires_grad):
        return x
    return _floor_gradient(x, floor)


@torch.jit.unused
def _floor_gradient(x: Tensor, floor: float) -> Tensor:
    return GradientFloorFunction.apply(x, floor)
