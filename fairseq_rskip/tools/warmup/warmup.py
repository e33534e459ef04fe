"""Post-LN vs Pre-LN without learning-rate warm-up (Xiong et al. 2020), small and runnable.

Small deep models of the variants of :data:`fairseq_rskip.variants.VARIANTS`
(as the plugin builds them: ``postln`` is ``transformer_rskip
--skip-recursions 1``, fairseq's Post-LN Transformer exactly, ``preln`` the
Pre-LN one) are trained in-process on the synthetic corpus of :mod:`fairseq_rskip.tools.common.synthetic`
with Adam (betas 0.9/0.98) at a high peak learning rate:

``nowarmup``  the rate of ``--lr-scheduler inverse_sqrt_nowarmup``:
              ``lr * sqrt(T / (T + t))``, the peak from the first update
``warmup``    fairseq's ``inverse_sqrt``: linear warm-up over ``T`` updates
              from 0, then ``lr * sqrt(T / t)`` (a control)

The validation loss (mean token cross-entropy, nats, on held-out synthetic
pairs) is reported every ``eval_every`` updates; a run whose loss becomes
non-finite is reported as diverged. Post-LN without warm-up is expected to
diverge or lag at such rates, Pre-LN not.
"""

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence

import torch

from fairseq_rskip.tools.common.figures import pyplot, save_figure
from fairseq_rskip.tools.common.modelbuild import build_variant, collate_pairs, nll_loss, synthetic_dictionary
from fairseq_rskip.tools.common.synthetic import synthetic_pairs
from fairseq_rskip.progress import progress_bar, write
from fairseq_rskip.variants import Variant, distinct_plugin_builds


@dataclass(frozen=True)
class DemoRun:
    name: str
    variant: Variant
    warmup: bool


def demo_runs() -> Dict[str, DemoRun]:
    """``NAME-nowarmup`` and ``NAME-warmup`` for every variant of the table (once per distinct model)."""
    runs = {}
    for v in distinct_plugin_builds():
        runs[f"{v.name}-nowarmup"] = DemoRun(f"{v.label}, no warm-up", v, False)
        runs[f"{v.name}-warmup"] = DemoRun(f"{v.label}, warm-up", v, True)
    return runs


RUNS = demo_runs()


def lr_at(step: int, peak: float, timescale: float, warmup: bool) -> float:
    """Learning rate of update ``step`` (0-based)."""
    if warmup:
        t = step + 1
        return peak * t / timescale if t < timescale else peak * math.sqrt(timescale / t)
    return peak * math.sqrt(timescale / (timescale + step))


def train_curve(run: DemoRun, depth: int, dim: int, lr: float, timescale: float, updates: int,
                eval_every: int, seed: int = 1, batch_sentences: int = 64, on_update=None) -> Dict[str, object]:
    """Train one run; ``on_update()`` is called after each update."""
    dictionary = synthetic_dictionary()
    batches = [collate_pairs(synthetic_pairs(batch_sentences, seed=seed * 100 + k), dictionary)
               for k in range(16)]
    valid = collate_pairs(synthetic_pairs(256, seed=99_999), dictionary)
    flags = [
        "--encoder-layers", str(depth), "--decoder-layers", str(depth),
        "--encoder-embed-dim", str(dim), "--decoder-embed-dim", str(dim),
        "--encoder-ffn-embed-dim", str(2 * dim), "--decoder-ffn-embed-dim", str(2 * dim),
        "--encoder-attention-heads", "4", "--decoder-attention-heads", "4",
        "--dropout", "0.1",
    ]
    model, _ = build_variant(run.variant, extra=flags, plugin=True, dictionary=dictionary, seed=seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.98), eps=1e-8)

    def evaluate():
        model.eval()
        with torch.no_grad():
            v = float(nll_loss(model, valid))
        model.train()
        return v

    curve = [[0, evaluate()]]
    diverged = False
    model.train()
    for step in range(updates):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, lr, timescale, run.warmup)
        loss = nll_loss(model, batches[step % len(batches)])
        if not torch.isfinite(loss):
            diverged = True
            curve.append([step + 1, float("nan")])
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if on_update is not None:
            on_update()
        if (step + 1) % eval_every == 0 or step + 1 == updates:
            v = evaluate()
            curve.append([step + 1, v])
            if not math.isfinite(v):
                diverged = True
                break
    finite = [v for _, v in curve if math.isfinite(v)]
    return {"run": run.name, "depth": depth, "dim": dim, "lr": lr, "warmup": run.warmup,
            "timescale": timescale, "curve": curve, "diverged": diverged,
            "final_valid_loss": curve[-1][1], "best_valid_loss": min(finite) if finite else None}


def demo(runs: Sequence[str], depth: int, dim: int, lrs: Sequence[float], timescale: float,
         updates: int, eval_every: int, seed: int = 1, echo=write) -> List[dict]:
    results = []
    with progress_bar(len(lrs) * len(runs) * updates, unit="upd") as bar:
        for lr in lrs:
            for key in runs:
                bar.set_description(f"lr {lr:g} {RUNS[key].name}")
                done = bar.n
                r = train_curve(RUNS[key], depth, dim, lr, timescale, updates, eval_every, seed,
                                on_update=lambda: bar.update(1))
                bar.update(done + updates - bar.n)  # a diverged run stops early
                r["key"] = key
                status = "DIVERGED" if r["diverged"] else "ok"
                pts = " ".join(f"{u}:{v:.2f}" for u, v in r["curve"])
                echo(f"lr {lr:g} {r['run']:<26} depth {depth}: {status:<8} final valid loss "
                     f"{r['final_valid_loss']:.3f} best {r['best_valid_loss']:.3f} | {pts}")
                results.append(r)
    return results


def plot(results: Sequence[dict], path) -> Path:
    plt = pyplot()

    lrs = sorted({r["lr"] for r in results})
    fig, axes = plt.subplots(1, len(lrs), figsize=(5.5 * len(lrs), 4), squeeze=False)
    for ax, lr in zip(axes[0], lrs):
        for k, r in enumerate(x for x in results if x["lr"] == lr):
            pts = [(u, v) for u, v in r["curve"] if math.isfinite(v)]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, marker=".", color=f"C{k}",
                        label=r["run"] + (" (diverged)" if r["diverged"] else ""))
        ax.set_title(f"peak lr {lr:g}, depth {results[0]['depth']}")
        ax.set_xlabel("updates")
        ax.set_ylabel("validation loss (nats)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)
