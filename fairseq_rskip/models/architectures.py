"""The architectures of ``transformer_rskip``: a family's defaults on one of
fairseq's sizes, and the version of the families' defaults that saved
arguments are read with.

``--arch transformer_<family><size>`` fills the arguments the command line
left unset with the family's defaults (:data:`FAMILIES`), then fairseq's
defaults of the size (:data:`SIZES`), then the flags' own defaults
(:class:`~fairseq_rskip.config.SkipNormConfig`).
"""

from dataclasses import dataclass
from typing import Dict

from fairseq.models import register_model_architecture
from fairseq.models.transformer.transformer_legacy import (
    base_architecture,
    tiny_architecture,
    transformer_iwslt_de_en,
    transformer_vaswani_wmt_en_de_big,
    transformer_wmt_en_de,
    transformer_wmt_en_de_big,
)

from fairseq_rskip.config import SkipNormConfig
from fairseq_rskip.modules.admin_profile import PROFILE_TEXT_ATTR

@dataclass(frozen=True)
class Family:
    """One family of architectures: the flags it sets (``sets``, flag field ->
    value; the command line wins), the wiring they give each sublayer, and its
    source. The reference pages and the README's table are made from these."""

    sets: Dict[str, object]
    wiring: str
    source: str


PRE_LN = {"encoder_normalize_before": True, "decoder_normalize_before": True}

FAMILIES = {
    "transformer_rskip": Family(
        {"skip_recursions": 2},
        "rSkip+LN, n = 2: `y = N_2(x + N_1(x + F(x)))`",
        "Liu et al., COLING 2020 (arXiv 2105.07205)"),
    # The AdaNorm authors' translation setting (lancopku/AdaNorm, "machine
    # translation/"): Pre-LN; the sublayer norms are LayerNorm with gain and
    # bias, only the final norms of the stacks are AdaNorm; C = 1 (their
    # README's command; their script's C = 2 trained worse on the bundled corpus). See
    # docs/adanorm.md.
    "transformer_adanorm": Family(
        {**PRE_LN, "norm_type": "layernorm", "stack_norm_type": "adanorm", "adanorm_scale": 1.0},
        "the AdaNorm authors' translation setting: Pre-LN with LayerNorm, `y = x + F(LN(x))`, "
        "and AdaNorm (C = 1) as the final norm of the encoder and of the decoder",
        "Xu et al., NeurIPS 2019 (arXiv 1911.07013)"),
    "transformer_prenorm_nowarmup": Family(
        dict(PRE_LN),
        "Pre-LN: `y = x + F(N(x))`, final `N` on encoder and decoder outputs (meant for "
        "`--lr-scheduler inverse_sqrt_nowarmup`)",
        "Xiong et al., ICML 2020 (arXiv 2002.04745)"),
    "transformer_deepnorm": Family(
        {"skip_weight": "deepnorm"},
        "DeepNorm: `y = N(α·x + F(x))`, α per stack from the depths, projections initialised with β",
        "Wang et al. 2022, \"DeepNet\" (arXiv 2203.00555)"),
    "transformer_admin": Family(
        {"skip_weight": "admin"},
        "Admin: `y = N(ω_i ⊙ x + F_i(x))`, ω_i a trainable vector per sublayer, set by profiling "
        "the first training batch (or read from a profile file, `--admin-profile`)",
        "Liu et al., EMNLP 2020 (arXiv 2004.08249)"),
    "transformer_vanilla": Family(
        {"no_skip": True, "norm_type": "none"},
        "no skip, no normalisation: `y = F(x)` (the control that collapses)",
        "He et al., ICLR 2023 (arXiv 2302.10322)"),
    "transformer_espa": Family(
        {"no_skip": True, "norm_type": "none", "spa_kernel": "exponential"},
        "vanilla, self-attention `D_l softmax(QKᵀ/√d_k + B_l) V` shaped to an exponential target "
        "kernel (E-SPA), TAT leaky-ReLU feed-forward; cross-attention alone keeps a shortcut",
        "He et al., ICLR 2023"),
    "transformer_uspa": Family(
        {"no_skip": True, "norm_type": "none", "spa_kernel": "uniform"},
        "as `transformer_espa` with the uniform target kernel (U-SPA)",
        "He et al., ICLR 2023"),
    # the baselines of normalisation and residual studies (docs/baselines.md)
    "transformer_rmsnorm": Family(
        {**PRE_LN, "norm_type": "rmsnorm"},
        "Pre-LN with RMSNorm on every norm: `y = x + F(RMSNorm(x))`, final RMSNorm",
        "Zhang & Sennrich, NeurIPS 2019 (arXiv 1910.07467)"),
    "transformer_dyt": Family(
        {**PRE_LN, "norm_type": "dyt"},
        "Pre-LN with Dynamic Tanh in place of every norm, the final ones too: `y = x + F(DyT(x))`",
        "Zhu, Chen, He, LeCun, Liu, CVPR 2025, \"Transformers without Normalization\""),
    "transformer_sandwich": Family(
        {**PRE_LN, "sandwich_norm": True},
        "Sandwich-LN: Pre-LN with a norm on every sublayer's output, "
        "`y = x + dropout(N_out(F(N_in(x))))`, final norm kept",
        "Ding et al., CogView, NeurIPS 2021"),
    "transformer_periln": Family(
        {**PRE_LN, "sandwich_norm": True, "layernorm_embedding": True},
        "Peri-LN: Sandwich-LN and a norm of the embeddings (fairseq's `--layernorm-embedding`)",
        "Kim et al., ICML 2025 (arXiv 2502.02732)"),
    # the NormFormer paper's setting (--scale-resids only for its smaller models)
    "transformer_normformer": Family(
        {**PRE_LN, "scale_attn": True, "scale_heads": True, "scale_fc": True},
        "NormFormer in encoder and decoder: Pre-LN, a norm on self-attention's output, a scale per "
        "head, a norm inside the feed-forward (`--scale-resids` adds the scaled skip)",
        "Shleifer, Weston, Ott 2021 (arXiv 2110.09456)"),
    "transformer_rezero": Family(
        {"norm_type": "none", "residual_gain": "rezero"},
        "ReZero: `y = x + α·F(x)`, no norm anywhere, one trainable scalar α per layer shared by its "
        "sublayers, 0 at start",
        "Bachlechner et al. 2020 (arXiv 2003.04887)"),
    "transformer_skipinit": Family(
        {"norm_type": "none", "residual_gain": "skipinit"},
        "SkipInit: `y = x + α·F(x)`, no norm anywhere, one α per sublayer, 0 at start",
        "De & Smith, NeurIPS 2020 (arXiv 2002.10444)"),
    "transformer_tfixup": Family(
        {"norm_type": "none", "tfixup": True},
        "T-Fixup: `y = x + F(x)`, no norm anywhere, value, output and feed-forward weights and "
        "token embeddings scaled from the depths; no warm-up",
        "Huang et al., ICML 2020"),
}
# Version of the arguments. Arguments from this version's parser carry it
# (``args.skip_norm_defaults_version``); saved arguments of earlier versions
# are brought up to it (fill_earlier_defaults):
# - version 1 (no version field), before --stack-norm-type: missing or None
#   fields take EARLIER_FAMILIES (transformer_adanorm was then Post-LN with
#   AdaNorm on every norm and C = 1);
# - version 2: an --admin-profile file was read when the run started and its
#   omegas are in the checkpoint's weights; the arguments do not keep the
#   file's text (version 3 does), so the file is not read again.
DEFAULTS_VERSION = 3
DEFAULTS_VERSION_ATTR = "skip_norm_defaults_version"
EARLIER_FAMILIES = {
    "transformer_adanorm": {
        "encoder_normalize_before": False,
        "decoder_normalize_before": False,
        "norm_type": "adanorm",
        "adanorm_scale": 1.0,
    },
}
SIZES = {
    "": base_architecture,
    "_tiny": tiny_architecture,
    "_iwslt_de_en": transformer_iwslt_de_en,
    "_wmt_en_de": transformer_wmt_en_de,
    "_vaswani_wmt_en_de_big": transformer_vaswani_wmt_en_de_big,
    "_wmt_en_de_big": transformer_wmt_en_de_big,
}


ARCH_FAMILY = {}  # architecture name -> family


def fill_earlier_defaults(args) -> None:
    """Bring saved arguments of an earlier version up to this one (see
    :data:`DEFAULTS_VERSION`), and mark them as of this version."""
    version = getattr(args, DEFAULTS_VERSION_ATTR, 1)
    if version < 2:
        for key, value in EARLIER_FAMILIES.get(ARCH_FAMILY.get(args.arch), {}).items():
            if getattr(args, key, None) is None:
                setattr(args, key, value)
        if not hasattr(args, "stack_norm_type"):
            args.stack_norm_type = None  # then every norm was of --norm-type
    if version < 3 and getattr(args, PROFILE_TEXT_ATTR, None) is None:
        args.admin_profile = None  # the checkpoint's weights hold its omegas
    setattr(args, DEFAULTS_VERSION_ATTR, DEFAULTS_VERSION)


def _register_architecture(family: str, suffix: str) -> None:
    family_defaults, size_defaults = FAMILIES[family].sets, SIZES[suffix]
    ARCH_FAMILY[family + suffix] = family

    def architecture(args):
        if getattr(args, DEFAULTS_VERSION_ATTR, 1) < DEFAULTS_VERSION:  # saved by version 1
            fill_earlier_defaults(args)
        for key, value in family_defaults.items():
            setattr(args, key, getattr(args, key, value))
        size_defaults(args)
        SkipNormConfig.fill_defaults(args)

    architecture.__name__ = family + suffix
    architecture.__doc__ = f"{family} defaults {family_defaults} on fairseq's {size_defaults.__name__}"
    register_model_architecture("transformer_rskip", family + suffix)(architecture)


def register_architectures() -> None:
    """Register every family in every size with fairseq (once the model
    ``transformer_rskip`` is registered)."""
    for family in FAMILIES:
        for suffix in SIZES:
            _register_architecture(family, suffix)
