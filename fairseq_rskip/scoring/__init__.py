"""BLEU evaluation of trained checkpoints (not imported by the plugin).

``bleu``      tokenised BLEU and sacreBLEU from fairseq-generate's output
``evaluate``  a checkpoint (or the average of the last N) -> fairseq-generate -> both scores
              (the ``rskip-evaluate`` command)
"""
