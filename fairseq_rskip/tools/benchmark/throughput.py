"""Training throughput, generation speed and peak memory against fairseq's stock transformer.

    rskip-benchmark                 # iwslt_de_en size, CPU
    rskip-benchmark --quick         # smoke test, seconds
    rskip-benchmark --sweep length width depth --plot cost_sweep.png
    rskip-benchmark --device cuda --precision fp16   # on a GPU

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
    it exists), else random batches of a ``--vocab``-word dictionary. Each
    candidate is one comparison: its models (the baseline, ``preln`` when it
    is measured, the candidate's reference and the candidate) live in a child
    process of their own (with one candidate, in the benchmark's process), so
    the benchmark's memory is that of one comparison however many candidates
    ``--archs`` holds. Each repetition runs
    ``--warmup-steps`` untimed updates of every model of the comparison, then
    ``--steps`` rounds in which every model, in an order rotated per
    repetition, does one timed update. Reported: the median tokens/s over the
    timed updates, and the median over rounds of the ratio candidate /
    baseline within a round (paired, so slow phases of a shared machine
    cancel out); a baseline measured in several comparisons pools them.
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
import statistics

from fairseq_rskip.file_io import write_json
from fairseq_rskip.progress import progress_bar, write
from fairseq_rskip.tools.benchmark.measure import BASELINE, compare, configure_torch
from fairseq_rskip.tools.common.child_process import run_python_child
from fairseq_rskip.variants import VARIANTS


def measured_names(archs) -> list:
    """The baseline, the candidates' like-for-like references, then the candidates."""
    return list(dict.fromkeys([BASELINE] + [VARIANTS[a].reference for a in archs] + list(archs)))


def comparison_names(candidate: str, archs) -> list:
    """The models timed together with ``candidate``: the baseline, ``preln`` when the
    benchmark measures it (every row then has its ratio to Pre-LN), the candidate's
    reference, the candidate."""
    names = measured_names([candidate])
    if "preln" in measured_names(archs) and "preln" not in names:
        names.insert(1, "preln")
    return names


# ----------------------------------------------------------------------------
# child processes: one comparison, one model's memory, one point of a sweep


def in_child(opts, *flags: str, quiet: bool = True) -> dict:
    """The figures of this module run again in a fresh process with ``flags``
    (``--comparison-child NAME``, ``--memory-child NAME`` or ``--point-child``) and
    ``opts``, importing the same fairseq_rskip: what one measurement allocated never stays
    for the next. Its other lines are printed as they come; its stderr is kept for an
    error (``quiet``) or left to show its progress bars."""
    return run_python_child(
        ["-m", "fairseq_rskip.tools.benchmark.cli", *flags, "--child-opts", json.dumps(vars(opts))],
        what=" ".join(flags), echo=write, quiet=quiet)


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


def run_comparisons(opts) -> list:
    """The raw figures of each candidate's comparison: of several, each measured in a child
    process of its own (their models never live side by side); of one, in this process."""
    if len(opts.archs) == 1:
        return [compare(comparison_names(opts.archs[0], opts.archs), opts)]
    return [in_child(opts, "--comparison-child", name, quiet=False) for name in opts.archs]


# ----------------------------------------------------------------------------


def pooled(comparisons: list, names: list) -> dict:
    """Each model's figures over the comparisons that measured it: the medians of its
    tokens/s and sentences/s, and of its ratios to a baseline paired within each
    comparison's rounds (a candidate is in one comparison: its ratios are that one's)."""
    def values(key, n):
        return [v for c in comparisons if n in c["names"] for v in c[key][n]]

    def paired(key, n, base):
        return statistics.median(v / b for c in comparisons if n in c["names"]
                                 for v, b in zip(c[key][n], c[key][base]))

    first = {n: next(c for c in comparisons if n in c["names"]) for n in names}
    train = {n: values("train", n) for n in names}
    gen = {n: values("gen", n) for n in names}
    saved = {n: first[n]["saved_mib"][n] for n in names}
    with_preln = [n for n in names if "preln" in names]
    return {"names": names, "params": {n: first[n]["params"][n] for n in names},
            "saved_mib": saved, "saved_ratio": {n: saved[n] / saved[BASELINE] for n in names},
            "train_tok_s": {n: statistics.median(v) for n, v in train.items()},
            "gen_sent_s": {n: statistics.median(v) for n, v in gen.items()},
            "train_ratio": {n: paired("train", n, BASELINE) for n in names},
            "gen_ratio": {n: paired("gen", n, BASELINE) for n in names},
            "train_ratio_preln": {n: paired("train", n, "preln") for n in with_preln},
            "gen_ratio_preln": {n: paired("gen", n, "preln") for n in with_preln},
            "raw": {"train": train, "gen": gen, "gpu_mem": {n: values("gpu_mem", n) for n in names}},
            "comparisons": [{"names": c["names"], "pid": c["pid"]} for c in comparisons]}


def run(opts) -> dict:
    """The benchmark's figures: each candidate's comparison in a child process of its own,
    pooled; then, on CPU, each model's peak memory in children of their own."""
    configure_torch(opts)  # as in the children (--flush-denormal holds here too)
    names = measured_names(opts.archs)
    result = pooled(run_comparisons(opts), names)
    if opts.device == "cuda":
        mem = {n: {"peak_mib": max(v)} for n, v in result["raw"]["gpu_mem"].items()}
        result["memory"] = mem
        result["mem_ratio"] = {n: mem[n]["peak_mib"] / mem[BASELINE]["peak_mib"] for n in names}
        result["mem_kind"] = "torch.cuda.max_memory_allocated over the timed updates"
    elif opts.mem_reps > 0:
        mem = measure_memory_cpu(names, opts)
        result["memory"] = mem
        result["mem_ratio"] = {n: mem[n]["peak_rss_mib"] / mem[BASELINE]["peak_rss_mib"] for n in names}
        result["mem_ratio_above_base"] = {
            n: mem[n]["above_base_mib"] / mem[BASELINE]["above_base_mib"] for n in names}
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
