"""``SkipNormConfig``: every flag of ``transformer_rskip``, with its default,
help and allowed values, and the one place they are validated."""

from dataclasses import dataclass, field, fields
from typing import Optional

from fairseq.dataclass import ChoiceEnum, FairseqDataclass

from fairseq_rskip.config import rules
from fairseq_rskip.config.fields import Interval, arch_description, choices_of, flag

# each a class in fairseq_rskip.modules.normalization.NORMS
NORM_TYPES = ("layernorm", "simple", "adanorm", "rmsnorm", "dyt", "none")
RMSNORM_EPS_PLACEMENTS = ("inside", "outside")
RESIDUAL_GAINS = ("none", "rezero", "skipinit")
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


@dataclass
class SkipNormConfig(FairseqDataclass):
    """Skip connection and normalisation of every sublayer (see ``ResidualNorm``)."""

    # which normalisation, where
    norm_type: ChoiceEnum(list(NORM_TYPES)) = field(
        default="layernorm",
        metadata={"help": "normalisation of every sublayer, and of the stacks' own norms unless "
                  "--stack-norm-type says otherwise (simple = LayerNorm-simple, no gain or bias; "
                  "adanorm = AdaNorm; rmsnorm = RMSNorm; dyt = Dynamic Tanh; none = plain skip)"},
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
    rmsnorm_eps_placement: ChoiceEnum(list(RMSNORM_EPS_PLACEMENTS)) = field(
        default="inside",
        metadata={"help": "RMSNorm's eps: inside = g x / sqrt(mean(x^2) + 1e-5), torch's fused "
                  "F.rms_norm (torch.nn.RMSNorm); outside = g x / (sqrt(mean(x^2)) + 1e-8), "
                  "the RMSNorm authors' code (RMSNorm only)"},
    )
    rmsnorm_partial: Optional[float] = field(
        default=None,
        metadata={"range": Interval(0, 1),
                  "help": "partial RMSNorm: the RMS over the first floor(P d) features, P in "
                  "(0, 1) (default: all d; RMSNorm only)"},
    )
    dyt_alpha_init: float = field(
        default=0.5,
        metadata={"range": Interval(0),
                  "help": "DyT's scalar alpha at start, > 0, in g tanh(alpha x) + b (DyT only)"},
    )
    dyt_attention_alpha_init: Optional[float] = field(
        default=None,
        metadata={"range": Interval(0),
                  "help": "DyT's alpha at start in the norms an attention reads (a Pre-LN layer's "
                  "self- and cross-attention), > 0 (default: --dyt-alpha-init; the DyT authors "
                  "use a larger value there for wide models)"},
    )
    residual_gain: ChoiceEnum(list(RESIDUAL_GAINS)) = field(
        default="none",
        metadata={"help": "a trainable scalar on every sublayer's branch, y = x + alpha F(x), "
                  "without normalisation: rezero = one alpha per layer, shared by its sublayers "
                  "(ReZero); skipinit = one per sublayer (SkipInit); needs --norm-type none"},
    )
    residual_gain_init: float = field(
        default=0.0,
        metadata={"range": Interval(0, closed_low=True),
                  "help": "alpha of --residual-gain at start, >= 0 (0: every layer the identity)"},
    )
    sandwich_norm: bool = field(
        default=False,
        metadata={"help": "Sandwich-LN / Peri-LN: a norm of --norm-type on every sublayer's output, "
                  "before dropout and the residual add, y = x + dropout(N_out(F(N_in(x)))); Pre-LN"},
    )
    # NormFormer (fairseq's language-model flags, here in encoder and decoder layers)
    scale_attn: bool = field(
        default=False,
        metadata={"help": "NormFormer: a norm on the self-attention's output, before dropout and "
                  "the residual add (not on cross-attention); Pre-LN"},
    )
    scale_heads: bool = field(
        default=False,
        metadata={"help": "NormFormer: a trainable scale per head (1 at start) on the "
                  "self-attention's output, viewed as heads after the output projection as "
                  "fairseq 0.12 computes it; Pre-LN"},
    )
    scale_fc: bool = field(
        default=False,
        metadata={"help": "NormFormer: a norm of the feed-forward's hidden width after its "
                  "activation (and activation dropout); Pre-LN"},
    )
    scale_resids: bool = field(
        default=False,
        metadata={"help": "NormFormer: a trainable vector (1 at start) scaling the feed-forward's "
                  "skip input, y = w * x + F(N(x)); Pre-LN"},
    )
    tfixup: bool = field(
        default=False,
        metadata={"help": "T-Fixup's initialisation of a model without norms: scaled value, "
                  "output and feed-forward weights and token embeddings from the depths; "
                  "needs --norm-type none and post-norm placement (transformer_tfixup)"},
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
        rules.check_norm_options(self, stack_norms)
        rules.check_skip_weight(self, encoder_normalize_before, decoder_normalize_before, arch)
        rules.check_sublayer_options(self, encoder_normalize_before, decoder_normalize_before, arch)
        for side, pre in (("encoder", encoder_normalize_before), ("decoder", decoder_normalize_before)):
            if pre and (recursions > 1 or self.skip_scale != 1):
                raise ValueError(
                    f"--skip-recursions > 1 and --skip-scale != 1 are defined for Post-LN "
                    f"only, and the {side} of {arch_description(arch)} is Pre-LN "
                    f"(--{side}-normalize-before): use a Post-LN architecture such as "
                    "transformer_rskip, or --skip-recursions 1 --skip-scale 1"
                )
        rules.check_shortcut_free(
            self, encoder_normalize_before or decoder_normalize_before, arch, model_args
        )
