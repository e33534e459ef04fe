"""``rskip-average-checkpoints``: the average of a run's last checkpoints (the library
part is :mod:`fairseq_rskip.checkpoint_averaging`).
"""
