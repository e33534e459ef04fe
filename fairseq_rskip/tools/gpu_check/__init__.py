"""``rskip-gpu-check``: every family through fairseq's GPU paths on this machine
(:mod:`.checks`; a run against float32 training: :mod:`.against_float32`; several
fairseq runs in one process: :mod:`.fairseq_runs`; the command: :mod:`.cli`)."""
