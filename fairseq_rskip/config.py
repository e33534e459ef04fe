"""The flags of ``transformer_rskip``: one dataclass field each, one check each.

Each field is a command-line flag (``norm_type`` is ``--norm-type``), declared
here once with its default, help text and allowed values, and turned into
argparse flags by fairseq's ``gen_parser_from_dataclass`` (as fairseq declares
``TransformerConfig``). The architectures fill unset fields with their
family's defaults, then with the defaults below; :meth:`SkipNormConfig.validate`
runs once, when the model is built, and the validated config is handed to the
encoder and decoder stacks, their layers and their normalisations.

This module is plain data and imports nothing else of the plugin: the
modules (:mod:`fairseq_rskip.modules`) build themselves from it, and the model
(:mod:`fairseq_rskip.models`) builds the modules. A field's allowed values are
part of its declaration: a choice in its type (fairseq's ``ChoiceEnum``, which
argparse enforces too), a range in its metadata (``"range": Interval(...)``);
:meth:`SkipNormConfig.validate` checks both for every field, then the rules
between flags, written out.
"""

import math
from dataclasses import dataclass, field, fields
from enum import Enum
from numbers import Integral, Real
from typing import Any, List, Optional

from fairseq.dataclass import ChoiceEnum, FairseqDataclass

NORM_TYPES = ("layernorm", "simple", "adanorm", "none")
ATTENTION_INITS = ("fairseq", "kaiming_uniform")
# each a strategy in fairseq_rskip.modules.skip_weights.SKIP_WEIGHTS
SKIP_WEIGHTS = ("fixed", "deepnorm", "admin")
DEEPNORM_INITS = ("paper", "torchscale")
ADMIN_INITS = ("profile", "logn")
SPA_KERNELS = ("exponential", "uniform")
CROSS_ATTENTION_SHORTCUTS = ("skipinit", "zero-out-proj", "residual", "value-skipinit")
TAT_DEPTHS = ("whole-network", "per-stack")
TAT_FALLBACKS = ("relu", "error")
SHAPED_QUERY_INITS = ("zero", "fairseq")
SHAPED_KEY_INITS = ("fairseq", "normal")


def _finite_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Interval:
    """The allowed values of a numeric flag: ``low < x < high``, each end
    closed (``<=``) where said; ``integer``: whole numbers only."""

    low: float
    high: float = math.inf
    closed_low: bool = False
    closed_high: bool = False
    integer: bool = False

    def __contains__(self, value: Any) -> bool:
        if self.integer and (not isinstance(value, Integral) or isinstance(value, bool)):
            return False
        if not _finite_number(value):
            return False
        above = value >= self.low if self.closed_low else value > self.low
        below = value <= self.high if self.closed_high else value < self.high
        return above and below

    def describe(self) -> str:
        """``an integer >= 1``, ``a finite number > 0``, ``a number in [0, 1)``."""
        low = ">=" if self.closed_low else ">"
        if self.integer and self.high == math.inf:
            return f"an integer {low} {self.low:g}"
        if self.high == math.inf:
            return f"a finite number {low} {self.low:g}"
        return (f"a number in {'[' if self.closed_low else '('}{self.low:g}, "
                f"{self.high:g}{']' if self.closed_high else ')'}")


def choices_of(f) -> Optional[List[str]]:
    """The allowed values of a field typed ``ChoiceEnum`` (or ``Optional`` of one)."""
    for candidate in (f.type, *getattr(f.type, "__args__", ())):
        if isinstance(candidate, type) and issubclass(candidate, Enum):
            return [member.value for member in candidate]
    return None


def flag(name: str) -> str:
    """The command-line flag of a field: ``skip_recursions`` is ``--skip-recursions``."""
    return "--" + name.replace("_", "-")


def arch_description(arch: str) -> str:
    return f"--arch {arch}" if arch else "this model"


@dataclass
class SkipNormConfig(FairseqDataclass):
    """Skip connection and normalisation of every sublayer (see ``ResidualNorm``)."""

    # which normalisation, where
    norm_type: ChoiceEnum(list(NORM_TYPES)) = field(
        default="layernorm",
        metadata={"help": "normalisation of every sublayer, and of the stacks' own norms unless "
                  "--stack-norm-type says otherwise (simple = LayerNorm-simple, no gain or bias; "
                  "adanorm = AdaNorm; none = plain skip)"},
    )
    stack_norm_type: Optional[ChoiceEnum(list(NORM_TYPES))] = field(
        default=None,
        metadata={"help": "normalisation of the norms outside the layers: the final norm of a Pre-LN "
                  "encoder or decoder and --layernorm-embedding (default: --norm-type)"},
    )
    skip_recursions: int = field(
        default=1,
        metadata={"range": Interval(1, closed_low=True, integer=True),
                  "help": "rSkip+LN recursions n >= 1: y_1 = N_1(x + F(x)), y_i = N_i(x + y_(i-1)); "
                  "1 = Post-LN"},
    )
    skip_scale: float = field(
        default=1.0,
        metadata={"range": Interval(0),
                  "help": "fixed input scale of the skip, y = N(LAMBDA * x + F(x)) (xSkip); finite, "
                  "> 0, needs --skip-recursions 1"},
    )
    skip_shared_norm: bool = field(
        default=False, metadata={"help": "ablation: the rSkip recursions share one normalisation"}
    )
    adanorm_scale: float = field(
        default=1.0,
        metadata={"range": Interval(0), "help": "AdaNorm's scale C, finite and > 0 (AdaNorm only)"},
    )
    adanorm_k: float = field(
        default=0.1,
        metadata={"range": Interval(0, 1, closed_low=True), "help": "AdaNorm's k in [0, 1) (AdaNorm only)"},
    )
    # initialisation
    attention_init: ChoiceEnum(list(ATTENTION_INITS)) = field(
        default="fairseq",
        metadata={"help": "initial weights of every attention's q, k, v and output projections: "
                  "fairseq = fairseq's (xavier_uniform); kaiming_uniform = PyTorch's Linear default, "
                  "U(+-1/sqrt(fan_in)), with zero biases (the AdaNorm authors' --init_method km)"},
    )
    # deep Post-LN recipes: the weight of the skip, and how it is initialised
    skip_weight: ChoiceEnum(list(SKIP_WEIGHTS)) = field(
        default="fixed",
        metadata={"help": "weight w of the skip, y = N(w * x + F(x)): fixed = --skip-scale; deepnorm = "
                  "DeepNorm's alpha from the encoder and decoder depths, with its initialisation; "
                  "admin = Admin's trainable vector omega per sublayer (Post-norm, one recursion)"},
    )
    deepnorm_init: ChoiceEnum(list(DEEPNORM_INITS)) = field(
        default="paper",
        metadata={"help": "DeepNorm's initialisation: paper = xavier_normal_(gain=beta) on value, output "
                  "and feed-forward weights, gain 1 on query and key; torchscale = torchscale's "
                  "(PyTorch's default Linear init, v/out/fc1/fc2 weights and biases divided by its factor)"},
    )
    admin_init: ChoiceEnum(list(ADMIN_INITS)) = field(
        default="profile",
        metadata={"help": "Admin's initial omega: profile = the paper's profiling recursion on the first "
                  "training batch (saved in the checkpoint); logn = admin-torch's closed form "
                  "sqrt((n+1)/ln(n+1) - 1), n residual sublayers of the stack"},
    )
    admin_profile: Optional[str] = field(
        default=None,
        metadata={"allowed": "a profile file",
                  "help": "Admin: start omega from this profile file (Transformer-Clinic's "
                  "profile.ratio.init, which every profiling run writes into --save-dir) instead of "
                  "profiling: one line 'INDEX VALUE' per sublayer, the encoder's 2N, then the "
                  "decoder's 3M"},
    )

    # Shortcut-free models (He et al. 2023): vanilla, E-SPA, U-SPA, Value-SkipInit
    no_skip: bool = field(
        default=False,
        metadata={"help": "no skip connection around any sublayer: y = N(F(x)); with "
                  "--norm-type none the vanilla y = F(x)"},
    )
    spa_kernel: Optional[ChoiceEnum(list(SPA_KERNELS))] = field(
        default=None,
        metadata={"help": "signal-preserving self-attention D_l softmax(Q K^T / sqrt(d) + B_l) V "
                  "shaped to the target kernel exponential (E-SPA) or uniform (U-SPA); needs "
                  "--no-skip --norm-type none"},
    )
    spa_gamma_final: float = field(
        default=0.005,
        metadata={"range": Interval(0), "help": "E-SPA's final gamma_L > 0: Sigma_L[i, j] = exp(-gamma_L |i - j|)"},
    )
    spa_rho_final: float = field(
        default=0.8,
        metadata={"range": Interval(0, 1, closed_low=True), "help": "U-SPA's final rho_L in [0, 1): Sigma_L = (1 - rho_L) I + rho_L 11^T"},
    )
    value_skipinit: bool = field(
        default=False,
        metadata={"help": "Value-SkipInit: self-attention matrix alpha I + beta A(X), trainable "
                  "alpha = 1, beta = 0 at start; needs --no-skip"},
    )
    tat_eta: Optional[float] = field(
        default=None,
        metadata={"range": Interval(0, 1),
                  "help": "TAT: the leaky ReLU slope makes the composed C map of the network's "
                  "feed-forward nonlinearities send 0 to ETA, in (0, 1) (E-SPA, U-SPA, "
                  "Value-SkipInit); default 0.9 where reachable; 12 ReLUs reach only 0.897, so "
                  "with fewer than 13 nonlinearities (every fairseq 6+6 size) the default falls "
                  "back to ReLU, logged at build time, or is an error with --tat-fallback error"},
    )
    tat_fallback: ChoiceEnum(list(TAT_FALLBACKS)) = field(
        default="relu",
        metadata={"help": "where the default --tat-eta 0.9 is out of reach of the network's "
                  "nonlinearities: relu = use ReLU, the leaky ReLU closest to it, and log the "
                  "depth and the C_f(0) asked and reached; error = refuse to build the model"},
    )
    tat_depth: ChoiceEnum(list(TAT_DEPTHS)) = field(
        default="whole-network",
        metadata={"help": "nonlinearities TAT composes: whole-network = encoder plus decoder "
                  "layers (the deepest path, one slope), per-stack = each stack its own layers"},
    )
    cross_attention_shortcut: ChoiceEnum(list(CROSS_ATTENTION_SHORTCUTS)) = field(
        default="skipinit",
        metadata={"help": "cross-attention of E-SPA, U-SPA and Value-SkipInit keeps a shortcut: "
                  "skipinit = x + g F(x), trainable g = 0 at start; zero-out-proj = x + F(x), "
                  "F's output projection zero at start; residual = x + F(x), F as fairseq "
                  "initialises it (the source reaches the decoder, and the encoder gets "
                  "gradients, from the first update; the decoder's kernel is then not the "
                  "SPA target at start); value-skipinit = no shortcut, (alpha X + beta A(X, S) S) "
                  "W_V W_O, S the encoder's output, trainable alpha = 1 and beta = "
                  "--cross-attention-gain-init at start"},
    )
    cross_attention_gain_init: float = field(
        default=0.0,
        metadata={"range": Interval(0, closed_low=True),
                  "help": "initial gain of the source's path through cross-attention, >= 0: g "
                  "of --cross-attention-shortcut skipinit, beta of value-skipinit (at 0 the "
                  "encoder gets no gradient at the first update)"},
    )
    shaped_query_init: ChoiceEnum(list(SHAPED_QUERY_INITS)) = field(
        default="zero",
        metadata={"help": "self-attention queries of E-SPA, U-SPA and Value-SkipInit at start: "
                  "zero = W_Q = 0 (He et al.'s, as He & Hofmann 2023 describe it); fairseq = "
                  "fairseq's xavier_uniform with gain 1/sqrt(2) (Value-SkipInit's start before "
                  "this flag existed)"},
    )
    shaped_key_init: ChoiceEnum(list(SHAPED_KEY_INITS)) = field(
        default="fairseq",
        metadata={"help": "self-attention keys of E-SPA, U-SPA and Value-SkipInit at start: "
                  "fairseq = xavier_uniform with gain 1/sqrt(2), variance 1/(2d); normal = "
                  "N(0, 1/d), as SimplEsT-ViT draws them"},
    )

    @property
    def shaped(self) -> bool:
        """E-SPA, U-SPA or Value-SkipInit: orthogonal attention values, TAT
        feed-forward, a shortcut around cross-attention only."""
        return self.spa_kernel is not None or bool(self.value_skipinit)

    @property
    def stack_norm(self) -> str:
        """The normalisation of the stacks' own norms (``--stack-norm-type``,
        else ``--norm-type``)."""
        return self.norm_type if self.stack_norm_type is None else self.stack_norm_type

    @classmethod
    def flag_names(cls):
        return [f.name for f in fields(cls) if not f.name.startswith("_")]

    @classmethod
    def from_namespace(cls, args) -> "SkipNormConfig":
        """The fields of an argparse namespace or fairseq config; unset ones take
        their default (checkpoints written before a flag existed)."""
        return cls(
            **{
                name: getattr(args, name)
                for name in cls.flag_names()
                if getattr(args, name, None) is not None
            }
        )

    @classmethod
    def fill_defaults(cls, args) -> None:
        """Set every unset field of ``args`` to its default."""
        for f in fields(cls):
            if not f.name.startswith("_") and getattr(args, f.name, None) is None:
                setattr(args, f.name, f.default)

    @classmethod
    def defaults(cls) -> dict:
        return {f.name: f.default for f in fields(cls) if not f.name.startswith("_")}

    def check_values(self) -> None:
        """Every field's value among its choices and in its range (``None``
        stands for unset where the field allows it)."""
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or f.name.startswith("_"):
                continue
            choices = choices_of(f)
            if choices is not None and value not in choices:
                raise ValueError(
                    f"{flag(f.name)} must be one of {', '.join(choices)}; got {value!r}"
                )
            allowed = f.metadata.get("range")
            if allowed is not None and value not in allowed:
                raise ValueError(f"{flag(f.name)} must be {allowed.describe()}; got {value!r}")

    def validate(
        self,
        encoder_normalize_before: bool,
        decoder_normalize_before: bool,
        arch: str = "",
        stack_norms: Optional[bool] = None,
        model_args=None,
    ) -> None:
        """Refuse values out of range and combinations without a defined meaning,
        with a message naming the flags; never clamps. ``stack_norms``: whether
        the model has a norm outside its layers (a final Pre-LN norm or
        ``--layernorm-embedding``); by default, whether a side is Pre-LN.
        ``model_args`` (fairseq's model arguments) gives the other flags some
        checks read."""
        self.check_values()
        if stack_norms is None:
            stack_norms = encoder_normalize_before or decoder_normalize_before
        if self.stack_norm_type is not None and not stack_norms:
            raise ValueError(
                f"--stack-norm-type {self.stack_norm_type} applies to the final norm of a Pre-LN "
                f"stack and to --layernorm-embedding, and {arch_description(arch)} has neither: "
                "add --encoder-normalize-before/--decoder-normalize-before or "
                "--layernorm-embedding, or leave --stack-norm-type out"
            )
        recursions = self.skip_recursions
        if recursions > 1 and self.skip_scale != 1:
            raise ValueError(
                "--skip-scale must be 1 with --skip-recursions > 1: the recursive "
                f"skip fixes the input scale at 1 (got --skip-scale {self.skip_scale} "
                f"with --skip-recursions {recursions})"
            )
        if recursions > 1 and self.norm_type == "none":
            raise ValueError(
                "--skip-recursions > 1 needs a normalisation: with --norm-type none "
                "the recursion is only n*x + F(x); use --skip-scale instead"
            )
        if self.skip_shared_norm and recursions == 1:
            raise ValueError("--skip-shared-norm needs --skip-recursions > 1")
        defaults = self.defaults()
        uses_adanorm = self.norm_type == "adanorm" or (stack_norms and self.stack_norm == "adanorm")
        if not uses_adanorm and (
            self.adanorm_scale != defaults["adanorm_scale"] or self.adanorm_k != defaults["adanorm_k"]
        ):
            raise ValueError(
                "--adanorm-scale and --adanorm-k apply only where a norm is AdaNorm (--norm-type "
                "adanorm, or --stack-norm-type adanorm with a final Pre-LN norm or "
                f"--layernorm-embedding); got --norm-type {self.norm_type}"
                + (f" --stack-norm-type {self.stack_norm_type}" if self.stack_norm_type else "")
            )
        self._validate_skip_weight(encoder_normalize_before, decoder_normalize_before, arch)
        for side, pre in (("encoder", encoder_normalize_before), ("decoder", decoder_normalize_before)):
            if pre and (recursions > 1 or self.skip_scale != 1):
                raise ValueError(
                    f"--skip-recursions > 1 and --skip-scale != 1 are defined for Post-LN "
                    f"only, and the {side} of {arch_description(arch)} is Pre-LN "
                    f"(--{side}-normalize-before): use a Post-LN architecture such as "
                    "transformer_rskip, or --skip-recursions 1 --skip-scale 1"
                )
        self._validate_shortcut_free(
            encoder_normalize_before or decoder_normalize_before, arch, model_args
        )

    def _validate_skip_weight(
        self, encoder_normalize_before: bool, decoder_normalize_before: bool, arch: str
    ) -> None:
        """--skip-weight, --deepnorm-init, --admin-init, --admin-profile and what they exclude."""
        weight = self.skip_weight
        defaults = self.defaults()
        if weight != "deepnorm" and self.deepnorm_init != defaults["deepnorm_init"]:
            raise ValueError(
                f"--deepnorm-init applies only with --skip-weight deepnorm (got --skip-weight {weight})"
            )
        if weight != "admin" and self.admin_init != defaults["admin_init"]:
            raise ValueError(
                f"--admin-init applies only with --skip-weight admin (got --skip-weight {weight})"
            )
        if self.admin_profile is not None:
            if weight != "admin":
                raise ValueError(
                    f"--admin-profile applies only with --skip-weight admin (got --skip-weight {weight})"
                )
            if self.admin_init != "profile":
                raise ValueError(
                    f"--admin-profile and --admin-init {self.admin_init} both set Admin's initial "
                    "omega: leave one out"
                )
            if not str(self.admin_profile).strip():
                raise ValueError("--admin-profile needs a file name")
        if weight == "deepnorm" and self.attention_init != defaults["attention_init"]:
            raise ValueError(
                f"--attention-init {self.attention_init} and --skip-weight deepnorm both "
                "initialise the attention projections: leave --attention-init out"
            )
        if weight == "fixed":
            return
        if self.skip_recursions > 1:
            raise ValueError(
                f"--skip-weight {weight} needs --skip-recursions 1: DeepNorm and Admin weight "
                f"the skip of Post-LN (got --skip-recursions {self.skip_recursions})"
            )
        if self.skip_scale != 1:
            raise ValueError(
                f"--skip-scale must be 1 with --skip-weight {weight}, which sets the skip's "
                f"weight itself (got --skip-scale {self.skip_scale})"
            )
        if self.norm_type == "none":
            raise ValueError(
                f"--skip-weight {weight} needs a normalisation: it is N(w * x + F(x)), "
                "and --norm-type none has none"
            )
        for side, pre in (("encoder", encoder_normalize_before), ("decoder", decoder_normalize_before)):
            if pre:
                raise ValueError(
                    f"--skip-weight {weight} is defined for Post-LN only, and the {side} of "
                    f"{arch_description(arch)} is Pre-LN (--{side}-normalize-before)"
                )

    def _validate_shortcut_free(self, normalize_before: bool, arch: str, model_args) -> None:
        """The checks of --no-skip, --spa-*, --value-skipinit, --tat-* and
        --cross-attention-shortcut."""
        defaults = self.defaults()
        recursions = self.skip_recursions
        if self.no_skip and (recursions > 1 or self.skip_scale != 1):
            raise ValueError(
                "--no-skip leaves no skip for --skip-recursions > 1 or --skip-scale != 1 "
                f"(got --skip-recursions {recursions} --skip-scale {self.skip_scale})"
            )
        if self.no_skip and self.skip_weight != defaults["skip_weight"]:
            raise ValueError(
                f"--no-skip leaves no skip for --skip-weight {self.skip_weight} to weight"
            )
        if self.no_skip and normalize_before:
            raise ValueError(
                f"--no-skip is defined for post-norm sublayers, and {arch_description(arch)} is "
                "Pre-LN (--encoder/decoder-normalize-before), whose skip path is what defines it"
            )
        kernel = f"--spa-kernel {self.spa_kernel}" if self.spa_kernel else "no --spa-kernel"
        if self.spa_kernel != "exponential" and self.spa_gamma_final != defaults["spa_gamma_final"]:
            raise ValueError(
                f"--spa-gamma-final applies only with --spa-kernel exponential (E-SPA); got {kernel}"
            )
        if self.spa_kernel != "uniform" and self.spa_rho_final != defaults["spa_rho_final"]:
            raise ValueError(
                f"--spa-rho-final applies only with --spa-kernel uniform (U-SPA); got {kernel}"
            )
        if self.spa_kernel is not None and (not self.no_skip or self.norm_type != "none"):
            raise ValueError(
                "--spa-kernel shapes vanilla layers and needs --no-skip --norm-type none "
                f"(got {'--no-skip' if self.no_skip else 'a skip'} and --norm-type "
                f"{self.norm_type}); use --arch transformer_espa or transformer_uspa"
            )
        if self.value_skipinit and not self.no_skip:
            raise ValueError(
                "--value-skipinit replaces the skip connection and needs --no-skip "
                "(e.g. --arch transformer_vanilla --value-skipinit)"
            )
        if self.value_skipinit and self.spa_kernel is not None:
            raise ValueError(
                "--value-skipinit and --spa-kernel are two alternatives: at initialisation "
                "Value-SkipInit's attention is the identity, and the SPA kernel would be unused"
            )
        if not self.shaped and (
            self.tat_eta is not None
            or self.tat_depth != defaults["tat_depth"]
            or self.tat_fallback != defaults["tat_fallback"]
            or self.cross_attention_shortcut != defaults["cross_attention_shortcut"]
            or self.cross_attention_gain_init != defaults["cross_attention_gain_init"]
            or self.shaped_query_init != defaults["shaped_query_init"]
            or self.shaped_key_init != defaults["shaped_key_init"]
        ):
            raise ValueError(
                "--tat-eta, --tat-depth, --tat-fallback, --cross-attention-shortcut, "
                "--cross-attention-gain-init, --shaped-query-init and --shaped-key-init apply "
                "only with --spa-kernel or --value-skipinit"
            )
        if self.no_skip and getattr(model_args, "cross_self_attention", False):
            raise ValueError(
                "--cross-self-attention is not defined with --no-skip (vanilla, --spa-kernel, "
                "--value-skipinit): their decoder self-attention attends to the decoder alone"
            )
        if not self.shaped:
            return
        if self.attention_init != defaults["attention_init"]:
            raise ValueError(
                f"--attention-init {self.attention_init} and --spa-kernel/--value-skipinit both "
                "initialise the attention projections: leave --attention-init out"
            )
        shortcut = self.cross_attention_shortcut
        if shortcut not in ("skipinit", "value-skipinit") and self.cross_attention_gain_init != defaults["cross_attention_gain_init"]:
            raise ValueError("--cross-attention-gain-init applies only with --cross-attention-"
                             f"shortcut skipinit or value-skipinit; got {shortcut}")
        dims = [getattr(model_args, f"{s}_embed_dim", None) for s in ("encoder", "decoder")]
        if shortcut == "value-skipinit" and dims[0] != dims[1]:
            raise ValueError("--cross-attention-shortcut value-skipinit reads the decoder's states "
                             f"through the values' W_V and needs equal widths; got {dims[0]}, {dims[1]}")
        activation_fn = getattr(model_args, "activation_fn", "relu")
        if activation_fn != "relu":
            raise ValueError(
                "E-SPA, U-SPA and Value-SkipInit use TAT's leaky ReLU in place of "
                f"--activation-fn, which must stay relu; got --activation-fn {activation_fn}"
            )
