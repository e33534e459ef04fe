"""E-SPA, U-SPA, Value-SkipInit and TAT (He et al. 2023), checked against
references written here from the papers' formulas, not from the package's code."""

import math

import pytest
import torch

from conftest import build_model, make_dictionary
from fairseq_rskip.modules.shaped_attention import ShapedMultiheadAttention

DEPTHS = (6, 48)


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


# -- TAT --------------------------------------------------------------------------------------


def reference_cmap(c, a):
    """TAT's local C map of the leaky ReLU with slope a (PAPERS.md section 4)."""
    return c + (1 - a) ** 2 / (math.pi * (1 + a * a)) * (math.sqrt(1 - c * c) - c * math.acos(c))


def composed_at_zero(a, times):
    c = 0.0
    for _ in range(times):
        c = reference_cmap(c, a)
    return c


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


def test_tat_default_eta_falls_back_to_relu_when_out_of_reach():
    """2 + 2 layers: four ReLUs give C_f(0) = 0.68 < 0.9, so the default is ReLU (slope 0)."""
    assert composed_at_zero(0.0, 4) < 0.9
    shallow = build_model("transformer_espa_tiny")
    assert shallow.decoder.layers[0].activation_fn.negative_slope == 0.0
    deep = build_model("transformer_espa_tiny", "--encoder-layers", "8", "--decoder-layers", "8")
    assert composed_at_zero(deep.encoder.layers[0].activation_fn.negative_slope, 16) == pytest.approx(0.9, abs=1e-7)


# -- decoding -----------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["transformer_espa_tiny", "transformer_uspa_tiny", "transformer_vanilla_tiny --value-skipinit"])
def test_incremental_decoding_of_a_long_target(arch):
    """70 steps: step t uses row t of the causal matrices, so every step equals
    full decoding."""
    d = make_dictionary()
    model = build_model(*arch.split(), "--max-target-positions", "128", dictionary=d).eval()
    g = torch.Generator().manual_seed(0)
    src = torch.randint(d.nspecial, len(d), (2, 12), generator=g)
    src[0, :4] = d.pad()
    src[:, -1] = d.eos()
    lengths = (src != d.pad()).sum(1)
    prev = torch.randint(d.nspecial, len(d), (2, 70), generator=g)
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
