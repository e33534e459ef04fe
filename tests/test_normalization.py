"""AdaNorm and LayerNorm-simple against their formulas (Xu et al. 2019)."""

import pytest
import torch

from fairseq_rskip.modules import SkipNormConfig, build_norm


def inputs(seed=0, shape=(4, 3, 32)):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * 2 + 0.5).requires_grad_()


def adanorm_by_hand(x, scale, k, eps=1e-5):
    """The formula element by element: y = (x - mu) / (sigma + eps), sigma unbiased."""
    h = x.shape[-1]
    mu = x.sum(-1, keepdim=True) / h
    sigma = (((x - mu) ** 2).sum(-1, keepdim=True) / (h - 1)).sqrt()
    y = (x - mu) / (sigma + eps)
    return scale * (1 - k * y) * y, y


@pytest.mark.parametrize("scale,k", [(1.0, 0.1), (2.0, 0.1), (1.0, 0.3), (1.5, 0.0)])
def test_adanorm_forward_matches_formula(scale, k):
    x = inputs()
    norm = build_norm(32, SkipNormConfig(norm_type="adanorm", adanorm_scale=scale, adanorm_k=k)).double()
    expected, _ = adanorm_by_hand(x, scale, k)
    torch.testing.assert_close(norm(x), expected, rtol=1e-12, atol=1e-12)
    assert list(norm.parameters()) == []


@pytest.mark.parametrize("scale,k", [(1.0, 0.1), (2.0, 0.25)])
def test_adanorm_gradient_treats_the_factor_as_constant(scale, k):
    x = inputs(seed=1)
    upstream = torch.randn(x.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    norm = build_norm(32, SkipNormConfig(norm_type="adanorm", adanorm_scale=scale, adanorm_k=k)).double()
    (grad,) = torch.autograd.grad((norm(x) * upstream).sum(), x)

    # Reference: the factor C (1 - k y) is a constant, so dz/dx = factor * dy/dx,
    # with mu and sigma kept in the graph.
    x_ref = x.detach().clone().requires_grad_()
    _, y = adanorm_by_hand(x_ref, scale, k)
    factor = (scale * (1 - k * y)).detach()
    (expected,) = torch.autograd.grad((factor * y * upstream).sum(), x_ref)
    torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-10)

    # and it is not the gradient of the undetached expression
    x_full = x.detach().clone().requires_grad_()
    z_full, _ = adanorm_by_hand(x_full, scale, k)
    (undetached,) = torch.autograd.grad((z_full * upstream).sum(), x_full)
    assert not torch.allclose(grad, undetached, rtol=1e-4, atol=1e-6)


def test_adanorm_half_precision_is_computed_in_float32():
    x = inputs().detach().float()
    norm = build_norm(32, SkipNormConfig(norm_type="adanorm"))
    out = norm(x.bfloat16())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), norm(x), rtol=2e-2, atol=2e-2)


def test_layernorm_simple_has_no_gain_or_bias():
    x = inputs().detach().float()
    norm = build_norm(32, SkipNormConfig(norm_type="simple"))
    assert list(norm.parameters()) == []
    h = x.shape[-1]
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).sum(-1, keepdim=True) / h  # biased, as LayerNorm
    torch.testing.assert_close(norm(x), (x - mu) / (var + 1e-5).sqrt(), rtol=1e-5, atol=1e-5)


def test_layernorm_is_torch_layernorm_bit_for_bit():
    x = inputs().detach().float()
    ours = build_norm(32, SkipNormConfig(norm_type="layernorm"))
    ref = torch.nn.LayerNorm(32)
    with torch.no_grad():
        ref.weight.normal_()
        ref.bias.normal_()
    assert ours.load_state_dict(ref.state_dict()) is not None
    assert torch.equal(ours(x), ref(x))


def test_none_is_identity():
    x = inputs().detach()
    assert torch.equal(build_norm(32, SkipNormConfig(norm_type="none"))(x), x)


def test_unknown_norm_type_is_refused():
    config = SkipNormConfig(norm_type="batchnorm")
    with pytest.raises(ValueError, match=r"--norm-type must be one of layernorm, simple, adanorm, rmsnorm, dyt, none; got 'batchnorm'"):
        config.validate(False, False)
    with pytest.raises(ValueError, match=r"unknown norm type 'batchnorm'"):
        build_norm(32, config)


def test_adanorm_gradient_of_a_transposed_input():
    """fairseq's encoder hands the first layer a transposed (T x B x C) view."""
    x = inputs(seed=3, shape=(3, 4, 32)).detach().transpose(0, 1).requires_grad_()
    upstream = torch.randn(x.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    norm = build_norm(32, SkipNormConfig(norm_type="adanorm")).double()
    (grad,) = torch.autograd.grad((norm(x) * upstream).sum(), x)
    x_ref = x.detach().contiguous().requires_grad_()
    _, y = adanorm_by_hand(x_ref, 1.0, 0.1)
    (expected,) = torch.autograd.grad(((1 - 0.1 * y).detach() * y * upstream).sum(), x_ref)
    torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-10)


def test_adanorm_gradient_is_finite_on_a_constant_row():
    x = inputs().detach().float()
    x[0, 0] = 3.0
    x.requires_grad_()
    out = build_norm(32, SkipNormConfig(norm_type="adanorm"))(x)
    out.sum().backward()
    assert torch.equal(out[0, 0], torch.zeros(32))
    assert torch.isfinite(x.grad).all()


def test_adanorm_bfloat16_gradient():
    x = inputs().detach().float().requires_grad_()
    xb = x.detach().bfloat16().requires_grad_()
    norm = build_norm(32, SkipNormConfig(norm_type="adanorm"))
    upstream = torch.randn(x.shape, generator=torch.Generator().manual_seed(5))
    (norm(x) * upstream).sum().backward()
    (norm(xb).float() * upstream).sum().backward()
    assert xb.grad.dtype == torch.bfloat16
    torch.testing.assert_close(xb.grad.float(), x.grad, rtol=5e-2, atol=5e-2)
