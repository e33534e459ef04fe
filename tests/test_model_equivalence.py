"""Exact equivalences with fairseq's own Transformer, and the wiring's formulas."""

import pytest
import torch
import torch.nn.functional as F

from conftest import build_model, sample_batch
from fairseq_rskip.modules import Normalization, ResidualNorm, SkipNormConfig


def param_shapes(model):
    return [(name, tuple(p.shape)) for name, p in model.named_parameters()]


def forward_backward(model, batch, seed):
    """Logits and parameter gradients of one training-mode pass (dropout on)."""
    model.train()
    model.zero_grad()
    torch.manual_seed(seed)
    logits = model(*batch)[0]
    logits.float().logsumexp(-1).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return logits.detach(), grads


def assert_bitwise_same(ref, ours):
    assert param_shapes(ref) == param_shapes(ours)
    assert list(ref.state_dict()) == list(ours.state_dict())
    ours.load_state_dict(ref.state_dict(), strict=True)
    batch = sample_batch()
    ref.eval()
    ours.eval()
    with torch.no_grad():
        assert torch.equal(ref(*batch)[0], ours(*batch)[0])
    ref_logits, ref_grads = forward_backward(ref, batch, seed=5)
    our_logits, our_grads = forward_backward(ours, batch, seed=5)
    assert torch.equal(ref_logits, our_logits)
    assert ref_grads.keys() == our_grads.keys()
    for name in ref_grads:
        assert torch.equal(ref_grads[name], our_grads[name]), name


FLAGS = ("--dropout", "0.2", "--attention-dropout", "0.1", "--activation-dropout", "0.1")


def test_rskip_with_one_recursion_is_fairseq_postln():
    ref = build_model("transformer_tiny", *FLAGS)
    ours = build_model("transformer_rskip_tiny", "--skip-recursions", "1", *FLAGS)
    # same initialisation from the same seed, before any weights are copied
    for (name, a), (_, b) in zip(ref.state_dict().items(), ours.state_dict().items()):
        assert torch.equal(a, b), name
    assert_bitwise_same(ref, ours)


def test_xskip_scale_one_with_layernorm_is_postln():
    ref = build_model("transformer_tiny", *FLAGS)
    ours = build_model(
        "transformer_rskip_tiny", "--skip-recursions", "1", "--skip-scale", "1", "--norm-type", "layernorm", *FLAGS
    )
    assert_bitwise_same(ref, ours)


def test_prenorm_is_fairseq_normalize_before():
    ref = build_model(
        "transformer_tiny", "--encoder-normalize-before", "--decoder-normalize-before", *FLAGS
    )
    ours = build_model("transformer_prenorm_nowarmup_tiny", *FLAGS)
    assert ours.encoder.layer_norm is not None and ours.decoder.layer_norm is not None
    assert_bitwise_same(ref, ours)


def test_rskip_default_adds_one_norm_per_sublayer():
    ref = build_model("transformer_tiny")
    ours = build_model("transformer_rskip_tiny")  # two recursions
    extra = {n for n, _ in ours.named_parameters()} - {n for n, _ in ref.named_parameters()}
    # 2 encoder layers x 2 sublayers + 2 decoder layers x 3 sublayers, weight and bias each
    assert len(extra) == (2 * 2 + 2 * 3) * 2
    assert all(".recursion_norms.0." in n for n in extra)


def sublayer_io(dim=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(5, 2, dim, generator=g) * 3 + 1, torch.randn(5, 2, dim, generator=g)


def randomised(norm):
    """Give a norm's gain and bias non-trivial values."""
    with torch.no_grad():
        for p in norm.parameters():
            p.normal_()
    return norm


def reference_layer_norm(v, norm):
    return F.layer_norm(v, (v.shape[-1],), norm.weight, norm.bias, 1e-5)


@pytest.mark.parametrize("recursions", [1, 2, 4])
def test_rskip_formula(recursions):
    x, fx = sublayer_io()
    m = randomised(ResidualNorm(16, SkipNormConfig(skip_recursions=recursions), normalize_before=False))
    norms = [m] + list(m.recursion_norms)
    assert len(norms) == recursions
    y = reference_layer_norm(x + fx, m)  # y_1 = LN_1(x + F(x))
    for norm in norms[1:]:
        y = reference_layer_norm(x + y, norm)  # y_i = LN_i(x + y_{i-1})
    torch.testing.assert_close(m(fx, x), y, rtol=0, atol=1e-6)


def test_rskip_shared_norm_reuses_the_first_norm():
    x, fx = sublayer_io()
    m = randomised(
        ResidualNorm(16, SkipNormConfig(skip_recursions=3, skip_shared_norm=True), normalize_before=False)
    )
    assert len(list(m.parameters())) == 2
    y = reference_layer_norm(x + fx, m)
    for _ in range(2):
        y = reference_layer_norm(x + y, m)
    torch.testing.assert_close(m(fx, x), y, rtol=0, atol=1e-6)


@pytest.mark.parametrize("scale", [0.25, 0.5, 2.0, 4.0])
def test_xskip_formula_with_and_without_norm(scale):
    x, fx = sublayer_io()
    with_ln = randomised(ResidualNorm(16, SkipNormConfig(skip_scale=scale), normalize_before=False))
    torch.testing.assert_close(with_ln(fx, x), reference_layer_norm(scale * x + fx, with_ln))
    plain = ResidualNorm(16, SkipNormConfig(skip_scale=scale, norm_type="none"), normalize_before=False)
    assert list(plain.parameters()) == []
    torch.testing.assert_close(plain(fx, x), scale * x + fx)


def test_prenorm_formula():
    x, fx = sublayer_io()
    m = randomised(ResidualNorm(16, SkipNormConfig(), normalize_before=True))
    torch.testing.assert_close(m.branch_input(x), reference_layer_norm(x, m))
    assert torch.equal(m(fx, x), x + fx)
    post = ResidualNorm(16, SkipNormConfig(), normalize_before=False)
    assert torch.equal(post.branch_input(x), x)


def test_postln_adanorm_has_no_norm_parameters():
    model = build_model("transformer_rskip_tiny", "--skip-recursions", "1", "--norm-type", "adanorm")
    assert not [n for n, _ in model.named_parameters() if "norm" in n]
    norms = [m for m in model.modules() if isinstance(m, Normalization)]
    # 2 x 2 encoder + 2 x 3 decoder sublayers; no final norms (Post-LN)
    assert len(norms) == 10 and all(m.norm_type == "adanorm" for m in norms)


@pytest.mark.parametrize(
    "config, pre",
    [
        (SkipNormConfig(), False),
        (SkipNormConfig(skip_recursions=3), False),
        (SkipNormConfig(skip_scale=0.5), False),
        (SkipNormConfig(skip_scale=2.0, norm_type="none"), False),
        (SkipNormConfig(norm_type="adanorm", skip_recursions=2), False),
        (SkipNormConfig(), True),
    ],
)
def test_inplace_skip_gives_the_same_values_and_gradients(config, pre):
    x, fx = sublayer_io()
    results = []
    for inplace in (False, True):
        torch.manual_seed(3)
        m = ResidualNorm(16, config, normalize_before=pre, inplace=inplace)
        for p in m.parameters():
            torch.nn.init.normal_(p)
        residual = x.clone().requires_grad_()
        w = torch.full((16,), 1.5, requires_grad=True)
        branch = fx * w  # a sublayer output: fresh, in the graph
        before = branch.detach().clone()
        y = m(branch, residual)
        # the skip wrote lam * residual + F(x) into the sublayer output, or left it
        expected = torch.add(before, x, alpha=config.skip_scale) if inplace else before
        torch.testing.assert_close(branch.detach(), expected, rtol=0, atol=0)
        y.pow(2).sum().backward()
        grads = [p.grad for p in m.parameters() if p.grad is not None]
        results.append((y.detach(), residual.grad, w.grad, grads))
    (y0, r0, w0, p0), (y1, r1, w1, p1) = results
    assert torch.equal(y0, y1) and torch.equal(r0, r1) and torch.equal(w0, w1)
    assert len(p0) == len(p1) and all(torch.equal(a, b) for a, b in zip(p0, p1))


def test_encoder_layer_returns_the_feed_forward_output_untouched_by_the_inplace_skip():
    model = build_model("transformer_rskip_tiny", "--dropout", "0")
    layer = model.encoder.layers[0]
    layer.return_fc = True
    layer.eval()
    seen = {}

    def keep_copy(_module, _inputs, out):
        seen["fc2"] = out.clone()

    handle = layer.fc2.register_forward_hook(keep_copy)
    x = torch.randn(5, 2, model.encoder.embed_tokens.embedding_dim)
    with torch.no_grad():
        out, fc_result = layer(x, encoder_padding_mask=None)
    handle.remove()
    assert torch.equal(fc_result, seen["fc2"])
    assert not torch.equal(out, fc_result)


def test_inplace_skip_keeps_a_float32_residual_stream_under_autocast():
    """Under autocast the sublayer output is half precision and the residual
    float32: the skip must give float32, as fairseq's out-of-place sum does."""
    x, fx = sublayer_io()
    branch = fx.to(torch.bfloat16)
    out = {}
    for inplace in (False, True):
        m = ResidualNorm(16, SkipNormConfig(), normalize_before=True, inplace=inplace)
        out[inplace] = m(branch.clone(), x)
    assert out[True].dtype == torch.float32
    assert torch.equal(out[True], out[False])
    model = build_model("transformer_prenorm_nowarmup_tiny", "--dropout", "0").eval()
    layer = model.encoder.layers[0]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert layer(torch.randn(5, 2, 64), encoder_padding_mask=None).dtype == torch.float32
