"""Shared helpers: build fairseq models in-process the way fairseq-train does
(fairseq_rskip.analysis.modelbuild, the tools' builder), run its command-line tools."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fairseq_rskip  # noqa: F401 (registers the architectures)
from fairseq.data import Dictionary
from fairseq_rskip.analysis import modelbuild
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
    """Variant name -> (arch, *flags); ``VARIANTS[name]`` also takes an earlier name of a row
    (``ALIASES``), which iterating over the rows does not list."""

    def __missing__(self, name):
        if name in ALIASES:
            return self[ALIASES[name]]
        raise KeyError(name)


# earlier names of two rows, used by tests/test_model_features.py
ALIASES = {"rskip2": "rskip", "prenorm": "preln"}
# Every variant of the table, and more flag combinations for coverage.
VARIANTS = _Rows({
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
})


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


@pytest.fixture(params=sorted(VARIANTS))
def variant(request):
    return request.param, VARIANTS[request.param]
