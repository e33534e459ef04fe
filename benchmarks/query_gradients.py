#!/usr/bin/env python
"""The gradient norm of each self-attention's query projection ``W_Q``, layer by layer,
at the interval checkpoints of training runs: how the queries learn over the first updates.

    python benchmarks/query_gradients.py --data work/bundled/data-bin --up-to 200 \\
        --run espa=work/clip/runs/espa-d6-s1/checkpoints \\
        --run espa_clip1=work/clip/runs/espa_clip1-d6-s1/checkpoints

Each ``--run NAME=DIR`` is a fairseq checkpoint folder; every ``checkpoint_E_U.pt`` in it
with ``U <= --up-to`` (fairseq's ``--save-interval-updates`` files) is read. For each, the
model in evaluation mode (no dropout), the mean token cross-entropy (nats) over the first
``--batches`` batches of ``--split`` is differentiated once, and ``||dL/dW_Q||`` (Frobenius)
of every encoder and decoder self-attention layer is printed: the gradient the queries
would get from those sentences at that point of training, before clipping and before
Adam's scaling. Repeated names (seeds) are averaged, with their range.
"""

import argparse
import re
import sys
from collections import defaultdict
from pathlib import Path

from fairseq_rskip.errors import UserError, run_main
from fairseq_rskip.tools.common.intervals import mean_and_range
from fairseq_rskip.tools.common.study_cli import check_data_bin, named_files, start_measuring

CHECKPOINT = re.compile(r"checkpoint_\d+_(\d+)\.pt$")


def query_gradient_norms(model, batches, pad: int) -> dict:
    """``{"encoder": [...], "decoder": [...]}``: ``||dL/dW_Q||`` of each self-attention,
    ``L`` the mean token cross-entropy (nats) over ``batches``, model in evaluation mode."""
    import torch

    model.eval()
    model.zero_grad(set_to_none=True)
    nats, tokens = 0.0, 0
    for sample in batches:
        logits, _ = model(**sample["net_input"])
        target = sample["target"]
        nats = nats + torch.nn.functional.cross_entropy(
            logits.float().view(-1, logits.size(-1)), target.view(-1), ignore_index=pad, reduction="sum")
        tokens += int(target.ne(pad).sum())
    (nats / max(tokens, 1)).backward()
    norms = {stack: [float(layer.self_attn.q_proj.weight.grad.norm()) for layer in getattr(model, stack).layers]
             for stack in ("encoder", "decoder")}
    model.zero_grad(set_to_none=True)
    return norms


def interval_checkpoints(folder: str, up_to: int):
    """``[(update, path)]`` of the ``checkpoint_E_U.pt`` files in ``folder`` with ``U <= up_to``."""
    found = sorted((int(m.group(1)), str(p)) for p in Path(folder).iterdir()
                   if (m := CHECKPOINT.search(p.name)) and int(m.group(1)) <= up_to)
    if not found:
        raise UserError(f"--run {folder}: no checkpoint_E_U.pt with U <= {up_to} "
                        "(train with --save-interval-updates and --keep-interval-updates)")
    return found


def table(norms: dict, stack: str) -> str:
    """Markdown: one row per name and update, one column per layer, mean (range) over runs."""
    layers = max(len(per_run[0][stack]) for per_run in norms.values())
    lines = [f"{stack} self-attention, ||dL/dW_Q||:", "",
             "| run | update | runs | " + " | ".join(f"layer {i + 1}" for i in range(layers)) + " |",
             "|---|---|---|" + "---|" * layers]
    for (name, update), per_run in norms.items():
        cells = [mean_and_range([r[stack][i] for r in per_run], ".3g") for i in range(len(per_run[0][stack]))]
        lines.append(f"| {name} | {update} | {len(per_run)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("--data", required=True, help="the data-bin the runs were trained on")
    p.add_argument("--run", action="append", required=True, metavar="NAME=DIR",
                   help="a checkpoint folder; repeat a NAME for its seeds")
    p.add_argument("--up-to", type=int, default=200, help="the last update read")
    p.add_argument("--split", default="valid")
    p.add_argument("--batches", type=int, default=8, help="batches of --split per gradient")
    p.add_argument("--max-tokens", type=int, default=4096)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    if args.batches < 1:
        raise UserError(f"--batches must be at least 1; got {args.batches}")
    named = named_files(args.run, "--run", folders=True)
    check_data_bin(args.data)
    import itertools

    from fairseq_rskip.tools.source_use.source_use import load

    start_measuring(args.threads)
    norms = defaultdict(list)
    for name, folder in named:
        for update, path in interval_checkpoints(folder, args.up_to):
            model, batches, pad = load(path, args.data, args.split, args.max_tokens)
            norms[(name, update)].append(query_gradient_norms(model, itertools.islice(batches, args.batches), pad))
            print(f"{name} at {update}: {path}", file=sys.stderr)
    order = list(dict.fromkeys(name for name, _ in named))
    norms = dict(sorted(norms.items(), key=lambda item: (order.index(item[0][0]), item[0][1])))
    print(table(norms, "encoder") + "\n\n" + table(norms, "decoder"))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
