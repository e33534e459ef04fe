"""``rskip-evaluate``: BLEU evaluation of trained checkpoints (not imported by the plugin).

``bleu``      tokenised BLEU, sacreBLEU and chrF from fairseq-generate's output
``evaluate``  a checkpoint (or the average of the last N) -> fairseq-generate -> the scores
``compare``   ``--compare``: two checkpoints or translation files, tested (sacreBLEU's paired
              tests: :mod:`fairseq_rskip.tools.common.paired`)
``cli``       the command
"""

from fairseq_rskip.errors import refuse_import_as_top_level

refuse_import_as_top_level(__name__, __file__)  # --user-dir given this folder
