"""Several stock fairseq-train runs (and fairseq-generate) in one process.

    python -m fairseq_rskip.tools.gpu_check.fairseq_runs --data BIN --out DIR \\
        [--stops U [U ...]] [--generate] [--bf16-without-tpu] NAME [NAME ...] -- [fairseq-train options]

A NAME is a row of the table of variants (its architecture at ``--size``,
tiny by default, with the row's flags) or an ``--arch``. Each trains in
``DIR/NAME`` through fairseq-train's own ``main`` (``fairseq_cli/train.py``,
with its distributed launch, ``distributed_utils.call_main``), so it is what
``fairseq-train DATA --arch ... OPTIONS --save-dir DIR/NAME`` does, without
starting Python and importing fairseq once per run. ``--stops 2 3`` trains to
update 2, then resumes from ``checkpoint_last.pt`` to update 3, as a second
fairseq-train would. The ``train_inner`` records (``--log-format json``) go to
``DIR/NAME/train_inner.json``; ``--generate`` then decodes the test split with
fairseq-generate's ``main`` from ``checkpoint_last.pt``, with the training
run's half-precision flag, into ``DIR/NAME/generate-test.txt``.

``--bf16-without-tpu``: fairseq 0.12.3.1 sets ``--tpu`` with ``--bf16``
(``fairseq/options.py``, lines 200-201) and its trainer then asks torch_xla for
its device, on a GPU as on a CPU; this resets that one flag after parsing, so
the rest of fairseq's bfloat16 path runs (the model in bfloat16, FP16Optimizer's
float32 copy, no loss scaling).
"""

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Callable, List, Optional, Sequence

from fairseq_rskip.fairseq_tools import PLUGIN_DIR

def variant_argv(name: str, size: str = "tiny") -> List[str]:
    """``--arch`` and flags of a row of the table at ``size``, or of an ``--arch``."""
    from fairseq_rskip.variants import VARIANTS

    if name in VARIANTS:
        return ["--arch", VARIANTS[name].fairseq_arch(size), *VARIANTS[name].flags]
    return ["--arch", name]


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

    def __enter__(self):
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc):
        self.logger.removeHandler(self)


def train(data, save_dir: Path, name: str, train_flags: Sequence[str], size: str = "tiny",
          max_update: Optional[int] = None, bf16_without_tpu: bool = False) -> None:
    """One fairseq-train of ``name`` into ``save_dir`` (resuming from its
    ``checkpoint_last.pt`` where there is one, as fairseq-train does)."""
    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.distributed import utils as distributed_utils
    from fairseq_cli import train as fairseq_train

    argv = [str(data), "--user-dir", str(PLUGIN_DIR), *variant_argv(name, size),
            "--save-dir", str(save_dir), *map(str, train_flags)]
    if max_update is not None:
        argv += ["--max-update", str(max_update)]
    args = options.parse_args_and_arch(options.get_training_parser(), argv)
    if bf16_without_tpu and args.bf16:
        args.tpu = False
    distributed_utils.call_main(convert_namespace_to_omegaconf(args), fairseq_train.main)


def generate(data, save_dir: Path, flags: Sequence[str] = ()) -> Path:
    """fairseq-generate of the test split from ``save_dir/checkpoint_last.pt``
    (beam 2, at most 8 tokens a hypothesis); the path of its output."""
    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq_cli import generate as fairseq_generate

    argv = [str(data), "--user-dir", str(PLUGIN_DIR), "--path", str(save_dir / "checkpoint_last.pt"),
            "--beam", "2", "--max-len-a", "0", "--max-len-b", "8", "--required-batch-size-multiple", "1",
            "--results-path", str(save_dir), *map(str, flags)]
    args = options.parse_args_and_arch(options.get_generation_parser(), argv)
    fairseq_generate.main(convert_namespace_to_omegaconf(args))
    return save_dir / "generate-test.txt"


def run_all(data, out, names: Sequence[str], train_flags: Sequence[str], size: str = "tiny",
            stops: Optional[Sequence[int]] = None, decode: bool = False, record_suffix: str = "",
            after_training: Optional[Callable[[str, Path], None]] = None,
            bf16_without_tpu: bool = False) -> None:
    """Train each of ``names`` into ``out/NAME`` (to each of ``stops`` in
    turn), keep its ``train_inner`` records, call ``after_training(name,
    save_dir)``, and with ``decode`` run fairseq-generate, with the same
    half-precision flag as the training."""
    for name in names:
        save_dir = Path(out) / name
        with TrainInnerRecords() as logged:
            for stop in stops or [None]:
                train(data, save_dir, name, train_flags, size, max_update=stop,
                      bf16_without_tpu=bf16_without_tpu)
        (save_dir / f"train_inner{record_suffix}.json").write_text(json.dumps(logged.records))
        if after_training is not None:
            after_training(name, save_dir)
        if decode:
            # fairseq-generate 0.12.3.1 casts to float16 alone (--bf16 there is its TPU flag)
            half = [f for f in train_flags if f in ("--fp16", "--memory-efficient-fp16")]
            generate(data, save_dir, ["--cpu"] * ("--cpu" in train_flags) + half)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fairseq_rskip.tools.gpu_check.fairseq_runs",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="fairseq data-bin")
    p.add_argument("--out", required=True, help="one folder per NAME is made here")
    p.add_argument("--size", default="tiny", help="size of the table's rows (default tiny)")
    p.add_argument("--stops", type=int, nargs="+", help="train to each of these updates in turn")
    p.add_argument("--generate", action="store_true", help="decode the test split afterwards")
    p.add_argument("--bf16-without-tpu", action="store_true",
                   help="with --bf16: reset the --tpu that fairseq 0.12.3.1 sets with it after parsing")
    p.add_argument("names", nargs="+", help="rows of the table of variants or --arch names")
    return p


def split_argv(argv: Sequence[str]):
    """(this module's arguments, fairseq-train's: those after ``--``)."""
    argv = list(argv)
    return (argv[: argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])


def main(argv=None) -> int:
    own, train_flags = split_argv(sys.argv[1:] if argv is None else argv)
    opts = build_parser().parse_args(own)
    run_all(opts.data, opts.out, opts.names, train_flags, opts.size, opts.stops, opts.generate,
            bf16_without_tpu=opts.bf16_without_tpu)
    return 0


if __name__ == "__main__":
    sys.exit(main())
