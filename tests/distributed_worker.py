"""One data-parallel rank of tests/test_distributed.py: train several
architectures in turn with fairseq-train's own ``main``, in one process.

    python distributed_worker.py --rank R --world-size N --port P --data BIN --out DIR \
        --update-freq K ARCH [ARCH ...] -- [fairseq-train options]

With ``--world-size 1`` it is a plain single-process run. Each architecture
trains in ``DIR/ARCH`` (fairseq's checkpoints, written by rank 0), and every
rank writes the parameters it ends with to ``DIR/ARCH/params.rank<R>.pt``, so
that the test can check that all ranks hold the same model. Starting
fairseq once per rank, not once per architecture, keeps the test fast; the
flags are those of the CPU recipe in README.md.
"""

import argparse
import sys
from pathlib import Path

import torch


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rank", type=int, required=True)
    p.add_argument("--world-size", type=int, required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--update-freq", type=int, required=True)
    p.add_argument("archs", nargs="+")
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    opts = p.parse_args(argv[: argv.index("--")] if "--" in argv else argv)

    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.distributed import utils as distributed_utils
    from fairseq_cli import train

    trainers = []

    class RecordingTrainer(train.Trainer):
        """fairseq's Trainer, remembered so that its final parameters can be saved."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            trainers.append(self)

    train.Trainer = RecordingTrainer
    for arch in opts.archs:
        save_dir = Path(opts.out) / arch
        argv = [opts.data, "--arch", arch, "--save-dir", str(save_dir), "--cpu",
                "--update-freq", str(opts.update_freq), *extra]
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


if __name__ == "__main__":
    main()
