"""The architectures of ``transformer_rskip``: a family's defaults on one of
fairseq's sizes, and the version of the families' defaults that saved
arguments are read with.

``--arch transformer_<family><size>`` fills the arguments the command line
left unset with the family's defaults (:data:`FAMILIES`), then fairseq's
defaults of the size (:data:`SIZES`), then the flags' own defaults
(:class:`~fairseq_rskip.config.SkipNormConfig`).
"""

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

FAMILIES = {
    "transformer_rskip": {"skip_recursions": 2},
    # The AdaNorm authors' translation setting (lancopku/AdaNorm, "machine
    # translation/"): Pre-LN; the sublayer norms are LayerNorm with gain and
    # bias, only the final norms of the stacks are AdaNorm; C = 1 (their
    # README's command; their script's C = 2 trained worse on the bundled corpus). See
    # docs/adanorm.md.
    "transformer_adanorm": {
        "encoder_normalize_before": True,
        "decoder_normalize_before": True,
        "norm_type": "layernorm",
        "stack_norm_type": "adanorm",
        "adanorm_scale": 1.0,
    },
    "transformer_prenorm_nowarmup": {
        "encoder_normalize_before": True,
        "decoder_normalize_before": True,
    },
    "transformer_deepnorm": {"skip_weight": "deepnorm"},
    "transformer_admin": {"skip_weight": "admin"},
    "transformer_vanilla": {"no_skip": True, "norm_type": "none"},
    "transformer_espa": {"no_skip": True, "norm_type": "none", "spa_kernel": "exponential"},
    "transformer_uspa": {"no_skip": True, "norm_type": "none", "spa_kernel": "uniform"},
    # the baselines of normalisation and residual studies (docs/baselines.md)
    "transformer_rmsnorm": {
        "encoder_normalize_before": True,
        "decoder_normalize_before": True,
        "norm_type": "rmsnorm",
    },
    "transformer_dyt": {
        "encoder_normalize_before": True,
        "decoder_normalize_before": True,
        "norm_type": "dyt",
    },
    "transformer_sandwich": {
        "encoder_normalize_before": True,
        "decoder_normalize_before": True,
        "sandwich_norm": True,
    },
    "transformer_periln": {
        "encoder_normalize_before": True,
        "decoder_normalize_before": True,
        "sandwich_norm": True,
        "layernorm_embedding": True,
    },
    # the NormFormer paper's setting (--scale-resids only for its smaller models)
    "transformer_normformer": {
        "encoder_normalize_before": True,
        "decoder_normalize_before": True,
        "scale_attn": True,
        "scale_heads": True,
        "scale_fc": True,
    },
    "transformer_rezero": {"norm_type": "none", "residual_gain": "rezero"},
    "transformer_skipinit": {"norm_type": "none", "residual_gain": "skipinit"},
    "transformer_tfixup": {"norm_type": "none", "tfixup": True},
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
    family_defaults, size_defaults = FAMILIES[family], SIZES[suffix]
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
