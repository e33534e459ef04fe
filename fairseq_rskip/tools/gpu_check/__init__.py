"""``rskip-gpu-check``: every family through fairseq's GPU paths on this machine
(:mod:`.checks`; several fairseq runs in one process: :mod:`.fairseq_runs`).
"""
