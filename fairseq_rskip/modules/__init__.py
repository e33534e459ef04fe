from fairseq_rskip.modules.normalization import NORM_TYPES, Normalization, adanorm
from fairseq_rskip.modules.residual_norm import ResidualNorm, SkipNormConfig
from fairseq_rskip.modules.transformer_layer import (
    RSkipTransformerDecoderLayer,
    RSkipTransformerEncoderLayer,
)

__all__ = [
    "NORM_TYPES",
    "Normalization",
    "ResidualNorm",
    "RSkipTransformerDecoderLayer",
    "RSkipTransformerEncoderLayer",
    "SkipNormConfig",
    "adanorm",
]
