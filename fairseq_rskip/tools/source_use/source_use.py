"""How much a trained translation model uses its source, and its loss by target length.

For a fairseq checkpoint and a split of its data-bin, in evaluation mode, over
every sentence of the split (batches of ``max_tokens``):

- the cross-entropy in bits per target token (plain, not label-smoothed);
- the same with each target paired with another sentence's source (the
  batch's sources rolled by one): the difference, in bits, is what the source
  is worth to the model (0 for a language model of the target);
- both by target length (real tokens, end of sentence included), in the
  buckets of ``BUCKETS``: a model that breaks down on long targets shows it
  there before its mean moves.

Several checkpoints of one name (a model's seeds, in seed order) are summed up
by :func:`seed_summary`, and two names compared seed by seed by
:func:`paired_differences` (mean and Student's t-interval).
"""

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from fairseq_rskip.tools.common.modelbuild import split_batches
from fairseq_rskip.tools.common.intervals import mean_and_range, t_interval

# target-length buckets [low, high) in tokens
BUCKETS: Tuple[Tuple[int, float], ...] = ((1, 10), (10, 20), (20, 30), (30, 40), (40, 60), (60, math.inf))


def bucket_label(low: int, high: float) -> str:
    return f"{low}+" if high == math.inf else f"{low}-{int(high) - 1}"


@dataclass
class Totals:
    """Summed nats and token counts, with and without the right source."""

    nats: float = 0.0
    nats_other: float = 0.0
    tokens: int = 0
    sentences: int = 0

    def add(self, nats: float, nats_other: float, tokens: int, sentences: int) -> None:
        self.nats += nats
        self.nats_other += nats_other
        self.tokens += tokens
        self.sentences += sentences

    @property
    def bits(self) -> float:
        return self.nats / self.tokens / math.log(2) if self.tokens else math.nan

    @property
    def bits_other(self) -> float:
        return self.nats_other / self.tokens / math.log(2) if self.tokens else math.nan

    @property
    def source_worth(self) -> float:
        return self.bits_other - self.bits


@dataclass
class SourceUse:
    """The measurement of one checkpoint: all sentences, and by target-length bucket."""

    name: str
    total: Totals = field(default_factory=Totals)
    buckets: Dict[Tuple[int, float], Totals] = field(
        default_factory=lambda: {b: Totals() for b in BUCKETS})


def token_nats(model, net_input: dict, target: torch.Tensor, pad: int) -> torch.Tensor:
    """Per-token cross-entropy (nats) of ``target`` under ``model``; padding 0."""
    logits, _ = model(**net_input)
    nats = torch.nn.functional.cross_entropy(
        logits.float().view(-1, logits.size(-1)), target.view(-1), ignore_index=pad, reduction="none")
    return nats.view_as(target)


def rolled_source(net_input: dict) -> dict:
    """The batch with each target paired with the previous sentence's source."""
    other = dict(net_input)
    other["src_tokens"] = net_input["src_tokens"].roll(1, 0)
    other["src_lengths"] = net_input["src_lengths"].roll(1, 0)
    return other


@torch.no_grad()
def measure(model, batches, pad: int, name: str = "") -> SourceUse:
    """:class:`SourceUse` of ``model`` (put in evaluation mode) over fairseq ``batches``.
    A batch of one sentence has no other source and is left out."""
    model.eval()
    result = SourceUse(name)
    for sample in batches:
        target = sample["target"]
        if target.size(0) < 2:
            continue
        real = target.ne(pad)
        nats = token_nats(model, sample["net_input"], target, pad).sum(1)
        other = token_nats(model, rolled_source(sample["net_input"]), target, pad).sum(1)
        lengths = real.sum(1)
        result.total.add(float(nats.sum()), float(other.sum()), int(lengths.sum()), target.size(0))
        for (low, high), totals in result.buckets.items():
            chosen = (lengths >= low) & (lengths < high)
            if chosen.any():
                totals.add(float(nats[chosen].sum()), float(other[chosen].sum()),
                           int(lengths[chosen].sum()), int(chosen.sum()))
    return result


def load(checkpoint: str, data: str, split: str, max_tokens: int):
    """``(model, batches, pad)``: a fairseq checkpoint's model as it was trained, and the
    batches of ``split`` of ``data`` (every sentence, in fairseq's order)."""
    from fairseq import checkpoint_utils

    import fairseq_rskip  # noqa: F401  (registers the architectures)
    from fairseq_rskip.checkpoint_compat import check_checkpoint_file
    from fairseq_rskip.fairseq_tools import PLUGIN_DIR

    check_checkpoint_file(checkpoint)
    models, _cfg, task = checkpoint_utils.load_model_ensemble_and_task(
        [checkpoint], arg_overrides={"data": data, "user_dir": str(PLUGIN_DIR)})
    return models[0], split_batches(task, split, max_tokens, shuffle=False), task.target_dictionary.pad()


def markdown(results: Sequence[SourceUse]) -> str:
    """Two tables: source use over all sentences, and cross-entropy by target length."""
    lines = ["| model | sentences | target tokens | cross-entropy (bits) | with another sentence's "
             "source | the source is worth (bits) |", "|---|---|---|---|---|---|"]
    for r in results:
        t = r.total
        lines.append(f"| {r.name} | {t.sentences} | {t.tokens} | {t.bits:.3f} | {t.bits_other:.3f} | "
                     f"{t.source_worth:.3f} |")
    labels = [bucket_label(*b) for b in BUCKETS]
    lines += ["", "Cross-entropy (bits) by target length in tokens (sentences in brackets):", "",
              "| model | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
    for r in results:
        cells = [f"{t.bits:.3f} ({t.sentences})" if t.sentences else "-" for t in r.buckets.values()]
        lines.append(f"| {r.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def worst_bucket_gap(result: SourceUse, reference: Tuple[int, int] = (10, 30)) -> Optional[float]:
    """The largest bucket cross-entropy minus that of targets of ``reference`` tokens
    (10-29 by default), over the buckets with sentences; None without reference sentences."""
    low, high = reference
    ref = Totals()
    for (b_low, b_high), t in result.buckets.items():
        if b_low >= low and b_high <= high:
            ref.add(t.nats, t.nats_other, t.tokens, t.sentences)
    if not ref.tokens:
        return None
    return max(t.bits for t in result.buckets.values() if t.tokens) - ref.bits


def rows(results: Sequence[SourceUse]) -> List[dict]:
    """One CSV row per model and bucket (bucket ``all`` first)."""
    out = []
    for r in results:
        for label, t in [("all", r.total)] + [(bucket_label(*b), t) for b, t in r.buckets.items()]:
            out.append({"model": r.name, "target_tokens": label, "sentences": t.sentences,
                        "tokens": t.tokens, "bits": round(t.bits, 4) if t.tokens else "",
                        "bits_other_source": round(t.bits_other, 4) if t.tokens else "",
                        "source_worth": round(t.source_worth, 4) if t.tokens else ""})
    return out


def by_name(results: Sequence[SourceUse]) -> Dict[str, List[SourceUse]]:
    """The results of each name, in the order given (a name's seeds)."""
    grouped: Dict[str, List[SourceUse]] = defaultdict(list)
    for r in results:
        grouped[r.name].append(r)
    return dict(grouped)


def seed_summary(results: Sequence[SourceUse]) -> str:
    """Per name: the number of checkpoints, and the mean (range) of the cross-entropy, of
    what the source is worth, of the cross-entropy of the longest targets (the last bucket)
    and of the largest bucket gap (:func:`worst_bucket_gap`)."""
    longest = BUCKETS[-1]
    lines = ["| model | checkpoints | cross-entropy (bits) | the source is worth (bits) | "
             f"{bucket_label(*longest)} tokens | worst bucket minus 10-29 tokens |",
             "|---|---|---|---|---|---|"]
    for name, group in by_name(results).items():
        gaps = [g for g in (worst_bucket_gap(r) for r in group) if g is not None]
        long = [r.buckets[longest].bits for r in group if r.buckets[longest].tokens]
        cells = [[r.total.bits for r in group], [r.total.source_worth for r in group], long, gaps]
        lines.append(f"| {name} | {len(group)} | "
                     + " | ".join(mean_and_range(v, sep=" to ") if v else "-" for v in cells) + " |")
    return "\n".join(lines)


def paired_differences(results: Sequence[SourceUse], first: str, second: str) -> str:
    """``first - second``, checkpoint by checkpoint in the order given (seed k with seed k):
    the differences of cross-entropy and of the source's worth, their mean and 95% t-interval."""
    grouped = by_name(results)
    for name in (first, second):
        if name not in grouped:
            raise KeyError(name)
    pairs = list(zip(grouped[first], grouped[second]))
    lines = [f"{first} - {second}, paired by checkpoint order ({len(pairs)} pairs):", "",
             "| measure | mean | 95% interval | per pair |", "|---|---|---|---|"]
    for measure, value in (("cross-entropy", lambda r: r.total.bits),
                           ("the source is worth", lambda r: r.total.source_worth)):
        diffs = [value(a) - value(b) for a, b in pairs]
        iv = t_interval(diffs)
        interval = "-" if iv is None or iv["low"] is None else f"{iv['low']:+.3f} to {iv['high']:+.3f}"
        mean = "-" if iv is None else f"{iv['mean']:+.3f}"
        lines.append(f"| {measure} | {mean} | {interval} | " + ", ".join(f"{d:+.3f}" for d in diffs) + " |")
    return "\n".join(lines)
