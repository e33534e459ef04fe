"""The benchmark's tables, targets and sweep figure (see
:mod:`fairseq_rskip.tools.benchmark.throughput`)."""

from pathlib import Path

from fairseq_rskip.tools.common.figures import pyplot, save_figure
from fairseq_rskip.tools.benchmark.measure import BASELINE

TARGETS = {  # name: (train throughput >=, generation >=, peak memory <=) vs postln
    "rskip": (0.95, 0.95, 1.10),
    "adanorm": (0.98, 0.95, 1.10),  # Pre-LN; AdaNorm on the two final norms only
    "adanorm_postln": (0.90, 0.95, 1.10),  # AdaNorm on every norm (transformer_adanorm of version 0.1.0)
    "prenorm_nowarmup": (0.98, 0.95, 1.10),
    "deepnorm": (0.98, 0.98, 1.10),
    "admin": (0.98, 0.98, 1.10),
    "espa": (0.95, 0.95, 1.10),
    "uspa": (0.95, 0.95, 1.10),
    # the baselines: RMSNorm does less than LayerNorm; the norm-free ones drop norms;
    # DyT (x and tanh kept for backward), Sandwich/Peri-LN and NormFormer (extra norms)
    # keep more activations than LayerNorm
    "rmsnorm": (0.99, 0.95, 1.03),
    "dyt": (0.95, 0.95, 1.10),
    "sandwich": (0.95, 0.95, 1.10),
    "periln": (0.95, 0.95, 1.10),
    "normformer": (0.95, 0.95, 1.10),
    "rezero": (1.0, 0.95, 1.03),
    "skipinit": (1.0, 0.95, 1.03),
    "tfixup": (1.0, 0.95, 1.03),
}



def flushed(opts) -> str:
    return ", subnormals flushed to zero" if opts.flush_denormal else ""



def report_sweep(rows, opts) -> None:
    print()
    print(f"cost sweep, {opts.device}, precision {opts.precision}, {opts.threads} thread(s){flushed(opts)}; "
          f"ratios are throughput x postln (paired medians; < 1 is slower than Post-LN)")
    names = list(dict.fromkeys(r["name"] for r in rows))
    w = max(12, *(len(n) for n in names))
    print(f"{'axis':<7} {'value':>12} {'architecture':<{w}} {'train ms/tok':>13} {'x postln':>9} "
          f"{'gen ms/tok':>11} {'x postln':>9}")
    for r in rows:
        print(f"{r['axis']:<7} {str(r['value']):>12} {r['name']:<{w}} "
              f"{1e3 * r['train_s_per_tok']:>13.4f} {r['train_ratio']:>9.3f} "
              f"{1e3 * r['gen_s_per_tok']:>11.3f} {r['gen_ratio']:>9.3f}")


def plot_sweep(rows, path, opts) -> Path:
    """Training and generation throughput x Post-LN against each swept axis."""
    plt = pyplot()

    axes_swept = list(dict.fromkeys(r["axis"] for r in rows))
    names = [n for n in dict.fromkeys(r["name"] for r in rows) if n != BASELINE]
    fig, grid = plt.subplots(2, len(axes_swept), figsize=(4.5 * len(axes_swept), 7), squeeze=False)
    for col, axis in enumerate(axes_swept):
        values = list(dict.fromkeys(r["value"] for r in rows if r["axis"] == axis))
        for row, (key, what) in enumerate((("train_ratio", "training"), ("gen_ratio", "generation"))):
            ax = grid[row][col]
            for k, n in enumerate(names):
                ys = [next(r[key] for r in rows if r["axis"] == axis and r["value"] == v
                           and r["name"] == n) for v in values]
                ax.plot(range(len(values)), ys, marker="o", color=f"C{k % 10}", label=n)
            ax.axhline(1.0, color="black", lw=0.8)
            ax.set_xticks(range(len(values)), [str(v) for v in values])
            ax.set_xlabel({"length": "tokens per sentence", "depth": "encoder and decoder layers",
                           "width": "fairseq size"}[axis])
            ax.set_ylabel(f"{what} throughput x Post-LN")
            ax.grid(alpha=0.3)
    grid[0][-1].legend(fontsize=7)
    fig.suptitle(f"cost against fairseq's Post-LN as the work grows ({opts.device}, "
                 f"{opts.precision}, {opts.threads} thread(s))")
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def report(result: dict, opts) -> bool:
    names = result["names"]
    print()
    print(f"size {opts.size}, {opts.device}, {opts.precision}, {opts.threads} thread(s){flushed(opts)}, data "
          f"{opts.data or f'random (vocab {opts.vocab})'}, max tokens {opts.max_tokens}, "
          f"{opts.reps} repetitions x {opts.steps} timed updates (+{opts.warmup_steps} warm-up), "
          f"generation beam {opts.beam} x {opts.gen_sentences} sentences x {opts.gen_len} tokens")
    w = max(12, *(len(n) for n in names))
    head = (f"{'architecture':<{w}} {'params':>11} {'train tok/s':>12} {'x postln':>9} {'x preln':>8} "
            f"{'gen sent/s':>11} {'x postln':>9} {'x preln':>8}")
    head += f" {'saved MiB':>9} {'x postln':>9}"
    mem = result.get("memory")
    if mem:
        head += f" {'peak MiB':>9} {'x postln':>9}"
        if "mem_ratio_above_base" in result:
            head += f" {'above base':>10} {'x postln':>9}"
    print(head)
    for n in names:
        line = (f"{n:<{w}} {result['params'][n]:>11,} {result['train_tok_s'][n]:>12.0f} "
                f"{result['train_ratio'][n]:>9.3f} {result['train_ratio_preln'].get(n, float('nan')):>8.3f} "
                f"{result['gen_sent_s'][n]:>11.2f} {result['gen_ratio'][n]:>9.3f} "
                f"{result['gen_ratio_preln'].get(n, float('nan')):>8.3f}"
                f" {result['saved_mib'][n]:>9.1f} {result['saved_ratio'][n]:>9.3f}")
        if mem:
            key = "peak_rss_mib" if "peak_rss_mib" in mem[n] else "peak_mib"
            line += f" {mem[n][key]:>9.0f} {result['mem_ratio'][n]:>9.3f}"
            if "mem_ratio_above_base" in result:
                line += f" {mem[n]['above_base_mib']:>10.0f} {result['mem_ratio_above_base'][n]:>9.3f}"
        print(line)
    print()
    ok_all = True
    w = max(8, *(len(n) for n in names))
    for n in names:
        if n not in TARGETS:
            continue
        t_train, t_gen, t_mem = TARGETS[n]
        checks = [("train", result["train_ratio"][n], ">=", t_train),
                  ("generation", result["gen_ratio"][n], ">=", t_gen),
                  ("saved activations", result["saved_ratio"][n], "<=", t_mem)]
        if mem:
            checks.append(("peak memory", result["mem_ratio"][n], "<=", t_mem))
            if "mem_ratio_above_base" in result:
                checks.append(("memory above base", result["mem_ratio_above_base"][n], "<=", t_mem))
        for what, value, op, target in checks:
            ok = value >= target if op == ">=" else value <= target
            ok_all &= ok
            print(f"  {n:<{w}} {what:<18} {value:6.3f} x postln  target {op} {target:.2f}  "
                  f"{'met' if ok else 'not met'}")
    print("  saved activations: distinct storages autograd keeps in one training forward of the "
          "first batch (exact, parameters left out)")
    if "mem_kind" in result:
        print(f"  memory: {result['mem_kind']}")
    return ok_all

