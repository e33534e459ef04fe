#!/usr/bin/env python
"""Why a shaped decoder breaks down on long targets: its loss by target length, as trained
and with the row scaling D_l of its self-attention held fixed beyond a position.

    rskip-prepare concatenated --data work/bundled/data-bin --pairs 4 --dest work/bundled-long4/data-bin
    python benchmarks/long_targets.py --data work/bundled-long4/data-bin --hold-after 30 \\
        --checkpoint espa=work/runs/espa-d6-s1/checkpoints/checkpoint_last.pt

For each checkpoint (a model of fairseq_rskip trained on the data-bin's dictionaries) the
cross-entropy by target-length bucket of ``rskip-source-use``
(fairseq_rskip/tools/source_use/source_use.py) is printed twice: as trained, and with every decoder self-attention's
``D_l[t]`` for ``t > --hold-after`` replaced by ``D_l[--hold-after]`` (E-SPA's and U-SPA's
row sums of ``A_l`` keep growing with the position, beyond the lengths a model trained on
short sentences has seen; the bundled corpus's training targets have at most 52 tokens).
Also printed, per shaped model: the product over the decoder's layers of ``D_l[t]`` and the
share of ``softmax(B_L)``'s row ``t`` on position 0 at a few positions. Only the model
instance measured is changed (its cached matrices), nothing else.
"""

import argparse
import sys

from fairseq_rskip.tools.source_use.cli import named_checkpoints
from fairseq_rskip.errors import run_main
from fairseq_rskip.tools.common.study_cli import start_measuring

POSITIONS = (0, 10, 30, 60, 100, 200)


def shaped_self_attentions(model):
    from fairseq_rskip.modules.shaped_attention import ShapedMultiheadAttention

    return [layer.self_attn for layer in model.decoder.layers
            if isinstance(layer.self_attn, ShapedMultiheadAttention) and layer.self_attn.kernel]


def hold_row_scale_(attentions, after: int, device) -> None:
    """``D_l[t] = D_l[after]`` for ``t > after`` in each attention's cached causal matrices."""
    for attention in attentions:
        _bias, scale = attention._matrices_for(attention.max_positions, device)
        scale[after + 1:] = scale[after]


def construction_profile(attentions, device):
    """``(prod_l D_l[t], softmax(B_L)[t, 0])`` at :data:`POSITIONS` below the cached length."""
    import torch

    n = attentions[0].max_positions
    product = torch.ones(n, device=device)
    for attention in attentions:
        product = product * attention._matrices_for(n, device)[1]
    last_bias = attentions[-1]._matrices_for(n, device)[0]
    at = [t for t in POSITIONS if t < n]
    return {t: (float(product[t]), float(last_bias[t].softmax(-1)[0])) for t in at}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("--data", required=True, help="a data-bin with long targets (rskip-prepare concatenated)")
    p.add_argument("--checkpoint", action="append", required=True, metavar="NAME=PATH")
    p.add_argument("--split", default="valid")
    p.add_argument("--hold-after", type=int, default=30, metavar="T",
                   help="hold D_l fixed after this position (default: %(default)s)")
    p.add_argument("--max-tokens", type=int, default=4096)
    p.add_argument("--threads", type=int, default=1)
    opts = p.parse_args(argv)
    named = named_checkpoints(opts.checkpoint, opts.data)
    from fairseq_rskip.tools.source_use import source_use

    start_measuring(opts.threads)
    results = []
    for name, path in named:
        model, batches, pad = source_use.load(path, opts.data, opts.split, opts.max_tokens)
        batches = list(batches)
        results.append(source_use.measure(model, batches, pad, name))
        attentions = shaped_self_attentions(model)
        if not attentions:
            continue
        device = next(model.parameters()).device
        for t, (product, share) in construction_profile(attentions, device).items():
            print(f"{name}: position {t}: prod_l D_l = {product:.2f}, softmax(B_L) on position 0 = {share:.3f}")
        hold_row_scale_(attentions, opts.hold_after, device)
        results.append(source_use.measure(model, batches, pad, f"{name}, D_l held after {opts.hold_after}"))
    print(source_use.markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
