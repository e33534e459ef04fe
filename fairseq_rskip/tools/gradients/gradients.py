"""Per-sublayer gradient norms: the analysis of Liu et al. (COLING 2020).

For each setting a small model is built in-process through fairseq's
argument parsing and model registry (:mod:`fairseq_rskip.tools.common.modelbuild`):
the paper's grid of ``transformer_rskip`` flags (skip scale ``lam``,
normalisation, rSkip recursions; :func:`skip_setting`) and, in the depth
sweep, every variant of :data:`fairseq_rskip.variants.VARIANTS` (as the
plugin builds it). A fixed batch of the synthetic corpus
(:mod:`fairseq_rskip.tools.common.synthetic`) is pushed through it, and the mean
token cross-entropy is back-propagated. Two norms are
recorded for every sublayer (encoder: self-attention, feed-forward; decoder:
self-attention, cross-attention, feed-forward):

``output`` (the one plotted and tested)
    ``||dL/dy||_2``, the Frobenius norm (computed in float64) over the batch of the gradient with
    respect to the sublayer's *output* ``y`` -- the tensor its
    :class:`~fairseq_rskip.modules.ResidualNorm` returns (``y = N(lam x + F(x))``,
    the rSkip recursion's ``y_n``, or ``x + F(N(x))`` with pre-norm). This is
    the back-propagated signal of the paper's analysis: without normalisation,
    ``dL/dx = lam dL/dy + ...`` and it grows (lam > 1) or shrinks (lam < 1)
    geometrically towards the input.
``weight``
    ``||grad W||_2`` over all parameters of the sublayer itself (attention
    projections, or ``fc1`` and ``fc2``), which is what the optimiser sees.

Norms are measured at initialisation and after each number of updates in
``updates`` (Adam, betas 0.9/0.98, linear warm-up then constant, on the
synthetic corpus). A configuration whose forward or backward pass overflows
is reported as non-finite (exploded), not dropped.

Band check: within each stack the norms are compared with the norm of the
sublayer nearest the loss (the stack's last sublayer); scanning from there
towards the input, the first sublayer whose ratio leaves ``[1/band, band]`` is
named in a log line. The *spread* of a stack is ``log10(max / min)`` of its
``output`` norms.
"""

import csv
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from fairseq_rskip.tools.common.figures import pyplot, save_figure
from fairseq_rskip.tools.common.modelbuild import (build_model, collate_pairs, nll_loss, sublayers,
                                                   synthetic_dictionary)
from fairseq_rskip.tools.common.synthetic import synthetic_pairs
from fairseq_rskip.tools.common.trainlog import option_value
from fairseq_rskip.progress import progress_bar, write
from fairseq_rskip.variants import PRE_LN_FLAGS, VARIANTS, Variant, distinct_plugin_builds


@dataclass(frozen=True)
class Setting:
    """One model of the analysis: a plugin architecture, its flags, and the depth."""

    label: str
    arch: str = "transformer_rskip"  # base size: ModelSize sets the dimensions
    flags: Tuple[str, ...] = ()
    depth: int = 6

    def model_flags(self) -> List[str]:
        return [*self.flags, "--encoder-layers", str(self.depth), "--decoder-layers", str(self.depth)]

    @property
    def normalized(self) -> bool:
        return option_value(self.flags, "--norm-type") != "none"


def skip_setting(norm: str = "layernorm", scale: float = 1.0, recursions: int = 1,
                 prenorm: bool = False, depth: int = 6) -> Setting:
    """``transformer_rskip`` with ``--norm-type``, ``--skip-scale`` (xSkip lam),
    ``--skip-recursions`` and Pre-/Post-norm: a point of the paper's grid."""
    name = _norm_name(norm)
    if prenorm:
        label = f"Pre-{name}"
    elif recursions > 1:
        label = f"rSkip+{name} n={recursions}"
    elif norm == "none":
        label = "Skip (no norm)" if scale == 1 else f"xSkip lam={scale:g} (no norm)"
    elif scale == 1:
        label = f"Post-{name}"
    else:
        label = f"xSkip+{name} lam={scale:g}"
    flags = ["--norm-type", norm, "--skip-scale", str(float(scale)), "--skip-recursions", str(recursions)]
    if prenorm:
        flags += list(PRE_LN_FLAGS)
    return Setting(label, "transformer_rskip", tuple(flags), depth)


def variant_setting(variant: Variant, depth: int) -> Setting:
    """A row of the variants table, as the plugin builds it."""
    arch, flags = variant.plugin_build()
    return Setting(variant.label, arch, flags, depth)


def _norm_name(norm: str) -> str:
    return {"layernorm": "LN", "simple": "LNsimple", "adanorm": "AdaNorm", "none": "none"}[norm]


@dataclass
class ModelSize:
    embed_dim: int = 64
    ffn_dim: int = 128
    heads: int = 4
    dropout: float = 0.0

    def flags(self) -> List[str]:
        return ["--encoder-embed-dim", str(self.embed_dim), "--decoder-embed-dim", str(self.embed_dim),
                "--encoder-ffn-embed-dim", str(self.ffn_dim), "--decoder-ffn-embed-dim", str(self.ffn_dim),
                "--encoder-attention-heads", str(self.heads), "--decoder-attention-heads", str(self.heads),
                "--dropout", str(self.dropout), "--attention-dropout", "0", "--activation-dropout", "0"]


def measure(model, sample) -> Dict[str, object]:
    """One forward/backward pass: loss and both norms of every sublayer."""
    subs = sublayers(model)
    outputs: Dict[str, torch.Tensor] = {}
    handles = []
    for name, norm_module, _ in subs:
        def hook(_module, _inputs, output, name=name):
            if output.requires_grad:  # not Admin's profiling pass (no_grad)
                output.retain_grad()
                outputs[name] = output
        handles.append(norm_module.register_forward_hook(hook))
    model.zero_grad(set_to_none=True)
    try:
        loss = nll_loss(model, sample)
        finite = bool(torch.isfinite(loss))
        if finite:
            loss.backward()
    finally:
        for h in handles:
            h.remove()
    grads = {}
    for name, _, modules in subs:
        g = outputs[name].grad if finite and name in outputs else None
        out_norm = float(g.double().norm()) if g is not None else float("nan")
        sq = [p.grad.double().pow(2).sum() for m in modules for p in m.parameters() if p.grad is not None]
        w_norm = float(torch.stack(sq).sum().sqrt()) if finite and sq else float("nan")
        grads[name] = {"output": out_norm, "weight": w_norm}
    model.zero_grad(set_to_none=True)
    return {"loss": float(loss.detach()), "grads": grads}


def stack_of(name: str) -> str:
    return name.split(".", 1)[0]


def spread(grads: Dict[str, dict], stack: str, metric: str = "output") -> float:
    """``log10(max / min)`` of a stack's norms; ``inf`` if any is zero or non-finite."""
    vals = [g[metric] for n, g in grads.items() if stack_of(n) == stack]
    if not vals or any(not math.isfinite(v) or v <= 0 for v in vals):
        return float("inf")
    return math.log10(max(vals) / min(vals))


def first_out_of_band(grads: Dict[str, dict], stack: str, band: float = 10.0,
                      metric: str = "output") -> Optional[tuple]:
    """``(name, ratio)`` of the first sublayer, from the top of ``stack`` down,
    whose norm relative to the top sublayer's lies outside ``[1/band, band]``."""
    names = [n for n in grads if stack_of(n) == stack]
    if not names:
        return None
    ref = grads[names[-1]][metric]
    for name in reversed(names):
        v = grads[name][metric]
        if not (math.isfinite(v) and math.isfinite(ref) and ref > 0):
            return name, float("nan")
        ratio = v / ref
        if not (1 / band <= ratio <= band):
            return name, ratio
    return None


@dataclass
class Result:
    setting: Setting
    updates: int
    loss: float
    grads: Dict[str, dict]
    spread: Dict[str, float] = field(default_factory=dict)
    out_of_band: Dict[str, Optional[list]] = field(default_factory=dict)

    def to_json(self) -> dict:
        d = asdict(self)
        d["label"] = self.setting.label
        return d


def band_message(r: Result, band: float) -> str:
    s = r.setting
    head = f"{s.label:<28} depth {s.depth:>2} @ {r.updates:>4} updates"
    if not math.isfinite(r.loss):
        return f"{head}: loss is non-finite: forward pass overflowed (exploded)"
    parts = []
    for stack in ("encoder", "decoder"):
        hit = r.out_of_band[stack]
        if hit is None:
            parts.append(f"{stack}: all sublayers within x{band:g} of the top")
        else:
            parts.append(f"{stack}: first out of band x{band:g}: {hit[0]} (ratio {hit[1]:.3g})")
    return (f"{head}: loss {r.loss:.3f}; spread log10 enc {r.spread['encoder']:.2f} "
            f"dec {r.spread['decoder']:.2f}; " + "; ".join(parts))


def analyse(settings: Sequence[Setting], updates: Sequence[int] = (0,), size: ModelSize = ModelSize(),
            band: float = 10.0, seed: int = 1, n_sentences: int = 64, lr: float = 5e-4,
            warmup: int = 20, echo=write) -> List[Result]:
    """Measure every setting at every number of updates in ``updates``."""
    dictionary = synthetic_dictionary()
    probe = collate_pairs(synthetic_pairs(n_sentences, seed=10_000 + seed), dictionary)
    train = [collate_pairs(synthetic_pairs(n_sentences, seed=seed * 100 + k), dictionary) for k in range(8)]
    checkpoints = sorted(set(int(u) for u in updates))
    results = []
    # one step of work: a training update, or a measurement
    with progress_bar(len(settings) * (checkpoints[-1] + len(checkpoints)), unit="step") as bar:
        for setting in settings:
            bar.set_description(f"{setting.label} depth {setting.depth}")
            model, _ = build_model(setting.arch, setting.model_flags() + size.flags(),
                                   dictionary=dictionary, seed=seed)
            model.train()
            opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.98), eps=1e-8)
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: min(1.0, (t + 1) / max(1, warmup)))
            done = 0
            diverged = False
            for target in checkpoints:
                while done < target and not diverged:
                    loss = nll_loss(model, train[done % len(train)])
                    if not torch.isfinite(loss):
                        diverged = True
                        break
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                    done += 1
                    bar.update(1)
                m = measure(model, probe) if not diverged else {
                    "loss": float("nan"),
                    "grads": {n: {"output": float("nan"), "weight": float("nan")} for n, _, _ in sublayers(model)},
                }
                r = Result(setting, target, m["loss"], m["grads"])
                for stack in ("encoder", "decoder"):
                    r.spread[stack] = spread(r.grads, stack)
                    hit = first_out_of_band(r.grads, stack, band)
                    r.out_of_band[stack] = list(hit) if hit else None
                echo(band_message(r, band))
                results.append(r)
                bar.update(1)
            bar.update(checkpoints[-1] - done)  # updates a diverged setting did not run
    return results


# ----------------------------------------------------------------------------
# the sweeps of the paper


def scale_sweep(depth: int, scales: Sequence[float], norms: Sequence[str] = ("none", "layernorm")) -> List[Setting]:
    """xSkip with and without a normalisation, for each lam."""
    return [skip_setting(norm=n, scale=float(s), depth=depth) for n in norms for s in scales]


def recursion_sweep(depth: int, recursions: Sequence[int], norm: str = "layernorm") -> List[Setting]:
    return [skip_setting(norm=norm, recursions=int(n), depth=depth) for n in recursions]


def depth_sweep(depths: Sequence[int], scale: float = 2.0) -> List[Setting]:
    """At each depth: plain skip and xSkip lam without a normalisation, xSkip+LN lam, then every
    variant of the table (once per distinct model)."""
    out = []
    for d in depths:
        settings = [
            skip_setting(norm="none", scale=1.0, depth=d),
            skip_setting(norm="none", scale=scale, depth=d),
            skip_setting(norm="layernorm", scale=scale, depth=d),
        ]
        settings += [variant_setting(variant, d) for variant in distinct_plugin_builds()]
        out += settings
    return out


def deep_sweep(depths: Sequence[int]) -> List[Setting]:
    """Post-LN against the two deep Post-LN recipes, DeepNorm and Admin."""
    return [variant_setting(VARIANTS[name], d)
            for d in depths for name in ("postln", "deepnorm", "admin")]


def plot(results: Sequence[Result], path, title: str, metric: str = "output") -> Path:
    """Gradient norm (log scale) against sublayer index, encoder and decoder side by side."""
    plt = pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, stack in zip(axes, ("encoder", "decoder")):
        for k, r in enumerate(results):
            names = [n for n in r.grads if stack_of(n) == stack]
            ys = [r.grads[n][metric] for n in names]
            finite = [(i, y) for i, y in enumerate(ys) if math.isfinite(y) and y > 0]
            style = "-" if r.setting.normalized else "--"
            label = r.setting.label + ("" if finite else " (non-finite)")
            if finite:
                xs, vs = zip(*finite)
                ax.plot(xs, vs, style, marker=".", color=f"C{k % 10}", label=label)
            else:
                ax.plot([], [], style, color=f"C{k % 10}", label=label)
        ax.set_yscale("log")
        per = 2 if stack == "encoder" else 3
        ax.set_xlabel(f"{stack} sublayer index (layer x {per} + sublayer; input -> output)")
        ax.set_ylabel("||dL/d(sublayer output)||" if metric == "output" else "||grad W||")
        ax.set_title(stack)
        ax.grid(alpha=0.3, which="both")
    axes[1].legend(fontsize=7, loc="best")
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def write_outputs(out: Path, sweep: str, results: Sequence[Result], metric: str = "output") -> List[Path]:
    """JSON of all norms, a CSV summary, one plot per depth and number of updates."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{sweep}.json").write_text(
        json.dumps([r.to_json() for r in results], indent=1) + "\n", encoding="utf-8")
    with open(out / f"{sweep}.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["label", "arch", "flags", "depth", "updates", "loss", "spread_encoder",
                    "spread_decoder", "first_out_of_band_encoder", "first_out_of_band_decoder"])
        for r in results:
            s = r.setting
            oob = [r.out_of_band[k][0] if r.out_of_band[k] else "" for k in ("encoder", "decoder")]
            w.writerow([s.label, s.arch, " ".join(s.flags), s.depth, r.updates, f"{r.loss:.4f}",
                        f"{r.spread['encoder']:.3f}", f"{r.spread['decoder']:.3f}", *oob])
    paths = []
    keys = sorted({(r.setting.depth, r.updates) for r in results})
    for depth, updates in keys:
        group = [r for r in results if r.setting.depth == depth and r.updates == updates]
        paths.append(plot(group, out / f"grad_{sweep}_d{depth}_u{updates}.png",
                          f"{sweep} sweep: depth {depth}, after {updates} updates ({metric} gradient norms)",
                          metric))
    return paths
