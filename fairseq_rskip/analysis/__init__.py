"""Reproduction, analysis and benchmarking tools for fairseq_rskip.

Not imported by ``fairseq_rskip/__init__.py`` (so ``--user-dir fairseq_rskip``
stays light); the commands over them are in :mod:`fairseq_rskip.cli`, and
the variants they compare in :mod:`fairseq_rskip.variants`:

=================================  ==============================================
``runner``                         ``rskip-reproduce``: run variants x depths x
                                   seeds through ``fairseq-train`` and
                                   ``rskip-evaluate``
``report``                         its tables and plots
``significance``                   each variant against its reference row:
                                   paired tests per seed, t-intervals of
                                   paired differences over seeds
``trainlog``                       reading fairseq-train's JSON log, after a
                                   run and live (progress)
``gradients``                      ``rskip-gradient-analysis``: per-sublayer
                                   gradient norms (Liu et al. 2020)
``warmup``                         ``rskip-warmup-demo``: Post-LN vs Pre-LN
                                   without warm-up (Xiong et al. 2020)
``signal_propagation``             ``rskip-signal-propagation``: rank collapse at
                                   initialisation (He et al. 2023)
``output_change``                  ``rskip-output-change``: how far one update
                                   moves the output, per variant and depth
                                   (Liu et al. 2020, Admin's paper)
``modelbuild``                     building models and batches in-process, as
                                   fairseq-train does (tools and tests)
``memory``                         activation memory saved for backward
``synthetic``                      a tiny synthetic data-bin for tests
=================================  ==============================================

``benchmarks/benchmark_throughput.py`` (speed and memory) builds on
``modelbuild`` and ``memory``.
"""
