"""AdaNorm as the architectures build it: the defaults of every transformer_adanorm*
size, which norms each reading makes AdaNorm or LayerNorm, and --attention-init.

The readings (docs/adanorm.md): the authors' code (Pre-LN, LayerNorm in the
sublayers, AdaNorm on the stacks' final norms, C = 1; the default), AdaNorm on
every norm (Pre-LN or Post-LN), and LayerNorm-simple on every norm.
"""

import math

import pytest
import torch

from conftest import build_model, parse_args, sample_batch
from fairseq_rskip.models import SIZES
from fairseq_rskip.modules import Normalization, ResidualNorm
from fairseq_rskip.modules.normalization import AdaNorm


def adanorm_by_hand(x, scale, k=0.1, eps=1e-5):
    """C * (1 - k*y) * y with y = (x - mu) / (sigma + eps), sigma the unbiased std."""
    mu = x.mean(-1, keepdim=True)
    sigma = ((x - mu) ** 2).sum(-1, keepdim=True).div(x.shape[-1] - 1).sqrt()
    y = (x - mu) / (sigma + eps)
    return scale * (1 - k * y) * y


def norm_by_hand(norm, x):
    """What a norm of the given type computes, written out."""
    if norm.norm_type == "adanorm":
        return adanorm_by_hand(x, norm.adanorm_scale, norm.adanorm_k, norm.eps)
    mu = x.mean(-1, keepdim=True)
    n = (x - mu) / (x.var(-1, unbiased=False, keepdim=True) + norm.eps).sqrt()
    if norm.norm_type == "layernorm":
        return norm.weight * n + norm.bias
    assert norm.norm_type == "simple"
    return n


def norm_types(model):
    """{module name: norm type} of every normalisation of the model."""
    return {
        name: module.norm_type
        for name, module in model.named_modules()
        if isinstance(module, Normalization)
    }


SUBLAYER_NORMS = [
    f"encoder.layers.{i}.{n}" for i in range(2) for n in ("self_attn_layer_norm", "final_layer_norm")
] + [
    f"decoder.layers.{i}.{n}"
    for i in range(2)
    for n in ("self_attn_layer_norm", "encoder_attn_layer_norm", "final_layer_norm")
]
FINAL_NORMS = ["encoder.layer_norm", "decoder.layer_norm"]


@pytest.mark.parametrize("suffix", sorted(SIZES))
def test_every_size_defaults_to_the_authors_translation_setting(suffix):
    arch = "transformer_adanorm" + suffix
    args = parse_args(arch)
    assert args.encoder_normalize_before and args.decoder_normalize_before
    assert (args.norm_type, args.stack_norm_type) == ("layernorm", "adanorm")
    assert (args.adanorm_scale, args.adanorm_k, args.attention_init) == (1.0, 0.1, "fairseq")
    model = build_model(arch, "--encoder-layers", "1", "--decoder-layers", "1")
    for name, module in model.named_modules():
        if isinstance(module, ResidualNorm):
            assert module.normalize_before and module.norm_type == "layernorm", name
            assert module.weight is not None and module.bias is not None, name
    for stack in (model.encoder, model.decoder):
        norm = stack.layer_norm
        assert type(norm) is AdaNorm and norm.norm_type == "adanorm"
        assert (norm.adanorm_scale, norm.adanorm_k, norm.eps) == (1.0, 0.1, 1e-5)
        assert list(norm.parameters()) == []


READINGS = {
    # name: (flags, {norm: type} of the sublayers and of the final norms, C, Pre-LN)
    "authors-code (default)": (("transformer_adanorm_tiny",), "layernorm", "adanorm", 1.0, True),
    "authors-script C = 2": (
        ("transformer_adanorm_tiny", "--adanorm-scale", "2"), "layernorm", "adanorm", 2.0, True,
    ),
    "every-norm, Pre-LN": (
        ("transformer_adanorm_tiny", "--norm-type", "adanorm"), "adanorm", "adanorm", 1.0, True,
    ),
    "sublayers only, Pre-LN": (
        ("transformer_adanorm_tiny", "--norm-type", "adanorm", "--stack-norm-type", "layernorm"),
        "adanorm", "layernorm", 1.0, True,
    ),
    "every-norm, Post-LN (version 0.1.0)": (
        ("transformer_rskip_tiny", "--skip-recursions", "1", "--norm-type", "adanorm"),
        "adanorm", None, 1.0, False,
    ),
    "LayerNorm-simple, Pre-LN": (
        ("transformer_prenorm_nowarmup_tiny", "--norm-type", "simple"), "simple", "simple", 1.0, True,
    ),
}


@pytest.mark.parametrize("reading", sorted(READINGS))
def test_which_norms_each_reading_makes_adanorm(reading):
    flags, sublayer, final, scale, pre = READINGS[reading]
    model = build_model(*flags)
    expected = {name: sublayer for name in SUBLAYER_NORMS}
    if final is not None:
        expected.update({name: final for name in FINAL_NORMS})
    assert norm_types(model) == expected
    x = torch.randn(5, 64, dtype=torch.float64)
    for name, module in model.named_modules():
        if isinstance(module, Normalization):
            if module.norm_type == "adanorm":
                assert module.adanorm_scale == scale, name
            if isinstance(module, ResidualNorm):
                assert module.normalize_before == pre, name
            module = module.double()
            torch.testing.assert_close(module.normalize(x), norm_by_hand(module, x))
    norm_params = {n for n, _ in model.named_parameters() if "norm" in n}
    assert norm_params == {
        f"{name}.{p}" for name, t in expected.items() if t == "layernorm" for p in ("weight", "bias")
    }


def test_stack_norm_type_covers_the_embedding_norm():
    model = build_model(
        "transformer_rskip_tiny", "--skip-recursions", "1", "--layernorm-embedding",
        "--stack-norm-type", "adanorm", "--adanorm-scale", "3",
    )
    for stack in (model.encoder, model.decoder):
        assert stack.layernorm_embedding.norm_type == "adanorm"
        assert stack.layernorm_embedding.adanorm_scale == 3.0
        assert stack.layer_norm is None
    assert set(norm_types(model).values()) == {"layernorm", "adanorm"}


def test_default_is_fairseq_preln_with_adanorm_final_norms():
    """The default, run against fairseq's own Pre-LN transformer whose two final
    LayerNorms are replaced by AdaNorm written out: the same outputs."""
    flags = ("--encoder-normalize-before", "--decoder-normalize-before")
    ref = build_model("transformer_tiny", *flags)
    ours = build_model("transformer_adanorm_tiny")
    final_ln = {f"{n}.{p}" for n in FINAL_NORMS for p in ("weight", "bias")}
    assert set(ref.state_dict()) - set(ours.state_dict()) == final_ln
    assert set(ours.state_dict()) <= set(ref.state_dict())
    ours.load_state_dict({k: v for k, v in ref.state_dict().items() if k not in final_ln})

    class AdaNormByHand(torch.nn.Module):
        def forward(self, x):
            return adanorm_by_hand(x, 1.0)

    ref.encoder.layer_norm = AdaNormByHand()
    ref.decoder.layer_norm = AdaNormByHand()
    ref.eval()
    ours.eval()
    batch = sample_batch()
    with torch.no_grad():
        torch.testing.assert_close(ours(*batch)[0], ref(*batch)[0], rtol=1e-5, atol=1e-5)


def attentions(model):
    for layer in model.encoder.layers:
        yield layer.self_attn
    for layer in model.decoder.layers:
        yield layer.self_attn
        yield layer.encoder_attn


def test_attention_init_kaiming_uniform_is_the_authors_km():
    """Weights uniform in +-1/sqrt(fan_in) (std bound/sqrt(3)), biases zero, in every
    attention; fairseq's initialisation (the default) differs on both counts."""
    model = build_model("transformer_adanorm_tiny", "--attention-init", "kaiming_uniform")
    default = build_model("transformer_adanorm_tiny")
    for attn, ref in zip(attentions(model), attentions(default)):
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            w, b = getattr(attn, name).weight, getattr(attn, name).bias
            bound = 1 / math.sqrt(w.shape[1])
            assert w.abs().max() <= bound
            assert math.isclose(w.std().item(), bound / math.sqrt(3), rel_tol=0.1)
            assert torch.count_nonzero(b) == 0
        assert torch.count_nonzero(ref.q_proj.bias) > 0  # fairseq keeps nn.Linear's bias
        assert ref.out_proj.weight.abs().max() > 1 / math.sqrt(64)  # xavier: sqrt(3/64)


def test_attention_init_leaves_everything_else_alone():
    model = build_model("transformer_adanorm_tiny", "--attention-init", "kaiming_uniform")
    default = build_model("transformer_adanorm_tiny")
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in default.named_parameters()]
    # the first parameters built, before any attention: the same draw
    assert torch.equal(model.encoder.embed_tokens.weight, default.encoder.embed_tokens.weight)
