"""Shared helpers of data preparation: logging and step stamps.

Every file or folder a step produces is written atomically
(:mod:`fairseq_rskip.file_io`); the step's stamp (a JSON file in
``DEST/.stamps``) is written after its outputs. A re-run skips a step whose
stamp records the same parameters and input fingerprints and whose outputs
all exist; anything else is redone. An interrupted run therefore leaves at
most finished intermediate files without a stamp (redone next time) and
hidden ``.partial`` files (removed next time), never a final output that
looks finished.
"""

import json
import logging
import sys
from pathlib import Path

from fairseq_rskip.file_io import atomic_output, remove

logger = logging.getLogger("fairseq_rskip.data_prep")


def setup_logging(verbose=False):
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s | %(levelname)s | %(name)s | %(message)s",
        stream=sys.stderr,
        force=True,
    )


def fingerprint(paths):
    """Cheap identity of input files: absolute name, size and modification time (so a
    re-run that names the same folder by another path, relative or absolute, reuses it)."""
    out = []
    for p in paths:
        st = Path(p).stat()
        out.append([str(Path(p).resolve()), st.st_size, st.st_mtime_ns])
    return out


class Stamps:
    """Records which steps finished, with which parameters, in ``root/.stamps``."""

    def __init__(self, root):
        self.dir = Path(root) / ".stamps"

    def _path(self, step):
        return self.dir / f"{step}.json"

    def is_done(self, step, params, outputs=()):
        p = self._path(step)
        if not p.exists():
            return False
        try:
            recorded = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        if recorded != json.loads(json.dumps(params)):
            return False
        return all(Path(o).exists() for o in outputs)

    def mark(self, step, params):
        self.dir.mkdir(parents=True, exist_ok=True)
        with atomic_output(self._path(step)) as tmp:
            tmp.write_text(json.dumps(params, indent=1, sort_keys=True), encoding="utf-8")

    def clear(self, step):
        remove(self._path(step))

    def run(self, step, params, outputs, fn):
        """Run ``fn()`` unless ``step`` is done with these params; stamp it afterwards.

        Returns True when the step ran, False when it was reused.
        """
        if self.is_done(step, params, outputs):
            logger.info("[%s] already done, reusing %s", step, ", ".join(str(o) for o in outputs))
            return False
        self.clear(step)
        logger.info("[%s] running", step)
        fn()
        missing = [str(o) for o in outputs if not Path(o).exists()]
        if missing:
            raise RuntimeError(f"step {step} did not produce {missing}")
        self.mark(step, params)
        return True


def count_lines(path):
    n = 0
    with open(path, "rb") as f:
        for _ in f:
            n += 1
    return n
