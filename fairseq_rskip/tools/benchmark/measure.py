"""The benchmark's measurements, made inside a child process: fairseq-built models at one
size, their training updates, generation passes and saved activations, the paired timing
of one comparison (:func:`compare`) and the peak memory of one model (:func:`memory_of`).
See :mod:`fairseq_rskip.tools.benchmark.throughput` for what is measured and how."""

import os
import statistics
import time

from fairseq_rskip.tools.common.child_process import rss_mib, vm_hwm_kib
from fairseq_rskip.errors import UserError
from fairseq_rskip.progress import progress_bar, write
from fairseq_rskip.variants import VARIANTS

BASELINE = "postln"


def model_flags(opts) -> list:
    flags = ["--dropout", str(opts.dropout)]
    if opts.layers:
        flags += ["--encoder-layers", str(opts.layers), "--decoder-layers", str(opts.layers)]
    return flags


def load_batches(opts, n: int):
    """``(dictionary, batches)``: real fairseq batches of the data-bin, or random ones."""
    from fairseq_rskip.tools.common import modelbuild

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

    from fairseq_rskip.tools.common import modelbuild

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
    from fairseq_rskip.tools.common.memory import saved_activation_bytes

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



def memory_of(name: str, opts) -> dict:
    """In a fresh process: RSS before building ``name``, and the peak after training it."""
    import logging

    logging.disable(logging.WARNING)
    configure_torch(opts)
    src, tgt, batches = load_batches(opts, opts.mem_steps)
    before = rss_mib()
    model, crit, opt = build(name, opts, src, tgt)
    train_steps(model, crit, opt, batches, opts.mem_steps, opts)
    peak = vm_hwm_kib() / 1024
    return {"peak_rss_mib": peak, "above_base_mib": peak - before}


def compare(names, opts) -> dict:
    """The paired timing of one comparison, all its models in this process: ``opts.reps``
    repetitions, each of ``--warmup-steps`` untimed updates of every model, then
    ``--steps`` rounds of one timed update of each model in turn (the order rotated per
    repetition: a slow phase of a shared machine hits all of them alike), then the
    generation passes. Returns the raw figures: tokens/s of each timed update, sentences/s
    of each repetition's generation, parameters and saved activations of each model, and
    the id of the process that measured them."""
    configure_torch(opts)
    src, tgt, batches = load_batches(opts, max(4, opts.steps + opts.warmup_steps))
    batches = [to_device(b, opts.device) for b in batches]
    models = {n: build(n, opts, src, tgt) for n in names}
    figures = {"names": list(names), "pid": os.getpid(),
               "params": {n: sum(p.numel() for p in m[0].parameters()) for n, m in models.items()},
               "saved_mib": {n: saved_for_backward_mib(*models[n][:2], batches[0], opts)
                             for n in names},
               "train": {n: [] for n in names}, "gen": {n: [] for n in names},
               "gpu_mem": {n: [] for n in names}}
    gens = generators(models, tgt, opts)
    gen_sample = generation_sample(batches, opts.gen_sentences)
    # one step of work: an update or a generation pass of one model
    per_rep = len(names) * (opts.warmup_steps + opts.steps + 1 + opts.gen_repeats)
    with progress_bar(opts.reps * per_rep, desc=f"timing {names[-1]}", unit="step") as bar:
        for rep in range(opts.reps):
            order = names[rep % len(names):] + names[:rep % len(names)]
            time_training(models, order, batches, figures, bar, opts)
            time_generation(models, gens, order, gen_sample, figures, bar, opts)
            write(f"  repetition {rep + 1}/{opts.reps}: " + ", ".join(
                f"{n} {statistics.median(figures['train'][n][-opts.steps:]):.0f} tok/s "
                f"{figures['gen'][n][-1]:.2f} sent/s" for n in names))
    return figures


def generators(models: dict, tgt_dict, opts) -> dict:
    """fairseq's beam search for each model, every hypothesis forced to ``--gen-len`` tokens."""
    from fairseq.sequence_generator import SequenceGenerator

    return {n: SequenceGenerator([m[0]], tgt_dict, beam_size=opts.beam, max_len_a=0,
                                 max_len_b=opts.gen_len, min_len=opts.gen_len)
            for n, m in models.items()}


def time_training(models: dict, order, batches, figures: dict, bar, opts) -> None:
    """One repetition's updates: the untimed warm-up of each model, then ``--steps`` rounds
    of one timed update of each model in ``order``."""
    import torch

    for n in order:
        train_steps(*models[n], batches, opts.warmup_steps, opts)
        bar.update(opts.warmup_steps)
    for i in range(opts.steps):
        for n in order:
            sync(opts.device)
            if opts.device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            t = time.perf_counter()
            ntok = train_steps(*models[n], batches, 1, opts, offset=opts.warmup_steps + i)
            sync(opts.device)
            figures["train"][n].append(ntok / (time.perf_counter() - t))
            if opts.device == "cuda":
                figures["gpu_mem"][n].append(torch.cuda.max_memory_allocated() / 2**20)
            bar.update(1)


def time_generation(models: dict, gens: dict, order, sample, figures: dict, bar, opts) -> None:
    """One repetition's generation: an untimed pass of each model, then ``--gen-repeats``
    timed passes of each model in ``order``."""
    for n in order:
        generate_once(gens[n], models[n][0], sample, opts)  # warm-up
        bar.update(1)
    for n in order:
        t = time.perf_counter()
        k = 0
        for _ in range(opts.gen_repeats):
            k += generate_once(gens[n], models[n][0], sample, opts)
            bar.update(1)
        figures["gen"][n].append(k / (time.perf_counter() - t))
