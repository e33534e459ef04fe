"""DeepNorm and Admin: Post-LN with a weighted skip, ``y = LN(w * x + F(x))``.

``--skip-weight`` chooses ``w`` for every sublayer of a stack (N encoder and
M decoder layers):

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
              initialised by the profiling recursion (:func:`profile_admin_`,
              ``--admin-init profile``) or admin-torch's closed form
              (:func:`admin_logn_omega`, ``--admin-init logn``)
============  =================================================================
"""

import logging
import math
from typing import Callable, Dict, List

import torch
from torch import nn

from fairseq_rskip.models.skip_norm_config import SkipNormConfig
from fairseq_rskip.modules.residual_norm import ResidualNorm
from fairseq_rskip.optim.master_params import carry_into_master_copies

logger = logging.getLogger(__name__)

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


def initial_skip_weight(
    config: SkipNormConfig, stack: str, cfg, sublayers_per_layer: int
) -> float:
    """The skip weight a sublayer of ``stack`` starts with, from the config and
    fairseq's ``TransformerConfig`` ``cfg`` (its ``encoder.layers`` and
    ``decoder.layers``, after any ``--encoder-layers``/``--decoder-layers``)."""
    encoder_layers, decoder_layers = cfg.encoder.layers, cfg.decoder.layers
    if config.skip_weight == "deepnorm":
        return deepnorm_alpha(stack, encoder_layers, decoder_layers)
    if config.skip_weight == "admin":
        if config.admin_init == "logn":
            layers = encoder_layers if stack == "encoder" else decoder_layers
            return admin_logn_omega(layers * sublayers_per_layer)
        return 1.0  # replaced by the profiling on the first training batch
    return float(config.skip_scale)


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
# Admin's profiling


def admin_residual_norms(stack_module) -> List[ResidualNorm]:
    """The ResidualNorms of a stack that carry an Admin ``omega``, input to output."""
    return [m for m in stack_module.modules() if isinstance(m, ResidualNorm) and m.omega is not None]


def _variance(t: torch.Tensor) -> float:
    """Population variance over every element (Transformer-Clinic: ``np.var`` of
    the flattened batch tensor, padding positions included), in float32 at least."""
    return float(t.to(torch.promote_types(t.dtype, torch.float32)).var(unbiased=False))


@torch.no_grad()
def profile_admin_(model, run_forward: Callable[[], object]) -> Dict[str, List[float]]:
    """Set every ``omega`` of ``model`` by Admin's profiling recursion.

    ``run_forward()`` runs the model once (in training mode, on the first
    training batch). Per stack, a running value ``v`` starts at 1; at the
    sublayer ``i`` reached next, ``omega_i <- v`` (every entry), and
    ``v <- sqrt(Var[omega_i * x] + Var[F_i(x)])``, with ``x`` the sublayer's
    input and ``F_i(x)`` its output after dropout; the rest of the forward pass
    already uses the new ``omega_i``. So ``omega_i^2 ~ Var[x_0] + sum_{j<i}
    Var[F_j]`` (the paper's Section 5; Transformer-Clinic's
    ``--init-type adaptive-profiling``).

    With data parallelism only data-parallel rank 0 profiles, on its own batch,
    and broadcasts the values, so that every rank holds the same omega. The
    forward pass runs on a copy of the random state: the training batch that
    follows sees the same dropout masks as without profiling. The values also
    reach the float32 master copies of fairseq's ``FP16Optimizer``, which was
    built before this pass (:mod:`fairseq_rskip.optim.master_params`); under
    ``--fp16`` the model's own omega holds them rounded to float16. Returns the
    values per stack.
    """
    from fairseq.distributed import utils as distributed_utils

    stacks = {name: admin_residual_norms(getattr(model, name)) for name in STACKS}
    norms = stacks["encoder"] + stacks["decoder"]
    if not norms:
        return {name: [] for name in STACKS}
    world_size = distributed_utils.get_data_parallel_world_size()
    device = norms[0].omega.device
    values = torch.zeros(len(norms), dtype=torch.float64, device=device)
    if world_size == 1 or distributed_utils.get_data_parallel_rank() == 0:
        values.copy_(torch.tensor(_run_profile(stacks, run_forward, device), dtype=torch.float64))
    if world_size > 1:
        group = distributed_utils.get_data_parallel_group()
        src = torch.distributed.get_global_rank(group, 0) if group is not None else 0
        distributed_utils.broadcast(values, src=src, group=group)
    exact = {}
    for norm, value in zip(norms, values.tolist()):
        norm.omega.fill_(value)
        exact[norm.omega] = torch.full(norm.omega.shape, value, dtype=torch.float32)
    # and into the float32 copies of an optimizer wrapper built before this pass
    carry_into_master_copies(model, exact)
    profiled = {name: [float(exact[n.omega][0]) for n in stacks[name]] for name in STACKS}
    where = f" (data-parallel rank 0's, sent to all {world_size} ranks)" if world_size > 1 else ""
    for name in STACKS:
        logger.info(
            "Admin: omega of the %s sublayers profiled on the first training batch%s: %s",
            name, where, " ".join(f"{v:.4f}" for v in profiled[name]),
        )
    return profiled


def _run_profile(stacks: Dict[str, List[ResidualNorm]], run_forward, device) -> List[float]:
    """One forward pass with a hook before every Admin sublayer; the omegas in
    stack order."""
    visited: Dict[int, int] = {}
    exact: Dict[int, float] = {}  # omega before rounding to the model's type
    handles = []

    def hook_for(running: Dict[str, float]):
        def before_skip(module, args):
            fx, residual = args[0], args[1]
            exact[id(module)] = running["v"]
            module.omega.fill_(running["v"])
            visited[id(module)] = visited.get(id(module), 0) + 1
            running["v"] = math.sqrt(_variance(residual * module.omega) + _variance(fx))

        return before_skip

    for norms in stacks.values():
        running = {"v": 1.0}  # each stack starts at 1
        handles += [norm.register_forward_pre_hook(hook_for(running)) for norm in norms]
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            run_forward()
    finally:
        for handle in handles:
            handle.remove()
    norms = stacks["encoder"] + stacks["decoder"]
    missed = [i for i, norm in enumerate(norms) if visited.get(id(norm)) != 1]
    if missed:
        raise RuntimeError(
            "Admin profiling: the forward pass must go through every sublayer once; "
            f"{len(missed)} of {len(norms)} were not (or more than once)"
        )
    return [exact[id(norm)] for norm in norms]
