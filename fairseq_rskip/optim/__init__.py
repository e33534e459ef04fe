from fairseq_rskip.optim import lr_scheduler  # noqa: F401 (registers)
