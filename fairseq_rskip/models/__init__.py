from fairseq_rskip.models.transformer_rskip import (  # noqa: F401 (registers)
    FAMILIES,
    SIZES,
    RSkipTransformerDecoder,
    RSkipTransformerEncoder,
    RSkipTransformerModel,
)
