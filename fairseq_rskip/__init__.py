"""fairseq_rskip: skip connections and normalisation for fairseq's Transformer.

Use as ``--user-dir fairseq_rskip`` with the stock fairseq commands, or
``import fairseq_rskip`` before loading a model from Python. Importing it
registers the architectures (every family of
``fairseq_rskip.models.architectures.FAMILIES`` in every size, e.g.
``transformer_rskip_iwslt_de_en``), the ``inverse_sqrt_nowarmup`` learning-rate
scheduler, and lets torch load fairseq checkpoints with ``weights_only=True``.
"""

import logging

from fairseq_rskip.checkpoint_compat import allow_fairseq_checkpoint_globals


class _WithoutTensorboardNotice(logging.Filter):
    """fairseq's speech task logs, when imported without tensorboardX (which
    translation never uses), "Please install tensorboardX": not for our tools' users."""

    def filter(self, record):
        return "install tensorboardX" not in record.getMessage()


logging.getLogger("fairseq.tasks.text_to_speech").addFilter(_WithoutTensorboardNotice())

allow_fairseq_checkpoint_globals()

from fairseq_rskip import models, optim  # noqa: E402,F401 (registers with fairseq)

__version__ = "0.2.0"
