"""Every refused flag value, and the message that names the flag and the accepted values."""

import math

import pytest

from conftest import build_model
from fairseq_rskip.config import SkipNormConfig
from fairseq_rskip.models import FAMILIES, SIZES

REFUSED = [
    (("--skip-recursions", "0"), r"--skip-recursions must be an integer >= 1; got 0"),
    (("--skip-recursions", "-2"), r"--skip-recursions must be an integer >= 1; got -2"),
    (("--skip-recursions", "1", "--skip-scale", "0"), r"--skip-scale must be a finite number > 0; got 0.0"),
    (("--skip-recursions", "1", "--skip-scale", "-1"), r"--skip-scale must be a finite number > 0; got -1.0"),
    (("--skip-recursions", "1", "--skip-scale", "nan"), r"--skip-scale must be a finite number > 0; got nan"),
    (("--skip-recursions", "1", "--skip-scale", "inf"), r"--skip-scale must be a finite number > 0; got inf"),
    (("--skip-scale", "2"), r"--skip-scale must be 1 with --skip-recursions > 1"),
    (("--norm-type", "none"), r"--skip-recursions > 1 needs a normalisation"),
    (("--skip-recursions", "1", "--skip-shared-norm"), r"--skip-shared-norm needs --skip-recursions > 1"),
    (("--adanorm-k", "0.2"), r"--adanorm-scale and --adanorm-k apply only where a norm is AdaNorm"),
    (("--adanorm-scale", "2"), r"--adanorm-scale and --adanorm-k apply only where a norm is AdaNorm"),
    (
        ("--encoder-normalize-before",),
        r"defined for Post-LN only, and the encoder of --arch transformer_rskip_tiny is Pre-LN "
        r"\(--encoder-normalize-before\)",
    ),
    (
        ("--skip-recursions", "1", "--stack-norm-type", "adanorm"),
        r"--stack-norm-type adanorm applies to the final norm of a Pre-LN stack and to "
        r"--layernorm-embedding, and --arch transformer_rskip_tiny has neither",
    ),
    (
        ("--skip-recursions", "1", "--decoder-normalize-before", "--no-decoder-final-norm",
         "--stack-norm-type", "simple"),
        r"--stack-norm-type simple applies to the final norm of a Pre-LN stack",
    ),
    (
        ("--skip-recursions", "1", "--layernorm-embedding", "--adanorm-scale", "2"),
        r"--adanorm-scale and --adanorm-k apply only where a norm is AdaNorm \(--norm-type "
        r"adanorm, or --stack-norm-type adanorm with a final Pre-LN norm or "
        r"--layernorm-embedding\); got --norm-type layernorm",
    ),
    (
        ("--decoder-normalize-before",),
        r"defined for Post-LN only, and the decoder of --arch transformer_rskip_tiny is Pre-LN "
        r"\(--decoder-normalize-before\)",
    ),
]

ADANORM_REFUSED = [
    (("--adanorm-k", "-0.1"), r"--adanorm-k must be a number in \[0, 1\); got -0.1"),
    (("--adanorm-k", "1"), r"--adanorm-k must be a number in \[0, 1\); got 1.0"),
    (("--adanorm-k", "nan"), r"--adanorm-k must be a number in \[0, 1\); got nan"),
    (("--adanorm-scale", "0"), r"--adanorm-scale must be a finite number > 0; got 0.0"),
    (("--adanorm-scale", "inf"), r"--adanorm-scale must be a finite number > 0; got inf"),
    (("--skip-scale", "3", "--encoder-normalize-before"), r"defined for Post-LN only"),
    (("--skip-recursions", "2"), r"the encoder of --arch transformer_adanorm_tiny is Pre-LN"),
    # no norm is AdaNorm: a C the user typed has no effect
    (
        ("--stack-norm-type", "layernorm", "--adanorm-scale", "3"),
        r"apply only where a norm is AdaNorm .*; got --norm-type layernorm --stack-norm-type layernorm",
    ),
]


@pytest.mark.parametrize("flags,message", REFUSED, ids=[" ".join(f) for f, _ in REFUSED])
def test_rskip_refuses(flags, message):
    with pytest.raises(ValueError, match=message):
        build_model("transformer_rskip_tiny", *flags)


@pytest.mark.parametrize("flags,message", ADANORM_REFUSED, ids=[" ".join(f) for f, _ in ADANORM_REFUSED])
def test_adanorm_refuses(flags, message):
    with pytest.raises(ValueError, match=message):
        build_model("transformer_adanorm_tiny", *flags)


def test_prenorm_refuses_recursions_naming_its_architecture():
    """The user typed no --*-normalize-before: the message says the architecture is Pre-LN."""
    with pytest.raises(
        ValueError,
        match=r"--skip-recursions > 1 and --skip-scale != 1 are defined for Post-LN only, and the "
        r"encoder of --arch transformer_prenorm_nowarmup_tiny is Pre-LN",
    ):
        build_model("transformer_prenorm_nowarmup_tiny", "--skip-recursions", "2")


PRE_LN_FAMILIES = [name for name, family in FAMILIES.items()
                   if family.sets.get("encoder_normalize_before") or family.sets.get("decoder_normalize_before")]


@pytest.mark.parametrize("arch", [family + size for family in PRE_LN_FAMILIES for size in SIZES])
@pytest.mark.parametrize("flags", [("--skip-recursions", "2"), ("--skip-recursions", "1", "--skip-scale", "2")])
def test_every_pre_ln_family_is_told_its_architecture_is_pre_ln(arch, flags):
    """Every size of every family whose architecture is Pre-LN: the message names
    the architecture, though the user typed no --*-normalize-before."""
    assert "transformer_prenorm_nowarmup" in PRE_LN_FAMILIES
    with pytest.raises(ValueError, match=rf"are defined for Post-LN only, and the encoder of "
                                         rf"--arch {arch} is Pre-LN"):
        build_model(arch, *flags)


@pytest.mark.parametrize("flag", ["--norm-type", "--stack-norm-type", "--attention-init"])
def test_unknown_choice_is_refused_by_the_parser(capsys, flag):
    with pytest.raises(SystemExit):
        build_model("transformer_adanorm_tiny", flag, "batchnorm")
    assert f"argument {flag}: invalid choice: 'batchnorm'" in capsys.readouterr().err


def test_adanorm_architecture_with_layernorm_stacks_is_preln_layernorm():
    """The LayerNorm baseline of the authors' recipe: no AdaNorm left, nothing refused."""
    model = build_model("transformer_adanorm_tiny", "--stack-norm-type", "layernorm")
    assert not any(getattr(m, "norm_type", None) == "adanorm" for m in model.modules())
    assert model.encoder.layers[0].final_layer_norm.normalize_before


def test_each_flag_is_validated_once_per_model(monkeypatch):
    from fairseq_rskip.config import SkipNormConfig

    calls = []
    original = SkipNormConfig.validate
    monkeypatch.setattr(
        SkipNormConfig, "validate", lambda self, *a, **k: calls.append(1) or original(self, *a, **k)
    )
    build_model("transformer_rskip_tiny", "--encoder-layers", "4", "--decoder-layers", "4")
    assert len(calls) == 1


def test_accepted_edges_build():
    build_model("transformer_adanorm_tiny", "--adanorm-k", "0", "--adanorm-scale", "1e-3")
    build_model(
        "transformer_rskip_tiny", "--skip-recursions", "1", "--decoder-normalize-before",
        "--stack-norm-type", "adanorm", "--adanorm-scale", "2",
    )
    build_model("transformer_adanorm_tiny", "--adanorm-k", "0.999")
    build_model("transformer_rskip_tiny", "--skip-recursions", "1", "--skip-scale", "1e-3", "--norm-type", "none")
    model = build_model("transformer_rskip_tiny", "--skip-recursions", "6", "--norm-type", "simple")
    assert "recursions=6" in model.encoder.layers[0].final_layer_norm.extra_repr()
    assert model.encoder.layers[0].final_layer_norm.recursions == 6


def test_values_are_not_clamped():
    model = build_model("transformer_rskip_tiny", "--skip-recursions", "1", "--skip-scale", "4")
    assert math.isclose(model.encoder.layers[0].self_attn_layer_norm.skip_weight, 4.0)


def test_arguments_saved_before_the_config_dataclass_build_the_same_model():
    """Checkpoints of earlier versions saved adanorm_scale/adanorm_k as None, the
    oldest lack skip_shared_norm, and none has the fields added since
    (stack_norm_type, attention_init): they mean what they meant then, the
    flags' defaults and transformer_adanorm's Post-LN AdaNorm on every norm
    (today --arch transformer_rskip --skip-recursions 1 --norm-type adanorm).
    tests/test_old_checkpoints.py loads real checkpoints of those versions."""
    import torch
    from types import SimpleNamespace

    from conftest import make_dictionary, parse_args
    from fairseq.models import ARCH_MODEL_REGISTRY

    d = make_dictionary()
    task = SimpleNamespace(source_dictionary=d, target_dictionary=d)
    for arch, flags_today in (
        ("transformer_adanorm_tiny", ("--skip-recursions", "1", "--norm-type", "adanorm")),
        ("transformer_rskip_tiny", ()),
    ):
        args = parse_args("transformer_rskip_tiny", *flags_today)
        torch.manual_seed(1)
        today = ARCH_MODEL_REGISTRY[args.arch].build_model(args, task)
        # as the earlier version saved them
        args.arch = arch
        args.adanorm_scale = args.adanorm_k = None
        for name in ("skip_shared_norm", "stack_norm_type", "attention_init", "skip_norm_defaults_version",
                     "no_skip", "spa_kernel", "spa_gamma_final", "spa_rho_final", "value_skipinit",
                     "tat_eta", "tat_depth", "cross_attention_shortcut", "cross_attention_gain_init",
                     "tat_fallback",
                     "shaped_query_init", "shaped_key_init"):
            delattr(args, name)
        torch.manual_seed(1)
        old = ARCH_MODEL_REGISTRY[args.arch].build_model(args, task)
        assert str(old) == str(today)
        for (name, a), (_, b) in zip(today.state_dict().items(), old.state_dict().items()):
            assert torch.equal(a, b), name
        assert args.skip_shared_norm is False and args.adanorm_scale == 1.0
        assert args.stack_norm_type is None and not args.encoder_normalize_before
        assert not any(isinstance(v, SkipNormConfig) for v in vars(args).values())  # plain data


def test_the_config_is_validated_once_and_handed_down_to_every_layer(monkeypatch):
    """build_model validates the flags once and the encoder, the decoder and each
    layer hold that one SkipNormConfig, through the model's config, not ``args``."""
    import fairseq_rskip.models.transformer_rskip as model_module
    from fairseq_rskip.models.transformer_rskip import RSkipTransformerConfig

    calls = []
    validated = model_module.validated_skip_norm
    monkeypatch.setattr(model_module, "validated_skip_norm", lambda args: calls.append(1) or validated(args))
    model = build_model("transformer_rskip_tiny", "--skip-recursions", "3")
    assert calls == [1]
    skip_norm = model.encoder.skip_norm
    assert isinstance(model.cfg, RSkipTransformerConfig) and model.cfg.skip_norm is skip_norm
    assert skip_norm.skip_recursions == 3 and model.decoder.skip_norm is skip_norm
    assert all(layer.skip_norm is skip_norm for layer in [*model.encoder.layers, *model.decoder.layers])


DEEP_REFUSED = [
    ("transformer_deepnorm_tiny", ("--skip-recursions", "2"),
     r"--skip-weight deepnorm needs --skip-recursions 1"),
    ("transformer_admin_tiny", ("--skip-recursions", "3"), r"--skip-weight admin needs --skip-recursions 1"),
    ("transformer_deepnorm_tiny", ("--skip-scale", "2"), r"--skip-scale must be 1 with --skip-weight deepnorm"),
    ("transformer_admin_tiny", ("--skip-scale", "0.5"), r"--skip-scale must be 1 with --skip-weight admin"),
    ("transformer_deepnorm_tiny", ("--norm-type", "none"), r"--skip-weight deepnorm needs a normalisation"),
    ("transformer_admin_tiny", ("--norm-type", "none"), r"--skip-weight admin needs a normalisation"),
    ("transformer_deepnorm_tiny", ("--encoder-normalize-before",),
     r"--skip-weight deepnorm is defined for Post-LN only, and the encoder of "
     r"--arch transformer_deepnorm_tiny is Pre-LN \(--encoder-normalize-before\)"),
    ("transformer_admin_tiny", ("--decoder-normalize-before",),
     r"--skip-weight admin is defined for Post-LN only, and the decoder"),
    ("transformer_prenorm_nowarmup_tiny", ("--skip-weight", "admin"),
     r"--skip-weight admin is defined for Post-LN only, and the encoder of "
     r"--arch transformer_prenorm_nowarmup_tiny is Pre-LN"),
    ("transformer_rskip_tiny", ("--skip-weight", "deepnorm"), r"--skip-weight deepnorm needs --skip-recursions 1"),
    ("transformer_admin_tiny", ("--deepnorm-init", "torchscale"),
     r"--deepnorm-init applies only with --skip-weight deepnorm \(got --skip-weight admin\)"),
    ("transformer_deepnorm_tiny", ("--admin-init", "logn"),
     r"--admin-init applies only with --skip-weight admin \(got --skip-weight deepnorm\)"),
    ("transformer_rskip_tiny", ("--admin-init", "logn"), r"--admin-init applies only with --skip-weight admin"),
    ("transformer_deepnorm_tiny", ("--skip-weight", "fixed", "--deepnorm-init", "torchscale"),
     r"--deepnorm-init applies only with --skip-weight deepnorm \(got --skip-weight fixed\)"),
    ("transformer_deepnorm_tiny", ("--attention-init", "kaiming_uniform"),
     r"--attention-init kaiming_uniform and --skip-weight deepnorm both initialise the attention "
     r"projections: leave --attention-init out"),
    ("transformer_deepnorm_tiny", ("--admin-profile", "profile.ratio.init"),
     r"--admin-profile applies only with --skip-weight admin \(got --skip-weight deepnorm\)"),
    ("transformer_admin_tiny", ("--admin-init", "logn", "--admin-profile", "profile.ratio.init"),
     r"--admin-profile and --admin-init logn both set Admin's initial omega: leave one out"),
    ("transformer_admin_tiny", ("--admin-profile", " "), r"--admin-profile needs a file name"),
]


@pytest.mark.parametrize("arch,flags,message", DEEP_REFUSED, ids=[f"{a} {' '.join(f)}" for a, f, _ in DEEP_REFUSED])
def test_deepnorm_and_admin_refuse(arch, flags, message):
    with pytest.raises(ValueError, match=message):
        build_model(arch, *flags)


@pytest.mark.parametrize("flag,value", [("--skip-weight", "rezero"), ("--deepnorm-init", "xavier"),
                                        ("--admin-init", "file")])
def test_unknown_deep_choices_are_refused_by_the_parser(capsys, flag, value):
    with pytest.raises(SystemExit):
        build_model("transformer_deepnorm_tiny", flag, value)
    assert f"argument {flag}: invalid choice: '{value}'" in capsys.readouterr().err


def test_deep_recipes_accept_their_combinations():
    """The families' own flags, the other norm types, and the plain fixed weight."""
    build_model("transformer_deepnorm_tiny", "--deepnorm-init", "torchscale", "--norm-type", "simple")
    build_model("transformer_admin_tiny", "--admin-init", "logn", "--norm-type", "adanorm")
    model = build_model("transformer_deepnorm_tiny", "--skip-weight", "fixed")
    assert model.encoder.layers[0].self_attn_layer_norm.skip_weight == 1.0


SHORTCUT_FREE_REFUSED = [
    ("transformer_espa_tiny", ("--spa-gamma-final", "0"), r"--spa-gamma-final must be a finite number > 0; got 0.0"),
    ("transformer_espa_tiny", ("--spa-gamma-final", "-1"), r"--spa-gamma-final must be a finite number > 0; got -1.0"),
    ("transformer_espa_tiny", ("--spa-gamma-final", "inf"), r"--spa-gamma-final must be a finite number > 0; got inf"),
    ("transformer_uspa_tiny", ("--spa-rho-final", "1"), r"--spa-rho-final must be a number in \[0, 1\); got 1.0"),
    ("transformer_uspa_tiny", ("--spa-rho-final", "-0.1"), r"--spa-rho-final must be a number in \[0, 1\); got -0.1"),
    ("transformer_uspa_tiny", ("--spa-rho-final", "nan"), r"--spa-rho-final must be a number in \[0, 1\); got nan"),
    ("transformer_espa_tiny", ("--tat-eta", "0"), r"--tat-eta must be a number in \(0, 1\); got 0.0"),
    ("transformer_espa_tiny", ("--tat-eta", "1"), r"--tat-eta must be a number in \(0, 1\); got 1.0"),
    ("transformer_espa_tiny", ("--tat-eta", "nan"), r"--tat-eta must be a number in \(0, 1\); got nan"),
    ("transformer_espa_tiny", ("--tat-eta", "0.9"),
     r"--tat-eta 0.9 is out of reach of 4 feed-forward nonlinearities \(--tat-depth whole-network\): even "
     r"ReLU gives C_f\(0\) = 0.6810; use --tat-eta <= 0.6809 or more layers"),
    ("transformer_espa_tiny", ("--tat-eta", "0.6", "--tat-depth", "per-stack"), r"out of reach of 2 feed-forward"),
    ("transformer_espa_tiny", ("--spa-rho-final", "0.5"), r"--spa-rho-final applies only with --spa-kernel uniform"),
    ("transformer_uspa_tiny", ("--spa-gamma-final", "0.1"), r"--spa-gamma-final applies only with --spa-kernel exponential"),
    ("transformer_vanilla_tiny", ("--spa-gamma-final", "0.1"),
     r"--spa-gamma-final applies only with --spa-kernel exponential \(E-SPA\); got no --spa-kernel"),
    ("transformer_espa_tiny", ("--spa-rho-final", "0.5"), r"got --spa-kernel exponential"),
    ("transformer_espa_tiny", ("--encoder-normalize-before",), r"--no-skip is defined for post-norm sublayers"),
    ("transformer_uspa_tiny", ("--decoder-normalize-before",), r"--no-skip is defined for post-norm sublayers"),
    ("transformer_vanilla_tiny", ("--encoder-normalize-before",), r"--no-skip is defined for post-norm"),
    ("transformer_espa_tiny", ("--skip-recursions", "2", "--norm-type", "layernorm"),
     r"--no-skip leaves no skip for --skip-recursions > 1 or --skip-scale != 1"),
    ("transformer_vanilla_tiny", ("--skip-scale", "2"), r"--no-skip leaves no skip"),
    ("transformer_espa_tiny", ("--norm-type", "layernorm"), r"--spa-kernel shapes vanilla layers and needs --no-skip --norm-type none"),
    ("transformer_rskip_tiny", ("--skip-recursions", "1", "--spa-kernel", "exponential"), r"--spa-kernel shapes vanilla layers"),
    ("transformer_rskip_tiny", ("--skip-recursions", "1", "--value-skipinit"), r"--value-skipinit replaces the skip connection and needs --no-skip"),
    ("transformer_espa_tiny", ("--value-skipinit",), r"--value-skipinit and --spa-kernel are two alternatives"),
    ("transformer_vanilla_tiny", ("--tat-eta", "0.5"),
     r"--tat-eta, --tat-depth, --tat-fallback, --cross-attention-shortcut, --cross-attention-gain-init, "
     r"--shaped-query-init and --shaped-key-init apply only with --spa-kernel or --value-skipinit"),
    ("transformer_vanilla_tiny", ("--cross-attention-gain-init", "0.3"), r"apply only with --spa-kernel"),
    ("transformer_espa_tiny", ("--cross-attention-gain-init", "-0.1"),
     r"--cross-attention-gain-init must be a finite number >= 0; got -0.1"),
    ("transformer_espa_tiny", ("--cross-attention-shortcut", "residual", "--cross-attention-gain-init", "0.3"),
     r"--cross-attention-gain-init applies only with --cross-attention-shortcut skipinit or "
     r"value-skipinit; got residual"),
    ("transformer_uspa_tiny", ("--cross-attention-shortcut", "value-skipinit", "--decoder-embed-dim", "32"),
     r"--cross-attention-shortcut value-skipinit reads the decoder's states through the values' W_V "
     r"and needs equal widths; got 64, 32"),
    ("transformer_vanilla_tiny", ("--tat-fallback", "error"), r"apply only with --spa-kernel or --value-skipinit"),
    ("transformer_rskip_tiny", ("--shaped-query-init", "fairseq"), r"apply only with --spa-kernel"),
    ("transformer_vanilla_tiny", ("--shaped-key-init", "normal"), r"apply only with --spa-kernel"),
    ("transformer_espa_tiny", ("--tat-fallback", "error"),
     r"--tat-eta 0.9 is out of reach of 4 feed-forward nonlinearities \(--tat-depth whole-network\): even "
     r"ReLU gives C_f\(0\) = 0.6810; use --tat-eta <= 0.6809 or more layers \(or --tat-fallback relu to use ReLU\)"),
    ("transformer_vanilla_tiny", ("--tat-depth", "per-stack"), r"apply only with --spa-kernel or --value-skipinit"),
    ("transformer_rskip_tiny", ("--cross-attention-shortcut", "zero-out-proj"), r"apply only with --spa-kernel"),
    ("transformer_espa_tiny", ("--activation-fn", "gelu"), r"use TAT's leaky ReLU in place of --activation-fn, which must stay relu; got --activation-fn gelu"),
    ("transformer_uspa_tiny", ("--cross-self-attention",), r"--cross-self-attention is not defined with --no-skip"),
    ("transformer_vanilla_tiny", ("--cross-self-attention",), r"--cross-self-attention is not defined with --no-skip \(vanilla"),
    ("transformer_espa_tiny", ("--attention-init", "kaiming_uniform"),
     r"--attention-init kaiming_uniform and --spa-kernel/--value-skipinit both initialise the attention"),
    ("transformer_rskip_tiny", ("--skip-recursions", "1", "--no-skip", "--skip-weight", "deepnorm"),
     r"--no-skip leaves no skip for --skip-weight deepnorm to weight"),
]


@pytest.mark.parametrize("arch,flags,message", SHORTCUT_FREE_REFUSED,
                         ids=[f"{a} {' '.join(f)}" for a, f, _ in SHORTCUT_FREE_REFUSED])
def test_shortcut_free_refuses(arch, flags, message):
    with pytest.raises(ValueError, match=message):
        build_model(arch, *flags)


def test_unknown_spa_kernel_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit):
        build_model("transformer_vanilla_tiny", "--spa-kernel", "gaussian")
    assert "argument --spa-kernel: invalid choice: 'gaussian'" in capsys.readouterr().err


def test_shortcut_free_accepted_edges_build():
    build_model("transformer_uspa_tiny", "--spa-rho-final", "0")
    build_model("transformer_uspa_tiny", "--spa-rho-final", "0.999")
    build_model("transformer_espa_tiny", "--spa-gamma-final", "1e-4", "--tat-eta", "0.6809")
    build_model("transformer_espa_tiny", "--tat-eta", "1e-3", "--tat-depth", "per-stack")
    build_model("transformer_vanilla_tiny", "--no-token-positional-embeddings", "--value-skipinit",
                "--cross-attention-shortcut", "zero-out-proj", "--tat-eta", "0.5")
    # --no-skip with a normalisation: y = N(F(x)), defined
    model = build_model("transformer_rskip_tiny", "--skip-recursions", "1", "--no-skip")
    assert not model.encoder.layers[0].final_layer_norm.skip
