"""Paired significance tests of two systems' translations of one test set, by sacreBLEU.

sacreBLEU's paired bootstrap resampling (Koehn 2004; its ``--paired-bs``) and
paired approximate randomisation (Riezler and Maxwell 2005; ``--paired-ar``),
for BLEU and chrF with sacreBLEU's defaults on detokenised text, through
:class:`sacrebleu.significance.PairedTest`. Both tests compare the two systems
sentence by sentence on the same test set. The bootstrap draws the test
sentences with replacement ``n`` times; approximate randomisation swaps each
sentence's two translations at random ``n`` times. The p-value is the share of
draws whose absolute score difference exceeds the observed one, counted as
``(c + 1) / (n + 1)``. Null hypothesis: the two systems' translations come from
the same process; the tests treat the test sentences as a sample, and say
nothing of other seeds or other test sets.

sacreBLEU gives two systems whose translations are identical p = 1/(n + 1)
(no draw exceeds a difference of zero, and it counts ``>``); such a pair is
reported with p = 1 and ``identical``.

Translation files hold one sentence per line (:func:`write_translations`) and
are read as sacreBLEU's command line reads them (:func:`read_translations`), so
``sacrebleu REFS -i BASELINE SYSTEM --paired-bs`` with the same resamples and
``SACREBLEU_SEED`` gives the same p-values.
"""

import contextlib
import hashlib
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from fairseq_rskip.errors import UserError
from fairseq_rskip.file_io import atomic_output
from fairseq_rskip.tools.common.degenerate import degenerate_systems


@dataclass(frozen=True)
class PairedSettings:
    """Resamples of the paired bootstrap, trials of approximate randomisation, and the seed
    of sacreBLEU's random numbers (``SACREBLEU_SEED``; sacreBLEU reads 0 as "unseeded")."""

    paired_bs_n: int = 1000  # sacreBLEU's defaults (--paired-bs-n, --paired-ar-n, SACREBLEU_SEED)
    paired_ar_n: int = 10000
    seed: int = 12345

    @classmethod
    def from_config(cls, spec: Optional[dict]) -> "PairedSettings":
        """From a configuration's ``"significance"`` object (missing keys: the defaults)."""
        spec = dict(spec or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(spec) - known)
        if unknown:
            raise UserError(f'"significance": unknown keys {unknown}; known: {sorted(known)}')
        for key, value in spec.items():
            check_count(f'"significance": {key}', value, seed=key == "seed")
        return cls(**spec)


def check_count(name: str, value, seed: bool = False) -> None:
    """A number of resamples or trials, or a seed, must be an integer >= 1."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise UserError(f"{name} must be an integer >= 1; got {value!r}"
                        + (" (sacreBLEU reads seed 0 as unseeded)" if seed else ""))


def read_translations(path) -> List[str]:
    """A file's lines as sacreBLEU's command line reads them (trailing white space removed)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"translations not found: {path}")
    with open(path, encoding="utf-8") as f:
        return [line.rstrip() for line in f]


def write_translations(path, lines: Sequence[str]) -> None:
    """One sentence per line, atomically; a sentence holding a line break is refused."""
    for i, line in enumerate(lines):
        if "\n" in line or "\r" in line:
            raise UserError(f"{path}: sentence {i} holds a line break; it cannot be kept one per line")
    with atomic_output(path) as tmp:
        tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def sha256_of(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@contextlib.contextmanager
def sacrebleu_seed(seed: int):
    """sacreBLEU's tests read their seed from ``SACREBLEU_SEED`` only: set it meanwhile (and
    keep their INFO lines, one per step, out of the tools' output)."""
    before = os.environ.get("SACREBLEU_SEED")
    logger = logging.getLogger("sacrebleu")
    level = logger.level
    os.environ["SACREBLEU_SEED"] = str(seed)
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)
        if before is None:
            del os.environ["SACREBLEU_SEED"]
        else:
            os.environ["SACREBLEU_SEED"] = before


def _metrics() -> dict:
    """sacreBLEU's BLEU and chrF with their defaults, as rskip-evaluate scores."""
    from sacrebleu.metrics import BLEU, CHRF

    return {"sacrebleu": BLEU(), "chrf": CHRF()}


def _interval(mean, half) -> List[float]:
    return [float(mean) - float(half), float(mean) + float(half)]


def paired_tests(baseline: Sequence[str], system: Sequence[str], references: Sequence[str],
                 settings: PairedSettings = PairedSettings()) -> Dict[str, dict]:
    """Paired bootstrap and approximate randomisation of ``system`` against ``baseline``
    (detokenised sentences in the order of ``references``), for BLEU and chrF.

    Returns ``{"sacrebleu": ..., "chrf": ...}``, each with both scores, ``delta`` (system
    minus baseline), ``bs`` (``p``, resamples, sacreBLEU's bootstrap mean and 95 %
    interval of each system, signature) and ``ar`` (``p``, trials, signature)."""
    n = len(references)
    if n == 0:
        raise UserError("no references: nothing to compare")
    if len(baseline) != n or len(system) != n:
        raise UserError(f"the translations have {len(baseline)} and {len(system)} sentences, "
                        f"the references {n}: they must be of the same test set")
    from sacrebleu.significance import PairedTest

    identical = list(baseline) == list(system)
    results: Dict[str, dict] = {}
    for test, n_samples in (("bs", settings.paired_bs_n), ("ar", settings.paired_ar_n)):
        metrics = _metrics()
        with sacrebleu_seed(settings.seed):
            signatures, scores = PairedTest(
                [("baseline", list(baseline)), ("system", list(system))], metrics,
                [list(references)], test_type=test, n_samples=n_samples)()
        names = [name for name in scores if name != "System"]  # in the order of `metrics`
        for key, name in zip(metrics, names):
            base, cand = scores[name]
            entry = results.setdefault(key, {
                "metric": name, "baseline": float(base.score), "system": float(cand.score),
                "delta": float(cand.score) - float(base.score), "identical": identical})
            entry[test] = {"p": 1.0 if identical else float(cand.p_value), "n": n_samples,
                           "signature": signatures[name].format()}
            if test == "bs":
                entry[test].update(
                    baseline_mean=float(base.mean), baseline_ci=_interval(base.mean, base.ci),
                    system_mean=float(cand.mean), system_ci=_interval(cand.mean, cand.ci))
    return results


def paired_test_files(baseline, system, references, settings: PairedSettings = PairedSettings()) -> dict:
    """:func:`paired_tests` on three translation files (read as sacreBLEU's command line
    reads them); the record names the files and their SHA-256, and under ``degenerate``
    the systems whose translations are degenerate, with the reasons
    (:func:`~fairseq_rskip.tools.common.degenerate.degenerate_systems`): their p-values
    are computed but mean nothing."""
    files = {"baseline": Path(baseline), "system": Path(system), "references": Path(references)}
    texts = {role: read_translations(path) for role, path in files.items()}
    metrics = paired_tests(texts["baseline"], texts["system"], texts["references"], settings)
    references = texts.pop("references")
    scores = {role: metrics["sacrebleu"][role] for role in texts}
    return {
        "files": {role: str(path) for role, path in files.items()},
        "sha256": {role: sha256_of(path) for role, path in files.items()},
        "settings": asdict(settings),
        "sacrebleu_version": sacrebleu_version(),
        "num_sentences": len(references),
        "metrics": metrics,
        "degenerate": degenerate_systems(texts, references, scores),
    }


def sacrebleu_version() -> str:
    import sacrebleu

    return sacrebleu.__version__
