#!/usr/bin/env python3
"""Average the parameters of fairseq checkpoints (fairseq's scripts/average_checkpoints.py CLI).

fairseq's own script is not installed with the package, and its bare
``torch.load`` fails on fairseq checkpoints under torch >= 2.6. This one
imports fairseq_rskip first, so the checkpoints load with
``weights_only=True`` and only fairseq's allow-listed types.

    python scripts/average_checkpoints.py --inputs CKPT_DIR --num-epoch-checkpoints 5 \
        --output CKPT_DIR/checkpoint.avg5.pt
"""

import argparse
import collections
import os
import re
import sys

import torch

import fairseq_rskip  # noqa: F401 (allow-lists fairseq's checkpoint types)


def last_n_checkpoints(paths, n, update_based, upper_bound=None):
    if len(paths) != 1:
        raise SystemExit("error: --num-*-checkpoints takes a single directory in --inputs")
    pattern = re.compile(r"checkpoint_\d+_(\d+)\.pt" if update_based else r"checkpoint(\d+)\.pt")
    found = []
    for name in os.listdir(paths[0]):
        m = pattern.fullmatch(name)
        if m:
            step = int(m.group(1))
            if upper_bound is None or step <= upper_bound:
                found.append((step, os.path.join(paths[0], name)))
    if len(found) < n:
        raise SystemExit(
            f"error: found {len(found)} checkpoints in {paths[0]} matching "
            f"{pattern.pattern}, need {n}"
        )
    return [path for _, path in sorted(found, reverse=True)[:n]]


def average_checkpoints(inputs):
    """The state of the first checkpoint with 'model' replaced by the mean over all."""
    state = None
    sums = collections.OrderedDict()
    for path in inputs:
        ckpt = torch.load(path, map_location="cpu")  # weights_only=True (torch default)
        if state is None:
            state = ckpt
        params = ckpt["model"]
        if set(params) != set(sums) and sums:
            raise SystemExit(f"error: {path} has other parameters than {inputs[0]}")
        for key, value in params.items():
            value = value.double() if value.is_floating_point() else value
            sums[key] = sums[key] + value if key in sums else value.clone()
    averaged = collections.OrderedDict()
    for key, total in sums.items():
        reference = state["model"][key]
        if reference.is_floating_point():
            averaged[key] = (total / len(inputs)).to(reference.dtype)
        else:
            averaged[key] = reference  # integer buffers (e.g. version) are not averaged
    state["model"] = averaged
    return state


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", required=True, nargs="+", help="checkpoint files, or one directory")
    parser.add_argument("--output", required=True, help="where to write the averaged checkpoint")
    num = parser.add_mutually_exclusive_group()
    num.add_argument("--num-epoch-checkpoints", type=int, help="average the last N checkpointEPOCH.pt")
    num.add_argument("--num-update-checkpoints", type=int, help="average the last N checkpoint_EPOCH_UPDATE.pt")
    parser.add_argument("--checkpoint-upper-bound", type=int, help="ignore checkpoints after this epoch/update")
    args = parser.parse_args(argv)

    inputs = args.inputs
    n = args.num_epoch_checkpoints or args.num_update_checkpoints
    if n is not None:
        if n < 1:
            raise SystemExit("error: --num-*-checkpoints must be >= 1")
        inputs = last_n_checkpoints(
            inputs, n, args.num_update_checkpoints is not None, args.checkpoint_upper_bound
        )
    for path in inputs:
        if not os.path.isfile(path):
            raise SystemExit(f"error: no checkpoint file {path}")
    print("averaging:", " ".join(inputs), file=sys.stderr)
    state = average_checkpoints(inputs)
    tmp = args.output + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, args.output)
    print(f"wrote {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
