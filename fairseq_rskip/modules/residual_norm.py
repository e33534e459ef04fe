"""The residual-plus-normalisation wiring of one Transformer sublayer.

Every sublayer (self-attention, cross-attention, feed-forward) of every
encoder and decoder layer goes through a :class:`ResidualNorm`. With ``x`` the
sublayer's input and ``F(x)`` its output (dropout included), ``N_i`` the
``i``-th normalisation (``--norm-type``), ``n = --skip-recursions`` and
``lam = --skip-scale``:

==================  ===========================================================
Post-norm, n = 1    ``y = N(lam * x + F(x))``: Post-LN (lam = 1), xSkip+LN;
                    with ``--norm-type none``: Skip (lam = 1) and xSkip
Post-norm, n > 1    rSkip+LN: ``y_1 = N_1(x + F(x))``,
                    ``y_i = N_i(x + y_{i-1})`` for i = 2..n, output ``y_n``
Pre-norm            ``y = x + F(N(x))`` (``--*-normalize-before``)
==================  ===========================================================
"""

import math
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, List, Optional

import torch
from torch import Tensor, nn

from fairseq_rskip.modules.normalization import Normalization, check_norm_type


def _finite_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class SkipNormConfig:
    """The skip/normalisation settings of a model, validated on construction.

    ``adanorm_scale`` and ``adanorm_k`` are ``None`` unless set; they default to
    1 and 0.1 with ``norm_type="adanorm"`` and are refused with any other type.
    """

    norm_type: str = "layernorm"
    recursions: int = 1
    skip_scale: float = 1.0
    shared_norm: bool = False
    adanorm_scale: Any = None
    adanorm_k: Any = None

    DEFAULT_ADANORM_SCALE = 1.0
    DEFAULT_ADANORM_K = 0.1

    def __post_init__(self):
        check_norm_type(self.norm_type)
        if (
            not isinstance(self.recursions, Integral)
            or isinstance(self.recursions, bool)
            or self.recursions < 1
        ):
            raise ValueError(
                f"--skip-recursions must be an integer >= 1; got {self.recursions!r}"
            )
        if not _finite_number(self.skip_scale) or self.skip_scale <= 0:
            raise ValueError(
                f"--skip-scale must be a finite number > 0; got {self.skip_scale!r}"
            )
        if self.recursions > 1 and self.skip_scale != 1:
            raise ValueError(
                "--skip-scale must be 1 with --skip-recursions > 1: the recursive "
                f"skip fixes the input scale at 1 (got --skip-scale {self.skip_scale} "
                f"with --skip-recursions {self.recursions})"
            )
        if self.recursions > 1 and self.norm_type == "none":
            raise ValueError(
                "--skip-recursions > 1 needs a normalisation: with --norm-type none "
                "the recursion is only n*x + F(x); use --skip-scale instead"
            )
        if self.shared_norm and self.recursions == 1:
            raise ValueError("--skip-shared-norm needs --skip-recursions > 1")
        if self.norm_type == "adanorm":
            if self.adanorm_scale is not None and (
                not _finite_number(self.adanorm_scale) or self.adanorm_scale <= 0
            ):
                raise ValueError(
                    f"--adanorm-scale must be a finite number > 0; got {self.adanorm_scale!r}"
                )
            if self.adanorm_k is not None and (
                not _finite_number(self.adanorm_k) or not 0 <= self.adanorm_k < 1
            ):
                raise ValueError(
                    f"--adanorm-k must be a number in [0, 1); got {self.adanorm_k!r}"
                )
        elif self.adanorm_scale is not None or self.adanorm_k is not None:
            raise ValueError(
                "--adanorm-scale and --adanorm-k apply only with --norm-type adanorm "
                f"(got --norm-type {self.norm_type})"
            )

    @classmethod
    def from_args(cls, args) -> "SkipNormConfig":
        """Read the flags from an argparse namespace or a fairseq config."""
        return cls(
            norm_type=getattr(args, "norm_type", "layernorm"),
            recursions=getattr(args, "skip_recursions", 1),
            skip_scale=getattr(args, "skip_scale", 1.0),
            shared_norm=bool(getattr(args, "skip_shared_norm", False)),
            adanorm_scale=getattr(args, "adanorm_scale", None),
            adanorm_k=getattr(args, "adanorm_k", None),
        )

    def check_placement(self, normalize_before: bool, side: str) -> None:
        """Refuse the recursive/expanded skip on a Pre-LN side, where it has no definition."""
        if normalize_before and (self.recursions > 1 or self.skip_scale != 1):
            raise ValueError(
                f"--skip-recursions > 1 and --skip-scale != 1 are defined for Post-LN "
                f"only; drop --{side}-normalize-before or use --skip-recursions 1 "
                "--skip-scale 1"
            )

    def norm_kwargs(self) -> dict:
        """Keyword arguments of :class:`Normalization` for this type."""
        return dict(
            norm_type=self.norm_type,
            adanorm_scale=(
                self.DEFAULT_ADANORM_SCALE if self.adanorm_scale is None else self.adanorm_scale
            ),
            adanorm_k=self.DEFAULT_ADANORM_K if self.adanorm_k is None else self.adanorm_k,
        )

    def build_norm(self, dim: int) -> Normalization:
        """A plain normalisation of this type (final and embedding norms)."""
        return Normalization(dim, **self.norm_kwargs())

    def build_residual_norm(
        self, dim: int, normalize_before: bool, inplace: bool = False
    ) -> "ResidualNorm":
        return ResidualNorm(self, dim, normalize_before, inplace=inplace)


class ResidualNorm(Normalization):
    """The skip connection and normalisation(s) around one sublayer.

    It *is* the sublayer's first normalisation ``N_1`` (so that with one
    recursion and ``layernorm`` its parameters are fairseq's
    ``*_layer_norm.weight`` / ``.bias``, and fairseq checkpoints load as they
    are), plus ``recursion_norms`` holding ``N_2 .. N_n`` of rSkip.

    Use in a layer::

        residual = x
        x = self.self_attn_layer_norm.branch_input(x)   # N(x) if pre-norm
        x = dropout(self.self_attn(x, ...))
        x = self.self_attn_layer_norm(x, residual)      # skip + norm(s)

    With ``inplace=True`` the skip adds ``residual`` into ``x`` (the sublayer
    output, which the caller must not use again) when both have one dtype,
    saving a tensor per sublayer.
    """

    def __init__(
        self, config: SkipNormConfig, dim: int, normalize_before: bool, inplace: bool = False
    ):
        super().__init__(dim, **config.norm_kwargs())
        self.normalize_before = normalize_before
        self.inplace = inplace
        self.skip_scale = float(config.skip_scale)
        extra = config.recursions - 1
        self.recursion_norms = nn.ModuleList(
            [] if config.shared_norm else [config.build_norm(dim) for _ in range(extra)]
        )
        # --skip-shared-norm: N_2 .. N_n are N_1 itself
        self.shared_recursions = extra if config.shared_norm else 0
        self.recursions = config.recursions

    def branch_input(self, x: Tensor) -> Tensor:
        """What the sublayer reads: ``N(x)`` with pre-norm, else ``x``."""
        if self.normalize_before:
            return self.normalize(x)
        return x

    def forward(self, x: Tensor, residual: Tensor) -> Tensor:
        """Combine the sublayer output ``x = F(.)`` with its input ``residual``."""
        # s = lam * residual + x; the same rounding in place or not. Under
        # autocast x can be half precision and residual float32: then the sum
        # is float32, as out of place, and x cannot hold it.
        if self.inplace and x.dtype == residual.dtype:
            s = x.add_(residual, alpha=self.skip_scale)
        else:
            s = torch.add(x, residual, alpha=self.skip_scale)
        if self.normalize_before:
            return s
        if (
            not torch.jit.is_scripting()
            and self.recursions > 1
            and torch.is_grad_enabled()
            and s.requires_grad
        ):
            return self._recomputed_norms(s, residual)
        return self.norms(s, residual)

    def norms(self, s: Tensor, residual: Tensor) -> Tensor:
        """``y_n`` from ``s = lam * x + F(x)``: ``N_1(s)``, then the recursions."""
        y = self.normalize(s)
        for norm in self.recursion_norms:
            y = norm(residual + y)
        for _ in range(self.shared_recursions):
            y = self.normalize(residual + y)
        return y

    @torch.jit.unused
    def _recomputed_norms(self, s: Tensor, residual: Tensor) -> Tensor:
        """:meth:`norms`, keeping for backward only ``s`` and ``residual``.

        ``residual`` is already kept by the sublayer (its input projection), so
        rSkip then holds as many activations as one LayerNorm; the
        normalisations run again in the backward pass.
        """
        if self.norm_type != "adanorm" and not torch.is_autocast_enabled(s.device.type):
            norms = [self] + list(self.recursion_norms) + [self] * self.shared_recursions
            affine = [t for norm in norms for t in (norm.weight, norm.bias)]
            return _RecursiveLayerNorm.apply(s, residual, self.normalized_shape, self.eps, *affine)
        return _RecomputedNorms.apply(self.norms, s, residual, *self.parameters())

    def extra_repr(self) -> str:
        return (
            super().extra_repr()
            + f", normalize_before={self.normalize_before}, skip_scale={self.skip_scale}"
            + f", recursions={self.recursions}, inplace={self.inplace}"
        )


class _RecursiveLayerNorm(torch.autograd.Function):
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


class _RecomputedNorms(torch.autograd.Function):
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
