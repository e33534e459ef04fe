"""What the variants keep for the backward pass, against fairseq's stock Post-LN.

Peak memory in training is dominated by the activations autograd saves. These
tests count them exactly (distinct storages handed to ``saved_tensors_hooks``,
parameters left out), so that the memory targets of the benchmark do not rest
on a noisy RSS figure alone, and check that the memory-saving code paths
(AdaNorm's written-out gradient, rSkip's recomputed normalisations) give the
gradients of the formulas.
"""

import pytest
import torch
import torch.nn.functional as F

from conftest import build_model, sample_batch
from fairseq_rskip.tools.common.memory import saved_activation_bytes
from fairseq_rskip.modules import ResidualNorm, SkipNormConfig, build_norm
from fairseq_rskip.modules.norm_functions import RecomputedNormsFunction

FLAGS = ("--dropout", "0.1")


BSZ, SRC_LEN, TGT_LEN = 4, 9, 8


def model_saved_bytes(*flags):
    model = build_model(*flags, *FLAGS).train()
    batch = sample_batch(bsz=BSZ, src_len=SRC_LEN, tgt_len=TGT_LEN)
    torch.manual_seed(3)
    nbytes, out = saved_activation_bytes(lambda: model(*batch)[0], model.parameters())
    out.float().logsumexp(-1).sum().backward()  # the saved graph is complete and usable
    assert all(p.grad is not None for p in model.parameters())
    return nbytes


@pytest.mark.parametrize(
    "flags,extra_norms",
    [
        (("transformer_rskip_tiny",), 1),
        (("transformer_rskip_tiny", "--skip-recursions", "4"), 3),
        (("transformer_rskip_tiny", "--skip-recursions", "3", "--skip-shared-norm"), 2),
        (("transformer_adanorm_tiny",), 0),
        (("transformer_adanorm_tiny", "--norm-type", "adanorm"), 0),
        (("transformer_rskip_tiny", "--skip-recursions", "1", "--norm-type", "adanorm"), 0),
        (("transformer_rskip_tiny", "--norm-type", "adanorm"), 1),
        (("transformer_prenorm_nowarmup_tiny",), 0),
        (("transformer_deepnorm_tiny",), 0),
        (("transformer_admin_tiny",), 0),
        (("transformer_espa_tiny",), 0),
        (("transformer_uspa_tiny",), 0),
        (("transformer_rmsnorm_tiny",), 0),
    ],
    ids=[
        "rskip2", "rskip4", "rskip3-shared", "adanorm", "adanorm-every", "adanorm-postln",
        "rskip2-adanorm", "prenorm", "deepnorm", "admin", "espa", "uspa", "rmsnorm",
    ],
)
def test_saves_no_more_activations_than_fairseq_postln(flags, extra_norms):
    baseline = model_saved_bytes("transformer_tiny")
    # transformer_tiny: 2 + 2 layers of 64 dims, float32. Allowed on top:
    # - one hidden-state tensor per stack: fairseq hands the first layer a
    #   transposed view, which Post-LN's input projection copies; rSkip keeps
    #   the view's storage as well (only in that layer);
    # - per-row statistics of the normalisations (1/64 of a tensor each).
    src_rows, tgt_rows = BSZ * SRC_LEN, BSZ * TGT_LEN
    first_inputs = (src_rows + tgt_rows) * 64 * 4
    row_stats = extra_norms * 2 * 4 * (src_rows * 2 * 2 + tgt_rows * 2 * 3)
    # Admin: omega = omega_init + omega_delta, one vector of 64 a sublayer (10)
    omegas = 10 * 64 * 4 if flags[0] == "transformer_admin_tiny" else 0
    assert model_saved_bytes(*flags) <= baseline + first_inputs + row_stats + omegas


@pytest.mark.parametrize("norm_type", ["adanorm", "rmsnorm"])
def test_a_norm_saves_what_layernorm_saves(norm_type):
    x = torch.randn(7, 5, 64).transpose(0, 1).requires_grad_()  # fairseq's T x B x C view
    sizes = {}
    for norm_type in ("layernorm", norm_type):
        norm = build_norm(64, SkipNormConfig(norm_type=norm_type))
        sizes[norm_type], out = saved_activation_bytes(lambda: norm(x * 1.0), norm.parameters())
        assert out.is_contiguous()  # the next linear layer reads it without a copy
    assert sizes[norm_type] <= sizes["layernorm"]


def reference_layer_norm(v, norm):
    return F.layer_norm(v, (v.shape[-1],), norm.weight, norm.bias, 1e-5)


@pytest.mark.parametrize("norm_type", ["layernorm", "simple"])
@pytest.mark.parametrize("recursions,shared", [(2, False), (3, False), (3, True)])
def test_rskip_recomputed_norms_give_the_formula_gradients(recursions, shared, norm_type):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 3, 16, generator=g, dtype=torch.float64, requires_grad=True)
    fx = torch.randn(5, 3, 16, generator=g, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(5, 3, 16, generator=g, dtype=torch.float64)
    m = ResidualNorm(
        16,
        SkipNormConfig(norm_type=norm_type, skip_recursions=recursions, skip_shared_norm=shared),
        normalize_before=False,
    ).double()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(generator=g)
    params = list(m.parameters())

    nbytes, out = saved_activation_bytes(lambda: m(fx, x), params)
    # only x + F(x), x and the last norm's per-row mean and 1/std are kept,
    # not one input per normalisation
    rows = x.numel() // x.size(-1)
    assert nbytes == (2 * x.numel() + 2 * rows) * x.element_size()
    ours = torch.autograd.grad((out * upstream).sum(), [x, fx, *params])
    assert len(params) == (0 if norm_type == "simple" else 2 if shared else 2 * recursions)

    norms = [m] + (list(m.recursion_norms) if not shared else [m] * (recursions - 1))
    y = reference_layer_norm(x + fx, norms[0])
    for norm in norms[1:]:
        y = reference_layer_norm(x + y, norm)
    expected = torch.autograd.grad((y * upstream).sum(), [x, fx, *params])
    for a, b in zip(ours, expected):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_rskip_without_gradients_runs_the_norms_directly():
    m = ResidualNorm(16, SkipNormConfig(skip_recursions=2), normalize_before=False)
    x, fx = torch.randn(4, 16), torch.randn(4, 16)
    with torch.no_grad():
        assert torch.equal(m(fx, x), m.norms(x + fx, x))


def test_recomputation_runs_under_the_forward_autocast_state():
    """Backward runs the function again as forward ran it. (On CPU, autocast
    leaves layer_norm alone, so a matrix product stands in for the norms.)"""
    g = torch.Generator().manual_seed(6)
    s, residual, w = (torch.randn(4, 4, generator=g, requires_grad=True) for _ in range(3))

    def fn(s, residual):
        return torch.mm(s + residual, w)

    def grads(recompute):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = RecomputedNormsFunction.apply(fn, s, residual, w) if recompute else fn(s, residual)
        assert y.dtype == torch.bfloat16
        return torch.autograd.grad(y.float().pow(2).sum(), [s, residual, w])

    for a, b in zip(grads(True), grads(False)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_rskip_adanorm_recomputation_gives_the_autograd_gradients(monkeypatch):
    g = torch.Generator().manual_seed(7)
    x, fx = (torch.randn(5, 3, 16, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2))
    m = ResidualNorm(16, SkipNormConfig(norm_type="adanorm", skip_recursions=3), normalize_before=False)

    def grads():
        return torch.autograd.grad(m(fx, x).pow(2).sum(), [x, fx])

    recomputed = grads()
    monkeypatch.setattr(ResidualNorm, "_recomputed_norms", ResidualNorm.norms)
    for a, b in zip(recomputed, grads()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
