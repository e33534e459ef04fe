"""One process of fairseq-train runs for the tests, on CPU:
:mod:`fairseq_rskip.tools.gpu_check.fairseq_runs` with what only tests need.

    python distributed_worker.py --rank R --world-size N --port P --data BIN --out DIR \
        --update-freq K [--stops U [U ...]] [--generate] [--flat-fp16-on-cpu] \
        NAME [NAME ...] -- [fairseq-train options]

With ``--world-size 1`` it is a plain single-process run, else one
data-parallel rank of the CPU recipe in docs/distributed.md. Every rank writes the
parameters its trainer ends with to ``DIR/NAME/params.rank<R>.pt`` (so that a
test can check that all ranks hold the same model) and its ``train_inner``
records to ``DIR/NAME/train_inner.rank<R>.json``.

``--flat-fp16-on-cpu`` runs fairseq's flattened ``FP16Optimizer`` (``--fp16``
without ``--fp16-no-flatten-grads``) on CPU. fairseq 0.12.3.1 keys its flat
float32 copy by ``torch.cuda.current_device()`` and finds the parameters of a
key by ``p.device.index`` (``fairseq/optim/fp16_optimizer.py``, lines 35 and
117-118); CPU tensors have index ``None``, so the worker makes
``torch.cuda.current_device()`` answer ``None``. Nothing else of that path
touches CUDA.
"""

import argparse
import json
import sys

import torch

from fairseq_rskip.tools.gpu_check import fairseq_runs


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
    own, extra = fairseq_runs.split_argv(sys.argv[1:])
    opts = p.parse_args(own)

    if opts.flat_fp16_on_cpu:
        torch.cuda.current_device = lambda: None

    from fairseq_cli import train

    trainers = []

    class RecordingTrainer(train.Trainer):
        """fairseq's Trainer, remembered so that its final parameters can be saved."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            trainers.append(self)

    train.Trainer = RecordingTrainer

    def save_params(name, save_dir):
        params = {k: v.detach().clone() for k, v in trainers[-1].get_model().state_dict().items()}
        torch.save(params, save_dir / f"params.rank{opts.rank}.pt")
        from torch.optim.optimizer import _global_optimizer_post_hooks, _global_optimizer_pre_hooks

        hooks = {"step_pre": len(_global_optimizer_pre_hooks), "step_post": len(_global_optimizer_post_hooks)}
        (save_dir / f"optimizer_hooks.rank{opts.rank}.json").write_text(json.dumps(hooks))

    flags = ["--cpu", "--update-freq", str(opts.update_freq), *extra]
    if opts.world_size > 1:
        flags += [
            "--distributed-world-size", str(opts.world_size),
            "--distributed-rank", str(opts.rank),
            "--distributed-no-spawn",
            "--distributed-init-method", f"tcp://localhost:{opts.port}",
            "--distributed-backend", "gloo",
            "--ddp-backend", "legacy_ddp",
        ]
    fairseq_runs.run_all(opts.data, opts.out, opts.names, flags, stops=opts.stops,
                         decode=opts.generate and opts.rank == 0, record_suffix=f".rank{opts.rank}",
                         after_training=save_params)


if __name__ == "__main__":
    main()
