"""Signal propagation at initialisation: rank collapse of token representations.

For each variant and depth a model is built at initialisation (fairseq's
argument parsing and ``build_model``, ``--user-dir fairseq_rskip``), real
batches of a data-bin split (the bundled corpus) go through it in eval mode
(``--train-mode``: with dropout on),
and for every layer of the encoder and of the decoder (teacher-forced on the
reference) the **mean pairwise cosine similarity** of the token
representations is recorded: per sentence, the mean over pairs ``i != j``
of real tokens of ``cos(h_i, h_j)`` (the off-diagonal of the kernel ``Sigma
= H H^T / d`` normalised to unit diagonal), then the mean over sentences.
Layer 0 is the input of the first layer (embeddings plus positions). A deep
stack whose tokens all become the same vector (rank collapse, He et al. 2023
Section 2) goes to 1. Also recorded: ``q``, the mean over real tokens of
``||h||^2 / d`` (the kernel's diagonal), which the models without
normalisation do not hold at 1.

For the shaped models two references are reported as well:

``target``
    the mean off-diagonal of the SPA target kernel ``Sigma_l`` for the same
    sentence lengths (E-SPA, U-SPA);
``mean-field``
    the kernel the construction predicts from the *measured* layer-0 kernel
    ``K_0`` (which sinusoidal positions and repeated tokens keep from being
    ``I``): per layer ``K <- A_l K A_l^T``, normalised to unit diagonal, then
    TAT's leaky ReLU C map entry-wise (orthogonal weights keep the kernel; the
    C map is the wide-network limit of the feed-forward sublayer). For
    Value-SkipInit ``A_l = I``.
"""

import csv
import logging
import math
import sys
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from fairseq_rskip.analysis.modelbuild import build_model, data_bin_batches

log = logging.getLogger("signal_propagation")


@dataclass(frozen=True)
class Variant:
    """One architecture of the analysis: ``--arch ARCH{size}`` plus ``flags``."""

    name: str
    arch: str
    flags: Tuple[str, ...] = ()


# The compared variants (the table of variants, fairseq_rskip/variants.py, is
# to replace this list once it exists).
VARIANTS: Dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("vanilla", "transformer_vanilla"),
        Variant("E-SPA", "transformer_espa"),
        Variant("U-SPA", "transformer_uspa"),
        Variant("Value-SkipInit", "transformer_vanilla", ("--value-skipinit",)),
        Variant("Post-LN", "transformer_rskip", ("--skip-recursions", "1")),
        Variant("Pre-LN", "transformer_prenorm_nowarmup"),
        Variant("rSkip", "transformer_rskip"),
        Variant("AdaNorm", "transformer_adanorm"),
    )
}


@dataclass
class LayerRecord:
    variant: str
    depth: int
    stack: str
    layer: int
    cosine: float
    q: float  # mean over real tokens of ||h||^2 / d
    target: Optional[float] = None
    mean_field: Optional[float] = None


# -- measuring ---------------------------------------------------------------------


def layer_representations(model, sample) -> Dict[str, List[torch.Tensor]]:
    """``{"encoder": [h_0, .., h_L], "decoder": [...]}``, each ``(T, B, C)``:
    the first layer's input, then every layer's output."""
    captured: Dict[str, List[torch.Tensor]] = {"encoder": [], "decoder": []}
    handles = []
    for stack in captured:
        layers = getattr(model, stack).layers

        def keep_input(_module, args, stack=stack):
            captured[stack].append(args[0].detach())

        def keep_output(_module, _args, output, stack=stack):
            captured[stack].append((output[0] if isinstance(output, tuple) else output).detach())

        handles.append(layers[0].register_forward_pre_hook(keep_input))
        handles += [layer.register_forward_hook(keep_output) for layer in layers]
    try:
        with torch.no_grad():
            model(**sample["net_input"])
    finally:
        for handle in handles:
            handle.remove()
    return captured


def correlation_matrices(h: torch.Tensor, real: torch.Tensor) -> List[torch.Tensor]:
    """Per sentence, the cosine similarities of its real tokens (float64)."""
    x = h.transpose(0, 1).double()
    x = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    out = []
    for b in range(x.size(0)):
        tokens = x[b][real[b]]
        out.append(tokens @ tokens.T)
    return out


def mean_off_diagonal(matrices: Sequence[torch.Tensor]) -> float:
    """Mean over sentences (of two tokens or more) of the mean off-diagonal entry."""
    values = []
    for m in matrices:
        n = m.size(0)
        if n >= 2:
            values.append(((m.sum() - m.diagonal().sum()) / (n * (n - 1))).item())
    return sum(values) / len(values) if values else math.nan


@lru_cache(maxsize=4096)
def _attention(kernel: str, rho: float, rho_prev: float, n: int, causal: bool) -> torch.Tensor:
    from fairseq_rskip.modules.spa import attention_matrix

    return attention_matrix(kernel, rho, rho_prev, n, causal)


def predicted_kernels(k0: torch.Tensor, kernel: str, rhos: Sequence[float], causal: bool,
                      negative_slope: float) -> List[torch.Tensor]:
    """``[K_1, .., K_L]`` from ``K_0`` (see the module docstring); ``kernel`` ""
    is Value-SkipInit (``A_l = I``)."""
    a = negative_slope
    coefficient = (1 - a) ** 2 / (math.pi * (1 + a * a))
    k = k0
    out = []
    for layer in range(1, len(rhos)):
        if kernel:
            mix = _attention(kernel, rhos[layer], rhos[layer - 1], k.size(0), causal)
            k = mix @ k @ mix.T
            d = k.diagonal().sqrt()
            k = k / (d[:, None] * d[None, :])
        c = k.clamp(-1.0, 1.0)
        # fairseq_rskip.modules.tat.leaky_relu_cmap, entry-wise
        k = c + coefficient * ((1 - c * c).clamp_min(0).sqrt() - c * torch.arccos(c))
        out.append(k)
    return out


def target_kernels(kernel: str, rhos: Sequence[float], n: int) -> List[torch.Tensor]:
    from fairseq_rskip.modules.spa import kernel_matrix

    return [kernel_matrix(kernel, rho, n) for rho in rhos[1:]]


def analyse_model(variant: Variant, depth: int, model, samples, pad: int) -> List[LayerRecord]:
    """Records of every layer of both stacks, over ``samples``."""
    from fairseq_rskip.modules.spa import correlation_schedule

    skip_norm = model.encoder.skip_norm
    kernel = skip_norm.spa_kernel or ""
    shaped = skip_norm.shaped
    rhos = [0.0] * (depth + 1)
    if kernel:
        final = skip_norm.spa_gamma_final if kernel == "exponential" else skip_norm.spa_rho_final
        rhos = correlation_schedule(kernel, final, depth)
    per_layer: Dict[Tuple[str, int], Dict[str, List[torch.Tensor]]] = {}
    for sample in samples:
        reps = layer_representations(model, sample)
        net = sample["net_input"]
        for stack, tokens in (("encoder", net["src_tokens"]), ("decoder", net["prev_output_tokens"])):
            real = tokens.ne(pad)
            matrices = [correlation_matrices(h, real) for h in reps[stack]]
            for layer, (m, h) in enumerate(zip(matrices, reps[stack])):
                entry = per_layer.setdefault(
                    (stack, layer), {"measured": [], "q": [], "target": [], "mean_field": []})
                entry["measured"] += m
                entry["q"] += h.double().pow(2).mean(-1).t()[real].tolist()
            if not shaped:
                continue
            slope = getattr(model, stack).layers[0].activation_fn.negative_slope
            for k0 in matrices[0]:
                predicted = predicted_kernels(k0, kernel, rhos, stack == "decoder", slope)
                targets = target_kernels(kernel, rhos, k0.size(0)) if kernel else []
                for layer in range(1, depth + 1):
                    entry = per_layer[(stack, layer)]
                    entry["mean_field"].append(predicted[layer - 1])
                    if targets:
                        entry["target"].append(targets[layer - 1])
    records = []
    for (stack, layer), entry in sorted(per_layer.items()):
        records.append(LayerRecord(
            variant.name, depth, stack, layer, mean_off_diagonal(entry["measured"]),
            sum(entry["q"]) / len(entry["q"]),
            mean_off_diagonal(entry["target"]) if entry["target"] else None,
            mean_off_diagonal(entry["mean_field"]) if entry["mean_field"] else None,
        ))
    return records


def size_suffix(size: str) -> str:
    return "" if size in ("", "base") else "_" + size.lstrip("_")


def run(data: str, variants: Sequence[str], depths: Sequence[int], size: str = "iwslt_de_en",
        extra: Sequence[str] = (), split: str = "valid", max_tokens: int = 1024, batches: int = 1,
        seed: int = 1, progress: bool = False, train_mode: bool = False) -> List[LayerRecord]:
    """Every variant x depth; returns the per-layer records. ``train_mode``:
    measure with dropout on, as the first training update sees the model."""
    from tqdm import tqdm

    task, samples = data_bin_batches(data, "transformer_rskip" + size_suffix(size), split=split,
                                     max_tokens=max_tokens, n_batches=batches)
    pad = task.source_dictionary.pad()
    records: List[LayerRecord] = []
    jobs = [(VARIANTS[name], depth) for depth in depths for name in variants]
    for variant, depth in tqdm(jobs, desc="signal propagation", disable=not progress):
        flags = list(variant.flags) + ["--encoder-layers", str(depth), "--decoder-layers", str(depth),
                                       *extra]
        model, _ = build_model(variant.arch + size_suffix(size), flags, dictionary=task.source_dictionary,
                               tgt_dictionary=task.target_dictionary, seed=seed)
        model.train(train_mode)
        torch.manual_seed(seed)  # the dropout masks of train_mode
        records += analyse_model(variant, depth, model, samples, pad)
        del model
    return records


# -- reporting ---------------------------------------------------------------------------


def last_layers(records: Sequence[LayerRecord]) -> Dict[Tuple[str, int, str], LayerRecord]:
    out: Dict[Tuple[str, int, str], LayerRecord] = {}
    for r in records:
        key = (r.variant, r.depth, r.stack)
        if key not in out or r.layer > out[key].layer:
            out[key] = r
    return out


def _fmt(value: Optional[float]) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def markdown(records: Sequence[LayerRecord], depths: Sequence[int], variants: Sequence[str]) -> str:
    last = last_layers(records)
    first = {(r.variant, r.depth, r.stack): r for r in records if r.layer == 0}
    lines = ["Mean pairwise cosine similarity of the token representations at the last layer "
             "(layer 0, the embeddings, in the first column):", ""]
    head = ["variant", "layer 0 (enc / dec)"] + [f"enc L={d}" for d in depths] + [f"dec L={d}" for d in depths]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in variants:
        zero = [first.get((name, depths[0], s)) for s in ("encoder", "decoder")]
        row = [name, " / ".join(_fmt(z.cosine if z else None) for z in zero)]
        for stack in ("encoder", "decoder"):
            row += [_fmt(last[(name, d, stack)].cosine) if (name, d, stack) in last else "" for d in depths]
        lines.append("| " + " | ".join(row) + " |")
    shaped = [n for n in variants if any(r.variant == n and r.mean_field is not None for r in records)]
    if shaped:
        lines += ["", "Shaped models at the last layer: measured / SPA target Sigma_L / mean-field "
                  "prediction from the measured layer-0 kernel:", ""]
        head = ["variant", "stack"] + [f"L={d}" for d in depths]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name in shaped:
            for stack in ("encoder", "decoder"):
                cells = []
                for d in depths:
                    r = last.get((name, d, stack))
                    cells.append("" if r is None else " / ".join(
                        _fmt(v) or "-" for v in (r.cosine, r.target, r.mean_field)))
                lines.append("| " + " | ".join([name, stack] + cells) + " |")
    lines += ["", "q = ||h||^2 / d at the last layer (1 where a normalisation holds it; layer 0: "
              "the embeddings):", ""]
    head = ["variant", "layer 0 (enc / dec)"] + [f"enc L={d}" for d in depths] + [f"dec L={d}" for d in depths]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in variants:
        zero = [first.get((name, depths[0], s)) for s in ("encoder", "decoder")]
        row = [name, " / ".join(_fmt_q(z.q if z else None) for z in zero)]
        for stack in ("encoder", "decoder"):
            row += [_fmt_q(last[(name, d, stack)].q) if (name, d, stack) in last else "" for d in depths]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def _fmt_q(value: Optional[float]) -> str:
    return "" if value is None else f"{value:.3g}"


def plot(records: Sequence[LayerRecord], depths: Sequence[int], variants: Sequence[str], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(depths), figsize=(4.2 * len(depths), 7.5), squeeze=False, sharey=True)
    for row, stack in enumerate(("encoder", "decoder")):
        for col, depth in enumerate(depths):
            ax = axes[row][col]
            for k, name in enumerate(variants):
                rs = sorted((r for r in records if r.variant == name and r.depth == depth and r.stack == stack),
                            key=lambda r: r.layer)
                if not rs:
                    continue
                color = f"C{k % 10}"
                ax.plot([r.layer for r in rs], [r.cosine for r in rs], "-", marker=".", color=color, label=name)
                targets = [(r.layer, r.target) for r in rs if r.target is not None]
                if targets:
                    ax.plot(*zip(*targets), ":", color=color, label=f"{name} target")
            ax.set_title(f"{stack}, {depth} layers")
            ax.set_xlabel("layer (0 = embeddings)")
            ax.set_ylim(-0.05, 1.02)
            ax.grid(alpha=0.3)
            if col == 0:
                ax.set_ylabel("mean pairwise cosine")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.suptitle("Token representations at initialisation (dotted: SPA target kernel)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_outputs(records: Sequence[LayerRecord], out: Path, depths: Sequence[int],
                  variants: Sequence[str]) -> List[Path]:
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "signal_propagation.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(asdict(records[0])))
        writer.writeheader()
        for r in records:
            writer.writerow({k: ("" if v is None else v) for k, v in asdict(r).items()})
    md_path = out / "signal_propagation.md"
    md_path.write_text(markdown(records, depths, variants), encoding="utf-8")
    return [csv_path, md_path, plot(records, depths, variants, out / "signal_propagation.png")]


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(
        prog="scripts/signal_propagation.py", allow_abbrev=False,
        description="Mean pairwise cosine similarity of token representations per layer, at "
        "initialisation, on real batches: rank collapse of vanilla Transformers and its cures. "
        "Other arguments (e.g. --encoder-embed-dim 256) are model flags for every variant.")
    p.add_argument("--data", required=True, help="a fairseq data-bin (e.g. the bundled corpus)")
    p.add_argument("--out", default="work/signal-propagation", help="output directory")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--depths", type=int, nargs="+", default=[6, 12, 24, 48],
                   help="layers of the encoder and of the decoder")
    p.add_argument("--size", default="iwslt_de_en", help="fairseq size suffix of the architectures")
    p.add_argument("--split", default="valid")
    p.add_argument("--max-tokens", type=int, default=1024, help="tokens per batch")
    p.add_argument("--batches", type=int, default=2)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--train-mode", action="store_true",
                   help="measure in training mode (dropout on, as the first update sees the model)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args, extra = p.parse_known_args(argv)
    if not Path(args.data).is_dir():
        p.error(f"--data {args.data}: no such data-bin folder")
    if any(d < 1 for d in args.depths):
        p.error("--depths must be positive")
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout, force=True)
    for name in ("fairseq", "matplotlib"):
        logging.getLogger(name).setLevel(logging.WARNING)
    records = run(args.data, args.variants, args.depths, size=args.size, extra=extra, split=args.split,
                  max_tokens=args.max_tokens, batches=args.batches, seed=args.seed,
                  progress=sys.stderr.isatty(), train_mode=args.train_mode)
    for path in write_outputs(records, Path(args.out), args.depths, args.variants):
        log.info(f"wrote {path}")
    print(markdown(records, args.depths, args.variants))
    return 0
