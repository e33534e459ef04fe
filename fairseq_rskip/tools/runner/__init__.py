"""The comparison runner (``rskip-reproduce``): variants x depths x seeds through ``fairseq-train``.

Every run is a real ``fairseq-train`` subprocess (``--log-format json``,
``--user-dir`` this package's folder) followed, unless ``--no-bleu``, by
``rskip-evaluate`` on its checkpoint directory. Under ``--out`` the runner keeps

``runs/<arch>-d<depth>-s<seed>/``
    ``checkpoints/`` (fairseq's), ``train.log`` (fairseq's output, appended on
    every attempt), ``attempts.jsonl`` (exit status, wall time and peak
    memory of each attempt, and the signal that stopped it, if one did),
    ``run.json`` (the run's identity, below) and ``result.json``, written
    once the run is finished (trained and evaluated, or diverged). A run
    whose ``result.json`` exists is skipped; any other run is started again
    and fairseq resumes it from ``checkpoints/checkpoint_last.pt``. The
    evaluation keeps its translations here (``rskip-evaluate
    --translations-dir``).

and :mod:`fairseq_rskip.tools.runner.significance` compares each variant with
its reference row, :mod:`fairseq_rskip.tools.runner.report` writes the tables
and plots, and ``config.json`` the configuration the runs were made with.

A run's identity (:func:`.identity.run_identity`) is everything that determines it:
its fairseq-train arguments (without the program, the data-bin's path and
the two paths that only say where things are, ``--save-dir`` and
``--user-dir``), the data-bin's content (:func:`.identity.data_identity`), the CPU
threads and the evaluation settings. A folder that holds a run with another
identity is never reused: the runner refuses it, naming the settings that
differ, or with ``rerun_changed`` trains the run into
``runs/<arch>-d<depth>-s<seed>-<id>/`` beside it.

While a run trains or is evaluated its folder is locked
(:func:`fairseq_rskip.file_io.locked`): a second runner refuses it. SIGINT,
SIGTERM and SIGHUP stop the runner's children (fairseq-train runs in a
process session of its own), record the attempt as interrupted, and end the
runner with :class:`Interrupted`.

While a run trains, a progress bar (on a terminal) shows its updates done of
the total, the latest training loss, the elapsed time and an estimate of what
is left, read from fairseq's log as it is written.

Memory: on CPU the peak resident set size (``VmHWM`` of
``/proc/PID/status``, polled every 0.5 s) of the ``fairseq-train`` process,
which includes the Python interpreter, fairseq, the data and the model (so it
overstates what the model itself needs); on GPU also
``torch.cuda.max_memory_allocated`` as fairseq reports it (``gb_free`` is the
device total minus that peak).

Architectures are rows of :data:`fairseq_rskip.variants.VARIANTS`, names a
configuration file defines under ``"variants"``, or any registered fairseq
architecture name.

The package, by job: :mod:`.config` (the configuration and the checks of the
input), :mod:`.recipes` (the built-in training recipes), :mod:`.runs` (one run
and its fairseq-train command), :mod:`.identity` (what makes two runs the
same), :mod:`.execute` (training, evaluating and recording one run) and
:mod:`.comparison` (the plan of the runs and the whole comparison); the child
processes are :mod:`fairseq_rskip.tools.common.child_process`'s.
"""

from fairseq_rskip.tools.common.child_process import Interrupted
from fairseq_rskip.tools.runner.comparison import plan_runs, reproduce
from fairseq_rskip.tools.runner.config import RUNNER_OPTIONS, Config, resolve_archs
from fairseq_rskip.tools.runner.execute import show_train_progress
from fairseq_rskip.tools.runner.runs import Run, train_command, train_settings

__all__ = ["Config", "Interrupted", "RUNNER_OPTIONS", "Run", "plan_runs", "reproduce",
           "resolve_archs", "show_train_progress", "train_command", "train_settings"]
