from fairseq_rskip.errors import refuse_import_as_top_level

refuse_import_as_top_level(__name__, __file__)  # --user-dir given this folder

from fairseq_rskip.config import NORM_TYPES, SkipNormConfig
from fairseq_rskip.modules.normalization import NORMS, Normalization, adanorm, build_norm
from fairseq_rskip.modules.residual_norm import ResidualNorm
from fairseq_rskip.modules.shaped_attention import ShapedMultiheadAttention
from fairseq_rskip.modules.tat import TATLeakyReLU
from fairseq_rskip.modules.transformer_layer import (
    RSkipTransformerDecoderLayer,
    RSkipTransformerEncoderLayer,
)

__all__ = [
    "NORMS",
    "NORM_TYPES",
    "Normalization",
    "ResidualNorm",
    "RSkipTransformerDecoderLayer",
    "RSkipTransformerEncoderLayer",
    "ShapedMultiheadAttention",
    "SkipNormConfig",
    "TATLeakyReLU",
    "adanorm",
    "build_norm",
]
