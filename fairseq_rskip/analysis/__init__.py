"""Reproduction, analysis and benchmarking tools for fairseq_rskip.

Not imported by ``fairseq_rskip/__init__.py`` (so ``--user-dir fairseq_rskip``
stays light); each module is used by a thin command in ``scripts/`` or
``benchmarks/``:

=================================  ==============================================
``reproduce``                      ``scripts/reproduce.py``: run architectures x
                                   depths x seeds through ``fairseq-train`` and
                                   ``scripts/evaluate.sh``; tables and plots
``gradients``                      ``scripts/gradient_analysis.py``: per-sublayer
                                   gradient norms (Liu et al. 2020)
``warmup``                         ``scripts/warmup_demo.py``: Post-LN vs Pre-LN
                                   without warm-up (Xiong et al. 2020)
``signal_propagation``             ``scripts/signal_propagation.py``: rank
                                   collapse at initialisation (He et al. 2023)
``modelbuild``                     building models and batches in-process
``synthetic``                      a tiny synthetic data-bin for tests
=================================  ==============================================
"""
