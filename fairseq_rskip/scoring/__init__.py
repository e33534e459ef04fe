"""BLEU evaluation of trained checkpoints (not imported by the plugin).

``bleu``      tokenised BLEU, sacreBLEU and chrF from fairseq-generate's output
``evaluate``  a checkpoint (or the average of the last N) -> fairseq-generate -> the scores
              (the ``rskip-evaluate`` command)
``paired``    sacreBLEU's paired bootstrap and approximate randomisation of two systems
``compare``   ``rskip-evaluate --compare``: two checkpoints or translation files, tested
"""
