"""``rskip-gradient-analysis``: per-sublayer gradient norms at initialisation and over
training (Liu et al. 2020), in :mod:`.gradients`.
"""
