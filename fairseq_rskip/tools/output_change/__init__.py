"""``rskip-output-change``: how far one update moves the output, per variant and depth
(Liu et al. 2020), in :mod:`.output_change`.
"""
