"""One run of a comparison (:class:`Run`: an architecture at a depth and seed, in its
folder) and the fairseq-train command that trains it."""

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

from fairseq_rskip.tools.runner.config import Config
from fairseq_rskip.fairseq_tools import PLUGIN_DIR, fairseq_executable
from fairseq_rskip.variants import Variant


@dataclass
class Run:
    arch: str  # the variant's name
    depth: Optional[int]
    seed: int
    variant: Variant
    run_dir: Path
    identity: Optional[dict] = None  # see run_identity

    @property
    def key(self) -> str:
        return f"{self.arch}-d{self.depth if self.depth is not None else 'default'}-s{self.seed}"

    @property
    def identity_path(self) -> Path:
        return self.run_dir / "run.json"

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    @property
    def result_path(self) -> Path:
        return self.run_dir / "result.json"


def train_settings(config: Config, run: Run) -> List[str]:
    """The run's fairseq-train arguments but the data-bin and the two paths that only say
    where things are (``--user-dir``, ``--save-dir``): what :func:`run_identity` records."""
    v = run.variant
    args = ["--arch", v.fairseq_arch(config.size)]
    if run.depth is not None:
        args += ["--encoder-layers", str(run.depth), "--decoder-layers", str(run.depth)]
    if v.nowarmup:
        lr = config.nowarmup_lr if config.nowarmup_lr is not None else config.lr
        args += ["--lr", str(lr), "--lr-scheduler", "inverse_sqrt_nowarmup",
                 "--decay-timescale", str(config.warmup_updates)]
    else:
        args += ["--lr", str(config.lr), "--lr-scheduler", "inverse_sqrt",
                 "--warmup-updates", str(config.warmup_updates)]
    args += list(config.train_args) + list(v.flags) + list(config.extra_args)
    args += ["--seed", str(run.seed), "--log-format", "json",
             "--log-interval", str(config.log_interval), "--no-progress-bar"]
    return args


def train_command(config: Config, run: Run, data: Path,
                  program: Optional[Sequence[str]] = None) -> List[str]:
    """The run's fairseq-train command (``program``: another command in its place)."""
    program = list(program) if program else [fairseq_executable("fairseq-train")]
    return [*program, str(data), "--user-dir", str(PLUGIN_DIR), *train_settings(config, run),
            "--save-dir", str(run.checkpoint_dir)]
