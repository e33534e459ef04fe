"""The flags of ``transformer_rskip``: one dataclass field each, one check each.

Each field is a command-line flag (``norm_type`` is ``--norm-type``), declared
once in :mod:`~fairseq_rskip.config.skip_norm` with its default, help text and
allowed values, and turned into argparse flags by fairseq's
``gen_parser_from_dataclass`` (as fairseq declares ``TransformerConfig``). The
architectures fill unset fields with their family's defaults, then with the
fields' defaults; :meth:`SkipNormConfig.validate` runs once, when the model is
built, and the validated config is handed to the encoder and decoder stacks,
their layers and their normalisations.

This package is plain data and imports nothing else of the plugin: the
modules (:mod:`fairseq_rskip.modules`) build themselves from it, and the model
(:mod:`fairseq_rskip.models`) builds the modules. A field's allowed values are
part of its declaration: a choice in its type (fairseq's ``ChoiceEnum``, which
argparse enforces too), a range in its metadata (``"range": Interval(...)``,
:mod:`~fairseq_rskip.config.fields`); :meth:`SkipNormConfig.validate` checks
both for every field, then the rules between flags, written out in
:mod:`~fairseq_rskip.config.rules`.
"""

from fairseq_rskip.config.fields import Interval, arch_description, choices_of, flag
from fairseq_rskip.config.skip_norm import (
    ADMIN_INITS,
    ATTENTION_INITS,
    CROSS_ATTENTION_SHORTCUTS,
    DEEPNORM_INITS,
    NORM_TYPES,
    RESIDUAL_GAINS,
    RMSNORM_EPS_PLACEMENTS,
    SHAPED_KEY_INITS,
    SHAPED_QUERY_INITS,
    SKIP_WEIGHTS,
    SPA_KERNELS,
    TAT_DEPTHS,
    TAT_FALLBACKS,
    SkipNormConfig,
)

__all__ = [
    "ADMIN_INITS", "ATTENTION_INITS", "CROSS_ATTENTION_SHORTCUTS", "DEEPNORM_INITS", "NORM_TYPES",
    "RESIDUAL_GAINS", "RMSNORM_EPS_PLACEMENTS", "SHAPED_KEY_INITS", "SHAPED_QUERY_INITS",
    "SKIP_WEIGHTS", "SPA_KERNELS", "TAT_DEPTHS", "TAT_FALLBACKS", "Interval", "SkipNormConfig",
    "arch_description", "choices_of", "flag",
]
