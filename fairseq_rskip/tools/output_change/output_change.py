"""Output change: how far the model's output moves when its parameters move a little.

Liu et al. (EMNLP 2020, "Understanding the Difficulty of Training
Transformers", Section 4) explain the instability of Post-LN by the
amplification of output changes: with ``W*`` the parameters after a small
change, ``|F(x, W) - F(x, W*)|`` grows with the number of layers for Post-LN
(``O(N)``) and much more slowly for Pre-LN (``O(log N)``), and Admin's omega
bring Post-LN down to Pre-LN's order.

For each variant of :data:`fairseq_rskip.variants.VARIANTS` (as the plugin
builds it) and each depth, a model is built at initialisation by fairseq
itself (:mod:`fairseq_rskip.tools.common.modelbuild`), put through one forward
pass in training mode on the first batch, as ``fairseq-train``'s first update
does (so Admin profiles its omega), and then, for each of several real batches
of a data-bin split, from that same starting point:

``update``
    ``W*`` = ``W`` after one Adam update (betas 0.9/0.98, ``lr``) on the mean
    token cross-entropy of the batch;
``perturbation``
    ``W* = W + eps * rms(W_k) * z`` for every parameter tensor ``W_k``,
    ``z ~ N(0, I)``: a random change of fixed relative size ``eps``.

``F(x, W)`` is the decoder's output (its last hidden states, after the final
norm where there is one, before the output projection) on that batch,
teacher-forced, in eval mode; over the real target positions the record holds
the relative change ``||F(x, W*) - F(x, W)|| / ||F(x, W)||`` (Frobenius norms,
float64) and the mean squared change per entry. The tables average over
batches. The *growth* of a variant is its change at the deepest depth minus (its
*increase*) and over (its *factor*) its change at the shallowest.
"""

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from statistics import mean, pstdev
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from fairseq_rskip.tools.common.figures import pyplot, save_figure
from fairseq_rskip.tools.common.modelbuild import build_model, data_bin_batches, nll_loss
from fairseq_rskip.tools.common.outputs import write_analysis_outputs
from fairseq_rskip.progress import progress_bar
from fairseq_rskip.variants import VARIANTS, Variant, size_suffix

KINDS = ("update", "perturbation")
# the paper's comparison: Post-LN against Pre-LN (either row that builds it) and Admin
PAPER_VARIANTS = ("postln", "preln", "prenorm_nowarmup", "admin")
# Liu et al.'s comparison, and the two other deep Post-LN recipes of the table
DEFAULT_VARIANTS = ("postln", "preln", "admin", "deepnorm", "rskip")


@dataclass
class Record:
    variant: str  # the row of the variants table
    label: str
    depth: int
    kind: str  # "update" or "perturbation"
    batch: int
    change: float  # ||F(x, W*) - F(x, W)|| / ||F(x, W)||
    mean_square: float  # mean over entries of (F(x, W*) - F(x, W))^2
    loss: float  # the batch's mean token cross-entropy at W


def model_flags(depth: int, embed_dim: int = 256, ffn_dim: int = 1024, heads: int = 4) -> List[str]:
    """Depth and width of every model; dropout 0, so that the output is a function of W alone."""
    return ["--encoder-layers", str(depth), "--decoder-layers", str(depth),
            "--encoder-embed-dim", str(embed_dim), "--decoder-embed-dim", str(embed_dim),
            "--encoder-ffn-embed-dim", str(ffn_dim), "--decoder-ffn-embed-dim", str(ffn_dim),
            "--encoder-attention-heads", str(heads), "--decoder-attention-heads", str(heads),
            "--dropout", "0", "--attention-dropout", "0", "--activation-dropout", "0"]


# -- measuring ----------------------------------------------------------------------


@torch.no_grad()
def decoder_output(model, sample) -> torch.Tensor:
    """``F(x, W)``: the decoder's last hidden states ``(B, T, C)`` in eval mode."""
    was_training = model.training
    model.eval()
    try:
        features, _ = model(**sample["net_input"], features_only=True)
    finally:
        model.train(was_training)
    return features.detach()


def change_between(before: torch.Tensor, after: torch.Tensor, real: torch.Tensor) -> Tuple[float, float]:
    """``(relative change, mean squared change)`` over the real positions ``real`` (B, T)."""
    delta = (after - before)[real].double()
    base = before[real].double()
    return float(delta.norm() / base.norm()), float(delta.pow(2).mean())


def one_update_(model, sample, lr: float, betas=(0.9, 0.98)) -> float:
    """One Adam step (fresh state) on the batch's mean token cross-entropy; the loss before it.
    Adam's first step moves every parameter by about ``lr`` whatever its gradient's scale
    (fairseq-train's sum-over-tokens loss gives the same step)."""
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=betas, eps=1e-8)
    optimizer.zero_grad(set_to_none=True)
    loss = nll_loss(model, sample)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def branch_parameters(model) -> List[torch.nn.Parameter]:
    """The parameters of every residual branch ``F_i``: the attention projections
    (self- and cross-attention) and the feed-forward ``fc1``, ``fc2``, weights and biases."""
    from fairseq_rskip.tools.common.modelbuild import sublayers

    return [p for _, _, modules in sublayers(model) for m in modules for p in m.parameters()]


@torch.no_grad()
def perturb_(model, eps: float, generator: torch.Generator) -> None:
    """``W_k += eps * rms(W_k) * z`` for every parameter tensor of the residual branches
    (z standard normal); embeddings, norms and skip weights (Admin's omega) are kept."""
    for p in branch_parameters(model):
        z = torch.randn(p.shape, generator=generator, dtype=torch.float32).to(p)
        p.add_(z * (eps * float(p.detach().float().pow(2).mean().sqrt())))


def measure_model(variant: Variant, depth: int, model, samples: Sequence[dict], pad: int, lr: float,
                  eps: float, seed: int = 1) -> List[Record]:
    """The records of one model: each batch, each kind, from the same starting point."""
    model.train()
    with torch.no_grad():
        model(**samples[0]["net_input"])  # the first training forward (Admin profiles here)
    start = copy.deepcopy(model.state_dict())
    records = []
    for b, sample in enumerate(samples):
        real = sample["target"].ne(pad)
        model.load_state_dict(start)
        before = decoder_output(model, sample)
        loss = one_update_(model, sample, lr)
        records.append(Record(variant.name, variant.label, depth, "update", b,
                              *change_between(before, decoder_output(model, sample), real), loss))
        model.load_state_dict(start)
        perturb_(model, eps, torch.Generator().manual_seed(seed * 1000 + b))
        records.append(Record(variant.name, variant.label, depth, "perturbation", b,
                              *change_between(before, decoder_output(model, sample), real), loss))
    model.load_state_dict(start)
    return records


def run(data: str, variants: Sequence[str], depths: Sequence[int], width: Sequence[int] = (256, 1024, 4),
        extra: Sequence[str] = (), split: str = "train", max_tokens: int = 1024, batches: int = 2,
        lr: float = 1e-5, eps: float = 0.01, seed: int = 1) -> List[Record]:
    """Every variant x depth on the first ``batches`` batches of ``split`` (``width``: embedding
    and feed-forward dimensions, attention heads)."""
    size = "tiny"  # the architectures' size suffix; model_flags sets every dimension
    task, samples = data_bin_batches(data, "transformer_rskip" + size_suffix(size), split=split,
                                     max_tokens=max_tokens, n_batches=batches)
    pad = task.target_dictionary.pad()
    jobs = [(VARIANTS[name], depth) for depth in depths for name in variants]
    records: List[Record] = []
    with progress_bar(total=len(jobs), desc="output change", unit="model") as bar:
        for variant, depth in jobs:
            bar.set_description(f"{variant.label} depth {depth}")
            arch, flags = variant.plugin_build(size)
            model, _ = build_model(arch, [*flags, *model_flags(depth, *width), *extra],
                                   dictionary=task.source_dictionary,
                                   tgt_dictionary=task.target_dictionary, seed=seed)
            records += measure_model(variant, depth, model, samples, pad, lr, eps, seed)
            del model
            bar.update(1)
    return records


# -- reporting ----------------------------------------------------------------------------


def summary(records: Sequence[Record]) -> Dict[Tuple[str, int, str], Tuple[float, float]]:
    """``(variant, depth, kind) -> (mean, standard deviation over batches)`` of the relative change."""
    groups: Dict[Tuple[str, int, str], List[float]] = {}
    for r in records:
        groups.setdefault((r.variant, r.depth, r.kind), []).append(r.change)
    return {k: (mean(v), pstdev(v)) for k, v in groups.items()}


def growth(records: Sequence[Record], kind: str) -> Dict[str, Tuple[float, float]]:
    """Per variant: ``(increase, factor)`` of its mean change from the shallowest depth to the
    deepest (change there minus, and over, change here)."""
    table = summary(records)
    depths = sorted({r.depth for r in records})
    out = {}
    for name in dict.fromkeys(r.variant for r in records):
        low, high = table.get((name, depths[0], kind)), table.get((name, depths[-1], kind))
        if low is None or high is None:
            out[name] = (math.nan, math.nan)
        else:
            out[name] = (high[0] - low[0], high[0] / low[0] if low[0] > 0 else math.nan)
    return out


def verdict(records: Sequence[Record], kind: str, reference: str = "postln",
            compared: Sequence[str] = PAPER_VARIANTS) -> Optional[str]:
    """Whether ``reference`` (Post-LN) shows the paper's ordering among the ``compared``
    variants present (the paper's Pre-LN and Admin; every variant when none of them is):
    its output change growing fastest with depth, the largest increase and the largest
    factor from the shallowest depth to the deepest; and whether its change is the largest
    at every depth. None without Post-LN, another variant or two depths."""
    labels = {r.variant: r.label for r in records}
    depths = sorted({r.depth for r in records})
    g = {name: v for name, v in growth(records, kind).items() if all(map(math.isfinite, v))}
    if any(name in g for name in compared if name != reference):
        g = {name: v for name, v in g.items() if name in compared}
    if reference not in g or len(g) < 2 or len(depths) < 2:
        return None
    table = summary(records)
    ref = labels[reference]
    among = ", ".join(labels[n] for n in g)
    span = f"from {depths[0]} to {depths[-1]} layers"
    by_increase = sorted(g, key=lambda n: -g[n][0])
    by_factor = sorted(g, key=lambda n: -g[n][1])
    increases = ", ".join(f"{labels[n]} {g[n][0]:+.3g}" for n in by_increase)
    factors = ", ".join(f"{labels[n]} x{g[n][1]:.2f}" for n in by_factor)
    largest = all(table[(reference, d, kind)][0] >= max(table[(n, d, kind)][0] for n in g
                                                       if (n, d, kind) in table)
                  for d in depths if (reference, d, kind) in table)
    level = (f"{ref}'s change is the largest at every depth" if largest
             else f"{ref}'s change is not the largest at every depth")
    fastest = [what for what, order in (("increase", by_increase), ("factor", by_factor))
               if order[0] == reference]
    if len(fastest) == 2:
        head = f"{kind}: as the paper reports, {ref}'s output change grows fastest {span}"
    elif fastest:
        other = "factor" if fastest == ["increase"] else "increase"
        winner = labels[(by_factor if other == "factor" else by_increase)[0]]
        head = (f"{kind}: only partly as the paper reports: {span} {ref}'s output change has the "
                f"largest {fastest[0]}, but {winner}'s has the largest {other}")
    elif by_factor[0] == by_increase[0]:
        head = (f"{kind}: NOT as the paper reports: {span} {labels[by_factor[0]]}'s output change "
                f"grows fastest (largest increase and factor), not {ref}'s")
    else:
        head = (f"{kind}: NOT as the paper reports: {span} {labels[by_factor[0]]}'s output change "
                f"grows by the largest factor and {labels[by_increase[0]]}'s by the largest "
                f"increase, not {ref}'s")
    return f"{head}; {level} (among {among}; increase: {increases}; factor: {factors})."


def _fmt(value: Optional[float]) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.3g}"


def markdown(records: Sequence[Record], depths: Sequence[int], variants: Sequence[str]) -> str:
    """The tables of the docs: mean relative change per variant and depth, and the growth."""
    labels = {r.variant: r.label for r in records}
    table = summary(records)
    lines = []
    for kind in KINDS:
        what = ("one Adam update on the batch" if kind == "update"
                else "a random perturbation of fixed relative size")
        lines += [f"Relative change of the decoder's output, ||F(x, W*) - F(x, W)|| / ||F(x, W)||, "
                  f"after {what} (mean over batches):", ""]
        span = f"L={depths[0]} to {depths[-1]}"
        head = ["variant"] + [f"L={d}" for d in depths] + [f"increase {span}", f"factor {span}"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        g = growth(records, kind)
        for name in variants:
            cells = [_fmt(table[(name, d, kind)][0]) if (name, d, kind) in table else "" for d in depths]
            increase, factor = g.get(name, (math.nan, math.nan))
            inc = "" if math.isnan(increase) else f"{increase:+.3g}"
            fac = "" if math.isnan(factor) else f"x{factor:.2f}"
            lines.append("| " + " | ".join([labels.get(name, name), *cells, inc, fac]) + " |")
        sentence = verdict(records, kind)
        lines += ["", sentence, ""] if sentence else [""]
    return "\n".join(lines).rstrip() + "\n"


def plot(records: Sequence[Record], depths: Sequence[int], variants: Sequence[str], path: Path) -> Path:
    """Mean relative change against depth, one line per variant; after an update, after a
    perturbation."""
    plt = pyplot()

    table = summary(records)
    labels = {r.variant: r.label for r in records}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, kind in zip(axes, KINDS):
        for k, name in enumerate(variants):
            points = [(d, *table[(name, d, kind)]) for d in depths if (name, d, kind) in table]
            if not points:
                continue
            xs, ys, errs = zip(*points)
            ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, color=f"C{k % 10}",
                        label=labels.get(name, name))
        ax.set_ylim(bottom=0)
        ax.set_xticks(list(depths))
        ax.set_xlabel("layers per stack (encoder = decoder)")
        ax.set_ylabel("||F(x, W*) - F(x, W)|| / ||F(x, W)||")
        ax.set_title("after one Adam update" if kind == "update" else "after a random perturbation")
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=8)
    fig.suptitle("Change of the decoder's output at initialisation (mean over batches, bars: std)")
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)


def write_outputs(records: Sequence[Record], out: Path, depths: Sequence[int],
                  variants: Sequence[str]) -> List[Path]:
    """``output_change.csv`` (every batch), ``.md`` (the tables) and ``.png`` (the plot)."""
    return write_analysis_outputs(out, "output_change", records, markdown(records, depths, variants),
                                  lambda path: plot(records, depths, variants, path))
