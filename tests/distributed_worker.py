"""One process of fairseq-train runs for the tests: train several variants in
turn with fairseq-train's own ``main``, in one process.

    python distributed_worker.py --rank R --world-size N --port P --data BIN --out DIR \
        --update-freq K [--stops U [U ...]] [--generate] [--flat-fp16-on-cpu] \
        NAME [NAME ...] -- [fairseq-train options]

A NAME is a row of the table of variants (``postln``, ``admin``, ...: its
architecture at the tiny size, with its flags) or an ``--arch``. With
``--world-size 1`` it is a plain single-process run, else one data-parallel
rank of the CPU recipe in README.md. Each NAME trains in ``DIR/NAME``
(fairseq's checkpoints, written by rank 0); ``--stops 2 3`` trains to update 2,
then resumes from ``checkpoint_last.pt`` to update 3, as a second fairseq-train
would. Every rank writes the parameters it ends with to
``DIR/NAME/params.rank<R>.pt``, so that a test can check that all ranks hold
the same model, and the records fairseq logged as ``train_inner`` (with
``--log-format json``) to ``DIR/NAME/train_inner.rank<R>.json``. ``--generate`` then runs fairseq-generate's ``main`` on the
last checkpoint, with the training run's ``--fp16``/``--bf16`` if any, into
``DIR/NAME/generate.txt``.

``--flat-fp16-on-cpu`` runs fairseq's flattened ``FP16Optimizer`` (``--fp16``
without ``--fp16-no-flatten-grads``) on CPU. fairseq 0.12.3.1 keys its flat
float32 copy by ``torch.cuda.current_device()`` and finds the parameters of a
key by ``p.device.index`` (``fairseq/optim/fp16_optimizer.py``, lines 35 and
117-118); CPU tensors have index ``None``, so the worker makes
``torch.cuda.current_device()`` answer ``None``. Nothing else of that path
touches CUDA.

Starting fairseq once per process, not once per variant, keeps the tests fast.
"""

import argparse
import json
import logging
import sys
from pathlib import Path

import torch


def variant_argv(name: str):
    """``--arch`` and flags of a row of the table at the tiny size, or of an ``--arch``."""
    from fairseq_rskip.variants import VARIANTS

    if name in VARIANTS:
        return ["--arch", VARIANTS[name].fairseq_arch("tiny"), *VARIANTS[name].flags]
    return ["--arch", name]


def precision_flags(extra):
    return [f for f in extra if f in ("--fp16", "--bf16", "--memory-efficient-fp16", "--memory-efficient-bf16")]


class TrainInnerRecords(logging.Handler):
    """The ``train_inner`` records of fairseq's JSON progress bar, which logs
    them through its module's logger renamed to the tag
    (``fairseq/logging/progress_bar.py``, ``rename_logger``)."""

    logger = logging.getLogger("fairseq.logging.progress_bar")

    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        if record.name == "train_inner":
            self.records.append(json.loads(record.getMessage()))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rank", type=int, required=True)
    p.add_argument("--world-size", type=int, required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--update-freq", type=int, required=True)
    p.add_argument("--stops", type=int, nargs="+", default=None)
    p.add_argument("--generate", action="store_true")
    p.add_argument("--flat-fp16-on-cpu", action="store_true")
    p.add_argument("names", nargs="+")
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    opts = p.parse_args(argv[: argv.index("--")] if "--" in argv else argv)

    if opts.flat_fp16_on_cpu:
        torch.cuda.current_device = lambda: None

    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.distributed import utils as distributed_utils
    from fairseq_cli import generate, train

    trainers = []

    class RecordingTrainer(train.Trainer):
        """fairseq's Trainer, remembered so that its final parameters can be saved."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            trainers.append(self)

    train.Trainer = RecordingTrainer
    for name in opts.names:
        save_dir = Path(opts.out) / name
        logged = TrainInnerRecords()
        logged.logger.addHandler(logged)
        for stop in opts.stops or [None]:
            argv = [opts.data, *variant_argv(name), "--save-dir", str(save_dir), "--cpu",
                    "--update-freq", str(opts.update_freq), *extra]
            if stop is not None:
                argv += ["--max-update", str(stop)]
            if opts.world_size > 1:
                argv += [
                    "--distributed-world-size", str(opts.world_size),
                    "--distributed-rank", str(opts.rank),
                    "--distributed-no-spawn",
                    "--distributed-init-method", f"tcp://localhost:{opts.port}",
                    "--distributed-backend", "gloo",
                    "--ddp-backend", "legacy_ddp",
                ]
            args = options.parse_args_and_arch(options.get_training_parser(), argv)
            distributed_utils.call_main(convert_namespace_to_omegaconf(args), train.main)
        params = {k: v.detach().clone() for k, v in trainers[-1].get_model().state_dict().items()}
        torch.save(params, save_dir / f"params.rank{opts.rank}.pt")
        logged.logger.removeHandler(logged)
        (save_dir / f"train_inner.rank{opts.rank}.json").write_text(json.dumps(logged.records))
        if opts.generate and opts.rank == 0:
            argv = [opts.data, "--user-dir", extra[extra.index("--user-dir") + 1],
                    "--path", str(save_dir / "checkpoint_last.pt"), "--cpu", "--beam", "2",
                    "--required-batch-size-multiple", "1", "--results-path", str(save_dir),
                    "--max-len-a", "0", "--max-len-b", "8",
                    *precision_flags(extra)]
            args = options.parse_args_and_arch(options.get_generation_parser(), argv)
            generate.main(convert_namespace_to_omegaconf(args))


if __name__ == "__main__":
    main()
