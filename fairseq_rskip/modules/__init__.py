from fairseq_rskip.models.skip_norm_config import NORM_TYPES, SkipNormConfig
from fairseq_rskip.modules.normalization import Normalization, adanorm
from fairseq_rskip.modules.residual_norm import ResidualNorm
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
