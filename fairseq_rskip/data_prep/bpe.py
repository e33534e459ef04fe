"""Joint BPE over source and target: subword-nmt (fairseq's recipes) or sentencepiece.

``--bpe-size`` means the number of merge operations for subword-nmt (what
fairseq's recipes pass to learn_bpe.py -s) and the vocabulary size for
sentencepiece. A size the training text cannot support is an error rather
than a silently smaller model.
"""

import os
import re

from fairseq_rskip.data_prep.common import logger
from fairseq_rskip.data_prep.text import iter_lines, map_lines
from fairseq_rskip.errors import UserError

BPE_CHOICES = ("subword_nmt", "sentencepiece", "none")


def model_filename(kind):
    return {"subword_nmt": "bpe.codes", "sentencepiece": "spm.model"}[kind]


def learn(kind, train_files, size, model_path, workdir):
    """Learn a joint BPE model from ``train_files`` and write it to ``model_path`` (a temporary path)."""
    if kind == "subword_nmt":
        _learn_subword_nmt(train_files, size, model_path, workdir)
    elif kind == "sentencepiece":
        _learn_sentencepiece(train_files, size, model_path, workdir)
    else:
        raise ValueError(kind)


def _learn_subword_nmt(train_files, size, model_path, workdir):
    os.environ.setdefault("TQDM_DISABLE", "1")  # subword-nmt's progress bar, one line per merge batch
    from subword_nmt import learn_bpe

    joint = workdir / "bpe-train.txt"
    with open(joint, "w", encoding="utf-8") as out:
        for path in train_files:
            for _, line in iter_lines(path):
                out.write(line + "\n")
    try:
        with open(joint, encoding="utf-8") as fin, open(model_path, "w", encoding="utf-8") as fout:
            learn_bpe.learn_bpe(fin, fout, size, min_frequency=2)
    finally:
        joint.unlink()
    with open(model_path, encoding="utf-8") as f:
        merges = sum(1 for line in f if not line.startswith("#version"))
    if merges < size:
        raise UserError(
            f"BPE size {size} is larger than this training text allows: subword-nmt found only "
            f"{merges} merges of pairs seen at least twice; use --bpe-size {merges} or less"
        )


def _learn_sentencepiece(train_files, size, model_path, workdir):
    import sentencepiece as spm

    prefix = workdir / "spm"
    try:
        spm.SentencePieceTrainer.train(
            input=",".join(str(p) for p in train_files),
            model_prefix=str(prefix),
            vocab_size=size,
            model_type="bpe",
            character_coverage=1.0,
            input_sentence_size=10_000_000,
            shuffle_input_sentence=True,
            bos_id=-1,
            eos_id=-1,
            minloglevel=2,
        )
    except RuntimeError as e:
        m = re.search(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)", str(e))
        if m:
            raise UserError(
                f"BPE size {size} is larger than this training text allows: sentencepiece can build "
                f"at most {m.group(2)} pieces; use --bpe-size {m.group(2)} or less"
            ) from None
        m = re.search(r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)", str(e))
        if m:
            raise UserError(
                f"BPE size {size} is too small: sentencepiece needs at least {m.group(2)} pieces for the "
                f"characters of the training text and its special symbols; use --bpe-size {m.group(2)} or more"
            ) from None
        raise UserError(f"sentencepiece training failed: {e}") from None
    prefix.with_suffix(".model").replace(model_path)
    vocab = prefix.with_suffix(".vocab")
    if vocab.exists():
        vocab.unlink()


class _Encoder:
    """One line in, its segmentation out; loads the model on first use (once per worker)."""

    def __init__(self, kind, model_path):
        self.kind, self.model_path = kind, str(model_path)
        self._impl = None

    def __call__(self, line):
        if self._impl is None:
            if self.kind == "subword_nmt":
                from subword_nmt.apply_bpe import BPE

                with open(self.model_path, encoding="utf-8") as f:
                    self._impl = BPE(f).process_line
            else:
                import sentencepiece as spm

                sp = spm.SentencePieceProcessor(model_file=self.model_path)
                self._impl = lambda text: " ".join(sp.encode(text, out_type=str))
        return self._impl(line).strip()


def apply(kind, model_path, in_path, out_path, workers=1):
    """Segment every line of ``in_path`` into ``out_path``."""
    with open(out_path, "w", encoding="utf-8") as out:
        for line in map_lines(_Encoder(kind, model_path), in_path, chunk=5000, workers=workers):
            out.write(line + "\n")
    logger.debug("segmented %s -> %s", in_path, out_path)


def post_process_flag(kind):
    """The fairseq-generate option that undoes this segmentation."""
    return {"subword_nmt": ["--remove-bpe"], "sentencepiece": ["--post-process", "sentencepiece"], "none": []}[kind]
