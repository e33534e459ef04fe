"""Post-LN vs Pre-LN without learning-rate warm-up (Xiong et al. 2020), small and runnable.

Small deep models (``transformer_rskip`` with ``--skip-recursions 1``, which
is fairseq's Post-LN Transformer exactly, and the same with
``--encoder-normalize-before --decoder-normalize-before``, Pre-LN) are trained
in-process on the synthetic corpus of :mod:`fairseq_rskip.analysis.synthetic`
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

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence

import torch

from fairseq_rskip.analysis.modelbuild import build_model, collate_pairs, nll_loss, synthetic_dictionary
from fairseq_rskip.analysis.synthetic import synthetic_pairs

log = logging.getLogger("warmup_demo")


@dataclass(frozen=True)
class DemoRun:
    name: str
    flags: tuple
    warmup: bool


RUNS = {
    "postln-nowarmup": DemoRun("Post-LN, no warm-up", ("--skip-recursions", "1"), False),
    "preln-nowarmup": DemoRun(
        "Pre-LN, no warm-up",
        ("--skip-recursions", "1", "--encoder-normalize-before", "--decoder-normalize-before"), False),
    "postln-warmup": DemoRun("Post-LN, warm-up", ("--skip-recursions", "1"), True),
    "rskip-nowarmup": DemoRun("rSkip+LN n=2, no warm-up", ("--skip-recursions", "2"), False),
}


def lr_at(step: int, peak: float, timescale: float, warmup: bool) -> float:
    """Learning rate of update ``step`` (0-based)."""
    if warmup:
        t = step + 1
        return peak * t / timescale if t < timescale else peak * math.sqrt(timescale / t)
    return peak * math.sqrt(timescale / (timescale + step))


def train_curve(run: DemoRun, depth: int, dim: int, lr: float, timescale: float, updates: int,
                eval_every: int, seed: int = 1, batch_sentences: int = 64) -> Dict[str, object]:
    dictionary = synthetic_dictionary()
    batches = [collate_pairs(synthetic_pairs(batch_sentences, seed=seed * 100 + k), dictionary)
               for k in range(16)]
    valid = collate_pairs(synthetic_pairs(256, seed=99_999), dictionary)
    flags = list(run.flags) + [
        "--encoder-layers", str(depth), "--decoder-layers", str(depth),
        "--encoder-embed-dim", str(dim), "--decoder-embed-dim", str(dim),
        "--encoder-ffn-embed-dim", str(2 * dim), "--decoder-ffn-embed-dim", str(2 * dim),
        "--encoder-attention-heads", "4", "--decoder-attention-heads", "4",
        "--dropout", "0.1",
    ]
    model, _ = build_model("transformer_rskip", flags, dictionary=dictionary, seed=seed)
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
         updates: int, eval_every: int, seed: int = 1, echo=None) -> List[dict]:
    echo = echo or log.info
    results = []
    for lr in lrs:
        for key in runs:
            r = train_curve(RUNS[key], depth, dim, lr, timescale, updates, eval_every, seed)
            r["key"] = key
            status = "DIVERGED" if r["diverged"] else "ok"
            pts = " ".join(f"{u}:{v:.2f}" for u, v in r["curve"])
            echo(f"lr {lr:g} {r['run']:<26} depth {depth}: {status:<8} final valid loss "
                 f"{r['final_valid_loss']:.3f} best {r['best_valid_loss']:.3f} | {pts}")
            results.append(r)
    return results


def plot(results: Sequence[dict], path) -> Path:
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    import argparse
    import sys

    p = argparse.ArgumentParser(
        prog="scripts/warmup_demo.py", allow_abbrev=False,
        description="Post-LN vs Pre-LN at a high learning rate without warm-up "
        "(Xiong et al. 2020), on small deep models and the synthetic corpus.")
    p.add_argument("--runs", nargs="+", choices=list(RUNS),
                   default=["postln-nowarmup", "preln-nowarmup", "postln-warmup"])
    p.add_argument("--depth", type=int, default=12)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 3e-3])
    p.add_argument("--timescale", type=float, default=100,
                   help="warm-up updates (warmup) / decay timescale T (nowarmup)")
    p.add_argument("--updates", type=int, default=150)
    p.add_argument("--eval-every", type=int, default=25)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="work/warmup-demo")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout, force=True)
    logging.getLogger("fairseq").setLevel(logging.WARNING)
    results = demo(args.runs, args.depth, args.dim, args.lrs, args.timescale, args.updates,
                   args.eval_every, args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "warmup_demo.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    log.info(f"wrote {plot(results, out / 'warmup_demo.png')} and {out / 'warmup_demo.json'}")
    return 0
