"""Training throughput, generation speed and peak memory against fairseq's stock transformer.

    python benchmarks/benchmark_throughput.py                 # iwslt_de_en size, CPU
    python benchmarks/benchmark_throughput.py --quick         # smoke test, seconds
    python benchmarks/benchmark_throughput.py --sweep length width depth --plot cost_sweep.png
    python benchmarks/benchmark_throughput.py --device cuda --precision fp16   # on a GPU

Prints figures (not a test). Needs fairseq_rskip installed (scripts/setup_env.sh).
Every model is built by fairseq itself (argument parsing with ``--user-dir``
the plugin's folder and the registered model's ``build_model``) at the same
size (``--size``): the candidates, every variant of fairseq_rskip/variants.py
that is not fairseq's own (``rskip``: ``transformer_rskip``, 2 recursions;
``adanorm``; ``prenorm_nowarmup``; ``deepnorm``; ``admin``, whose profiling pass
falls in the untimed warm-up updates; ``vanilla``, ``espa``, ``uspa``,
``value_skipinit``), and the baselines, fairseq's stock
``transformer`` (Post-LN, ``postln``) and each candidate's like-for-like
reference (``preln``, the same with ``--encoder-normalize-before
--decoder-normalize-before``, for ``prenorm_nowarmup``).

Training throughput
    target tokens per second of full training updates (fairseq's
    ``label_smoothed_cross_entropy`` criterion, backward, ``torch.optim.Adam``
    step) on real fairseq batches: the first ``--max-tokens`` batches of the
    data-bin's ``valid`` split (``--data``; default ``work/bundled/data-bin`` if
    it exists), else random batches of a ``--vocab``-word dictionary. All
    models live in one process. Each repetition runs ``--warmup-steps``
    untimed updates of every model, then ``--steps`` rounds in which every
    model, in an order rotated per repetition, does one timed update.
    Reported: the median tokens/s over the timed updates, and the median over
    rounds of the ratio candidate / baseline within a round (paired, so slow
    phases of a shared machine cancel out).
Generation speed
    sentences per second of fairseq's ``SequenceGenerator`` (beam 5) on
    ``--gen-sentences`` source sentences, in eval mode; every hypothesis is
    forced to exactly ``--gen-len`` tokens (``min_len = max_len_b``) so that
    untrained models of different architectures do the same work.
Saved activations
    the bytes autograd keeps for backward in one training forward of the
    first batch (distinct storages, parameters left out): exact, the part of
    training memory the normalisation/skip wiring decides.
Precision
    ``--precision fp32`` (default), or ``fp16`` / ``bf16``: forward, loss and
    generation under ``torch.autocast`` with float32 weights, as fairseq's
    ``--amp`` (fairseq's ``--fp16`` casts the weights too and keeps float32
    master copies; both put the matrix products in half precision).
Sweep
    ``--sweep AXIS ...`` repeats the training and generation comparison
    (without the memory part) while one axis grows: ``length`` (random
    batches of ``--sweep-lengths`` tokens per sentence, ``--max-tokens``
    scaled to keep 16 sentences a batch), ``depth`` (``--sweep-depths``
    encoder and decoder layers) and ``width`` (``--sweep-sizes``, fairseq's
    sizes); it reports seconds per target token of training and per
    generated token, and both as ratios to Post-LN, with ``--plot`` a figure
    of the ratios. Each point runs in a fresh child process.
Peak memory
    CPU: each model trains ``--mem-steps`` updates in a fresh child process;
    reported is the child's peak resident set size (``VmHWM``) and the
    part above its RSS just before the model was built (model, optimiser
    state, activations), medians over ``--mem-reps`` alternated repetitions.
    GPU: ``torch.cuda.max_memory_allocated`` over the timed updates.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fairseq_rskip.analysis.figures import pyplot, save_figure
from fairseq_rskip.errors import UserError, run_main
from fairseq_rskip.fairseq_tools import child_env
from fairseq_rskip.file_io import write_json
from fairseq_rskip.progress import progress_bar, write
from fairseq_rskip.variants import VARIANTS

BASELINE = "postln"
TARGETS = {  # name: (train throughput >=, generation >=, peak memory <=) vs postln
    "rskip": (0.95, 0.95, 1.10),
    "adanorm": (0.98, 0.95, 1.10),  # Pre-LN; AdaNorm on the two final norms only
    "adanorm_postln": (0.90, 0.95, 1.10),  # AdaNorm on every norm (transformer_adanorm before issue 14)
    "prenorm_nowarmup": (0.98, 0.95, 1.10),
    "deepnorm": (0.98, 0.98, 1.10),
    "admin": (0.98, 0.98, 1.10),
    "espa": (0.95, 0.95, 1.10),
    "uspa": (0.95, 0.95, 1.10),
}


def candidates() -> list:
    """Every variant of the table that is not fairseq's own transformer."""
    return [v.name for v in VARIANTS.values() if not v.stock]


def measured_names(archs) -> list:
    """The baseline, the candidates' like-for-like references, then the candidates."""
    return list(dict.fromkeys([BASELINE] + [VARIANTS[a].reference for a in archs] + list(archs)))


def model_flags(opts) -> list:
    flags = ["--dropout", str(opts.dropout)]
    if opts.layers:
        flags += ["--encoder-layers", str(opts.layers), "--decoder-layers", str(opts.layers)]
    return flags


def load_batches(opts, n: int):
    """``(dictionary, batches)``: real fairseq batches of the data-bin, or random ones."""
    from fairseq_rskip.analysis import modelbuild

    if opts.data:
        task, batches = modelbuild.data_bin_batches(
            opts.data, VARIANTS[BASELINE].fairseq_arch(opts.size), split=opts.split,
            max_tokens=opts.max_tokens, n_batches=n)
        if not batches:
            raise UserError(f"no batches in {opts.data} {opts.split}: check --data and --split")
        return task.source_dictionary, task.target_dictionary, batches
    d = modelbuild.random_dictionary(opts.vocab)
    per = max(1, opts.max_tokens // opts.random_len)
    batches = [modelbuild.random_batch(d, per, opts.random_len, opts.random_len, seed=k) for k in range(n)]
    return d, d, batches


def build(name: str, opts, src_dict, tgt_dict, seed: int = 1):
    import torch
    from fairseq.criterions.label_smoothed_cross_entropy import LabelSmoothedCrossEntropyCriterion

    from fairseq_rskip.analysis import modelbuild

    model, _ = modelbuild.build_variant(VARIANTS[name], opts.size, model_flags(opts),
                                        dictionary=src_dict, tgt_dictionary=tgt_dict, seed=seed)
    model.to(opts.device)
    crit = LabelSmoothedCrossEntropyCriterion(
        modelbuild.DummyTask(src_dict, tgt_dict), sentence_avg=False, label_smoothing=0.1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-8)
    return model, crit, opt


def configure_torch(opts) -> None:
    """``--threads`` CPU threads; with ``--flush-denormal``, subnormal floats read and
    written as zero on CPU (``torch.set_flush_denormal``; fairseq-train does not do this)."""
    import torch

    torch.set_num_threads(opts.threads)
    if opts.flush_denormal and not torch.set_flush_denormal(True):
        raise UserError("--flush-denormal: this CPU cannot flush subnormal numbers to zero")


def flushed(opts) -> str:
    return ", subnormals flushed to zero" if opts.flush_denormal else ""


def to_device(sample, device):
    from fairseq import utils

    return utils.move_to_cuda(sample) if device == "cuda" else sample


PRECISIONS = {"fp32": None, "fp16": "float16", "bf16": "bfloat16"}


def autocast(opts):
    """``torch.autocast`` for ``--precision`` fp16/bf16 (fairseq's --amp); nothing for fp32."""
    import contextlib

    import torch

    dtype = PRECISIONS[getattr(opts, "precision", "fp32")]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(opts.device, dtype=getattr(torch, dtype))


def train_steps(model, crit, opt, batches, steps: int, opts, offset: int = 0) -> int:
    """``steps`` training updates; returns the number of target tokens."""
    model.train()
    ntok = 0
    for i in range(steps):
        sample = batches[(offset + i) % len(batches)]
        with autocast(opts):
            loss, _, _ = crit(model, sample)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        ntok += int(sample["ntokens"])
    return ntok


def saved_for_backward_mib(model, crit, sample, opts) -> float:
    """Activations autograd keeps in one training forward (exact; parameters left out)."""
    from fairseq_rskip.analysis.memory import saved_activation_bytes

    def forward():
        with autocast(opts):
            return crit(model, sample)

    model.train()
    nbytes, (loss, _, _) = saved_activation_bytes(forward, model.parameters())
    del loss
    return nbytes / 2**20


def sync(device):
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def generation_sample(batches, n: int):
    """The first ``n`` sentences of the batches, as one batch."""
    import torch

    first = batches[0]
    k = min(n, first["net_input"]["src_tokens"].size(0))
    ni = first["net_input"]
    return {"id": first["id"][:k],
            "net_input": {"src_tokens": ni["src_tokens"][:k], "src_lengths": ni["src_lengths"][:k],
                          "prev_output_tokens": ni["prev_output_tokens"][:k]},
            "target": first["target"][:k], "ntokens": int(torch.ne(first["target"][:k], 1).sum())}


def generate_once(generator, model, sample, opts) -> int:
    import torch

    model.eval()
    with torch.no_grad(), autocast(opts):
        hyps = generator.generate([model], sample)
    sync(opts.device)
    return len(hyps)


# ----------------------------------------------------------------------------
# memory in a child process (CPU)


def _peak_rss_mib() -> float:
    """``VmHWM``: this process's peak RSS. (``ru_maxrss`` would also count the
    RSS the forking parent had, which Linux carries over into the child.)"""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _memory_child(name: str, opts) -> dict:
    """In a fresh process: RSS before building ``name``, and the peak after training it."""
    import logging

    logging.disable(logging.WARNING)
    configure_torch(opts)
    src, tgt, batches = load_batches(opts, opts.mem_steps)
    before = _rss_mib()
    model, crit, opt = build(name, opts, src, tgt)
    train_steps(model, crit, opt, batches, opts.mem_steps, opts)
    peak = _peak_rss_mib()
    return {"peak_rss_mib": peak, "above_base_mib": peak - before}


RESULT = "RESULT "  # a child's last line: this prefix, then its figures as JSON


def in_child(opts, *flags: str, quiet: bool = True) -> dict:
    """The figures of this module run again in a fresh process with ``flags`` (``--memory-child
    NAME`` or ``--point-child``) and ``opts``, importing the same fairseq_rskip: what one
    measurement allocated never stays for the next. Its other lines are printed as they come;
    its stderr is kept for an error (``quiet``) or left to show its progress bars."""
    with tempfile.TemporaryFile("w+") as errors:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fairseq_rskip.benchmark.throughput", *flags,
             "--child-opts", json.dumps(vars(opts))],
            stdout=subprocess.PIPE, stderr=errors if quiet else None, text=True,
            env={**child_env(), "PYTHONWARNINGS": "ignore"})
        result = None
        for line in proc.stdout:
            if line.startswith(RESULT):
                result = json.loads(line[len(RESULT):])
            else:
                write(line.rstrip("\n"))
        if proc.wait() == 0 and result is not None:
            return result
        errors.seek(0)
        stderr = errors.read()[-3000:]
    why = "killed (SIGKILL: out of memory?)" if proc.returncode == -9 else f"exit code {proc.returncode}"
    raise RuntimeError(f"{' '.join(flags)} failed ({why})" + (f":\n{stderr}" if stderr else "; its error is above"))


def measure_memory_cpu(names, opts) -> dict:
    """Each model in its own child process, alternated."""
    out = {n: [] for n in names}
    with progress_bar(opts.mem_reps * len(names), desc="memory", unit="model") as bar:
        for rep in range(opts.mem_reps):
            order = names[rep % len(names):] + names[:rep % len(names)]
            for name in order:
                out[name].append(in_child(opts, "--memory-child", name))
                bar.update(1)
    return {n: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for n, rs in out.items()}


# ----------------------------------------------------------------------------


def run(opts) -> dict:
    import torch

    configure_torch(opts)
    from fairseq.sequence_generator import SequenceGenerator

    names = measured_names(opts.archs)
    src, tgt, batches = load_batches(opts, max(4, opts.steps + opts.warmup_steps))
    batches = [to_device(b, opts.device) for b in batches]
    models = {n: build(n, opts, src, tgt) for n in names}
    params = {n: sum(p.numel() for p in m[0].parameters()) for n, m in models.items()}
    saved = {n: saved_for_backward_mib(*models[n][:2], batches[0], opts) for n in names}
    gen_sample = generation_sample(batches, opts.gen_sentences)
    gens = {n: SequenceGenerator([models[n][0]], tgt, beam_size=opts.beam, max_len_a=0,
                                 max_len_b=opts.gen_len, min_len=opts.gen_len)
            for n in names}

    train = {n: [] for n in names}  # tokens/s of each timed update
    gen = {n: [] for n in names}
    gpu_mem = {n: [] for n in names}
    # one step of work: an update or a generation pass of one model
    per_rep = len(names) * (opts.warmup_steps + opts.steps + 1 + opts.gen_repeats)
    with progress_bar(opts.reps * per_rep, desc="timing", unit="step") as bar:
        for rep in range(opts.reps):
            order = names[rep % len(names):] + names[:rep % len(names)]
            for n in order:
                train_steps(*models[n], batches, opts.warmup_steps, opts)
                bar.update(opts.warmup_steps)
            # one update of each model in turn: a slow phase of a shared machine
            # hits all of them alike, and the ratios are paired per round
            for i in range(opts.steps):
                for n in order:
                    sync(opts.device)
                    if opts.device == "cuda":
                        torch.cuda.reset_peak_memory_stats()
                    t = time.perf_counter()
                    ntok = train_steps(*models[n], batches, 1, opts, offset=opts.warmup_steps + i)
                    sync(opts.device)
                    train[n].append(ntok / (time.perf_counter() - t))
                    if opts.device == "cuda":
                        gpu_mem[n].append(torch.cuda.max_memory_allocated() / 2**20)
                    bar.update(1)
            for n in order:
                generate_once(gens[n], models[n][0], gen_sample, opts)  # warm-up
                bar.update(1)
            for n in order:
                t = time.perf_counter()
                k = 0
                for _ in range(opts.gen_repeats):
                    k += generate_once(gens[n], models[n][0], gen_sample, opts)
                    bar.update(1)
                gen[n].append(k / (time.perf_counter() - t))
            write(f"  repetition {rep + 1}/{opts.reps}: " + ", ".join(
                f"{n} {statistics.median(train[n][-opts.steps:]):.0f} tok/s {gen[n][-1]:.2f} sent/s"
                for n in names))
    del models, gens

    def paired(values, base):
        return statistics.median(v / b for v, b in zip(values, base))

    result = {"names": names, "params": params, "saved_mib": saved,
              "saved_ratio": {n: saved[n] / saved["postln"] for n in names},
              "train_tok_s": {n: statistics.median(v) for n, v in train.items()},
              "gen_sent_s": {n: statistics.median(v) for n, v in gen.items()},
              "train_ratio": {n: paired(train[n], train["postln"]) for n in names},
              "gen_ratio": {n: paired(gen[n], gen["postln"]) for n in names},
              "train_ratio_preln": {n: paired(train[n], train["preln"]) for n in names if "preln" in names},
              "gen_ratio_preln": {n: paired(gen[n], gen["preln"]) for n in names if "preln" in names},
              "raw": {"train": train, "gen": gen}}
    if opts.device == "cuda":
        mem = {n: {"peak_mib": max(v)} for n, v in gpu_mem.items()}
        result["memory"] = mem
        result["mem_ratio"] = {n: mem[n]["peak_mib"] / mem["postln"]["peak_mib"] for n in names}
        result["mem_kind"] = "torch.cuda.max_memory_allocated over the timed updates"
    elif opts.mem_reps > 0:
        mem = measure_memory_cpu(names, opts)
        result["memory"] = mem
        result["mem_ratio"] = {n: mem[n]["peak_rss_mib"] / mem["postln"]["peak_rss_mib"] for n in names}
        result["mem_ratio_above_base"] = {
            n: mem[n]["above_base_mib"] / mem["postln"]["above_base_mib"] for n in names}
        result["mem_kind"] = "peak RSS (VmHWM) of a fresh child process training the model"
    return result


# ----------------------------------------------------------------------------
# how cost grows: the comparison repeated along one axis at a time

SWEEP_AXES = ("length", "depth", "width")


def sweep_points(opts) -> list:
    """``(axis, value, options)`` of every point of ``--sweep``."""
    points = []
    for axis in opts.sweep:
        values = {"length": opts.sweep_lengths, "depth": opts.sweep_depths,
                  "width": opts.sweep_sizes}[axis]
        for value in values:
            point = argparse.Namespace(**{**vars(opts), "mem_reps": 0, "json_out": None})
            if axis == "length":  # random sentences of that length, 16 to a batch
                point.data, point.random_len, point.max_tokens = None, int(value), 16 * int(value)
            elif axis == "depth":
                point.layers = int(value)
            else:
                point.size = value
            points.append((axis, value, point))
    return points


def run_sweep(opts) -> list:
    """Every point's figures: seconds per token and ratios to Post-LN, per variant. Each
    point runs in a process of its own (the models of one point are not freed in time for
    the next: the RSS grew by their size at every point)."""
    rows = []
    for k, (axis, value, point) in enumerate(sweep_points(opts), 1):
        write(f"sweep point {k}: {axis} = {value}")
        result = in_child(point, "--point-child", quiet=False)
        for n in result["names"]:
            rows.append({
                "axis": axis, "value": value, "name": n, "params": result["params"][n],
                "train_s_per_tok": 1.0 / result["train_tok_s"][n],
                "gen_s_per_tok": 1.0 / (result["gen_sent_s"][n] * point.gen_len),
                "train_ratio": result["train_ratio"][n], "gen_ratio": result["gen_ratio"][n],
            })
        if opts.json_out:  # the points measured so far, should a later one fail
            write_json(opts.json_out, {"options": vars(opts), "sweep": rows})
    return rows


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
                  f"{'met' if ok else 'MISSED'}")
    print("  saved activations: distinct storages autograd keeps in one training forward of the "
          "first batch (exact, parameters left out)")
    if "mem_kind" in result:
        print(f"  memory: {result['mem_kind']}")
    return ok_all


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--archs", nargs="+", choices=candidates(), default=candidates(),
                   help="the candidates (default: every variant of fairseq_rskip/variants.py that is "
                   "not fairseq's own)")
    p.add_argument("--size", default="iwslt_de_en", help="size suffix: iwslt_de_en, tiny, base, ...")
    p.add_argument("--layers", type=int, help="encoder and decoder layers (default: the size's)")
    p.add_argument("--data", help="data-bin (default work/bundled/data-bin of the current directory, "
                   "if present)")
    p.add_argument("--split", default="valid")
    p.add_argument("--vocab", type=int, default=10000, help="dictionary size without --data")
    p.add_argument("--random-len", type=int, default=25)
    p.add_argument("--max-tokens", type=int, default=1024)
    p.add_argument("--dropout", type=float, default=0.3)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--warmup-steps", type=int, default=1)
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--gen-sentences", type=int, default=16)
    p.add_argument("--gen-len", type=int, default=20)
    p.add_argument("--gen-repeats", type=int, default=1)
    p.add_argument("--mem-reps", type=int, default=3, help="0: no memory measurement")
    p.add_argument("--mem-steps", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--flush-denormal", action="store_true",
                   help="CPU: treat subnormal floats as zero (torch.set_flush_denormal), to see "
                        "what they cost; training with fairseq-train keeps them")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--precision", choices=list(PRECISIONS), default="fp32",
                   help="fp16/bf16: torch.autocast with float32 weights (fairseq's --amp)")
    p.add_argument("--sweep", nargs="+", choices=SWEEP_AXES,
                   help="repeat the comparison while each of these axes grows (no memory part)")
    p.add_argument("--sweep-lengths", type=int, nargs="+", default=[16, 32, 64, 128])
    p.add_argument("--sweep-depths", type=int, nargs="+", default=[3, 6, 12])
    p.add_argument("--sweep-sizes", nargs="+", default=["iwslt_de_en", "wmt_en_de"])
    p.add_argument("--plot", help="with --sweep: write the figure here")
    p.add_argument("--json-out", help="write the figures as JSON")
    p.add_argument("--memory-child", help=argparse.SUPPRESS)
    p.add_argument("--point-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--child-opts", help=argparse.SUPPRESS)
    p.add_argument("--quick", action="store_true",
                   help="smoke test: tiny size, 2 repetitions of 2 updates, small generation")
    opts = p.parse_args(argv)
    if opts.quick:
        opts.size, opts.max_tokens, opts.reps, opts.steps = "tiny", 256, 2, 2
        opts.gen_sentences, opts.gen_len, opts.mem_reps, opts.mem_steps = 4, 5, 1, 1
        opts.vocab = 500
    if opts.data is None and not opts.quick and Path("work/bundled/data-bin").is_dir():
        opts.data = "work/bundled/data-bin"
    return opts


def main(argv=None) -> int:
    opts = parse(argv)
    if opts.memory_child or opts.point_child:
        child = argparse.Namespace(**json.loads(opts.child_opts))
        figures = _memory_child(opts.memory_child, child) if opts.memory_child else run(child)
        print(RESULT + json.dumps(figures), flush=True)
        return 0
    import logging

    logging.basicConfig(level=logging.WARNING, force=True)
    import torch

    print(f"benchmark_throughput: torch {torch.__version__}, python {platform.python_version()}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs", flush=True)
    if opts.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: torch sees no GPU here (torch.cuda.is_available() is False)")
    if opts.device == "cuda":
        print(f"GPU: {torch.cuda.get_device_name(0)}", flush=True)
    if opts.sweep:
        rows = run_sweep(opts)
        report_sweep(rows, opts)
        if opts.plot:
            print(f"wrote {plot_sweep(rows, opts.plot, opts)}")
        if opts.json_out:
            write_json(opts.json_out, {"options": vars(opts), "sweep": rows})
        return 0
    result = run(opts)
    ok = report(result, opts)
    print(f"all targets met: {ok}")
    if opts.json_out:
        write_json(opts.json_out, {"options": vars(opts), **result, "all_targets_met": ok})
    return 0


def cli_main(argv=None) -> int:
    return run_main(main, argv)


if __name__ == "__main__":
    sys.exit(cli_main())
