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

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from fairseq_rskip.tools.common.figures import pyplot, save_figure
from fairseq_rskip.tools.common.modelbuild import build_model, data_bin_batches
from fairseq_rskip.tools.common.outputs import write_analysis_outputs
from fairseq_rskip.progress import progress_bar
from fairseq_rskip.variants import VARIANTS, Variant, distinct_plugin_builds, size_suffix


def default_variants() -> List[str]:
    """Every distinct model of the variants table."""
    return [v.name for v in distinct_plugin_builds()]


@dataclass
class LayerRecord:
    variant: str  # the row of the variants table
    label: str
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
            variant.name, variant.label, depth, stack, layer, mean_off_diagonal(entry["measured"]),
            sum(entry["q"]) / len(entry["q"]),
            mean_off_diagonal(entry["target"]) if entry["target"] else None,
            mean_off_diagonal(entry["mean_field"]) if entry["mean_field"] else None,
        ))
    return records


def run(data: str, variants: Sequence[str], depths: Sequence[int], size: str = "iwslt_de_en",
        extra: Sequence[str] = (), split: str = "valid", max_tokens: int = 1024, batches: int = 1,
        seed: int = 1, train_mode: bool = False) -> List[LayerRecord]:
    """Every variant (a row of the variants table, as the plugin builds it) x depth;
    returns the per-layer records. ``train_mode``: measure with dropout on, as the
    first training update sees the model."""
    task, samples = data_bin_batches(data, "transformer_rskip" + size_suffix(size), split=split,
                                     max_tokens=max_tokens, n_batches=batches)
    pad = task.source_dictionary.pad()
    records: List[LayerRecord] = []
    jobs = [(VARIANTS[name], depth) for depth in depths for name in variants]
    with progress_bar(total=len(jobs), desc="signal propagation", unit="model") as bar:
        for variant, depth in jobs:
            arch, flags = variant.plugin_build(size)
            flags = list(flags) + ["--encoder-layers", str(depth), "--decoder-layers", str(depth), *extra]
            model, _ = build_model(arch, flags, dictionary=task.source_dictionary,
                                   tgt_dictionary=task.target_dictionary, seed=seed)
            model.train(train_mode)
            torch.manual_seed(seed)  # the dropout masks of train_mode
            records += analyse_model(variant, depth, model, samples, pad)
            del model
            bar.update(1)
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
    """The tables of the docs; ``variants`` are names of the table, shown by their labels."""
    labels = {r.variant: r.label for r in records}
    last = last_layers(records)
    first = {(r.variant, r.depth, r.stack): r for r in records if r.layer == 0}

    def last_layer_table(title: str, field: str, fmt) -> List[str]:
        """One row per variant: ``field`` at layer 0, then at the last layer of each depth."""
        head = ["variant", "layer 0 (enc / dec)"] + [f"enc L={d}" for d in depths] + [f"dec L={d}" for d in depths]
        table = [title, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name in variants:
            zero = [first.get((name, depths[0], s)) for s in ("encoder", "decoder")]
            row = [labels.get(name, name), " / ".join(fmt(getattr(z, field) if z else None) for z in zero)]
            for stack in ("encoder", "decoder"):
                row += [fmt(getattr(last[(name, d, stack)], field)) if (name, d, stack) in last else ""
                        for d in depths]
            table.append("| " + " | ".join(row) + " |")
        return table

    lines = last_layer_table("Mean pairwise cosine similarity of the token representations at the last "
                             "layer (layer 0, the embeddings, in the first column):", "cosine", _fmt)
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
                lines.append("| " + " | ".join([labels[name], stack] + cells) + " |")
    lines += [""] + last_layer_table("q = ||h||^2 / d at the last layer (1 where a normalisation holds "
                                     "it; layer 0: the embeddings):", "q", _fmt_q)
    return "\n".join(lines) + "\n"


def _fmt_q(value: Optional[float]) -> str:
    return "" if value is None else f"{value:.3g}"


def plot(records: Sequence[LayerRecord], depths: Sequence[int], variants: Sequence[str], path: Path) -> Path:
    plt = pyplot()

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
                label = rs[0].label
                ax.plot([r.layer for r in rs], [r.cosine for r in rs], "-", marker=".", color=color, label=label)
                targets = [(r.layer, r.target) for r in rs if r.target is not None]
                if targets:
                    ax.plot(*zip(*targets), ":", color=color, label=f"{label} target")
            ax.set_title(f"{stack}, {depth} layers")
            ax.set_xlabel("layer (0 = embeddings)")
            ax.set_ylim(-0.05, 1.02)
            ax.grid(alpha=0.3)
            if col == 0:
                ax.set_ylabel("mean pairwise cosine")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.suptitle("Token representations at initialisation (dotted: SPA target kernel)")
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)


def write_outputs(records: Sequence[LayerRecord], out: Path, depths: Sequence[int],
                  variants: Sequence[str]) -> List[Path]:
    """``signal_propagation.csv`` (every layer), ``.md`` (the tables) and ``.png`` (the plot)."""
    return write_analysis_outputs(out, "signal_propagation", records, markdown(records, depths, variants),
                                  lambda path: plot(records, depths, variants, path))
