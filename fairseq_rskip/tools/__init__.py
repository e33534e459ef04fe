"""The tools over the plugin: one package a job, each with its command in ``cli.py``.

Not imported by ``fairseq_rskip/__init__.py``, so ``--user-dir fairseq_rskip`` loads
only the core (config, modules, models, optim, the checkpoint helpers). Every tool
stands on :mod:`.common` and on the core; no tool imports another (``tests/test_layout.py``).

=======================  ========================================================
``common``               the base: child processes, fairseq-train's logs, figures,
                         output files, memory, models built in-process, synthetic
                         data, sacreBLEU's paired tests, t-intervals
``runner``               ``rskip-reproduce``: variants x depths x seeds through
                         ``fairseq-train`` and ``rskip-evaluate``, the significance
                         of each variant against its reference row, the report
``benchmark``            ``rskip-benchmark``: speed and memory against Post-LN
``gpu_check``            ``rskip-gpu-check``: every family through fairseq's GPU paths
``gradients``            ``rskip-gradient-analysis``: per-sublayer gradient norms
``signal_propagation``   ``rskip-signal-propagation``: rank collapse at initialisation
``output_change``        ``rskip-output-change``: output change after one update
``warmup``               ``rskip-warmup-demo``: Post-LN vs Pre-LN without warm-up
``source_use``           ``rskip-source-use``: the source's worth to trained models
``average_checkpoints``  ``rskip-average-checkpoints``
=======================  ========================================================

Data preparation (``rskip-prepare``, :mod:`fairseq_rskip.data_prep`) and scoring
(``rskip-evaluate``, :mod:`fairseq_rskip.scoring`) keep their own packages, each with
its ``cli.py``.
"""

from fairseq_rskip.errors import refuse_import_as_top_level

refuse_import_as_top_level(__name__, __file__)  # --user-dir given this folder
