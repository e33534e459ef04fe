"""The rules between flags of :class:`~fairseq_rskip.config.SkipNormConfig`,
one function per group, each refusing a combination without a defined meaning
with a message that names the flags (never clamping).
:meth:`SkipNormConfig.validate` runs them, once, where the model is built."""

from fairseq_rskip.config.fields import arch_description, flag


def check_norm_options(config, stack_norms: bool) -> None:
    """Each norm's own flags only where that norm is used; --residual-gain only
    without norms. ``stack_norms``: whether the model has a norm outside its layers."""
    defaults = config.defaults()
    used = {config.norm_type} | ({config.stack_norm} if stack_norms else set())
    used_as = f"got --norm-type {config.norm_type}" + (
        f" --stack-norm-type {config.stack_norm_type}" if config.stack_norm_type else "")
    own_flags = {  # the norm, its name in messages, its own flags
        "adanorm": ("AdaNorm", "adanorm_scale", "adanorm_k"),
        "rmsnorm": ("RMSNorm", "rmsnorm_eps_placement", "rmsnorm_partial"),
        "dyt": ("DyT", "dyt_alpha_init", "dyt_attention_alpha_init"),
    }
    for norm, (title, *names) in own_flags.items():
        if norm not in used and any(getattr(config, n) != defaults[n] for n in names):
            raise ValueError(
                f"{' and '.join(flag(n) for n in names)} apply only where a norm is {title} "
                f"(--norm-type {norm}, or --stack-norm-type {norm} with a final Pre-LN norm or "
                f"--layernorm-embedding); {used_as}"
            )
    gain = config.residual_gain
    if gain == "none":
        if config.residual_gain_init != defaults["residual_gain_init"]:
            raise ValueError("--residual-gain-init applies only with --residual-gain rezero or skipinit")
        return
    if used != {"none"}:
        raise ValueError(
            f"--residual-gain {gain} is y = x + alpha F(x) without normalisation, and needs "
            f"--norm-type none and no other --stack-norm-type; {used_as}"
        )
    if config.no_skip or config.skip_weight != defaults["skip_weight"] or config.skip_scale != 1:
        raise ValueError(
            f"--residual-gain {gain} weights the branch of a plain skip, y = x + alpha F(x): "
            "leave out --no-skip, --skip-weight and --skip-scale"
        )


def check_sublayer_options(config, encoder_normalize_before: bool, decoder_normalize_before: bool,
                           arch: str) -> None:
    """Sandwich-LN/Peri-LN, NormFormer's four options and T-Fixup."""
    normformer = [n for n in ("scale_attn", "scale_heads", "scale_fc", "scale_resids") if getattr(config, n)]
    pre_ln_only = (["sandwich_norm"] if config.sandwich_norm else []) + normformer
    if pre_ln_only and not (encoder_normalize_before and decoder_normalize_before):
        raise ValueError(
            f"{', '.join(flag(n) for n in pre_ln_only)} {'is' if len(pre_ln_only) == 1 else 'are'} "
            "defined for Pre-LN layers, and "
            f"{arch_description(arch)} is not Pre-LN on both sides: add --encoder-normalize-before "
            "--decoder-normalize-before, or use transformer_sandwich, transformer_periln or "
            "transformer_normformer"
        )
    norms = [n for n in ("sandwich_norm", "scale_attn", "scale_fc") if getattr(config, n)]
    if norms and config.norm_type == "none":
        raise ValueError(f"{', '.join(flag(n) for n in norms)} add norms of --norm-type, which is none")
    if config.sandwich_norm and config.scale_attn:
        raise ValueError("--sandwich-norm and --scale-attn both put a norm on the self-attention's "
                         "output: leave one out")
    if not config.tfixup:
        return
    defaults = config.defaults()
    if (config.norm_type != "none" or encoder_normalize_before or decoder_normalize_before
            or config.no_skip or config.residual_gain != "none"
            or config.skip_weight != defaults["skip_weight"] or config.skip_scale != 1
            or config.attention_init != defaults["attention_init"]):
        raise ValueError(
            "--tfixup initialises a post-norm model without norms, y = x + F(x): it needs "
            "--norm-type none and no --encoder/decoder-normalize-before, --no-skip, "
            "--residual-gain, --skip-weight, --skip-scale or --attention-init (use --arch "
            "transformer_tfixup)"
        )


def check_skip_weight(
    config, encoder_normalize_before: bool, decoder_normalize_before: bool, arch: str
) -> None:
    """--skip-weight, --deepnorm-init, --admin-init, --admin-profile and what they exclude."""
    weight = config.skip_weight
    defaults = config.defaults()
    if weight != "deepnorm" and config.deepnorm_init != defaults["deepnorm_init"]:
        raise ValueError(
            f"--deepnorm-init applies only with --skip-weight deepnorm (got --skip-weight {weight})"
        )
    if weight != "admin" and config.admin_init != defaults["admin_init"]:
        raise ValueError(
            f"--admin-init applies only with --skip-weight admin (got --skip-weight {weight})"
        )
    if config.admin_profile is not None:
        if weight != "admin":
            raise ValueError(
                f"--admin-profile applies only with --skip-weight admin (got --skip-weight {weight})"
            )
        if config.admin_init != "profile":
            raise ValueError(
                f"--admin-profile and --admin-init {config.admin_init} both set Admin's initial "
                "omega: leave one out"
            )
        if not str(config.admin_profile).strip():
            raise ValueError("--admin-profile needs a file name")
    if weight == "deepnorm" and config.attention_init != defaults["attention_init"]:
        raise ValueError(
            f"--attention-init {config.attention_init} and --skip-weight deepnorm both "
            "initialise the attention projections: leave --attention-init out"
        )
    if weight == "fixed":
        return
    if config.skip_recursions > 1:
        raise ValueError(
            f"--skip-weight {weight} needs --skip-recursions 1: DeepNorm and Admin weight "
            f"the skip of Post-LN (got --skip-recursions {config.skip_recursions})"
        )
    if config.skip_scale != 1:
        raise ValueError(
            f"--skip-scale must be 1 with --skip-weight {weight}, which sets the skip's "
            f"weight itself (got --skip-scale {config.skip_scale})"
        )
    if config.norm_type == "none":
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

def check_shortcut_free(config, normalize_before: bool, arch: str, model_args) -> None:
    """The checks of --no-skip, --spa-*, --value-skipinit, --tat-* and
    --cross-attention-shortcut."""
    defaults = config.defaults()
    recursions = config.skip_recursions
    if config.no_skip and (recursions > 1 or config.skip_scale != 1):
        raise ValueError(
            "--no-skip leaves no skip for --skip-recursions > 1 or --skip-scale != 1 "
            f"(got --skip-recursions {recursions} --skip-scale {config.skip_scale})"
        )
    if config.no_skip and config.skip_weight != defaults["skip_weight"]:
        raise ValueError(
            f"--no-skip leaves no skip for --skip-weight {config.skip_weight} to weight"
        )
    if config.no_skip and normalize_before:
        raise ValueError(
            f"--no-skip is defined for post-norm sublayers, and {arch_description(arch)} is "
            "Pre-LN (--encoder/decoder-normalize-before), whose skip path is what defines it"
        )
    kernel = f"--spa-kernel {config.spa_kernel}" if config.spa_kernel else "no --spa-kernel"
    if config.spa_kernel != "exponential" and config.spa_gamma_final != defaults["spa_gamma_final"]:
        raise ValueError(
            f"--spa-gamma-final applies only with --spa-kernel exponential (E-SPA); got {kernel}"
        )
    if config.spa_kernel != "uniform" and config.spa_rho_final != defaults["spa_rho_final"]:
        raise ValueError(
            f"--spa-rho-final applies only with --spa-kernel uniform (U-SPA); got {kernel}"
        )
    if config.spa_kernel is not None and (not config.no_skip or config.norm_type != "none"):
        raise ValueError(
            "--spa-kernel shapes vanilla layers and needs --no-skip --norm-type none "
            f"(got {'--no-skip' if config.no_skip else 'a skip'} and --norm-type "
            f"{config.norm_type}); use --arch transformer_espa or transformer_uspa"
        )
    if config.value_skipinit and not config.no_skip:
        raise ValueError(
            "--value-skipinit replaces the skip connection and needs --no-skip "
            "(e.g. --arch transformer_vanilla --value-skipinit)"
        )
    if config.value_skipinit and config.spa_kernel is not None:
        raise ValueError(
            "--value-skipinit and --spa-kernel are two alternatives: at initialisation "
            "Value-SkipInit's attention is the identity, and the SPA kernel would be unused"
        )
    if not config.shaped and (
        config.tat_eta is not None
        or config.tat_depth != defaults["tat_depth"]
        or config.tat_fallback != defaults["tat_fallback"]
        or config.cross_attention_shortcut != defaults["cross_attention_shortcut"]
        or config.cross_attention_gain_init != defaults["cross_attention_gain_init"]
        or config.shaped_query_init != defaults["shaped_query_init"]
        or config.shaped_key_init != defaults["shaped_key_init"]
    ):
        raise ValueError(
            "--tat-eta, --tat-depth, --tat-fallback, --cross-attention-shortcut, "
            "--cross-attention-gain-init, --shaped-query-init and --shaped-key-init apply "
            "only with --spa-kernel or --value-skipinit"
        )
    if config.no_skip and getattr(model_args, "cross_self_attention", False):
        raise ValueError(
            "--cross-self-attention is not defined with --no-skip (vanilla, --spa-kernel, "
            "--value-skipinit): their decoder self-attention attends to the decoder alone"
        )
    if config.shaped:
        check_shaped(config, model_args)


def check_shaped(config, model_args) -> None:
    """The checks of a shaped model's (--spa-kernel, --value-skipinit) other flags."""
    defaults = config.defaults()
    if config.attention_init != defaults["attention_init"]:
        raise ValueError(
            f"--attention-init {config.attention_init} and --spa-kernel/--value-skipinit both "
            "initialise the attention projections: leave --attention-init out"
        )
    shortcut = config.cross_attention_shortcut
    if shortcut not in ("skipinit", "value-skipinit") and config.cross_attention_gain_init != defaults["cross_attention_gain_init"]:
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
