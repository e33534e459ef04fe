"""A comparison's configuration (:class:`Config`) and the checks of its input: the
data-bin, the architectures and the fairseq-train options the runner sets itself."""

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from fairseq_rskip.errors import UserError
from fairseq_rskip.variants import VARIANTS, Variant


# fairseq-train's options that end training: its budget
BUDGET_OPTIONS = ("--max-update", "--max-epoch")


@dataclass
class Config:
    """A comparison: see ``examples/translation/configs/*.json``."""

    name: str = "comparison"
    data: Optional[str] = None
    size: str = "tiny"
    archs: List[str] = field(default_factory=lambda: list(VARIANTS))  # every row of the table
    depths: List[Optional[int]] = field(default_factory=lambda: [None])
    seeds: List[int] = field(default_factory=lambda: [1])
    lr: float = 5e-4
    warmup_updates: int = 4000
    nowarmup_lr: Optional[float] = None
    train_args: List[str] = field(default_factory=list)  # before the variant's flags
    variants: Dict[str, dict] = field(default_factory=dict)
    target_valid_loss: Optional[float] = None
    log_interval: int = 10
    threads: Optional[int] = None
    # evaluation settings (EVAL_KEYS below); None: no evaluation
    eval: Optional[dict] = field(default_factory=dict)
    # fairseq-train options after the variant's flags (rskip-reproduce ... -- OPTIONS)
    extra_args: List[str] = field(default_factory=list)
    description: str = ""
    # the paired tests against each variant's reference row (paired_bs_n, paired_ar_n, seed;
    # see fairseq_rskip.tools.common.paired.PairedSettings)
    significance: dict = field(default_factory=dict)

    @classmethod
    def load(cls, path) -> "Config":
        path = Path(path)
        if not path.is_file():
            raise UserError(f"configuration file not found: {path}")
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise UserError(f"configuration {path} is not valid JSON: {err}") from None
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(raw) - known - {"comment"})
        if unknown:
            raise UserError(f"configuration {path}: unknown keys {unknown}; known: {sorted(known)}")
        raw.pop("comment", None)
        return cls(**raw)

    def with_budget(self, max_update: Optional[int] = None,
                    max_epoch: Optional[int] = None) -> "Config":
        """The configuration with its training budget (``--max-update``, ``--max-epoch`` of
        ``train_args``) replaced by the one given, if one is: training stops at whichever
        given limit comes first."""
        if max_update is None and max_epoch is None:
            return self
        for name, value in (("--max-update", max_update), ("--max-epoch", max_epoch)):
            if value is not None and value < 1:
                raise UserError(f"{name} must be at least 1; got {value}")
        args, i = [], 0
        while i < len(self.train_args):
            name = self.train_args[i].split("=", 1)[0]
            if name in BUDGET_OPTIONS:
                i += 1 if "=" in self.train_args[i] else 2
                continue
            args.append(self.train_args[i])
            i += 1
        for name, value in (("--max-update", max_update), ("--max-epoch", max_epoch)):
            if value is not None:
                args += [name, str(value)]
        return dataclasses.replace(self, train_args=args)

    def all_variants(self) -> Dict[str, Variant]:
        """The table's rows and the configuration's own ``"variants"``."""
        variants = dict(VARIANTS)
        for name, spec in self.variants.items():
            if "arch" not in spec:
                raise UserError(f"variant {name!r} needs an 'arch'")
            variants[name] = Variant(
                name, spec["arch"], tuple(spec.get("args", ())), bool(spec.get("nowarmup", False)),
                label=name, description=spec.get("description", ""),
                reference=spec.get("reference", "postln"),
            )
        return variants


def check_data_bin(data) -> Path:
    if data is None:
        raise UserError(
            "no data-bin given: pass --data DATA_BIN (e.g. the output of "
            "rskip-prepare bundled) or set \"data\" in the configuration"
        )
    path = Path(data)
    if not path.is_dir():
        raise UserError(
            f"data-bin not found: {path} is not a directory (prepare one with "
            "rskip-prepare bundled or fairseq-preprocess)"
        )
    dicts = sorted(path.glob("dict.*.txt"))
    if len(dicts) < 2:
        raise UserError(
            f"{path} is not a fairseq translation data-bin: it has no dict.<src>.txt and "
            "dict.<tgt>.txt"
        )
    for split in ("train", "valid"):
        if not list(path.glob(f"{split}.*.idx")):
            raise UserError(f"{path} has no binarised '{split}' split ({split}.*.idx)")
    return path


def registered_archs() -> set:
    """fairseq's architecture names, after registering the plugin's."""
    import fairseq_rskip  # noqa: F401
    from fairseq.models import ARCH_MODEL_REGISTRY

    return set(ARCH_MODEL_REGISTRY)


def resolve_archs(config: Config, archs: Sequence[str]) -> Dict[str, Variant]:
    """Map each requested name to its :class:`Variant`, refusing unknown names."""
    variants = config.all_variants()
    registry = registered_archs()
    chosen = {}
    for name in archs:
        if name in variants:
            chosen[name] = variants[name]
        elif name in registry:
            chosen[name] = Variant(name, name, label=name)
        else:
            raise UserError(
                f"unknown architecture {name!r}: use one of {', '.join(sorted(variants))} "
                "or a registered fairseq architecture name (e.g. transformer_rskip_tiny)"
            )
    for name, variant in chosen.items():
        arch = variant.fairseq_arch(config.size)
        if arch not in registry:
            raise UserError(
                f"architecture {name!r} resolves to {arch!r} with size {config.size!r}, "
                "which fairseq does not know"
            )
    if not chosen:
        raise UserError("no architectures given")
    return chosen


# fairseq-train options the runner sets on every command, and what to use instead
# (fairseq's parser takes no abbreviations: allow_abbrev=False)
RUNNER_OPTIONS = {
    "--seed": "--seeds (\"seeds\" in the configuration)",
    "--save-dir": "--out (each run saves into OUT/runs/RUN/checkpoints)",
    "--arch": "--archs and --size (\"archs\", \"size\" and \"variants\" in the configuration)",
    "-a": "--archs and --size (\"archs\", \"size\" and \"variants\" in the configuration)",
    "--user-dir": "no option: the runner gives this package's folder",
    "--lr": "\"lr\" and \"nowarmup_lr\" in the configuration",
    "--lr-scheduler": "a variant's \"nowarmup\" (inverse_sqrt warm-up, or inverse_sqrt_nowarmup)",
    "--warmup-updates": "\"warmup_updates\" in the configuration",
    "--decay-timescale": "\"warmup_updates\" in the configuration",
    "--encoder-layers": "--depths (\"depths\" in the configuration)",
    "--decoder-layers": "--depths (\"depths\" in the configuration)",
    "--log-format": "no option: the runner reads fairseq's JSON log",
    "--log-interval": "\"log_interval\" in the configuration",
}
LAYER_OPTIONS = ("--encoder-layers", "--decoder-layers")
# what a variant's own "args" may set: they come after the runner's in the command, so a
# variant may train with its own rate or schedule (the configuration records it)
VARIANT_MAY_SET = ("--lr", "--lr-scheduler", "--warmup-updates", "--decay-timescale")


def refuse_runner_options(args: Sequence[str], where: str, depths_set: bool,
                          allowed: Sequence[str] = ()) -> None:
    """Refuse the options of :data:`RUNNER_OPTIONS` in ``args`` (``where`` names them), but
    ``allowed`` ones and, without set depths, the layer counts."""
    for arg in args:
        name = arg.split("=", 1)[0]
        if name not in RUNNER_OPTIONS or name in allowed:
            continue
        if name in LAYER_OPTIONS and not depths_set:
            continue
        raise UserError(
            f"{where} set {name}, which the runner sets itself on every fairseq-train "
            f"command: use {RUNNER_OPTIONS[name]}"
        )


def check_train_options(config: Config, variants: Dict[str, Variant]) -> None:
    depths_set = any(d is not None for d in config.depths)
    refuse_runner_options(config.train_args, 'the configuration\'s "train_args"', depths_set)
    refuse_runner_options(config.extra_args, 'the options after -- ("extra_args")', depths_set)
    for name in config.variants:
        if name in variants:
            refuse_runner_options(variants[name].flags, f"variant {name!r}'s \"args\"", depths_set,
                                  allowed=VARIANT_MAY_SET)


# the keys of a configuration's "eval", and the checkpoints "checkpoint" may name:
# checkpoint_best.pt (the lowest validation loss; fairseq's choice) or checkpoint_last.pt (the
# model at the end of the budget, for comparisons at a number of updates)
EVAL_KEYS = ("avg_last", "beam", "lenpen", "subset", "extra_args", "checkpoint")
SCORED_CHECKPOINTS = ("best", "last")


def evaluation_settings(config: Config) -> Optional[dict]:
    """The evaluation a finished run gets (None: none). ``"checkpoint"`` is listed only when
    it is ``"last"``, so the identities of runs made before it existed stay the same."""
    if config.eval is None:
        return None
    ev = config.eval
    unknown = sorted(set(ev) - set(EVAL_KEYS))
    if unknown:
        raise UserError(f"\"eval\": unknown keys {unknown}; known: {list(EVAL_KEYS)}")
    settings = {"avg_last": ev.get("avg_last", 0), "beam": ev.get("beam", 5),
                "lenpen": ev.get("lenpen", 1.0), "subset": ev.get("subset", "test"),
                "extra_args": list(ev.get("extra_args", ()))}
    checkpoint = ev.get("checkpoint", "best")
    if checkpoint not in SCORED_CHECKPOINTS:
        raise UserError(f"\"eval\": \"checkpoint\" must be one of {list(SCORED_CHECKPOINTS)}; "
                        f"got {checkpoint!r}")
    if checkpoint == "last":
        if settings["avg_last"]:
            raise UserError("\"eval\": \"checkpoint\": \"last\" scores one checkpoint; it cannot "
                            f"be combined with \"avg_last\": {settings['avg_last']}")
        settings["checkpoint"] = "last"
    return settings


