"""The residual-plus-normalisation wiring of one Transformer sublayer.

Every sublayer (self-attention, cross-attention, feed-forward) of every
encoder and decoder layer goes through a :class:`ResidualNorm`. With ``x`` the
sublayer's input and ``F(x)`` its output (dropout included), ``N_i`` the
``i``-th normalisation (``--norm-type``), ``n = --skip-recursions`` and
``lam = --skip-scale``:

==================  ===========================================================
Post-norm, n = 1    ``y = N(lam * x + F(x))``: Post-LN (lam = 1), xSkip+LN;
                    with ``--norm-type none``: Skip (lam = 1) and xSkip;
                    DeepNorm: ``lam = alpha`` of the stack (``--skip-weight
                    deepnorm``); Admin: ``y = N(omega * x + F(x))``,
                    ``omega = omega_init + omega_delta``: a buffer (the
                    profile) plus a trainable vector starting at 0
                    (``--skip-weight admin``); see
                    :mod:`fairseq_rskip.modules.skip_weights`
Post-norm, n > 1    rSkip+LN: ``y_1 = N_1(x + F(x))``,
                    ``y_i = N_i(x + y_{i-1})`` for i = 2..n, output ``y_n``
Pre-norm            ``y = x + F(N(x))`` (``--*-normalize-before``)
Sandwich, Peri-LN   ``y = x + dropout(N_out(F'(N(x))))``, ``F'`` the sublayer
                    before its dropout (``--sandwich-norm``); NormFormer's
                    ``--scale-attn`` the same on self-attention alone, and
                    ``--scale-resids`` ``y = w * x + F(N(x))`` on the
                    feed-forward, ``w`` a trainable vector starting at 1
ReZero, SkipInit    ``y = x + alpha * F(x)``, ``--norm-type none``, trainable
                    ``alpha = --residual-gain-init`` (0 by default): one per
                    layer shared by its sublayers (``--residual-gain rezero``,
                    the layer hands it to each) or one per sublayer
                    (``skipinit``)
No skip             ``y = N(F(x))`` (``--no-skip``); vanilla with ``--norm-type
                    none``: ``y = F(x)``; the gradient of ``F(x)`` has its
                    entries of magnitude at most ``2**-50`` made zero (no
                    subnormal floats, :mod:`fairseq_rskip.modules.subnormals`)
Cross-attention of  ``y = x + g * F(x)``, trainable ``g = g_0`` at start
E-SPA, U-SPA,       (``--cross-attention-shortcut skipinit``, SkipInit;
Value-SkipInit      ``g_0 = --cross-attention-gain-init``, 0 by default), or
                    ``y = x + F(x)`` (``zero-out-proj``: the layer zeroes F's
                    output projection; ``residual``: F as fairseq initialises
                    it): the one shortcut these models keep; with
                    ``value-skipinit`` none, ``y = F(x)`` (the attention
                    keeps the decoder's own value, ShapedMultiheadAttention)
==================  ===========================================================
"""

from typing import Dict, Optional, Type

import torch
from torch import Tensor, nn

from fairseq_rskip.config import SkipNormConfig
from fairseq_rskip.modules.norm_functions import (
    RecomputedNormsFunction,
    RecursiveLayerNormFunction,
)
from fairseq_rskip.modules.normalization import NORMS, Normalization, build_norm
from fairseq_rskip.modules.skip_weights import skip_weight_of
from fairseq_rskip.modules.subnormals import FLOOR, floor_gradient


class ResidualNorm(Normalization):
    """The skip connection and normalisation(s) around one sublayer.

    It *is* the sublayer's first normalisation ``N_1`` (so that with one
    recursion and ``layernorm`` its parameters are fairseq's
    ``*_layer_norm.weight`` / ``.bias``, and fairseq checkpoints load as they
    are), plus ``recursion_norms`` holding ``N_2 .. N_n`` of rSkip:
    ``ResidualNorm(dim, config, ...)`` builds an instance of
    ``ResidualNorm`` joined with the class of ``config.norm_type``
    (:data:`RESIDUAL_NORMS`, one such class per norm, made once below).

    Use in a layer::

        residual = x
        x = self.self_attn_layer_norm.branch_input(x)   # N(x) if pre-norm
        x = dropout(self.self_attn(x, ...))
        x = self.self_attn_layer_norm(x, residual)      # skip + norm(s)

    With ``inplace=True`` the skip adds ``residual`` into ``x`` (the sublayer
    output, which the caller must not use again) when both have one dtype,
    saving a tensor per sublayer.

    ``skip_weight`` is the weight ``w`` of the skip as the stack's
    :class:`~fairseq_rskip.modules.skip_weights.SkipWeight` computed it
    (``--skip-scale``, DeepNorm's alpha, Admin's initial omega); ``None`` is
    ``--skip-scale``. Where that strategy trains it (``--skip-weight admin``),
    ``w = omega_init + omega_delta``: the buffer ``omega_init`` holds the
    start (``skip_weight``, then the profile) and the parameter
    ``omega_delta``, 0 at build, what training adds. No optimizer copies a
    buffer, so a profile written after fairseq built its optimizer (and its
    float32 master copies) is in effect from the first step, whatever the
    optimizer wrapper; the gradient of ``omega_delta`` is that of ``w``.
    ``attention``: the sublayer is an attention (DyT's initial ``alpha``,
    NormFormer's norm on self-attention, its scaled skip on the feed-forward);
    ``branch_gain``: the layer's shared ReZero ``alpha``, else its own is made
    where the config asks for one.
    """

    def __new__(cls, dim: int = 0, config: Optional[SkipNormConfig] = None, *args, **kwargs):
        if cls is ResidualNorm:  # the class joined with config.norm_type's
            cls = RESIDUAL_NORMS[config.norm_type]
        return super().__new__(cls)

    def __init__(
        self,
        dim: int,
        config: SkipNormConfig,
        normalize_before: bool,
        inplace: bool = False,
        skip_weight: Optional[float] = None,
        cross_attention: bool = False,
        attention: bool = False,
        branch_gain: Optional[nn.Parameter] = None,
    ):
        super().__init__(dim, config, before_attention=normalize_before and (attention or cross_attention))
        # cross-attention has no identity-like attention matrix: the shortcut-free
        # models that shape their attention keep a shortcut around it alone (none
        # with --cross-attention-shortcut value-skipinit, inside the attention)
        keeps_shortcut = (cross_attention and config.shaped
                          and config.cross_attention_shortcut != "value-skipinit")
        self.skip = not config.no_skip or keeps_shortcut
        if branch_gain is not None:
            self.branch_gain = branch_gain
        elif keeps_shortcut and config.cross_attention_shortcut == "skipinit":
            self.branch_gain = nn.Parameter(torch.full((), float(config.cross_attention_gain_init)))
        elif config.residual_gain != "none":
            self.branch_gain = nn.Parameter(torch.full((), float(config.residual_gain_init)))
        else:
            self.register_parameter("branch_gain", None)
        self.normalize_before = normalize_before
        self.inplace = inplace
        # without shortcuts gradients can vanish into subnormal floats: the
        # gradient of F(x) has its entries of magnitude at most FLOOR made zero
        self.gradient_floor = FLOOR if config.no_skip else 0.0
        self.skip_weight = float(config.skip_scale if skip_weight is None else skip_weight)
        if skip_weight_of(config).trainable:  # Admin
            self.register_buffer("omega_init", torch.full((dim,), self.skip_weight))
            self.omega_delta = nn.Parameter(torch.zeros(dim))
        else:
            self.register_buffer("omega_init", None)
            self.register_parameter("omega_delta", None)
        if config.scale_resids and not attention:  # NormFormer's w_resid
            self.omega = nn.Parameter(torch.full((dim,), self.skip_weight))
        else:
            self.register_parameter("omega", None)
        self_attention = attention and not cross_attention
        if config.sandwich_norm or (config.scale_attn and self_attention):
            self.output_norm = build_norm(dim, config)
        else:
            self.output_norm = None
        extra = config.skip_recursions - 1
        shared = config.skip_shared_norm
        self.recursion_norms = nn.ModuleList(
            [] if shared else [build_norm(dim, config) for _ in range(extra)]
        )
        # --skip-shared-norm: N_2 .. N_n are N_1 itself
        self.shared_recursions = extra if shared else 0
        self.recursions = config.skip_recursions

    def skip_vector(self) -> Optional[Tensor]:
        """The trainable skip weight ``w``: Admin's ``omega_init + omega_delta``,
        NormFormer's ``omega``, else None (the scalar ``skip_weight``)."""
        init, delta = self.omega_init, self.omega_delta
        if init is not None and delta is not None:
            return init + delta
        return self.omega

    def upgrade_state_dict_named(self, state_dict: Dict[str, Tensor], name: str) -> None:
        """Admin checkpoints of earlier versions hold ``w`` as one parameter
        ``NAME.omega``: it becomes ``omega_init``, with ``omega_delta`` 0."""
        old = f"{name}.omega"
        if self.omega_delta is not None and old in state_dict and f"{name}.omega_delta" not in state_dict:
            omega = state_dict.pop(old)
            state_dict[f"{name}.omega_init"] = omega
            state_dict[f"{name}.omega_delta"] = torch.zeros_like(omega)

    def branch_input(self, x: Tensor) -> Tensor:
        """What the sublayer reads: ``N(x)`` with pre-norm, else ``x``."""
        if self.normalize_before:
            return self.normalize(x)
        return x

    def branch_output(self, x: Tensor) -> Tensor:
        """The sublayer's output before its dropout: ``N_out(x)`` with an output
        norm (Sandwich-LN, Peri-LN, NormFormer's on self-attention), else ``x``."""
        if self.output_norm is not None:
            return self.output_norm(x)
        return x

    def forward(self, x: Tensor, residual: Tensor) -> Tensor:
        """Combine the sublayer output ``x = F(.)`` with its input ``residual``."""
        # s = lam * residual + x (or omega * residual + x); the same rounding
        # in place or not. Under autocast x can be half precision and residual
        # float32: then the sum is float32, as out of place, and x cannot hold it.
        if self.gradient_floor > 0.0:
            x = floor_gradient(x, self.gradient_floor)  # a view: not to be added into
        if self.branch_gain is not None:
            x = x * self.branch_gain
        inplace = (
            self.inplace
            and x.dtype == residual.dtype
            and (self.gradient_floor == 0.0 or self.branch_gain is not None)
        )
        omega = self.skip_vector()
        if not self.skip:
            s = x
        elif omega is not None:
            s = x.addcmul_(residual, omega) if inplace else torch.addcmul(x, residual, omega)
        elif inplace:
            s = x.add_(residual, alpha=self.skip_weight)
        else:
            s = torch.add(x, residual, alpha=self.skip_weight)
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
        if self.layer_norm_based and not torch.is_autocast_enabled(s.device.type):
            norms = [self] + list(self.recursion_norms) + [self] * self.shared_recursions
            affine = [t for norm in norms for t in (norm.weight, norm.bias)]
            return RecursiveLayerNormFunction.apply(s, residual, self.normalized_shape, self.eps, *affine)
        return RecomputedNormsFunction.apply(self.norms, s, residual, *self.parameters())

    def extra_repr(self) -> str:
        return (
            super().extra_repr()
            + f", normalize_before={self.normalize_before}, skip_weight={self.skip_weight}"
            + f", recursions={self.recursions}, inplace={self.inplace}, skip={self.skip}"
            + (", omega=omega_init+omega_delta" if self.omega_delta is not None else "")
            + (", omega=trainable" if self.omega is not None else "")
        )


def _joined_with(norm_class: Type[Normalization]) -> type:
    name = f"Residual{norm_class.__name__}"
    return type(name, (ResidualNorm, norm_class), {"__module__": __name__, "__qualname__": name,
                                                   "__doc__": f"ResidualNorm with {norm_class.__name__}"})


# one ResidualNorm class per norm, importable by name (pickle, torch.jit)
RESIDUAL_NORMS: Dict[str, type] = {name: _joined_with(cls) for name, cls in NORMS.items()}
globals().update({cls.__name__: cls for cls in RESIDUAL_NORMS.values()})
