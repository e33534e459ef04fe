"""E-SPA, U-SPA, Value-SkipInit and TAT (He et al. 2023), checked against
references written here from the papers' formulas, not from the package's code."""

import math

import pytest
import torch

from conftest import build_model, make_dictionary, sample_batch
from fairseq_rskip.modules import spa
from fairseq_rskip.modules.shaped_attention import ShapedMultiheadAttention
from fairseq_rskip.modules.tat import TATLeakyReLU, leaky_relu_cmap

DEPTHS = (6, pytest.param(48, marks=pytest.mark.slow))


# -- references, from PAPERS.md section 4 ----------------------------------------------


def reference_rhos(kernel, final, depth):
    """E-SPA: 1 - rho_l^2 = (1 - exp(-2 gamma_L))^(l/L); U-SPA: 1 - rho_l = (1 - rho_L)^(l/L)."""
    if kernel == "exponential":
        return [math.sqrt(1 - (1 - math.exp(-2 * final)) ** (l / depth)) for l in range(depth + 1)]
    return [1 - (1 - final) ** (l / depth) for l in range(depth + 1)]


def reference_kernel(kernel, rho, n):
    i = torch.arange(n, dtype=torch.float64)
    if kernel == "exponential":
        gap = (i[:, None] - i[None, :]).abs()
        return torch.where(gap == 0, torch.ones_like(gap), torch.full_like(gap, rho) ** gap)
    return torch.full((n, n), rho, dtype=torch.float64).fill_diagonal_(1.0)


def reference_attention(kernel, rho, rho_prev, n, causal):
    """A_l = L_l L_{l-1}^{-1}: Cholesky factors, or symmetric square roots (numpy)."""
    import numpy as np

    s, s_prev = reference_kernel(kernel, rho, n).numpy(), reference_kernel(kernel, rho_prev, n).numpy()
    if causal:
        return torch.from_numpy(np.linalg.cholesky(s) @ np.linalg.inv(np.linalg.cholesky(s_prev)))

    def sqrtm(m, power):
        w, v = np.linalg.eigh(m)
        return (v * w**power) @ v.T

    return torch.from_numpy(sqrtm(s, 0.5) @ sqrtm(s_prev, -0.5))


def shaped(kernel, final, layer, depth, causal, **kw):
    return ShapedMultiheadAttention(
        32, 4, 0.0, kernel=kernel, final=final, layer=layer, num_layers=depth, causal=causal,
        value_skipinit=False, **kw,
    ).eval()


def mixing_matrix(attention, n):
    """D_l softmax(B_l) as the module applies it to n tokens (no padding)."""
    bias, scale = attention.shaping(None, n, n, torch.device("cpu"))
    return scale[0, 0].double() * torch.softmax(bias[0, 0].double(), dim=-1), bias[0, 0]


KERNELS = [("exponential", 0.005), ("uniform", 0.8), ("exponential", 0.05), ("uniform", 0.3)]


@pytest.mark.parametrize("kernel,final", KERNELS)
@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("causal", [True, False], ids=["decoder", "encoder"])
def test_attention_matrices_reproduce_the_target_kernel(kernel, final, depth, causal):
    n = 64 if causal else 40
    rhos = reference_rhos(kernel, final, depth)
    product = torch.eye(n, dtype=torch.float64)
    for layer in range(1, depth + 1):
        reference = reference_attention(kernel, rhos[layer], rhos[layer - 1], n, causal)
        # the construction needs A_l >= 0 (the bidirectional one up to round-off)
        assert reference.min() > -1e-12, (layer, reference.min())
        a, bias = mixing_matrix(shaped(kernel, final, layer, depth, causal), n)
        assert (a >= 0).all()
        if causal:
            upper = torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1)
            assert torch.isneginf(bias[upper]).all() and torch.isfinite(bias[~upper]).all()
            assert (a[upper] == 0).all()
        torch.testing.assert_close(a, reference.clamp(min=0), rtol=1e-4, atol=1e-6, msg=f"layer {layer}")
        product = a @ product
    target = reference_kernel(kernel, rhos[-1], n)
    torch.testing.assert_close(product @ product.T, target, rtol=0, atol=1e-4)


def test_causal_espa_bias_is_exact_in_log_space():
    """Entries of A_1 reach 1e-29 at 64 tokens; B_1 + log D_1 is their logarithm."""
    depth, n = 48, 64
    rhos = reference_rhos("exponential", 0.005, depth)
    bias, scale = shaped("exponential", 0.005, 1, depth, True).shaping(None, n, n, torch.device("cpu"))
    log_a = bias[0, 0].double() + scale[0, 0].double().log()
    # layer 1 (Sigma_0 = I): A_1 is the Cholesky factor, L[i, j] = s rho^(i-j), L[i, 0] = rho^i
    rho = rhos[1]
    s = math.sqrt(1 - rho * rho)
    assert log_a[63, 0].item() / math.log(10) < -29
    assert math.isclose(log_a[63, 0].item(), 63 * math.log(rho), rel_tol=1e-6)
    assert math.isclose(log_a[63, 5].item(), math.log(s) + 58 * math.log(rho), rel_tol=1e-6)


def test_bidirectional_uspa_is_identity_plus_constant():
    """Uniform kernels commute: A_l = a I + c 11^T with a = sqrt((1-rho)/(1-rho')) and
    a + n c = sqrt((1-rho+n rho)/(1-rho'+n rho'))."""
    depth, n, layer = 6, 9, 3
    rhos = reference_rhos("uniform", 0.8, depth)
    rho, rho_prev = rhos[layer], rhos[layer - 1]
    a = math.sqrt((1 - rho) / (1 - rho_prev))
    c = (math.sqrt((1 - rho + n * rho) / (1 - rho_prev + n * rho_prev)) - a) / n
    expected = a * torch.eye(n, dtype=torch.float64) + c
    got, _ = mixing_matrix(shaped("uniform", 0.8, layer, depth, False), n)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)


def test_encoder_matrices_follow_each_sequences_own_length_under_left_padding():
    """A sentence of 5 tokens left-padded to 8 gets the 5-token matrices on its real tokens."""
    attention = shaped("exponential", 0.005, 2, 6, False)
    padding = torch.tensor([[True, True, True, False, False, False, False, False],
                            [False] * 8])
    bias, scale = attention.shaping(padding, 8, 8, torch.device("cpu"))
    five_bias, five_scale = attention.shaping(None, 5, 5, torch.device("cpu"))
    eight_bias, _ = attention.shaping(None, 8, 8, torch.device("cpu"))
    torch.testing.assert_close(bias[0, 0, 3:, 3:], five_bias[0, 0])
    torch.testing.assert_close(scale[0, 0, 3:], five_scale[0, 0])
    torch.testing.assert_close(bias[1, 0], eight_bias[0, 0])


@pytest.mark.parametrize("kernel,final", [("exponential", 0.005), ("uniform", 0.8)])
def test_a_lengths_matrices_do_not_depend_on_the_lengths_seen_before(kernel, final):
    """Bit for bit: what data-parallel ranks and single processes, which see other
    batches, must agree on."""
    cpu = torch.device("cpu")
    for causal in (True, False):
        fresh = shaped(kernel, final, 3, 6, causal, max_positions=128)
        used = shaped(kernel, final, 3, 6, causal, max_positions=128)
        used.shaping(None, 70, 70, cpu)
        for a, b in zip(fresh.shaping(None, 10, 10, cpu), used.shaping(None, 10, 10, cpu)):
            assert torch.equal(a, b)


def test_matrices_are_cached_per_length_and_not_saved(monkeypatch):
    attention = shaped("exponential", 0.005, 2, 6, False)
    built = []
    original = ShapedMultiheadAttention._build
    monkeypatch.setattr(ShapedMultiheadAttention, "_build", lambda self, n, d: built.append(n) or original(self, n, d))
    x = torch.randn(7, 2, 32)
    for _ in range(3):
        attention(x, x, x, need_weights=False)
    assert built == [7]
    decoder = shaped("uniform", 0.8, 2, 6, True, max_positions=128)
    for n in (3, 10, 64, 65, 20):
        y = torch.randn(n, 2, 32)
        decoder(y, y, y, need_weights=False)
    assert built == [7, 128]  # causal: one matrix for the decoder's maximum positions
    y = torch.randn(130, 1, 32)
    decoder(y, y, y, need_weights=False)  # longer than that: built again, for this length
    assert built == [7, 128, 130]
    assert set(attention.state_dict()) == {f"{p}_proj.{w}" for p in "qkv" for w in ("weight", "bias")} | {
        "out_proj.weight", "out_proj.bias"}


# -- the models at initialisation ---------------------------------------------------------


def layer_input(n=9, bsz=2, dim=64, seed=0):
    return torch.randn(n, bsz, dim, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch", ["transformer_espa_tiny", "transformer_uspa_tiny"])
def test_spa_attention_at_init_is_a_fixed_mixing_of_the_values(arch):
    """W_Q = 0: the output is A_l X W_V W_O whatever the keys and the token content."""
    model = build_model(arch, "--encoder-layers", "3", "--decoder-layers", "3").eval()
    kernel = "exponential" if "espa" in arch else "uniform"
    final = 0.005 if kernel == "exponential" else 0.8
    rhos = reference_rhos(kernel, final, 3)
    for stack, causal in ((model.encoder, False), (model.decoder, True)):
        for index, layer in enumerate(stack.layers):
            attention = layer.self_attn
            a = reference_attention(kernel, rhos[index + 1], rhos[index], 9, causal).float()
            for seed in (0, 1):
                x = layer_input(seed=seed)
                w_v, w_o = attention.v_proj.weight, attention.out_proj.weight
                expected = torch.einsum("ts,sbc->tbc", a, x) @ w_v.T @ w_o.T
                with torch.no_grad():
                    out, weights = attention(x, x, x, need_weights=True)
                torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
                torch.testing.assert_close(weights[0], a, rtol=1e-4, atol=1e-6)
            with torch.no_grad():
                attention.k_proj.weight.normal_()  # other keys: the same output
                again, _ = attention(x, x, x, need_weights=False)
            torch.testing.assert_close(again, expected, rtol=1e-4, atol=1e-5)


def test_value_skipinit_sublayer_at_init_is_x_wv_wo():
    model = build_model("transformer_vanilla_tiny", "--value-skipinit").eval()
    for layer in list(model.encoder.layers) + list(model.decoder.layers):
        attention = layer.self_attn
        x = layer_input()
        with torch.no_grad():
            out, _ = attention(x, x, x, need_weights=False)
        expected = x @ attention.v_proj.weight.T @ attention.out_proj.weight.T
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
        assert attention.value_skipinit_alpha.item() == 1.0 and attention.value_skipinit_beta.item() == 0.0


@pytest.mark.parametrize("arch", ["transformer_espa_tiny", "transformer_vanilla_tiny --value-skipinit"])
def test_shaped_initialisation(arch):
    """Orthogonal W_V, W_O; zero attention and feed-forward biases; fc1/fc2 keep q."""
    model = build_model(*arch.split())
    for layer in list(model.encoder.layers) + list(model.decoder.layers):
        attention = layer.self_attn
        eye = torch.eye(64)
        for w in (attention.v_proj.weight, attention.out_proj.weight):
            torch.testing.assert_close(w @ w.T, eye, rtol=0, atol=1e-5)
        for linear in (attention.q_proj, attention.k_proj, attention.v_proj, attention.out_proj, layer.fc1, layer.fc2):
            assert torch.equal(linear.bias, torch.zeros_like(linear.bias))
        if "espa" in arch:
            assert torch.equal(attention.q_proj.weight, torch.zeros_like(attention.q_proj.weight))
        # fc1 widens 64 -> 64: orthogonal; (tiny: ffn dim 64)
        fc1 = layer.fc1.weight
        ratio = max(1.0, fc1.shape[0] / fc1.shape[1])
        torch.testing.assert_close(fc1.T @ fc1, ratio * torch.eye(fc1.shape[1]), rtol=0, atol=1e-5)


def test_cross_attention_shortcuts_at_init():
    skipinit = build_model("transformer_espa_tiny")
    zero = build_model("transformer_espa_tiny", "--cross-attention-shortcut", "zero-out-proj")
    vanilla = build_model("transformer_vanilla_tiny")
    for layer in skipinit.decoder.layers:
        assert layer.encoder_attn_layer_norm.skip and layer.encoder_attn_layer_norm.branch_gain.item() == 0
        assert not layer.self_attn_layer_norm.skip and not layer.final_layer_norm.skip
    for layer in zero.decoder.layers:
        assert layer.encoder_attn_layer_norm.skip and layer.encoder_attn_layer_norm.branch_gain is None
        assert not layer.encoder_attn.out_proj.weight.any()
    for layer in vanilla.decoder.layers:  # no shortcut anywhere
        assert not any(n.skip for n in (layer.self_attn_layer_norm, layer.encoder_attn_layer_norm, layer.final_layer_norm))
    # at init the decoder ignores the encoder: changing the source changes nothing
    d = make_dictionary()
    for model in (build_model("transformer_espa_tiny", dictionary=d),
                  build_model("transformer_uspa_tiny", "--cross-attention-shortcut", "zero-out-proj", dictionary=d)):
        model.eval()
        prev = torch.tensor([[2, 5, 6, 7]])
        outs = [model(torch.tensor([src]), torch.tensor([len(src)]), prev)[0] for src in ([5, 6, 2], [9, 8, 7, 6, 2])]
        torch.testing.assert_close(outs[0], outs[1])


@pytest.mark.slow  # trains two models
def test_residual_cross_attention_lets_the_source_in_from_the_start():
    """--cross-attention-shortcut residual: y = x + CrossAttn(x) with fairseq's initialisation;
    the source changes the decoder's output at start and the encoder gets gradients from the
    first backward pass (with skipinit it gets none: its only path is g = 0)."""
    d = make_dictionary()
    prev = torch.tensor([[2, 5, 6, 7]])
    for arch, *flags in (("transformer_espa_tiny",), ("transformer_uspa_tiny",),
                         ("transformer_vanilla_tiny", "--value-skipinit")):
        residual = build_model(arch, *flags, "--cross-attention-shortcut", "residual", dictionary=d)
        skipinit = build_model(arch, *flags, dictionary=d)
        for layer in residual.decoder.layers:
            assert layer.encoder_attn_layer_norm.skip and layer.encoder_attn_layer_norm.branch_gain is None
            assert layer.encoder_attn.out_proj.weight.abs().min() > 0
            assert not layer.self_attn_layer_norm.skip and not layer.final_layer_norm.skip
        residual.eval()
        outs = [residual(torch.tensor([src]), torch.tensor([len(src)]), prev)[0] for src in ([5, 6, 2], [9, 8, 7, 6, 2])]
        assert (outs[0] - outs[1]).abs().max() > 1e-3
        for model, encoder_learns in ((residual, True), (skipinit, False)):
            model.train()
            model.zero_grad()
            model(torch.tensor([[5, 6, 2]]), torch.tensor([3]), prev)[0].logsumexp(-1).sum().backward()
            grads = [p.grad for p in model.encoder.layers.parameters()]
            assert any(g is not None and g.abs().max() > 0 for g in grads) == encoder_learns, arch


def test_cross_attention_gain_starts_at_its_flag_and_lets_the_source_in():
    """--cross-attention-gain-init 0.3: skipinit's g starts at 0.3, so the source changes the
    decoder's output at start and the encoder gets gradients at the first backward pass."""
    d = make_dictionary()
    prev = torch.tensor([[2, 5, 6, 7]])
    model = build_model("transformer_espa_tiny", "--cross-attention-gain-init", "0.3", dictionary=d)
    assert [layer.encoder_attn_layer_norm.branch_gain.item() for layer in model.decoder.layers] == \
        pytest.approx([0.3] * len(model.decoder.layers))
    model.eval()
    outs = [model(torch.tensor([src]), torch.tensor([len(src)]), prev)[0] for src in ([5, 6, 2], [9, 8, 7, 6, 2])]
    assert (outs[0] - outs[1]).abs().max() > 1e-3
    model.train()
    model(torch.tensor([[5, 6, 2]]), torch.tensor([3]), prev)[0].logsumexp(-1).sum().backward()
    assert any(p.grad is not None and p.grad.abs().max() > 0 for p in model.encoder.layers.parameters())


@pytest.mark.parametrize("beta", [0.0, 0.3])
def test_value_skipinit_cross_attention_is_the_formula_at_start(beta):
    """--cross-attention-shortcut value-skipinit: no shortcut around cross-attention; the
    sublayer is (alpha X + beta softmax(Q K^T / sqrt(d_k)) S) W_V W_O (biases zero, W_V and W_O
    orthogonal), alpha = 1 and beta = --cross-attention-gain-init at start, retyped here
    from the formula; at beta = 0 the source changes nothing and the encoder gets no gradient."""
    d = make_dictionary()
    model = build_model("transformer_uspa_tiny", "--cross-attention-shortcut", "value-skipinit",
                        "--cross-attention-gain-init", str(beta), dictionary=d)
    for layer in model.decoder.layers:
        norm, attention = layer.encoder_attn_layer_norm, layer.encoder_attn
        assert not norm.skip and norm.branch_gain is None
        assert attention.value_skipinit_alpha.item() == 1.0
        assert attention.value_skipinit_beta.item() == pytest.approx(beta)
        for w in (attention.v_proj.weight, attention.out_proj.weight):
            torch.testing.assert_close(w @ w.T, torch.eye(w.size(0)), rtol=0, atol=1e-5)
        assert attention.q_proj.weight.abs().min() > 0  # fairseq's queries, not zero
    attention = model.decoder.layers[0].encoder_attn.eval()
    g = torch.Generator().manual_seed(0)
    x, s = torch.randn(4, 2, 64, generator=g), torch.randn(5, 2, 64, generator=g)
    with torch.no_grad():
        out, _ = attention(x, s, s, static_kv=True, need_weights=False)
        heads, dk = attention.num_heads, 64 // attention.num_heads
        split = lambda t: t.view(t.size(0), 2, heads, dk).permute(1, 2, 0, 3)  # (B, H, T, dk)
        q = split(x @ attention.q_proj.weight.T)
        k = split(s @ attention.k_proj.weight.T)
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dk), -1)
        mixed = a @ split(s @ attention.v_proj.weight.T)
        mixed = mixed.permute(2, 0, 1, 3).reshape(4, 2, 64)
        expected = (x @ attention.v_proj.weight.T + beta * mixed) @ attention.out_proj.weight.T
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    prev = torch.tensor([[2, 5, 6, 7]])
    model.eval()
    outs = [model(torch.tensor([src]), torch.tensor([len(src)]), prev)[0] for src in ([5, 6, 2], [9, 8, 7, 6, 2])]
    assert ((outs[0] - outs[1]).abs().max() > 1e-3) == (beta > 0)
    model.train()
    model(torch.tensor([[5, 6, 2]]), torch.tensor([3]), prev)[0].logsumexp(-1).sum().backward()
    encoder_grads = [p.grad for p in model.encoder.layers.parameters()]
    assert any(g is not None and g.abs().max() > 0 for g in encoder_grads) == (beta > 0)


@pytest.mark.parametrize("beam", [1, 3])
def test_value_skipinit_cross_attention_step_by_step_and_in_beams(beam):
    """Value-SkipInit's cross-attention, decoded one step at a time with the encoder's keys
    cached once per sentence (set_beam_size) and reordered within the beams, equals the full
    computation: each step's own-state term reads that step's query."""
    torch.manual_seed(0)
    attention = ShapedMultiheadAttention(32, 4, 0.0, kernel="", final=0.0, layer=1, num_layers=2,
                                         causal=False, value_skipinit=True, encoder_decoder_attention=True,
                                         kdim=32, query_init="fairseq", beta_init=0.3).eval()
    sentences = 2
    encoder_out = torch.randn(5, sentences, 32).repeat_interleave(beam, dim=1)
    padding = torch.tensor([[True, False, False, False, False], [False] * 5]).repeat_interleave(beam, dim=0)
    queries = torch.randn(4, sentences * beam, 32)
    with torch.no_grad():
        full, _ = attention(queries, encoder_out, encoder_out, key_padding_mask=padding, static_kv=True,
                            need_weights=False)
        attention.set_beam_size(beam)
        state, steps = {}, []
        for t in range(4):
            if t == 2:
                order = torch.arange(sentences * beam).view(sentences, beam).flip(1).flatten()
                attention.reorder_incremental_state(state, order)
            steps.append(attention(queries[t: t + 1], encoder_out, encoder_out, key_padding_mask=padding,
                                   incremental_state=state, static_kv=True)[0])
    torch.testing.assert_close(torch.cat(steps), full, rtol=1e-5, atol=1e-6)


def test_the_fixed_bias_is_added_in_float32_under_bfloat16_autocast():
    """Under bf16 autocast the attention logits come out of a bf16 matmul; the bias B_l is
    added after they are cast to float32 (where the softmax runs), so with W_Q = 0 the
    attention rows are exactly float32's D_l softmax(B_l) (rounding B_l to bf16 first moves
    a row by up to 0.4 % in L1 at 64 tokens)."""
    attention = ShapedMultiheadAttention(32, 4, 0.0, kernel="exponential", final=0.005, layer=1,
                                         num_layers=6, causal=True, value_skipinit=False,
                                         max_positions=64).eval()
    x = torch.randn(64, 2, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        _, exact = attention(x, x, x, need_weights=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            _, autocast = attention(x, x, x, need_weights=True)
        bias, scale = attention.shaping(None, 64, 64, torch.device("cpu"))
        rounded = scale * torch.softmax(bias.to(torch.bfloat16).float(), -1)
    assert autocast.dtype == torch.float32
    torch.testing.assert_close(autocast, exact, rtol=0, atol=1e-7)
    # what the test guards against: the bias rounded to bf16 before the softmax
    assert ((rounded[0, 0] - exact[0]).abs().sum(-1) / exact[0].abs().sum(-1)).max() > 1e-3


# -- TAT --------------------------------------------------------------------------------------


def dks_cmap(c, a):
    """The leaky ReLU's local C map in dks's algebraic form (google-deepmind/dks,
    dks/base/activation_transform.py, _leaky_relu_cmap): the ReLU part
    (1 - a)^2 (sqrt(1 - c^2) + (pi - arccos c) c) / pi plus the linear part
    2 a c, over 1 + a^2."""
    relu_part = (1 - a) ** 2 * (math.sqrt(1 - c * c) + (math.pi - math.acos(c)) * c) / math.pi
    return (relu_part + 2 * a * c) / (1 + a * a)


def composed_at_zero(a, times):
    c = 0.0
    for _ in range(times):
        c = dks_cmap(c, a)
    return c


def test_cmap_is_dks_algebraic_form():
    for a in (0.0, 0.024, 0.3, 0.7, 1.0):
        for c in torch.linspace(-1, 1, 41).tolist():
            assert leaky_relu_cmap(c, a) == pytest.approx(dks_cmap(c, a), abs=1e-12), (a, c)


def test_cmap_is_the_correlation_of_the_activation_outputs():
    """C(c) = E[phi(x) phi(y)] for unit Gaussians x, y of correlation c (q = 1 in
    and out), by Monte Carlo with TAT's own phi: 4 million pairs, standard error
    below 1e-3."""
    g = torch.Generator().manual_seed(0)
    x, z = torch.randn(2, 4_000_000, generator=g, dtype=torch.float64)
    for a in (0.0, 0.3, 0.7):
        phi = TATLeakyReLU(a)
        for c in (-0.6, 0.0, 0.5, 0.9):
            y = c * x + math.sqrt(1 - c * c) * z
            estimate = (phi(x) * phi(y)).mean().item()
            assert estimate == pytest.approx(leaky_relu_cmap(c, a), abs=5e-3), (a, c)


@pytest.mark.parametrize("eta,extra,encoder_count,decoder_count", [
    ("0.9", (), 16, 16),
    ("0.8", (), 16, 16),
    ("0.6", ("--tat-depth", "per-stack"), 8, 8),
])
def test_tat_slope_sends_zero_to_eta(eta, extra, encoder_count, decoder_count):
    model = build_model("transformer_espa_tiny", "--encoder-layers", "8", "--decoder-layers", "8",
                        "--tat-eta", eta, *extra)
    for stack, count in ((model.encoder, encoder_count), (model.decoder, decoder_count)):
        activation = stack.layers[0].activation_fn
        assert 0 < activation.negative_slope < 1
        assert composed_at_zero(activation.negative_slope, count) == pytest.approx(float(eta), abs=1e-7)
        # phi keeps q: E[phi(x)^2] = 1 for x ~ N(0, 1)
        x = torch.randn(2_000_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        assert activation(x).pow(2).mean().item() == pytest.approx(1.0, abs=5e-3)
        expected = torch.nn.functional.leaky_relu(x[:5], activation.negative_slope) * math.sqrt(
            2 / (1 + activation.negative_slope ** 2))
        torch.testing.assert_close(activation(x[:5]), expected)


def test_tat_default_eta_falls_back_to_relu_when_out_of_reach(caplog):
    """2 + 2 layers: four ReLUs give C_f(0) = 0.68 < 0.9, so the default is ReLU
    (slope 0), logged once at build time."""
    assert composed_at_zero(0.0, 4) < 0.9
    with caplog.at_level("WARNING"):
        shallow = build_model("transformer_espa_tiny")
    fallbacks = [r.getMessage() for r in caplog.records if "out of reach" in r.getMessage()]
    assert fallbacks == [
        "TAT: C_f(0) = 0.9 (the default --tat-eta) is out of reach; using ReLU, the leaky ReLU closest "
        "to it (encoder: 4 nonlinearities, C_f(0) = 0.6810, decoder: 4 nonlinearities, C_f(0) = 0.6810; "
        "--tat-depth whole-network); --tat-fallback error refuses instead"
    ]
    assert shallow.decoder.layers[0].activation_fn.negative_slope == 0.0
    deep = build_model("transformer_espa_tiny", "--encoder-layers", "8", "--decoder-layers", "8")
    assert composed_at_zero(deep.encoder.layers[0].activation_fn.negative_slope, 16) == pytest.approx(0.9, abs=1e-7)


def test_fairseq_sizes_log_the_relu_fallback_or_refuse_it(caplog):
    """transformer_espa (6 + 6): 12 ReLUs reach C_f(0) = 0.8971 < 0.9. The check
    the build runs says so (the build itself: the test above); --tat-fallback
    error refuses; the flags' help names the fallback."""
    from fairseq.models import ARCH_CONFIG_REGISTRY
    from fairseq_rskip.tools.common.modelbuild import parse_model_args
    from fairseq_rskip.config import SkipNormConfig
    from fairseq_rskip.models.transformer_rskip import validated_skip_norm

    args = parse_model_args("transformer_espa", ["--task", "translation"], data="/nonexistent-data")
    ARCH_CONFIG_REGISTRY[args.arch](args)
    assert (args.encoder_layers, args.decoder_layers) == (6, 6)
    with caplog.at_level("WARNING"):
        validated_skip_norm(args)
    (line,) = [r.getMessage() for r in caplog.records if "out of reach" in r.getMessage()]
    assert "encoder: 12 nonlinearities, C_f(0) = 0.8971, decoder: 12 nonlinearities, C_f(0) = 0.8971" in line
    assert line.startswith("TAT: C_f(0) = 0.9 (the default --tat-eta) is out of reach; using ReLU")
    with pytest.raises(ValueError, match=r"--tat-eta 0.9 is out of reach of 12 feed-forward nonlinearities "
                       r"\(--tat-depth whole-network\): even ReLU gives C_f\(0\) = 0.8971.*--tat-fallback relu"):
        build_model("transformer_espa_tiny", "--encoder-layers", "6", "--decoder-layers", "6",
                    "--tat-fallback", "error")
    for name in ("tat_eta", "tat_fallback"):
        help_text = SkipNormConfig.__dataclass_fields__[name].metadata["help"]
        assert "ReLU" in help_text and "error" in help_text


def test_per_stack_fallback_names_only_the_stack_that_falls_back(caplog):
    """--tat-depth per-stack with 14 + 2 layers: the encoder reaches 0.9 with a
    leaky slope, the decoder's 2 ReLUs do not."""
    with caplog.at_level("WARNING"):
        model = build_model("transformer_espa_tiny", "--encoder-layers", "14", "--decoder-layers", "2",
                            "--tat-depth", "per-stack")
    (line,) = [r.getMessage() for r in caplog.records if "out of reach" in r.getMessage()]
    assert "(decoder: 2 nonlinearities, C_f(0) = " in line and "encoder" not in line
    assert model.encoder.layers[0].activation_fn.negative_slope > 0
    assert model.decoder.layers[0].activation_fn.negative_slope == 0
    caplog.clear()
    with caplog.at_level("WARNING"):
        build_model("transformer_espa_tiny", "--encoder-layers", "7", "--decoder-layers", "6")
    assert not [r for r in caplog.records if "out of reach" in r.getMessage()]


# -- initialisation of the queries and keys -----------------------------------------------------


def self_attentions(model):
    return [layer.self_attn for layer in list(model.encoder.layers) + list(model.decoder.layers)]


@pytest.mark.parametrize("flags", [("transformer_espa_tiny",), ("transformer_vanilla_tiny", "--value-skipinit")])
def test_query_and_key_initialisation(flags):
    """W_Q = 0 (He et al., as He & Hofmann 2023 describe it) for SPA and
    Value-SkipInit; keys fairseq's xavier_uniform with gain 1/sqrt(2) (variance
    1/(2d)), or N(0, 1/d) with --shaped-key-init normal; --shaped-query-init
    fairseq keeps fairseq's queries."""
    d = 64
    default = build_model(*flags)
    normal_keys = build_model(*flags, "--shaped-key-init", "normal")
    fairseq_queries = build_model(*flags, "--shaped-query-init", "fairseq")
    for attention in self_attentions(default):
        assert not attention.q_proj.weight.any()
        w = attention.k_proj.weight
        assert w.abs().max() <= math.sqrt(6 / (2 * d)) / math.sqrt(2)
        assert w.var().item() == pytest.approx(1 / (2 * d), rel=0.15)
    for attention in self_attentions(normal_keys):
        assert not attention.q_proj.weight.any()
        assert attention.k_proj.weight.var().item() == pytest.approx(1 / d, rel=0.15)
        assert attention.k_proj.weight.abs().max() > math.sqrt(6 / (2 * d)) / math.sqrt(2)  # not uniform
    for attention in self_attentions(fairseq_queries):
        assert attention.q_proj.weight.var().item() == pytest.approx(1 / (2 * d), rel=0.15)
        assert not attention.q_proj.bias.any()


@pytest.mark.parametrize("arch", ["transformer_espa_tiny", "transformer_uspa_tiny",
                                  "transformer_vanilla_tiny --value-skipinit"])
def test_one_backward_at_initialisation_reaches_the_queries_or_beta(arch):
    """Decoder: SPA's W_Q = 0 but the keys are not, so dL/dW_Q = (dL/dlogits K /
    sqrt(d_k))^T X is non-zero in every layer; Value-SkipInit's dL/dbeta =
    <dL/dattention, A(X) V> is, while its queries and keys get none until beta
    moves. Encoder: no gradient at all until the cross-attention gain g
    (SkipInit, 0 at start) moves, whose own gradient is non-zero."""
    model = build_model(*arch.split()).train()
    model(*sample_batch())[0].logsumexp(-1).sum().backward()
    for layer in model.decoder.layers:
        attention = layer.self_attn
        if attention.value_skipinit_beta is not None:
            assert attention.value_skipinit_beta.grad.abs().item() > 1e-6
            assert not attention.q_proj.weight.grad.any() and not attention.k_proj.weight.grad.any()
        else:
            assert attention.q_proj.weight.grad.abs().max().item() > 1e-6
        assert layer.encoder_attn_layer_norm.branch_gain.grad.abs().item() > 1e-6
    for name, p in model.encoder.named_parameters():
        assert p.grad is None or not p.grad.any(), name


# -- the construction at scale, against references of the test's own ----------------------------

EPS64 = torch.finfo(torch.float64).eps


@pytest.mark.parametrize("depth", [1, 2, 6, 48])
def test_espa_causal_schedule_invariants(depth):
    """At every layer A_l[0, 0] = 1 (the first token mixes nothing) and, from the
    second row on, A_l[i, i] = s_l / s_(l-1) = (1 - e^(-2 gamma_L))^(1 / (2L)): the
    schedule's innovations s_l = sqrt(1 - rho_l^2) fall geometrically to
    sqrt(1 - e^(-2 gamma_L)). In float64 (the construction) and as the module
    applies it (float32)."""
    n, gamma = 64, 0.005
    ratio = (1 - math.exp(-2 * gamma)) ** (1 / (2 * depth))
    for layer in range(1, depth + 1):
        attention = shaped("exponential", gamma, layer, depth, True, max_positions=n)
        exact = spa.log_attention_matrix("exponential", attention.rho, attention.rho_prev, n, True).exp()
        applied, _ = mixing_matrix(attention, n)
        for a, tol in ((exact, 1e-13), (applied, 2e-6)):
            assert a[0, 0].item() == pytest.approx(1.0, rel=tol)
            torch.testing.assert_close(a.diagonal()[1:], torch.full((n - 1,), ratio, dtype=torch.float64),
                                       rtol=tol, atol=0, msg=f"layer {layer}")


@pytest.mark.parametrize("n", [256, pytest.param(1024, marks=pytest.mark.slow)])
def test_encoder_symmetric_roots_at_length(n):
    """Depths 1, 2, 6: each unclamped A_l = Sigma_l^(1/2) Sigma_(l-1)^(-1/2) is
    non-negative up to round-off (minimum >= -n eps max), and the clamped
    matrices the bias is made of multiply to Sigma_L's root:
    (A_L .. A_1)(A_L .. A_1)^T = Sigma_L."""
    for depth in (1, 2, 6):
        rhos = reference_rhos("exponential", 0.005, depth)
        product = torch.eye(n, dtype=torch.float64)
        for layer in range(1, depth + 1):
            raw = spa.attention_matrix("exponential", rhos[layer], rhos[layer - 1], n, causal=False)
            assert raw.min() >= -n * EPS64 * raw.max(), (depth, layer, raw.min().item())
            a = spa.log_attention_matrix("exponential", rhos[layer], rhos[layer - 1], n, causal=False).exp()
            product = a @ product
        target = reference_kernel("exponential", rhos[-1], n)
        assert (product @ product.T - target).abs().max() <= 1e-9, (depth, n)


@pytest.mark.parametrize("kernel,final", [("exponential", 0.005), ("uniform", 0.8)])
def test_causal_closed_forms_at_1024_positions(kernel, final):
    """6 layers at 1,024 positions: each closed-form A_l against L_l L_(l-1)^(-1)
    from LAPACK's Cholesky factors of the test's kernels, their product against
    L_6; and the row decoding reads at position 1,023 (one query over 1,024 keys,
    as an incremental step) against that row of the reference."""
    n, depth = 1024, 6
    rhos = reference_rhos(kernel, final, depth)
    factors = [torch.linalg.cholesky(reference_kernel(kernel, rho, n)) for rho in rhos]
    product = torch.eye(n, dtype=torch.float64)
    for layer in range(1, depth + 1):
        reference = torch.linalg.solve_triangular(factors[layer - 1], factors[layer], upper=False, left=False)
        closed = spa.log_attention_matrix(kernel, rhos[layer], rhos[layer - 1], n, causal=True).exp()
        assert (closed - reference).abs().max() <= 1e-11, layer
        product = closed @ product
        if layer in (1, depth):
            attention = shaped(kernel, final, layer, depth, True, max_positions=n)
            bias, scale = attention.shaping(None, 1, n, torch.device("cpu"))
            row = scale[0, 0, 0].double() * torch.softmax(bias[0, 0, 0].double(), -1)
            torch.testing.assert_close(row, reference[n - 1], rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(product, factors[-1], rtol=0, atol=1e-10)


# -- decoding -----------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", [
    "transformer_espa_tiny", "transformer_uspa_tiny", "transformer_vanilla_tiny --value-skipinit",
    "transformer_espa_tiny --cross-attention-gain-init 0.3",
    "transformer_uspa_tiny --cross-attention-shortcut value-skipinit --cross-attention-gain-init 0.3"])
@pytest.mark.slow  # 100+ target tokens, step by step
def test_incremental_decoding_of_a_long_target(arch):
    """120 steps: step t uses row t of the causal matrices, so every step equals
    full decoding (and value-skipinit's cross-attention reads each step's own state)."""
    d = make_dictionary()
    model = build_model(*arch.split(), "--max-target-positions", "128", dictionary=d).eval()
    g = torch.Generator().manual_seed(0)
    src = torch.randint(d.nspecial, len(d), (2, 12), generator=g)
    src[0, :4] = d.pad()
    src[:, -1] = d.eos()
    lengths = (src != d.pad()).sum(1)
    prev = torch.randint(d.nspecial, len(d), (2, 120), generator=g)
    prev[:, 0] = d.eos()
    with torch.no_grad():
        full = model(src, lengths, prev)[0]
        encoder_out = model.encoder(src, src_lengths=lengths)
        state, steps = {}, []
        for t in range(prev.size(1)):
            steps.append(model.decoder(prev[:, : t + 1], encoder_out=encoder_out, incremental_state=state)[0])
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("arch", ["transformer_espa_tiny", "transformer_uspa_tiny"])
def test_left_padding_does_not_change_a_sentence(arch):
    """Real-token positions: a sentence encodes and decodes the same alone or left-padded."""
    d = make_dictionary()
    model = build_model(arch, dictionary=d).eval()
    short = torch.tensor([7, 8, 9, 2])
    batch = torch.tensor([[d.pad(), d.pad(), 7, 8, 9, 2], [10, 11, 12, 13, 14, 2]])
    prev = torch.tensor([[2, 5, 6], [2, 7, 8]])
    with torch.no_grad():
        alone = model(short[None], torch.tensor([4]), prev[:1])[0]
        padded = model(batch, torch.tensor([4, 6]), prev)[0][:1]
        enc_alone = model.encoder(short[None], src_lengths=torch.tensor([4]))["encoder_out"][0]
        enc_padded = model.encoder(batch, src_lengths=torch.tensor([4, 6]))["encoder_out"][0]
    torch.testing.assert_close(enc_padded[2:, :1], enc_alone, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(padded, alone, rtol=1e-5, atol=1e-5)


def test_vanilla_has_no_shortcut_and_no_norm():
    model = build_model("transformer_vanilla_tiny")
    layer = model.encoder.layers[0]
    assert not layer.self_attn_layer_norm.skip and layer.self_attn_layer_norm.norm_type == "none"
    x = layer_input()
    with torch.no_grad():
        attn, _ = layer.self_attn(x, x, x)
        expected = layer.fc2(layer.activation_fn(layer.fc1(attn)))
        torch.testing.assert_close(layer.eval()(x, None), expected)  # y = F(x), twice
