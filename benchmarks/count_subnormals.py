#!/usr/bin/env python
"""Count the subnormal floats a training update writes, per place (phase, module, operation).

    python benchmarks/count_subnormals.py --archs espa value_skipinit vanilla --length 128
    python benchmarks/count_subnormals.py --archs espa --layers 12 --length 25 --no-floor

Each model of fairseq_rskip/variants.py is built as the throughput benchmark
builds it (``--size``, dropout ``--dropout``, fairseq's label-smoothed loss,
``torch.optim.Adam``) and trains ``--updates`` updates on random batches of
``--sentences`` sentences of ``--length`` tokens; every update is counted by
:func:`fairseq_rskip.tools.benchmark.subnormals.count_subnormals`. ``--no-floor``
sets the floors of :mod:`fairseq_rskip.modules.subnormals` to 0 (the models'
computation without them). Prints, per model, the total per update, the
places that wrote the most, and (with the floors) how much they change the
output and the parameter gradients of the last batch, against the same
weights and dropout without them.
"""

import argparse
import sys
from collections import Counter

from fairseq_rskip.errors import UserError, run_main
from fairseq_rskip.tools.common.study_cli import start_measuring
from fairseq_rskip.variants import VARIANTS


def count_model(name: str, opts):
    """``(updates, effect)``: per update ``(counts, sizes)`` of :func:`count_subnormals`;
    then (unless ``--no-floor``) :func:`floor_effect` on the last batch."""
    import torch
    from fairseq.criterions.label_smoothed_cross_entropy import LabelSmoothedCrossEntropyCriterion

    from fairseq_rskip.tools.common import modelbuild
    from fairseq_rskip.tools.benchmark.subnormals import count_subnormals, floor_effect, remove_floors

    d = modelbuild.random_dictionary(opts.vocab)
    flags = ["--dropout", str(opts.dropout)]
    if opts.layers:
        flags += ["--encoder-layers", str(opts.layers), "--decoder-layers", str(opts.layers)]
    model, _ = modelbuild.build_variant(VARIANTS[name], opts.size, flags, dictionary=d, tgt_dictionary=d,
                                        seed=opts.seed)
    if opts.no_floor:
        remove_floors(model)
    crit = LabelSmoothedCrossEntropyCriterion(modelbuild.DummyTask(d, d), sentence_avg=False, label_smoothing=0.1)
    opt = torch.optim.Adam(model.parameters(), lr=opts.lr, betas=(0.9, 0.98), eps=1e-8)
    model.train()
    updates = []
    for k in range(opts.updates):
        batch = modelbuild.random_batch(d, opts.sentences, opts.length, opts.length, seed=k)
        updates.append(count_subnormals(model, lambda: crit(model, batch)[0], opt))
    effect = None
    if not opts.no_floor:
        def forward(m):
            net_output = m(**batch["net_input"])
            return net_output[0], crit.compute_loss(m, net_output, batch)[0]

        effect = floor_effect(model, forward)
    return updates, effect


def report(name: str, updates: list, effect, top: int) -> None:
    total, sizes = Counter(), Counter()
    for counts, size in updates:
        total.update(counts)
        sizes.update(size)
    per_update = [sum(counts.values()) for counts, _ in updates]
    by_phase = Counter()
    for (phase, _, _), n in total.items():
        by_phase[phase] += n
    print(f"{name}: subnormal floats written per update: {per_update} "
          f"({', '.join(f'{p} {n}' for p, n in sorted(by_phase.items())) or 'none'})")
    for (phase, module, op), n in total.most_common(top):
        print(f"  {n:>10d}  {100 * n / sizes[(phase, module, op)]:6.2f} %  {phase:<9} {module:<40} {op}")
    if effect is not None:
        print(f"  the floors change the output by at most {effect['output_diff']:.3g} "
              f"(largest entry {effect['output_max']:.3g}) and a parameter gradient entry by at most "
              f"{effect['grad_diff']:.3g} (largest entry {effect['grad_max']:.3g})")


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--archs", nargs="+", default=["espa", "uspa", "value_skipinit", "vanilla"],
                   help="rows of fairseq_rskip/variants.py")
    p.add_argument("--size", default="iwslt_de_en")
    p.add_argument("--layers", type=int, help="encoder and decoder layers (default: the size's)")
    p.add_argument("--length", type=int, default=128, help="tokens per source and target sentence")
    p.add_argument("--sentences", type=int, default=16)
    p.add_argument("--updates", type=int, default=2)
    p.add_argument("--dropout", type=float, default=0.3)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--vocab", type=int, default=10000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--top", type=int, default=8, help="places listed per model")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-floor", action="store_true",
                   help="set the models' subnormal floors to 0 (their computation without them)")
    opts = p.parse_args(argv)
    unknown = [a for a in opts.archs if a not in VARIANTS]
    if unknown:
        raise UserError(f"--archs: unknown {', '.join(unknown)}; one of {', '.join(VARIANTS)}")
    if opts.length < 2 or opts.sentences < 1 or opts.updates < 1:
        raise UserError("--length must be >= 2, --sentences and --updates >= 1")
    return opts


def main(argv=None) -> int:
    opts = parse(argv)
    start_measuring(opts.threads)
    print(f"count_subnormals: size {opts.size}, {opts.layers or 'default'} layers, {opts.sentences} "
          f"sentences of {opts.length} tokens, {opts.updates} updates, dropout {opts.dropout}"
          f"{', floors removed' if opts.no_floor else ''}; count, share of the tensors written, place",
          flush=True)
    for name in opts.archs:
        report(name, *count_model(name, opts), opts.top)
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
