#!/usr/bin/env python
"""The shortcut-free models at initialisation on real batches: loss, logits, gradients, fixed bias.

    python benchmarks/shortcut_free_start.py --data work/bundled/data-bin \
        --archs postln espa uspa value_skipinit vanilla --layers 6
    python benchmarks/shortcut_free_start.py --data work/bundled/data-bin --archs espa \
        --layers 6 -- --spa-gamma-final 0.05
    python benchmarks/shortcut_free_start.py --data work/bundled/data-bin --archs espa uspa \
        --checkpoint espa=work/ckpt/espa-200.pt --checkpoint uspa=work/ckpt/uspa-200.pt

Each model of fairseq_rskip/variants.py is built as fairseq-train builds it, at
the size of examples/translation/configs/bundled-shortcut-free.json (width 128,
FFN 512, 4 heads, shared embeddings, dropout 0; options after ``--`` are added
to every model), and sees the first ``--batches`` validation batches of
``--max-tokens`` tokens in training mode; ``--checkpoint ARCH=PATH`` loads a
fairseq checkpoint of that model (its weights, trained with the same flags)
instead of the initialisation. Printed per model, averaged over the
batches:

- the cross-entropy in bits (``log2`` of the vocabulary is the uniform guess),
  the same with each target paired with another sentence's source (the
  batch's sources rolled by one: how much the model uses its source), and the
  standard deviation of the output logits;
- the gradient norm of the mean token loss, in total and per group of
  parameters (embeddings, self-attention, cross-attention, feed-forward, the
  scalar gains), as fairseq's ``gnorm`` measures it for the first update, and
  that of the encoder's layers alone (what reaches the encoder through
  cross-attention);
- the cross-attention gains (``g`` of ``--cross-attention-shortcut skipinit``,
  ``beta`` of ``value-skipinit``), their smallest and largest over the
  decoder's layers;
- for the shaped models, the fixed attention bias ``B_l`` of the decoder's
  first and last layers at the batches' target lengths: the mean, over rows,
  of the share of the row on the diagonal of ``softmax(B_l)`` and of the
  spread ``max - min`` of the row's finite entries (the logit difference, in
  nats, that the queries and keys have to supply to move the attention from
  the most favoured key to the least favoured one).
"""

import argparse
import math
import sys
from collections import defaultdict

from fairseq_rskip.errors import UserError, run_main
from fairseq_rskip.tools.common.study_cli import start_measuring
from fairseq_rskip.variants import VARIANTS

SIZE = ["--encoder-embed-dim", "128", "--decoder-embed-dim", "128",
        "--encoder-ffn-embed-dim", "512", "--decoder-ffn-embed-dim", "512",
        "--encoder-attention-heads", "4", "--decoder-attention-heads", "4",
        "--share-all-embeddings", "--dropout", "0"]

GROUPS = (("embed", "embeddings"), ("encoder_attn", "cross-attention"),
          ("self_attn", "self-attention"), ("fc", "feed-forward"))


def group_of(name: str) -> str:
    """The group a parameter's gradient is counted in (the scalar gains apart)."""
    if name.endswith(("_gain", "_alpha", "_beta")) or "skipinit" in name or name.endswith(".g"):
        return "gains"
    for key, group in GROUPS:
        if key in name:
            return group
    return "other"


def bias_statistics(model, lengths):
    """``{layer: (diagonal share, spread)}`` of the decoder's shaped self-attention at
    the first and last layers, averaged over the rows of the given target lengths."""
    import torch

    from fairseq_rskip.modules.shaped_attention import ShapedMultiheadAttention
    from fairseq_rskip.modules.spa import bias_and_log_scale, log_attention_matrix

    layers = model.decoder.layers
    out = {}
    for index in (0, len(layers) - 1):
        attn = layers[index].self_attn
        if not isinstance(attn, ShapedMultiheadAttention) or not attn.kernel:
            return {}
        diag, spread, rows = 0.0, 0.0, 0
        for n in lengths:
            bias, _ = bias_and_log_scale(log_attention_matrix(attn.kernel, attn.rho, attn.rho_prev,
                                                              n, True))
            finite = torch.isfinite(bias)
            high = bias.masked_fill(~finite, -math.inf).amax(-1)
            low = bias.masked_fill(~finite, math.inf).amin(-1)
            diag += float(bias.diagonal().exp().sum())
            spread += float((high - low).sum())
            rows += n
        out[index + 1] = (diag / rows, spread / rows)
    return out


def measure(name: str, opts, extra):
    import torch

    from fairseq_rskip.tools.common.modelbuild import build_variant, data_bin_batches

    variant = VARIANTS[name]
    flags = [*SIZE, "--encoder-layers", str(opts.layers), "--decoder-layers", str(opts.layers),
             *extra]
    task, batches = data_bin_batches(opts.data, variant.fairseq_arch("tiny"), "valid",
                                     opts.max_tokens, opts.batches, extra=[*variant.flags, *flags])
    model, _ = build_variant(variant, "tiny", flags, dictionary=task.source_dictionary,
                             tgt_dictionary=task.target_dictionary, seed=opts.seed)
    if name in opts.checkpoints:
        from fairseq_rskip.checkpoint_compat import load_checkpoint

        model.load_state_dict(load_checkpoint(opts.checkpoints[name])["model"])
    model.train()
    pad = task.target_dictionary.pad()
    totals = defaultdict(float)
    lengths = set()
    for sample in batches:
        model.zero_grad()
        logits, _ = model(**sample["net_input"])
        target = sample["target"]
        real = target.ne(pad)
        loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)),
                                                 target.view(-1), ignore_index=pad)
        loss.backward()
        totals["bits"] += loss.item() / math.log(2)
        with torch.no_grad():
            net_input = dict(sample["net_input"])
            net_input["src_tokens"] = net_input["src_tokens"].roll(1, 0)
            net_input["src_lengths"] = net_input["src_lengths"].roll(1, 0)
            other, _ = model(**net_input)
            totals["bits, other source"] += torch.nn.functional.cross_entropy(
                other.view(-1, other.size(-1)), target.view(-1), ignore_index=pad
            ).item() / math.log(2)
        totals["logit std"] += logits[real].std().item()
        squares = defaultdict(float)
        for pname, p in model.named_parameters():
            if p.grad is not None:
                squares[group_of(pname)] += float(p.grad.pow(2).sum())
        totals["gnorm"] += math.sqrt(sum(squares.values()))
        totals["gnorm encoder layers"] += math.sqrt(sum(
            float(p.grad.pow(2).sum()) for p in model.encoder.layers.parameters() if p.grad is not None))
        for group, value in squares.items():
            totals["gnorm " + group] += math.sqrt(value)
        lengths.update(int(n) for n in real.sum(1))
    stats = {k: v / len(batches) for k, v in totals.items()}
    gains = [float(p.detach()) for pname, p in model.named_parameters()
             if pname.endswith(("encoder_attn_layer_norm.branch_gain", "encoder_attn.value_skipinit_beta"))]
    if gains:
        stats["cross-attention gains"] = (min(gains), max(gains), len(gains))
    return stats, bias_statistics(model, sorted(lengths)), sorted(lengths)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("--data", required=True, help="a fairseq data-bin (the bundled corpus)")
    p.add_argument("--archs", nargs="+", default=["postln", "espa", "uspa", "value_skipinit",
                                                  "vanilla"], choices=list(VARIANTS))
    p.add_argument("--layers", type=int, default=6, help="encoder and decoder layers")
    p.add_argument("--batches", type=int, default=4)
    p.add_argument("--max-tokens", type=int, default=2048)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--checkpoint", action="append", default=[], metavar="ARCH=PATH",
                   help="measure the weights of this fairseq checkpoint for ARCH")
    opts = p.parse_args(argv)
    opts.checkpoints = dict(item.split("=", 1) for item in opts.checkpoint if "=" in item)
    if len(opts.checkpoints) != len(opts.checkpoint):
        raise UserError("--checkpoint takes ARCH=PATH")
    if opts.layers < 1 or opts.batches < 1:
        raise UserError("--layers and --batches must be >= 1")

    start_measuring(opts.threads)
    groups = ["embeddings", "self-attention", "cross-attention", "feed-forward", "gains",
              "encoder layers"]
    print(f"{opts.layers}+{opts.layers} layers, {opts.batches} validation batches of "
          f"{opts.max_tokens} tokens{', extra: ' + ' '.join(extra) if extra else ''}")
    print("| model | loss (bits) | other source | logit std | gnorm | " + " | ".join(groups)
          + " | decoder bias, first layer: diagonal share, spread | last layer |")
    print("|---" * (6 + len(groups) + 1) + "|")
    lengths = []
    gains = {}
    for name in opts.archs:
        stats, bias, lengths = measure(name, opts, extra)
        if "cross-attention gains" in stats:
            gains[VARIANTS[name].label] = stats["cross-attention gains"]
        cells = [f"{stats.get('gnorm ' + g, 0.0):.3g}" for g in groups]
        b = [f"{d:.2f}, {s:.1f}" for d, s in bias.values()] or ["-", "-"]
        print(f"| {VARIANTS[name].label} | {stats['bits']:.2f} | "
              f"{stats['bits, other source']:.2f} | {stats['logit std']:.2f} | "
              f"{stats['gnorm']:.3g} | " + " | ".join(cells) + f" | {b[0]} | {b[-1]} |")
    print(f"target lengths (real tokens): {lengths[0]} to {lengths[-1]}")
    for label, (low, high, n) in gains.items():
        print(f"{label}: cross-attention gains g between {low:+.3f} and {high:+.3f} ({n} decoder layers)")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
