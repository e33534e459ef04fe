#!/usr/bin/env python
"""How much of each decoder self-attention goes to the first target position (``</s>``,
the token fairseq's decoder starts from), layer by layer, in trained checkpoints.

    python benchmarks/attention_to_first.py --data work/bundled/data-bin \\
        --checkpoint espa=work/sfx-a/runs/espa-d6-s1/checkpoints/checkpoint_last.pt \\
        --checkpoint uspa=work/sfx-b/runs/uspa-d6-s1/checkpoints/checkpoint_last.pt

For every query position ``t >= 1`` of every target of the split (teacher forcing, the
model in evaluation mode), the share of its attention row on key position 0: ``A[t, 0] /
sum_s A[t, s]`` with ``A`` the attention weights the layer returns, averaged over heads
(fairseq's softmax, or the shaped models' ``D_l softmax(.)``, whose rows sum to ``D_l[t]``
rather than 1). Printed per checkpoint: the mean share over all such positions, per
decoder layer. A row-share of ``1/t`` is what uniform attention over the prefix gives; a
kernel or a trained model that parks its attention on ``</s>`` shows shares near 1 in
the last layers. Repeated names (seeds) are averaged, with their range.
"""

import argparse
import sys
from collections import defaultdict

from fairseq_rskip.tools.source_use.cli import named_checkpoints
from fairseq_rskip.errors import run_main
from fairseq_rskip.tools.common.intervals import mean_and_range


def first_position_shares(model, batches, pad: int):
    """The mean share of key position 0 in each decoder layer's self-attention rows."""
    import torch

    totals = [0.0] * len(model.decoder.layers)
    count = 0
    state = {"inside": False, "mask": None}

    def hook(index):
        def record(module, _args, kwargs, _output):
            if state["inside"]:
                return
            state["inside"] = True
            try:
                weights = module(**{**kwargs, "need_weights": True, "need_head_weights": False})[1]
            finally:
                state["inside"] = False
            share = weights[:, 1:, 0] / weights[:, 1:].sum(-1).clamp_min(1e-30)  # B x (T-1)
            totals[index] += float(share[state["mask"]].double().sum())
        return record

    handles = [layer.self_attn.register_forward_hook(hook(i), with_kwargs=True)
               for i, layer in enumerate(model.decoder.layers)]
    try:
        model.eval()
        with torch.no_grad():
            for sample in batches:
                target = sample["target"]
                state["mask"] = target[:, 1:].ne(pad)
                count += int(state["mask"].sum())
                model(**sample["net_input"])
    finally:
        for handle in handles:
            handle.remove()
    return [t / max(count, 1) for t in totals]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("--data", required=True, help="the data-bin the checkpoints were trained on")
    p.add_argument("--checkpoint", action="append", required=True, metavar="NAME=PATH")
    p.add_argument("--split", default="valid")
    p.add_argument("--max-tokens", type=int, default=4096)
    args = p.parse_args(argv)
    from fairseq_rskip.tools.source_use.source_use import load

    shares = defaultdict(list)
    for name, path in named_checkpoints(args.checkpoint, args.data):
        model, batches, pad = load(path, args.data, args.split, args.max_tokens)
        shares[name].append(first_position_shares(model, batches, pad))
        print(f"{name}: {path}", file=sys.stderr)
    layers = max(len(rows[0]) for rows in shares.values())
    print("| checkpoint | runs | " + " | ".join(f"layer {i + 1}" for i in range(layers)) + " |")
    print("|---|---|" + "---|" * layers)
    for name, rows in shares.items():
        cells = [mean_and_range([row[i] for row in rows]) for i in range(len(rows[0]))]
        print(f"| {name} | {len(rows)} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
