"""Hand-written autograd Functions of the normalisations.

Each computes exactly the formula of the module that calls it (see
:mod:`fairseq_rskip.modules.normalization` and
:mod:`fairseq_rskip.modules.residual_norm`), but keeps fewer tensors for
backward than autograd would, and runs a written-out backward. TorchScript
cannot script an autograd Function, so the callers take the plain formula
under ``torch.jit.is_scripting()``. Tests: ``tests/test_normalization.py``,
``tests/test_model_equivalence.py`` (gradients against autograd) and
``tests/test_memory.py`` (saved activations).
"""

from typing import List, Optional

import torch
from torch import Tensor

class AdaNormFunction(torch.autograd.Function):
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


class RMSNormFunction(torch.autograd.Function):
    """RMSNorm ``y = w * x * r``, ``r = 1 / sqrt(mean(x^2) + eps)`` over the last
    dimension, with its gradient written out, for CPU tensors of float32 or
    float64: torch 2.13's ``F.rms_norm`` is a composite of element-wise ops under
    autograd there (its fused backward exists for CUDA only), which keeps more
    tensors than LayerNorm and runs several kernels backward.

    Forward: ATen's fused ``_fused_rms_norm`` (what ``F.rms_norm`` computes),
    which also returns ``r``; keeps ``x`` and ``r``, as LayerNorm keeps its input
    and row statistics. Backward: ATen's LayerNorm backward with the mean set to
    0 gives ``dw = sum(dy * x * r)`` and ``r * (g - x_hat * mean(g * x_hat)) -
    r * mean(g)``, with ``g = dy * w`` and ``x_hat = x * r``; adding back
    ``r * mean(g)`` (the row's ``(dy @ w) / d``) leaves RMSNorm's
    ``dx = r * (g - x_hat * mean(g * x_hat))``.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, eps: float) -> Tensor:
        y, rstd = torch.ops.aten._fused_rms_norm(x, [x.size(-1)], weight, eps)
        ctx.save_for_backward(x, rstd, weight)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y: Tensor):
        x, rstd, weight = ctx.saved_tensors
        grad_y = grad_y.contiguous()
        grad_x, grad_w, _ = torch.ops.aten.native_layer_norm_backward(
            grad_y, x, [x.size(-1)], torch.zeros_like(rstd), rstd, weight, None,
            [True, ctx.needs_input_grad[1], False],
        )
        mean_g = torch.matmul(grad_y, weight).unsqueeze_(-1)
        grad_x.add_(mean_g.mul_(rstd).div_(x.size(-1)))
        return grad_x, grad_w, None


class RecursiveLayerNormFunction(torch.autograd.Function):
    """rSkip with LayerNorm (or LayerNorm-simple), its backward written out:
    ``y_1 = LN_1(s)``, ``y_i = LN_i(residual + y_{i-1})``.

    Keeps ``s``, ``residual`` and the last LN's row statistics. Backward runs
    ``LN_1 .. LN_{n-1}`` again to rebuild the inputs of ``LN_2 .. LN_n``, then
    goes back through ATen's LayerNorm backward, with no autograd graph.
    ``affine`` is ``(weight, bias)`` of each LN in order (``None`` for
    LayerNorm-simple; a shared LN appears n times).
    """

    @staticmethod
    def forward(ctx, s: Tensor, residual: Tensor, shape: List[int], eps: float, *affine):
        n = len(affine) // 2
        x = s
        for i in range(n):
            y, mean, rstd = torch.native_layer_norm(x, shape, affine[2 * i], affine[2 * i + 1], eps)
            x = y.add_(residual) if i < n - 1 else y
        ctx.shape, ctx.eps, ctx.n = shape, eps, n
        ctx.has_affine = [t is not None for t in affine]
        ctx.save_for_backward(s, residual, mean, rstd, *[t for t in affine if t is not None])
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y: Tensor):
        s, residual, mean, rstd, *saved_affine = ctx.saved_tensors
        it = iter(saved_affine)
        affine = [next(it) if has else None for has in ctx.has_affine]
        n = ctx.n
        inputs, stats = [s], []
        for i in range(n - 1):  # x_{i+1} = residual + LN_i(x_i), with LN_i's statistics
            y, m, r = torch.native_layer_norm(
                inputs[i], ctx.shape, affine[2 * i], affine[2 * i + 1], ctx.eps
            )
            inputs.append(y.add_(residual))
            stats.append((m, r))
        stats.append((mean, rstd))
        grad_affine: List[Optional[Tensor]] = [None] * (2 * n)
        grad_residual: Optional[Tensor] = None
        g = grad_y.contiguous()
        for i in reversed(range(n)):
            w, b = affine[2 * i], affine[2 * i + 1]
            grads = torch.ops.aten.native_layer_norm_backward(
                g, inputs[i], ctx.shape, stats[i][0], stats[i][1], w, b,
                [True, w is not None, b is not None],
            )
            g, grad_affine[2 * i], grad_affine[2 * i + 1] = grads
            if i > 0:  # x_{i+1} = residual + y_i: the gradient also reaches the residual
                # (in place: the earlier terms were consumed by the LN backward calls)
                grad_residual = g if grad_residual is None else grad_residual.add_(g)
        return (g, grad_residual, None, None, *grad_affine)


class RecomputedNormsFunction(torch.autograd.Function):
    """``y = norms(s, residual)``, run again in backward instead of keeping its
    intermediate tensors (activation recomputation, limited to the
    normalisations): the general case, for AdaNorm and under autocast. The
    parameters are inputs, so their gradients flow as usual. The normalisations
    draw no random numbers, so no RNG state is kept; the autocast state of the
    forward pass is. ``torch.utils.checkpoint`` does the same in general, with
    more bookkeeping.
    """

    @staticmethod
    def forward(ctx, norms, s: Tensor, residual: Tensor, *params: Tensor) -> Tensor:
        ctx.norms = norms
        ctx.device_type = s.device.type
        ctx.autocast = torch.is_autocast_enabled(ctx.device_type)
        ctx.autocast_dtype = torch.get_autocast_dtype(ctx.device_type)
        ctx.save_for_backward(s, residual, *params)
        with torch.no_grad():
            return norms(s, residual)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y: Tensor):
        s, residual, *params = ctx.saved_tensors
        s, residual = s.detach().requires_grad_(), residual.detach().requires_grad_()
        with torch.enable_grad(), torch.autocast(
            ctx.device_type, dtype=ctx.autocast_dtype, enabled=ctx.autocast
        ):
            y = ctx.norms(s, residual)
        grads = torch.autograd.grad(y, [s, residual, *params], grad_y, allow_unused=True)
        return (None, *grads)
