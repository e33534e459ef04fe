"""Shared helpers: build fairseq models in-process the way fairseq-train does."""

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import fairseq_rskip  # noqa: F401 (registers the architectures)
from fairseq import options
from fairseq.data import Dictionary
from fairseq.models import ARCH_MODEL_REGISTRY

REPO = Path(__file__).resolve().parents[1]
USER_DIR = REPO / "fairseq_rskip"
BIN = Path(sys.executable).parent

# Every architecture family here, and the variants the flags make of it.
VARIANTS = {
    "rskip2": ("transformer_rskip_tiny",),
    "rskip3": ("transformer_rskip_tiny", "--skip-recursions", "3"),
    "rskip3-shared": ("transformer_rskip_tiny", "--skip-recursions", "3", "--skip-shared-norm"),
    "postln": ("transformer_rskip_tiny", "--skip-recursions", "1"),
    "xskip2-ln": ("transformer_rskip_tiny", "--skip-recursions", "1", "--skip-scale", "2"),
    "xskip0.5-none": (
        "transformer_rskip_tiny", "--skip-recursions", "1", "--skip-scale", "0.5", "--norm-type", "none",
    ),
    "rskip2-simple": ("transformer_rskip_tiny", "--norm-type", "simple"),
    "adanorm": ("transformer_adanorm_tiny",),
    "adanorm-prenorm": (
        "transformer_adanorm_tiny", "--encoder-normalize-before", "--decoder-normalize-before",
        "--adanorm-scale", "2", "--adanorm-k", "0.2",
    ),
    "prenorm": ("transformer_prenorm_nowarmup_tiny",),
    "deepnorm": ("transformer_deepnorm_tiny",),
    "deepnorm-torchscale": ("transformer_deepnorm_tiny", "--deepnorm-init", "torchscale"),
    "admin": ("transformer_admin_tiny",),
    "admin-logn": ("transformer_admin_tiny", "--admin-init", "logn"),
}


def make_dictionary(num_words=24):
    d = Dictionary()
    for i in range(num_words):
        d.add_symbol(f"w{i}")
    return d


def parse_args(arch, *flags):
    parser = options.get_training_parser()
    return options.parse_args_and_arch(
        parser,
        ["/nonexistent-data", "--task", "translation", "--arch", arch, "--user-dir", str(USER_DIR), *flags],
    )


def build_model(arch, *flags, seed=1, dictionary=None):
    """A model built as fairseq-train builds it, from command-line flags."""
    args = parse_args(arch, *flags)
    d = dictionary or make_dictionary()
    torch.manual_seed(seed)
    task = SimpleNamespace(source_dictionary=d, target_dictionary=d)
    return ARCH_MODEL_REGISTRY[args.arch].build_model(args, task)


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
