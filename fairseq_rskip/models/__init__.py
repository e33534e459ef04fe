from fairseq_rskip.errors import refuse_import_as_top_level

refuse_import_as_top_level(__name__, __file__)  # --user-dir given this folder

from fairseq_rskip.config import SkipNormConfig  # noqa: F401
from fairseq_rskip.models.transformer_rskip import (  # noqa: F401 (registers the model)
    RSkipTransformerDecoder,
    RSkipTransformerEncoder,
    RSkipTransformerModel,
)
from fairseq_rskip.models.architectures import FAMILIES, SIZES, register_architectures  # noqa: F401

register_architectures()
