"""Longer sentences from a data-bin: consecutive pairs joined into one.

Each new pair is ``k`` consecutive pairs of a split, their sources joined and
their targets joined (each sentence's end-of-sentence token dropped but the
last), ``k`` drawn uniformly from ``[min_pairs, max_pairs]`` with a fixed
seed; the dictionaries are the original's, so a model trained on the original
data-bin reads the new one. For measuring (or training on) targets longer
than the corpus has: the bundled corpus's targets are at most 59 tokens.
"""

import random
import shutil
from pathlib import Path
from typing import Dict, Sequence

import torch

from fairseq_rskip.errors import UserError
from fairseq_rskip.file_io import atomic_output


def _pairs_of(data: Path):
    """``(src, tgt)`` languages of a data-bin, from its ``SPLIT.SRC-TGT.SRC.idx`` files."""
    found = sorted({p.name.split(".")[1] for p in data.glob("*.*-*.*.idx")})
    if len(found) != 1:
        raise UserError(f"{data}: expected the files of one language pair (SPLIT.SRC-TGT.LANG.idx); "
                        f"found {found or 'none'}")
    src, tgt = found[0].split("-")
    return src, tgt


def groups(n: int, min_pairs: int, max_pairs: int, seed: int):
    """Consecutive index ranges covering ``0 .. n - 1``, each of ``min_pairs`` to
    ``max_pairs`` items (the last may be shorter)."""
    rng = random.Random(seed)
    start = 0
    while start < n:
        k = rng.randint(min_pairs, max_pairs)
        yield range(start, min(n, start + k))
        start += k


def join(sentences: Sequence[torch.Tensor], eos: int) -> torch.Tensor:
    """One sentence of several: each one's final ``eos`` dropped, one ``eos`` at the end."""
    parts = [s[:-1] if len(s) and int(s[-1]) == eos else s for s in sentences]
    return torch.cat([*parts, torch.tensor([eos], dtype=parts[0].dtype)])


def concatenate(data: str, dest: str, min_pairs: int, max_pairs: int,
                splits: Sequence[str] = ("valid", "test"), seed: int = 1) -> Path:
    """Write ``dest``: the data-bin ``data``'s dictionaries and, for each of ``splits``,
    its pairs concatenated by :func:`groups`; returns ``dest``."""
    from fairseq.data import Dictionary, data_utils, indexed_dataset

    if not 1 <= min_pairs <= max_pairs:
        raise UserError(f"--pairs needs 1 <= MIN <= MAX; got {min_pairs} {max_pairs}")
    source = Path(data)
    if not source.is_dir():
        raise UserError(f"--data {data}: no such data-bin folder")
    src, tgt = _pairs_of(source)
    counts: Dict[str, int] = {}
    with atomic_output(Path(dest)) as tmp:
        tmp.mkdir()
        for lang in (src, tgt):
            shutil.copyfile(source / f"dict.{lang}.txt", tmp / f"dict.{lang}.txt")
        eos = Dictionary.load(str(source / f"dict.{tgt}.txt")).eos()
        for split in splits:
            prefix = f"{split}.{src}-{tgt}"
            sets = {lang: data_utils.load_indexed_dataset(str(source / f"{prefix}.{lang}"), None)
                    for lang in (src, tgt)}
            if any(s is None for s in sets.values()):
                raise UserError(f"{data}: no split {split!r} ({prefix}.{src}/.{tgt}.idx)")
            n = len(sets[src])
            builders = {lang: indexed_dataset.make_builder(str(tmp / f"{prefix}.{lang}.bin"), "mmap")
                        for lang in (src, tgt)}
            counts[split] = 0
            for group in groups(n, min_pairs, max_pairs, seed):
                for lang in (src, tgt):
                    builders[lang].add_item(join([sets[lang][i] for i in group], eos))
                counts[split] += 1
            for lang in (src, tgt):
                builders[lang].finalize(str(tmp / f"{prefix}.{lang}.idx"))
        (tmp / "concatenated.txt").write_text(
            f"{data}: {min_pairs} to {max_pairs} consecutive pairs joined, seed {seed}; "
            + ", ".join(f"{k} {v}" for k, v in counts.items()) + "\n", encoding="utf-8")
    return Path(dest)
