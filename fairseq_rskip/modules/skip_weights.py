"""The weight of the skip, ``y = N(w * x + F(x))``: a strategy per ``--skip-weight``.

``--skip-weight`` chooses ``w`` for every sublayer of a stack (N encoder and
M decoder layers), as one :class:`SkipWeight` of :data:`SKIP_WEIGHTS`:

============  =================================================================
``fixed``     ``w = --skip-scale`` (Post-LN, xSkip+LN)
``deepnorm``  DeepNorm (Wang et al. 2022, "DeepNet: Scaling Transformers to
              1,000 Layers", encoder-decoder column of its Table 1):
              encoder ``alpha = 0.81 (N^4 M)^(1/16)``, ``beta = 0.87 (N^4 M)^(-1/16)``;
              decoder ``alpha = (3M)^(1/4)``, ``beta = (12M)^(-1/4)``; ``w = alpha``,
              and the stack's projections are initialised with ``beta``
              (:func:`deepnorm_initialise_`)
``admin``     Admin (Liu et al. 2020, "Understanding the Difficulty of Training
              Transformers"): ``w = omega_i``, a trainable vector per sublayer,
              initialised by the profiling recursion (``--admin-init
              profile``, :mod:`~fairseq_rskip.modules.admin_profile`) or
              admin-torch's closed form
              (:func:`admin_logn_omega`, ``--admin-init logn``)
============  =================================================================

A new weight is one :class:`SkipWeight` subclass, its entry in
:data:`SKIP_WEIGHTS`, its name among the choices of ``--skip-weight``
(:data:`fairseq_rskip.config.SKIP_WEIGHTS`) and a test.
"""

import math
from typing import Dict, List

import torch
from torch import nn

from fairseq_rskip.config import SkipNormConfig

STACKS = ("encoder", "decoder")


def _check_stack(stack: str) -> None:
    if stack not in STACKS:
        raise ValueError(f"stack must be one of {STACKS}; got {stack!r}")


def deepnorm_alpha(stack: str, encoder_layers: int, decoder_layers: int) -> float:
    """DeepNorm's skip weight of an encoder-decoder's ``stack``:
    encoder ``0.81 (N^4 M)^(1/16)``, decoder ``(3M)^(1/4)``."""
    _check_stack(stack)
    if stack == "encoder":
        return 0.81 * (encoder_layers**4 * decoder_layers) ** (1 / 16)
    return (3 * decoder_layers) ** (1 / 4)


def deepnorm_beta(stack: str, encoder_layers: int, decoder_layers: int) -> float:
    """DeepNorm's initialisation gain of an encoder-decoder's ``stack``:
    encoder ``0.87 (N^4 M)^(-1/16)``, decoder ``(12M)^(-1/4)``."""
    _check_stack(stack)
    if stack == "encoder":
        return 0.87 * (encoder_layers**4 * decoder_layers) ** (-1 / 16)
    return (12 * decoder_layers) ** (-1 / 4)


def torchscale_beta(stack: str, encoder_layers: int, decoder_layers: int) -> float:
    """The factor torchscale multiplies its value, output and feed-forward
    projections with (it divides by ``1 / beta``): encoder
    ``1.15 (N^4 M)^(-1/16)`` (the paper: 0.87), decoder ``(12M)^(-1/4)``
    (torchscale/architecture/encoder.py and decoder.py, ``init_scale``)."""
    _check_stack(stack)
    if stack == "encoder":
        return 1.15 * (encoder_layers**4 * decoder_layers) ** (-1 / 16)
    return (12 * decoder_layers) ** (-1 / 4)


def admin_logn_omega(residual_sublayers: int) -> float:
    """admin-torch's ``O(log n)`` initial omega for a stack of ``n`` residual
    sublayers: ``sqrt((n + 1) / ln(n + 1) - 1)`` (admin_torch 0.1.0,
    ``calculate_init``)."""
    n = int(residual_sublayers)
    if n < 1:
        raise ValueError(f"a stack needs at least one residual sublayer; got {n}")
    return math.sqrt((n + 1) / math.log(n + 1) - 1)


# ----------------------------------------------------------------------------
# DeepNorm's initialisation


def _projections(layer) -> Dict[str, List[nn.Linear]]:
    """A fairseq layer's projections: ``query_key`` (q_proj, k_proj) and
    ``scaled`` (v_proj, out_proj, fc1, fc2), cross-attention included."""
    attentions = [layer.self_attn]
    if getattr(layer, "encoder_attn", None) is not None:
        attentions.append(layer.encoder_attn)
    query_key = [p for a in attentions for p in (a.q_proj, a.k_proj)]
    scaled = [p for a in attentions for p in (a.v_proj, a.out_proj)] + [layer.fc1, layer.fc2]
    return {"query_key": query_key, "scaled": scaled}


@torch.no_grad()
def deepnorm_initialise_(layer, config: SkipNormConfig, stack: str, encoder_layers: int, decoder_layers: int) -> None:
    """Re-initialise the projections of a fairseq encoder or decoder ``layer``.

    ``--deepnorm-init paper`` (the paper's Figure 2): ``xavier_normal_(gain=beta)``
    on the weights of ``v_proj``, ``out_proj``, ``fc1``, ``fc2`` and
    ``xavier_normal_(gain=1)`` on ``q_proj``, ``k_proj``. The paper names only
    weight matrices (``xavier_normal_`` is not defined for a bias vector):
    biases keep fairseq's initialisation (``out_proj`` 0, the others PyTorch's
    ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``).

    ``--deepnorm-init torchscale``: every projection gets PyTorch's default
    ``nn.Linear`` initialisation (torchscale never calls its attention's
    ``reset_parameters``), then the weights *and biases* of ``v_proj``,
    ``out_proj``, ``fc1``, ``fc2`` are multiplied by :func:`torchscale_beta`.
    """
    groups = _projections(layer)
    if config.deepnorm_init == "torchscale":
        beta = torchscale_beta(stack, encoder_layers, decoder_layers)
        for linear in groups["query_key"] + groups["scaled"]:
            linear.reset_parameters()
        for linear in groups["scaled"]:
            linear.weight.mul_(beta)
            if linear.bias is not None:
                linear.bias.mul_(beta)
        return
    beta = deepnorm_beta(stack, encoder_layers, decoder_layers)
    for linear in groups["query_key"]:
        nn.init.xavier_normal_(linear.weight, gain=1.0)
    for linear in groups["scaled"]:
        nn.init.xavier_normal_(linear.weight, gain=beta)


# ----------------------------------------------------------------------------
# The strategies


class SkipWeight:
    """How a stack weights its skips: ``fixed`` unless a subclass says otherwise."""

    # w is a trainable vector ``omega`` per sublayer (saved in checkpoints as
    # ``*_layer_norm.omega``), starting at :meth:`initial_weight`
    trainable = False

    def initial_weight(self, config: SkipNormConfig, stack: str, encoder_layers: int,
                       decoder_layers: int, sublayers_per_layer: int) -> float:
        """``w`` of every sublayer of ``stack`` (its start, if trainable)."""
        return float(config.skip_scale)

    def initialise_layer_(self, layer, config: SkipNormConfig, stack: str,
                          encoder_layers: int, decoder_layers: int) -> None:
        """Re-initialise a layer of ``stack`` once fairseq has built it."""

    def profiles(self, config: SkipNormConfig) -> bool:
        """Whether the first training batch sets ``w`` (the model then profiles
        before its first update)."""
        return False


class DeepNormSkipWeight(SkipWeight):
    """``w = alpha`` of the stack, and the projections initialised with its beta."""

    def initial_weight(self, config, stack, encoder_layers, decoder_layers, sublayers_per_layer):
        return deepnorm_alpha(stack, encoder_layers, decoder_layers)

    def initialise_layer_(self, layer, config, stack, encoder_layers, decoder_layers):
        deepnorm_initialise_(layer, config, stack, encoder_layers, decoder_layers)


class AdminSkipWeight(SkipWeight):
    """``w = omega``, trainable, from admin-torch's closed form (``--admin-init
    logn``) or from the profiling of the first training batch (``profile``;
    1 until then), unless ``--admin-profile FILE`` gives it."""

    trainable = True

    def initial_weight(self, config, stack, encoder_layers, decoder_layers, sublayers_per_layer):
        if config.admin_init == "logn":
            layers = encoder_layers if stack == "encoder" else decoder_layers
            return admin_logn_omega(layers * sublayers_per_layer)
        return 1.0

    def profiles(self, config):
        return config.admin_init == "profile"


SKIP_WEIGHTS: Dict[str, SkipWeight] = {
    "fixed": SkipWeight(),
    "deepnorm": DeepNormSkipWeight(),
    "admin": AdminSkipWeight(),
}


def skip_weight_of(config: SkipNormConfig) -> SkipWeight:
    """The strategy of ``--skip-weight``."""
    return SKIP_WEIGHTS[config.skip_weight]
