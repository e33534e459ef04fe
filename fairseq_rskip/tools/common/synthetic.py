"""A tiny synthetic translation corpus, binarised with ``fairseq-preprocess``.

For development and tests only (no network, a few seconds): the "source
language" is random words ``w0 .. w{V-1}``, the "target" maps each word to
``v{(7*i + 3) % V}`` and reverses the sentence, so a Transformer must learn
both a lexicon and a re-ordering through attention, and its validation loss
falls over a few hundred updates on CPU.
"""

import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

from fairseq_rskip.fairseq_tools import fairseq_executable

SRC, TGT = "src", "tgt"


def synthetic_pairs(n: int, vocab: int = 40, min_len: int = 3, max_len: int = 12,
                    seed: int = 0) -> List[Tuple[str, str]]:
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        ids = [rng.randrange(vocab) for _ in range(rng.randint(min_len, max_len))]
        src = " ".join(f"w{i}" for i in ids)
        tgt = " ".join(f"v{(7 * i + 3) % vocab}" for i in reversed(ids))
        pairs.append((src, tgt))
    return pairs


def write_raw(dest: Path, sizes: Dict[str, int], vocab: int = 40, seed: int = 0) -> Path:
    raw = Path(dest) / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for k, (split, n) in enumerate(sizes.items()):
        pairs = synthetic_pairs(n, vocab=vocab, seed=seed * 1000 + k)
        for side, lang in ((0, SRC), (1, TGT)):
            with open(raw / f"{split}.{lang}", "w", encoding="utf-8") as f:
                f.write("".join(p[side] + "\n" for p in pairs))
    return raw


def make_synthetic_databin(dest, n_train: int = 400, n_valid: int = 40, n_test: int = 40,
                           vocab: int = 40, seed: int = 0, workers: int = 1) -> Path:
    """Write the corpus under ``dest/raw`` and binarise it into ``dest`` (returned).

    Does nothing if ``dest/dict.src.txt`` already exists.
    """
    dest = Path(dest)
    if (dest / f"dict.{SRC}.txt").exists() and (dest / "test.src-tgt.tgt.bin").exists():
        return dest
    raw = write_raw(dest, {"train": n_train, "valid": n_valid, "test": n_test}, vocab, seed)
    cmd = [fairseq_executable("fairseq-preprocess"),
           "--source-lang", SRC, "--target-lang", TGT,
           "--trainpref", str(raw / "train"), "--validpref", str(raw / "valid"),
           "--testpref", str(raw / "test"), "--destdir", str(dest),
           "--workers", str(workers)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                   env={**os.environ, "PYTHONWARNINGS": "ignore"})
    return dest


if __name__ == "__main__":  # python -m fairseq_rskip.tools.common.synthetic DEST
    print(make_synthetic_databin(sys.argv[1] if len(sys.argv) > 1 else "data-bin/synthetic"))
