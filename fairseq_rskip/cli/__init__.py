"""The command-line tools, installed as console scripts by setup.py (as fairseq's
``fairseq_cli``). Each module parses its options and calls the library; ``cli_main``
is the entry point, which reports a :class:`~fairseq_rskip.errors.UserError` as one
``error: ...`` line and exit status 2.

=============================  ==============================================
``rskip-prepare``              data-bins: ``parallel`` (any raw parallel text),
                               ``bundled``, ``iwslt14``, ``iwslt15-envi``,
                               ``wmt14-en2de``; ``download``,
                               ``build-bundled-corpus``
``rskip-evaluate``             fairseq-generate and BLEU of a checkpoint
``rskip-average-checkpoints``  average the last N checkpoints
``rskip-reproduce``            the comparison runner: variants x depths x seeds
``rskip-gradient-analysis``    per-sublayer gradient norms (Liu et al. 2020)
``rskip-warmup-demo``          Post-LN vs Pre-LN without warm-up (Xiong et al. 2020)
``rskip-signal-propagation``   rank collapse at initialisation (He et al. 2023)
``rskip-output-change``        output change after one update (Liu et al. 2020)
``rskip-gpu-check``            every family through fairseq's GPU paths (--fp16,
                               --amp, pytorch_ddp, fused Adam) on this machine
=============================  ==============================================

Every command also runs as ``python -m fairseq_rskip.cli.NAME`` (what the
repository's shell wrappers do).
"""
