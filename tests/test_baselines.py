"""The baselines of normalisation and residual studies, each against its formula
retyped from the paper or the authors' code: RMSNorm (both eps placements, the
partial variant), DyT, ReZero and SkipInit; their families build what they name."""

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import build_model, sample_batch
from fairseq_rskip.config import SkipNormConfig
from fairseq_rskip.modules import Normalization, ResidualNorm, build_norm
from fairseq_rskip.modules.normalization import DynamicTanh, Identity, RMSNorm


def rows(seed=0, shape=(5, 3, 16), scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * scale + 0.5).requires_grad_()


def with_gain(norm, seed=1):
    with torch.no_grad():
        for p in norm.parameters():
            p.copy_(torch.rand(p.shape, generator=torch.Generator().manual_seed(seed)) + 0.5)
    return norm.double()


def test_rmsnorm_eps_inside_is_torch_rms_norm_and_the_formula():
    """g * x / sqrt(mean(x^2) + 1e-5): torch.nn.RMSNorm's reading, through F.rms_norm."""
    norm = with_gain(build_norm(16, SkipNormConfig(norm_type="rmsnorm")))
    x = rows()
    expected = norm.weight * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5)
    torch.testing.assert_close(norm(x), expected)
    assert [n for n, _ in norm.named_parameters()] == ["weight"]
    reference = torch.nn.RMSNorm(16, eps=1e-5).double()
    reference.weight.data.copy_(norm.weight.data)
    torch.testing.assert_close(norm(x), reference(x))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rmsnorm_gradients_are_torch_rms_norms(dtype):
    """On CPU the norm runs RMSNormFunction (LayerNorm's backward, the mean set to 0 and
    its term added back): values and gradients those of F.rms_norm under autograd."""
    from fairseq_rskip.modules.norm_functions import RMSNormFunction

    norm = with_gain(build_norm(16, SkipNormConfig(norm_type="rmsnorm"))).to(dtype)
    x = rows().detach().to(dtype).requires_grad_()
    upstream = torch.randn(x.shape, dtype=dtype, generator=torch.Generator().manual_seed(3))
    ours = norm(x)
    assert isinstance(ours.grad_fn, RMSNormFunction._backward_cls)
    (ours * upstream).sum().backward()
    grads = x.grad.clone(), norm.weight.grad.clone()
    x.grad, norm.weight.grad = None, None
    theirs = torch.nn.functional.rms_norm(x, (16,), norm.weight, 1e-5)
    (theirs * upstream).sum().backward()
    assert torch.equal(ours, theirs)
    tolerance = {torch.float32: 1e-6, torch.float64: 1e-14}[dtype]
    torch.testing.assert_close(grads[0], x.grad, rtol=tolerance, atol=tolerance)
    torch.testing.assert_close(grads[1], norm.weight.grad, rtol=tolerance, atol=tolerance)
    if dtype == torch.float64:
        assert torch.autograd.gradcheck(lambda v, w: RMSNormFunction.apply(v, w, 1e-5),
                                        (x.detach().requires_grad_(), norm.weight))


def test_rmsnorm_eps_outside_is_the_authors_formula():
    """bzhangGo/rmsnorm: rms = ||x|| * d^(-1/2); x / (rms + 1e-8) * g."""
    norm = with_gain(build_norm(16, SkipNormConfig(norm_type="rmsnorm", rmsnorm_eps_placement="outside")))
    x = rows()
    rms = x.norm(2, dim=-1, keepdim=True) * 16 ** -0.5
    torch.testing.assert_close(norm(x), norm.weight * (x / (rms + 1e-8)))
    # small rows tell the placements apart: eps 1e-5 inside the root outweighs them
    tiny = rows(scale=1e-4) * 1e-3
    inside = build_norm(16, SkipNormConfig(norm_type="rmsnorm")).double()
    outside = build_norm(16, SkipNormConfig(norm_type="rmsnorm", rmsnorm_eps_placement="outside")).double()
    assert (inside(tiny).abs().mean() < 0.5) and (outside(tiny).abs().mean() > 0.5)


@pytest.mark.parametrize("placement", ["inside", "outside"])
def test_partial_rmsnorm_takes_the_rms_of_the_first_features(placement):
    """The authors' partial RMSNorm: the RMS over the first floor(p d) features, applied to all."""
    config = SkipNormConfig(norm_type="rmsnorm", rmsnorm_partial=0.3, rmsnorm_eps_placement=placement)
    norm = with_gain(build_norm(16, config))
    x = rows()
    k = math.floor(0.3 * 16)
    part = x[..., :k]
    if placement == "inside":
        rms = torch.sqrt(part.pow(2).mean(-1, keepdim=True) + 1e-5)
    else:
        rms = part.norm(2, dim=-1, keepdim=True) * k ** -0.5 + 1e-8
    torch.testing.assert_close(norm(x), norm.weight * x / rms)
    assert norm.features == k


def test_dyt_is_gain_times_tanh_of_alpha_x_plus_bias():
    norm = build_norm(16, SkipNormConfig(norm_type="dyt", dyt_alpha_init=0.7)).double()
    assert norm.alpha.item() == pytest.approx(0.7) and norm.alpha.shape == (1,)
    assert torch.equal(norm.weight, torch.ones(16, dtype=torch.float64))
    assert torch.equal(norm.bias, torch.zeros(16, dtype=torch.float64))
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    x = rows()
    alpha = norm.alpha.detach()[0]  # 0.7 in float32, held in float64
    torch.testing.assert_close(norm(x), norm.weight * torch.tanh(alpha * x) + norm.bias)
    x.grad = None
    norm(x).sum().backward()
    expected_alpha_grad = (norm.weight * (1 - torch.tanh(alpha * x) ** 2) * x).sum()
    torch.testing.assert_close(norm.alpha.grad[0], expected_alpha_grad.detach())


def test_transformer_dyt_replaces_every_norm_and_starts_alpha_where_asked():
    model = build_model("transformer_dyt_tiny", "--dyt-alpha-init", "0.2", "--dyt-attention-alpha-init", "0.8")
    norms = {n: m for n, m in model.named_modules() if isinstance(m, Normalization)}
    assert norms and all(isinstance(m, DynamicTanh) for m in norms.values())
    assert {"encoder.layer_norm", "decoder.layer_norm"} <= set(norms)
    for name, norm in norms.items():
        reads_attention = name.endswith(("self_attn_layer_norm", "encoder_attn_layer_norm"))
        assert norm.alpha.item() == pytest.approx(0.8 if reads_attention else 0.2), name


def test_transformer_rmsnorm_is_pre_ln_with_rmsnorm_everywhere():
    model = build_model("transformer_rmsnorm_tiny")
    norms = [m for m in model.modules() if isinstance(m, Normalization)]
    assert all(isinstance(m, RMSNorm) for m in norms)
    assert model.encoder.layer_norm is not None and model.decoder.layer_norm is not None
    assert all(m.normalize_before for m in model.modules() if isinstance(m, ResidualNorm))
    # with the fused call: the final norm is F.rms_norm on the stack's output
    x = torch.randn(4, 2, 64)
    torch.testing.assert_close(model.encoder.layer_norm(x),
                               F.rms_norm(x, [64], model.encoder.layer_norm.weight, 1e-5))


@pytest.mark.parametrize("arch", ["transformer_rezero_tiny", "transformer_skipinit_tiny"])
def test_rezero_and_skipinit_layers_are_the_identity_at_start_without_any_norm(arch):
    model = build_model(arch, "--dropout", "0").eval()
    assert all(isinstance(m, Identity) for m in model.modules() if isinstance(m, Normalization))
    assert model.encoder.layer_norm is None and model.decoder.layer_norm is None
    src_tokens, src_lengths, prev = sample_batch()
    with torch.no_grad():
        encoder_out = model.encoder(src_tokens, src_lengths)
        x = model.encoder.forward_embedding(src_tokens)[0].transpose(0, 1)
        torch.testing.assert_close(encoder_out["encoder_out"][0], x)
        for layer in model.decoder.layers:
            y = torch.randn(prev.size(1), prev.size(0), 64)
            out = layer(y, encoder_out["encoder_out"][0], encoder_out["encoder_padding_mask"][0])[0]
            assert torch.equal(out, y)


def branch_gains(layer):
    return [norm.branch_gain for norm in (layer.self_attn_layer_norm, getattr(layer, "encoder_attn_layer_norm", None),
                                          layer.final_layer_norm) if norm is not None]


def test_rezero_shares_one_alpha_per_layer_and_skipinit_has_one_per_sublayer():
    rezero = build_model("transformer_rezero_tiny")
    for layer in [*rezero.encoder.layers, *rezero.decoder.layers]:
        gains = branch_gains(layer)
        assert all(g is gains[0] for g in gains) and gains[0].item() == 0.0
    all_gains = [branch_gains(layer)[0] for layer in [*rezero.encoder.layers, *rezero.decoder.layers]]
    assert len({id(g) for g in all_gains}) == len(all_gains)
    skipinit = build_model("transformer_skipinit_tiny")
    per_sublayer = [g for layer in [*skipinit.encoder.layers, *skipinit.decoder.layers] for g in branch_gains(layer)]
    assert len({id(g) for g in per_sublayer}) == len(per_sublayer) == 2 * 2 + 2 * 3
    # the same model otherwise: ReZero has 2 + 2 alphas (one per layer), SkipInit 4 + 6
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(skipinit) - count(rezero) == (2 * 2 + 2 * 3) - 4


def test_residual_gain_is_x_plus_alpha_times_the_sublayer():
    """y = x + alpha F(x) per sublayer, alpha = --residual-gain-init, retyped on an encoder layer."""
    model = build_model("transformer_skipinit_tiny", "--residual-gain-init", "0.25", "--dropout", "0").eval()
    layer = model.encoder.layers[0]
    x = torch.randn(5, 2, 64)
    with torch.no_grad():
        h = x + 0.25 * layer.self_attn(x, x, x, need_weights=False)[0]
        expected = h + 0.25 * layer.fc2(torch.relu(layer.fc1(h)))
        torch.testing.assert_close(layer(x, None), expected)


@pytest.mark.parametrize("flags, message", [
    (("transformer_rskip_tiny", "--residual-gain", "rezero"), r"--residual-gain rezero is y = x \+ alpha F\(x\) "
     r"without normalisation, and needs --norm-type none"),
    (("transformer_rezero_tiny", "--residual-gain-init", "0.1", "--residual-gain", "none"),
     r"--residual-gain-init applies only with --residual-gain rezero or skipinit"),
    (("transformer_espa_tiny", "--residual-gain", "skipinit"), r"leave out --no-skip"),
    (("transformer_rskip_tiny", "--dyt-alpha-init", "0.8"), r"--dyt-alpha-init and --dyt-attention-alpha-init "
     r"apply only where a norm is DyT"),
    (("transformer_dyt_tiny", "--rmsnorm-partial", "0.5"), r"--rmsnorm-eps-placement and --rmsnorm-partial "
     r"apply only where a norm is RMSNorm"),
])
def test_the_baselines_flags_are_refused_where_they_mean_nothing(flags, message):
    with pytest.raises(ValueError, match=message):
        build_model(*flags)


def test_a_stack_norm_of_another_type_takes_its_own_flags():
    """--stack-norm-type dyt on a LayerNorm Pre-LN model: the final norms are DyT at their own alpha."""
    model = build_model("transformer_prenorm_nowarmup_tiny", "--stack-norm-type", "dyt", "--dyt-alpha-init", "1.5")
    assert isinstance(model.encoder.layer_norm, DynamicTanh)
    assert model.encoder.layer_norm.alpha.item() == pytest.approx(1.5)


def perturbed_encoder_layer(arch, *flags):
    """``(model, its first encoder layer, an input)``, in evaluation mode, the layer's
    weights moved off their start (gains off 1, biases off 0)."""
    model = build_model(arch, "--dropout", "0", *flags).eval()
    layer = model.encoder.layers[0]
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model, layer, torch.randn(5, 2, 64)


def ln(v, norm):
    """LayerNorm retyped, with ``norm``'s gain and bias."""
    return F.layer_norm(v, [v.size(-1)], norm.weight, norm.bias, 1e-5)


def test_sandwich_layer_is_x_plus_the_output_norm_of_the_sublayer():
    """Sandwich-LN: y = x + N_out(F(N_in(x))) per sublayer, retyped on an encoder layer."""
    model, layer, x = perturbed_encoder_layer("transformer_sandwich_tiny")
    a, f = layer.self_attn_layer_norm, layer.final_layer_norm
    with torch.no_grad():
        n_in = ln(x, a)
        h = x + ln(layer.self_attn(n_in, n_in, n_in, need_weights=False)[0], a.output_norm)
        y = h + ln(layer.fc2(torch.relu(layer.fc1(ln(h, f)))), f.output_norm)
        torch.testing.assert_close(layer(x, None), y)
    assert model.decoder.layers[0].encoder_attn_layer_norm.output_norm is not None
    assert model.encoder.layernorm_embedding is None


def test_periln_adds_the_embedding_norm_of_the_stack_norm_type():
    model = build_model("transformer_periln_tiny", "--norm-type", "rmsnorm")
    for stack in (model.encoder, model.decoder):
        assert isinstance(stack.layernorm_embedding, RMSNorm) and isinstance(stack.layer_norm, RMSNorm)
        assert isinstance(stack.layers[0].self_attn_layer_norm.output_norm, RMSNorm)


NORMFORMER = ("--scale-attn", "--scale-heads", "--scale-fc", "--scale-resids")


@pytest.mark.parametrize("resids", [False, True])
def test_normformer_decoder_layer_equals_fairseqs_own(resids):
    """Outputs and gradients of our decoder layer equal fairseq's
    TransformerDecoderLayerBase with the same options and weights: bit for bit
    with the paper's three; with --scale-resids to float32's rounding (fairseq
    multiplies the skip input, then adds; ours is one addcmul)."""
    from fairseq.models.transformer import TransformerConfig
    from fairseq.modules.transformer_layer import TransformerDecoderLayerBase
    from fairseq_rskip.tools.common import modelbuild

    flags = ("--dropout", "0.2", "--attention-dropout", "0.1", "--activation-dropout", "0.1",
             "--decoder-ffn-embed-dim", "96", *NORMFORMER[: 4 if resids else 3])
    model, args = modelbuild.build_model("transformer_normformer_tiny", flags)
    ours = model.decoder.layers[0]
    reference = TransformerDecoderLayerBase(TransformerConfig.from_namespace(args))
    assert reference.attn_ln is not None and (reference.w_resid is not None) == resids
    renamed = {"attn_ln.weight": "self_attn_layer_norm.output_norm.weight",
               "attn_ln.bias": "self_attn_layer_norm.output_norm.bias", "w_resid": "final_layer_norm.omega"}
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    state = {renamed.get(k, k): v for k, v in reference.state_dict().items()}
    ours.load_state_dict(state, strict=True)
    x, encoder_out = torch.randn(6, 3, 64), torch.randn(7, 3, 64)
    mask = torch.triu(torch.full((6, 6), float("-inf")), 1)
    results = []
    for layer in (reference, ours):
        layer.train()
        torch.manual_seed(4)
        xi = x.clone().requires_grad_()
        out = layer(xi, encoder_out, None, self_attn_mask=mask)[0]
        out.pow(2).sum().backward()
        grads = {renamed.get(n, n): p.grad for n, p in layer.named_parameters()}
        results.append({"output": out.detach(), "input": xi.grad, **grads})
    reference_results, our_results = results
    assert reference_results.keys() == our_results.keys()
    # gradients are sums of terms up to the largest one's size (the key bias's, 0 in exact
    # arithmetic, is all rounding): float32's rounding is measured against that size
    rounding = 8 * torch.finfo(torch.float32).eps * max(v.abs().max().item() for v in reference_results.values())
    for name, expected in reference_results.items():
        if resids:
            diff = (our_results[name] - expected).abs().max().item()
            assert diff <= rounding, (name, diff, expected.abs().max().item())
        else:
            assert torch.equal(our_results[name], expected), name


def test_normformer_encoder_layer_has_the_same_four_operations():
    """fairseq has no NormFormer encoder: ours, retyped (eval mode)."""
    _, layer, x = perturbed_encoder_layer("transformer_normformer_tiny", "--scale-resids")
    a, f = layer.self_attn_layer_norm, layer.final_layer_norm
    with torch.no_grad():
        n_in = ln(x, a)
        attn = layer.self_attn(n_in, n_in, n_in, need_weights=False)[0]
        heads = layer.c_attn.numel()
        attn = (attn.view(5, 2, heads, -1) * layer.c_attn.view(heads, 1)).view(5, 2, 64)
        h = x + ln(attn, a.output_norm)
        hidden = ln(torch.relu(layer.fc1(ln(h, f))), layer.ffn_layernorm)
        y = f.omega * h + layer.fc2(hidden)
        torch.testing.assert_close(layer(x, None), y)


@pytest.mark.parametrize("layers", [(6, 6), (3, 9)])
@pytest.mark.parametrize("share", [False, True])
def test_tfixup_scales_each_matrix_as_the_authors_code(layers, share):
    """Standard deviations against the formula per matrix and depth (Xavier-uniform times
    the factor); no norm left; the token embeddings scaled (once when shared)."""
    n_e, n_d = layers
    flags = ["--encoder-layers", str(n_e), "--decoder-layers", str(n_d), "--encoder-embed-dim", "128",
             "--decoder-embed-dim", "128", "--encoder-ffn-embed-dim", "512", "--decoder-ffn-embed-dim", "512"]
    model = build_model("transformer_tfixup_tiny", *flags, *(["--share-all-embeddings"] if share else []))
    assert all(isinstance(m, Identity) for m in model.modules() if isinstance(m, Normalization))
    assert model.encoder.layer_norm is None and model.decoder.layer_norm is None
    xavier = lambda w: math.sqrt(2 / sum(w.shape))  # noqa: E731
    enc, dec = 0.67 * n_e ** -0.25, (9 * n_d) ** -0.25

    def check(weight, factor, rtol=0.06):
        assert weight.std().item() == pytest.approx(factor * xavier(weight), rel=rtol)

    for layer in model.encoder.layers:
        for w in (layer.fc1.weight, layer.fc2.weight, layer.self_attn.out_proj.weight):
            check(w, enc)
        check(layer.self_attn.v_proj.weight, enc)  # fairseq's gain 1/sqrt(2) undone by sqrt(2)
        check(layer.self_attn.q_proj.weight, 2 ** -0.5)
        assert torch.count_nonzero(layer.fc1.bias) == 0
    for layer in model.decoder.layers:
        for w in (layer.fc1.weight, layer.fc2.weight, layer.self_attn.out_proj.weight,
                  layer.encoder_attn.out_proj.weight, layer.self_attn.v_proj.weight,
                  layer.encoder_attn.v_proj.weight):
            check(w, dec)
        check(layer.encoder_attn.k_proj.weight, 2 ** -0.5)
    embedding_std = lambda e: e.weight[e.padding_idx + 1:].std().item()  # noqa: E731
    d = model.encoder.embed_tokens.embedding_dim
    assert embedding_std(model.encoder.embed_tokens) == pytest.approx((9 * n_e) ** -0.25 * d ** -0.5, rel=0.1)
    decoder_factor = (9 * n_e) ** -0.25 if share else (9 * n_d) ** -0.25
    assert embedding_std(model.decoder.embed_tokens) == pytest.approx(decoder_factor * d ** -0.5, rel=0.1)


@pytest.mark.parametrize("flags, message", [
    (("transformer_rskip_tiny", "--sandwich-norm"), r"--sandwich-norm is defined for Pre-LN layers"),
    (("transformer_normformer_tiny", "--sandwich-norm"), r"--sandwich-norm and --scale-attn both"),
    (("transformer_sandwich_tiny", "--norm-type", "none"), r"--sandwich-norm add norms of --norm-type"),
    (("transformer_tfixup_tiny", "--norm-type", "layernorm"), r"--tfixup initialises a post-norm model"),
    (("transformer_rezero_tiny", "--tfixup"), r"--tfixup initialises a post-norm model"),
])
def test_the_sublayer_options_are_refused_where_they_mean_nothing(flags, message):
    with pytest.raises(ValueError, match=message):
        build_model(*flags)
