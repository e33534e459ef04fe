"""``rskip-warmup-demo``: Post-LN against Pre-LN without warm-up (Xiong et al. 2020), in
:mod:`.warmup`.
"""
