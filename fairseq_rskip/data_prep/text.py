"""Text-level steps shared by every data set: validation, tokenisation, cleaning.

Tokenisation uses sacremoses, the maintained Python port of the Moses
scripts fairseq's recipes call (normalize-punctuation.perl,
remove-non-printing-char.perl, tokenizer.perl with its default escaping,
clean-corpus-n.perl's length and ratio rules, lowercase.perl).
"""

import itertools
import multiprocessing
import unicodedata
from pathlib import Path

from fairseq_rskip.errors import UserError

MAX_REPORTED = 5


def check_line_breaks(path, sample_bytes=1 << 20):
    """Refuse a file whose lines end in CR alone (classic Mac OS): read by LF it would be a
    few very long lines, its sentences glued together. Decided on the first ``sample_bytes``:
    more lone CRs than LFs."""
    with open(path, "rb") as f:
        sample = f.read(sample_bytes)
    lone_cr = sample.count(b"\r") - sample.count(b"\r\n")
    if lone_cr > 0 and lone_cr > sample.count(b"\n"):
        raise UserError(
            f"{path}: its lines end in CR alone (old Mac OS line breaks), not LF or CR LF; "
            f"convert them first, e.g. tr '\\r' '\\n' < {path} > {path}.unix"
        )


def iter_lines(path):
    """Yield ``(line_number, text)`` of a UTF-8 file, without the line ending.

    Raises UserError naming the file, line and byte offset of the first line
    that is not valid UTF-8, or naming a file with CR-only line breaks.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"input file not found: {path}")
    check_line_breaks(path)
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise UserError(
                    f"{path}:{n}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1}); "
                    "convert the file to UTF-8 first"
                ) from None
            if n == 1 and text.startswith("\ufeff"):
                text = text[1:]
            yield n, text.rstrip("\r\n")


def read_lines(path):
    return [t for _, t in iter_lines(path)]


def validate_parallel(src_path, tgt_path, allow_empty=False):
    """Check that two files are a valid parallel pair; return the number of lines.

    Both must be UTF-8, have the same number of lines, and (unless
    ``allow_empty``) contain no blank line (:func:`is_blank`).
    """
    empty = []
    n_src = n_tgt = 0
    for a, b in itertools.zip_longest(iter_lines(src_path), iter_lines(tgt_path)):
        if a is not None:
            n_src = a[0]
        if b is not None:
            n_tgt = b[0]
        if not allow_empty:
            for item, path in ((a, src_path), (b, tgt_path)):
                if item is not None and is_blank(item[1]):
                    empty.append(f"{path}:{item[0]}")
    if n_src != n_tgt:
        raise UserError(
            f"source and target have different line counts: {src_path} has {n_src} lines, "
            f"{tgt_path} has {n_tgt}; they must be sentence-aligned"
        )
    if n_src == 0:
        raise UserError(f"{src_path} and {tgt_path} are empty")
    if empty:
        more = f" (and {len(empty) - MAX_REPORTED} more)" if len(empty) > MAX_REPORTED else ""
        raise UserError("empty lines in parallel data: " + ", ".join(empty[:MAX_REPORTED]) + more)
    return n_src


def remove_non_printing(text):
    """remove-non-printing-char.perl's cleaning: a control character (Unicode category Cc:
    tab, vertical tab, form feed, a stray CR, ...) becomes a space, so the words on either
    side stay apart; the other invisible ones (category C: format characters such as
    U+200B ZERO WIDTH SPACE or a soft hyphen, private-use and unassigned code points) are
    dropped."""
    return "".join(" " if cat == "Cc" else ch for ch, cat in
                   ((ch, unicodedata.category(ch)) for ch in text) if cat[0] != "C" or cat == "Cc")


def is_blank(text):
    """True for a line with nothing visible: only whitespace and the characters
    :func:`remove_non_printing` removes (e.g. U+200B ZERO WIDTH SPACE, U+FEFF)."""
    return not remove_non_printing(text).strip()


class Tokenizer:
    """Per-language normalisation + Moses tokenisation (+ lowercasing), picklable for workers."""

    def __init__(self, lang, tokenize=True, normalize_punct=False, aggressive_dash_splits=False, lowercase=False):
        self.lang = lang
        self.tokenize = tokenize
        self.normalize_punct = normalize_punct
        self.aggressive = aggressive_dash_splits
        self.lowercase = lowercase
        self._tok = self._norm = None

    def _load(self):
        if self._tok is None:
            import sacremoses

            self._tok = sacremoses.MosesTokenizer(lang=self.lang)
            self._norm = sacremoses.MosesPunctNormalizer(lang=self.lang)
            self._detok = sacremoses.MosesDetokenizer(lang=self.lang)

    def normalise(self, line):
        """The raw-text part: punctuation normalisation, non-printing characters, case."""
        self._load()
        if self.normalize_punct:
            line = self._norm.normalize(line)
        line = remove_non_printing(line).strip()
        line = " ".join(line.split())
        return line.lower() if self.lowercase else line

    def __call__(self, line):
        """Return ``(normalised raw text, tokenised text)`` for one line.

        For already tokenised input (``tokenize=False``) the line is kept as the
        tokenised text and its Moses detokenisation is the raw text.
        """
        raw = self.normalise(line)
        if not self.tokenize:
            return self._detok.detokenize(raw.split(), return_str=True, unescape=True), raw
        tok = self._tok.tokenize(raw, aggressive_dash_splits=self.aggressive, return_str=True, escape=True)
        return raw, " ".join(tok.split())


_WORKER_FN = None


def _init_worker(fn):
    global _WORKER_FN
    _WORKER_FN = fn


def _run_chunk(lines):
    return [_WORKER_FN(line) for line in lines]


def map_lines(fn, in_path, chunk=2000, workers=1):
    """Yield ``fn(line)`` for every line of ``in_path``, in order, over ``workers`` processes.

    ``fn`` is sent once to each worker (so it may keep loaded models).
    """

    def chunks():
        batch = []
        for _, line in iter_lines(in_path):
            batch.append(line)
            if len(batch) == chunk:
                yield batch
                batch = []
        if batch:
            yield batch

    if workers > 1 and Path(in_path).stat().st_size > 200_000:
        with multiprocessing.get_context("fork").Pool(workers, initializer=_init_worker, initargs=(fn,)) as pool:
            for batch in pool.imap(_run_chunk, chunks()):
                yield from batch
    else:
        for batch in chunks():
            yield from (fn(line) for line in batch)


def tokenize_file(in_path, raw_out, tok_out, tokenizer, workers=1):
    """Tokenise ``in_path`` line by line into ``tok_out``; write the normalised raw text to ``raw_out``."""
    with open(raw_out, "w", encoding="utf-8") as fr, open(tok_out, "w", encoding="utf-8") as ft:
        for raw, tok in map_lines(tokenizer, in_path, workers=workers):
            fr.write(raw + "\n")
            ft.write(tok + "\n")


def keep_pair(src_tok, tgt_tok, ratio, min_len, max_len):
    """clean-corpus-n.perl's rule: both lengths in [min_len, max_len], length ratio at most ``ratio``."""
    ns, nt = len(src_tok.split()), len(tgt_tok.split())
    if ns < min_len or nt < min_len or ns > max_len or nt > max_len:
        return False
    return ns <= ratio * nt and nt <= ratio * ns
