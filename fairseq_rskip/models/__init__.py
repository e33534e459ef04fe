from fairseq_rskip.models.skip_norm_config import SkipNormConfig  # noqa: F401
from fairseq_rskip.models.transformer_rskip import (  # noqa: F401 (registers)
    FAMILIES,
    SIZES,
    RSkipTransformerDecoder,
    RSkipTransformerEncoder,
    RSkipTransformerModel,
)
