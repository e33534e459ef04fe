"""Shared helpers: build fairseq models in-process the way fairseq-train does
(fairseq_rskip.tools.common.modelbuild, the tools' builder), run its command-line tools."""

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fairseq_rskip  # noqa: F401 (registers the architectures)
from fairseq.data import Dictionary
from fairseq_rskip.tools.common import modelbuild
from fairseq_rskip.tools.gpu_check import checks as gpu_check
from fairseq_rskip.fairseq_tools import PLUGIN_DIR
from fairseq_rskip.variants import distinct_plugin_builds

REPO = Path(__file__).resolve().parents[1]
USER_DIR = PLUGIN_DIR
BIN = Path(sys.executable).parent
# the scripts/*.sh wrappers the tests run use this interpreter (see scripts/_env.sh)
if (Path(sys.prefix) / "bin" / "python").exists():
    os.environ["RSKIP_VENV"] = sys.prefix


def _table_rows(size="_tiny"):
    """Each row of the variants table as the plugin builds it (once per distinct model)."""
    return {v.name: (v.plugin_build(size)[0], *v.plugin_build(size)[1]) for v in distinct_plugin_builds(size)}


class _Rows(dict):
    """Variant name -> (arch, *flags); ``TINY_BUILDS[name]`` also takes an earlier name of a row
    (``ALIASES``), which iterating over the rows does not list."""

    def __missing__(self, name):
        if name in ALIASES:
            return self[ALIASES[name]]
        raise KeyError(name)


# earlier names of two rows, used by tests/test_model_features.py
ALIASES = {"rskip2": "rskip", "prenorm": "preln"}
# The tiny build (arch, *flags) of every variant of the table (fairseq_rskip.variants.VARIANTS),
# and more flag combinations for coverage: what the model tests run over.
TINY_BUILDS = _Rows({
    **_table_rows(),
    "rskip3": ("transformer_rskip_tiny", "--skip-recursions", "3"),
    "rskip3-shared": ("transformer_rskip_tiny", "--skip-recursions", "3", "--skip-shared-norm"),
    "xskip2-ln": ("transformer_rskip_tiny", "--skip-recursions", "1", "--skip-scale", "2"),
    "xskip0.5-none": (
        "transformer_rskip_tiny", "--skip-recursions", "1", "--skip-scale", "0.5", "--norm-type", "none",
    ),
    "rskip2-simple": ("transformer_rskip_tiny", "--norm-type", "simple"),
    # AdaNorm on every norm of a Pre-LN model, other constants
    "adanorm-prenorm": ("transformer_adanorm_tiny", "--norm-type", "adanorm", "--adanorm-scale", "2", "--adanorm-k", "0.2"),
    "deepnorm-torchscale": ("transformer_deepnorm_tiny", "--deepnorm-init", "torchscale"),
    "admin-logn": ("transformer_admin_tiny", "--admin-init", "logn"),
    "uspa-zero-out-proj": ("transformer_uspa_tiny", "--cross-attention-shortcut", "zero-out-proj"),
    "espa-cross-gain": ("transformer_espa_tiny", "--cross-attention-gain-init", "0.3"),
    "uspa-cross-value-skipinit": ("transformer_uspa_tiny", "--cross-attention-shortcut", "value-skipinit",
                                  "--cross-attention-gain-init", "0.3"),
})


def joined_line(lines, i):
    """Line ``i`` of ``lines``, stripped and joined over its ``\\`` continuations, and the
    index of the last line it takes."""
    line = lines[i].strip()
    while line.endswith("\\") and i + 1 < len(lines):
        i += 1
        line = line[:-1].rstrip() + " " + lines[i].strip()
    return line, i


def make_dictionary(num_words=24):
    d = Dictionary()
    for i in range(num_words):
        d.add_symbol(f"w{i}")
    return d


def parse_args(arch, *flags):
    return modelbuild.parse_model_args(arch, ["--task", "translation", *flags], data="/nonexistent-data")


def build_model(arch, *flags, seed=1, dictionary=None):
    """A model built as fairseq-train builds it, from command-line flags."""
    return modelbuild.build_model(arch, flags, dictionary=dictionary or make_dictionary(), seed=seed)[0]


def sample_batch(dictionary=None, bsz=3, src_len=7, tgt_len=6, seed=0):
    d = dictionary or make_dictionary()
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(d.nspecial, len(d), (bsz, src_len), generator=g)
    src[:, -1] = d.eos()
    src[0, :2] = d.pad()  # left padding, as fairseq batches the source
    lengths = (src != d.pad()).sum(1)
    prev = torch.randint(d.nspecial, len(d), (bsz, tgt_len), generator=g)
    prev[:, 0] = d.eos()
    return src, lengths, prev


def run(cmd, cwd=None, check=True, env=None):
    """Run a command line tool of the virtual environment; return the CompletedProcess."""
    full_env = dict(os.environ, **(env or {}))
    full_env["PATH"] = f"{BIN}{os.pathsep}{full_env.get('PATH', '')}"
    proc = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=full_env, capture_output=True, text=True
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
        )
    return proc


def train_command(data_bin, arch, save_dir, max_update, program=("fairseq-train",)):
    return [
        *program, data_bin, "--user-dir", USER_DIR, "--arch", arch,
        "--share-all-embeddings", "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)",
        "--lr", "2e-3", "--max-tokens", "800", "--max-update", max_update,
        "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
        "--save-dir", save_dir, "--log-format", "json", "--log-interval", "1",
        "--seed", "3", "--num-workers", "0",
    ]


def train(data_bin, arch, save_dir, max_update, *extra, program=("fairseq-train",)):
    return run([*train_command(data_bin, arch, save_dir, max_update, program), *extra])


def json_logs(proc, kind="train_inner"):
    records = []
    for line in (proc.stdout + proc.stderr).splitlines():
        m = re.search(r"\| (\{.*\})$", line)
        if m and f"| {kind} |" in line:
            records.append(json.loads(m.group(1)))
    return records


def decode_incrementally(model, src, lengths, prev):
    encoder_out = model.encoder(src, src_lengths=lengths)
    incremental_state = {}
    steps = []
    for t in range(prev.size(1)):
        out, _ = model.decoder(
            prev[:, : t + 1], encoder_out=encoder_out, incremental_state=incremental_state
        )
        steps.append(out)
    return torch.cat(steps, dim=1)


WORDS = "the a cat dog house tree runs sees big small red blue eats old new".split()


def write_corpus(folder, seed=0):
    """A word-for-word 'translation' (reversed words plus a suffix) that a tiny model can learn."""
    rng = random.Random(seed)
    for split, n in (("train", 400), ("valid", 40), ("test", 20)):
        with open(folder / f"{split}.src", "w") as fs, open(folder / f"{split}.tgt", "w") as ft:
            for _ in range(n):
                words = [rng.choice(WORDS) for _ in range(rng.randint(3, 8))]
                fs.write(" ".join(words) + "\n")
                ft.write(" ".join(w[::-1] + "x" for w in words) + "\n")


@pytest.fixture(scope="session")
def data_bin(tmp_path_factory):
    """The tiny corpus of write_corpus, binarised by fairseq-preprocess (shared: read only)."""
    folder = tmp_path_factory.mktemp("corpus")
    write_corpus(folder)
    run([
        "fairseq-preprocess", "--source-lang", "src", "--target-lang", "tgt",
        "--trainpref", folder / "train", "--validpref", folder / "valid", "--testpref", folder / "test",
        "--destdir", folder / "bin", "--joined-dictionary", "--workers", "1",
    ])
    return folder / "bin"


WORKER = Path(__file__).with_name("distributed_worker.py")
# fairseq-train options of the worker runs: those of rskip-gpu-check's runs
# (tiny batches, no dropout), on the tiny corpus's joined dictionary
WORKER_TRAIN = ["--user-dir", str(USER_DIR), "--share-all-embeddings", "--max-tokens", "400",
                *gpu_check.TRAIN_FLAGS]


def start_worker(data, out, names, *train_flags, rank=0, world=1, update_freq=1, port=0, worker_flags=()):
    """Start tests/distributed_worker.py: fairseq-train's ``main`` for each of
    ``names`` (rows of the table or architectures) in one process."""
    cmd = [sys.executable, WORKER, "--rank", rank, "--world-size", world, "--port", port,
           "--data", data, "--out", out, "--update-freq", update_freq, *worker_flags, *names,
           "--", *WORKER_TRAIN, *train_flags]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)


def finish_workers(procs, timeout=300):
    """Wait for workers started together; their outputs, or the failing one's log."""
    logs = []
    for proc in procs:
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise
        logs.append(out)
        assert proc.returncode == 0, out[-5000:]
    return logs


@pytest.fixture(params=sorted(TINY_BUILDS))
def variant(request):
    return request.param, TINY_BUILDS[request.param]
