"""The variants the tools compare: one table, read by the comparison runner, the speed
benchmark, the gradient analysis, the warm-up demo and the tests.

Each row names a fairseq ``--arch`` (``{size}`` stands for a size suffix:
``_tiny``, ``_iwslt_de_en``, empty for base; see :func:`size_suffix`), the
flags that make the variant, and whether it trains from the peak rate with
``--lr-scheduler inverse_sqrt_nowarmup`` instead of fairseq's
``inverse_sqrt`` warm-up. Rows of fairseq's stock ``transformer`` also name
the plugin's build of the same model (same parameters, bit-for-bit the same
outputs and gradients: tests/test_model_equivalence.py), which the
in-process analyses use to hook every sublayer's ``ResidualNorm``.

Adding a variant is adding a row: the runner (``--archs NAME``), the
benchmark, the gradient analysis's depth sweep, the warm-up demo
(``--runs NAME-nowarmup``) and the tests' model fixture pick it up.
"""

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple


@dataclass(frozen=True)
class Variant:
    name: str
    arch: str  # fairseq --arch, "{size}" replaced by the size suffix
    flags: Tuple[str, ...] = ()
    nowarmup: bool = False  # inverse_sqrt_nowarmup from the peak rate, else inverse_sqrt warm-up
    label: str = ""  # short, for plots and logs
    description: str = ""
    # the stock variant it is compared with like for like (the benchmark's second baseline,
    # the runner's paired comparisons: fairseq_rskip.tools.runner.significance)
    reference: str = "postln"
    # fairseq's own transformer only: the plugin's bit-for-bit equal build (arch, flags)
    plugin_equivalent: Optional[Tuple[str, Tuple[str, ...]]] = None

    @property
    def stock(self) -> bool:
        """fairseq's own ``transformer``, not an architecture of this plugin."""
        return self.plugin_equivalent is not None

    def fairseq_arch(self, size: str = "") -> str:
        """The ``--arch`` for a size (``"tiny"``, ``"_tiny"``, ``"base"`` or ``""``)."""
        return self.arch.format(size=size_suffix(size))

    def plugin_build(self, size: str = "") -> Tuple[str, Tuple[str, ...]]:
        """``(arch, flags)`` of the same model built by this plugin."""
        arch, flags = self.plugin_equivalent if self.stock else (self.arch, self.flags)
        return arch.format(size=size_suffix(size)), tuple(flags)


def size_suffix(size: Optional[str]) -> str:
    """fairseq's architecture-name suffix of a size: ``"tiny"`` -> ``"_tiny"``, ``"base"`` -> ``""``."""
    size = size or ""
    if size in ("", "base"):
        return ""
    return size if size.startswith("_") else "_" + size


PRE_LN_FLAGS = ("--encoder-normalize-before", "--decoder-normalize-before")

VARIANTS: Dict[str, Variant] = {v.name: v for v in (
    Variant("postln", "transformer{size}", (), label="Post-LN",
            description="fairseq transformer, Post-LN",
            plugin_equivalent=("transformer_rskip{size}", ("--skip-recursions", "1"))),
    Variant("preln", "transformer{size}", PRE_LN_FLAGS, label="Pre-LN",
            description="fairseq transformer, Pre-LN",
            plugin_equivalent=("transformer_prenorm_nowarmup{size}", ())),
    Variant("rskip", "transformer_rskip{size}", (), label="rSkip+LN n=2",
            description="rSkip+LN, 2 recursions"),
    Variant("adanorm", "transformer_adanorm{size}", (), label="AdaNorm",
            description="AdaNorm as the authors' code: Pre-LN, AdaNorm (C = 1) on the final norms",
            reference="preln"),
    Variant("prenorm_nowarmup", "transformer_prenorm_nowarmup{size}", (), nowarmup=True,
            label="Pre-LN, no warm-up", description="Pre-LN, no warm-up", reference="preln"),
    Variant("deepnorm", "transformer_deepnorm{size}", (), label="DeepNorm",
            description="DeepNorm (Post-LN, alpha, beta)"),
    Variant("admin", "transformer_admin{size}", (), label="Admin",
            description="Admin (Post-LN, profiled omega)"),
    # the readings of AdaNorm and LayerNorm-simple (docs/adanorm.md)
    Variant("adanorm_every", "transformer_adanorm{size}", ("--norm-type", "adanorm"),
            label="AdaNorm, every norm", description="Pre-LN, AdaNorm (C = 1) on every norm",
            reference="preln"),
    Variant("adanorm_postln", "transformer_rskip{size}",
            ("--skip-recursions", "1", "--norm-type", "adanorm"), label="Post-LN AdaNorm",
            description="Post-LN, AdaNorm (C = 1) on every norm: transformer_adanorm of version 0.1.0"),
    Variant("preln_simple", "transformer_rskip{size}",
            ("--skip-recursions", "1", *PRE_LN_FLAGS, "--norm-type", "simple"),
            label="Pre-LN, LN-simple", description="Pre-LN, LayerNorm-simple on every norm",
            reference="preln"),
    Variant("vanilla", "transformer_vanilla{size}", (), label="vanilla",
            description="no skip, no normalisation (He et al. 2023's control)"),
    Variant("espa", "transformer_espa{size}", (), label="E-SPA",
            description="E-SPA: shaped self-attention, TAT, no skip, no normalisation"),
    Variant("uspa", "transformer_uspa{size}", (), label="U-SPA",
            description="U-SPA: shaped self-attention, TAT, no skip, no normalisation"),
    Variant("value_skipinit", "transformer_vanilla{size}", ("--value-skipinit",), label="Value-SkipInit",
            description="Value-SkipInit: attention alpha I + beta A(X), TAT, no skip, no normalisation"),
    # the baselines of normalisation and residual studies (docs/baselines.md)
    Variant("rmsnorm", "transformer_rmsnorm{size}", (), label="RMSNorm",
            description="Pre-LN with RMSNorm on every norm", reference="preln"),
    Variant("dyt", "transformer_dyt{size}", (), label="DyT",
            description="Pre-LN with Dynamic Tanh in place of every norm", reference="preln"),
    Variant("sandwich", "transformer_sandwich{size}", (), label="Sandwich-LN",
            description="Pre-LN with a LayerNorm on every sublayer's output", reference="preln"),
    Variant("periln", "transformer_periln{size}", (), label="Peri-LN",
            description="Sandwich-LN with a LayerNorm of the embeddings", reference="preln"),
    Variant("normformer", "transformer_normformer{size}", (), label="NormFormer",
            description="Pre-LN with NormFormer's head scales, self-attention and FFN norms",
            reference="preln"),
    Variant("rezero", "transformer_rezero{size}", (), label="ReZero",
            description="ReZero: x + alpha F(x), alpha = 0 at start, one per layer, no norm"),
    Variant("skipinit", "transformer_skipinit{size}", (), label="SkipInit",
            description="SkipInit: x + alpha F(x), alpha = 0 at start, one per sublayer, no norm"),
    Variant("tfixup", "transformer_tfixup{size}", (), nowarmup=True, label="T-Fixup",
            description="T-Fixup: no norm, scaled initialisation, no warm-up"),
)}


def plugin_rows() -> List[str]:
    """Every row of the table that is not fairseq's own transformer: the benchmark's
    candidates."""
    return [v.name for v in VARIANTS.values() if not v.stock]


def distinct_plugin_builds(size: str = "") -> List[Variant]:
    """The rows whose plugin build differs from every earlier row's (``preln`` and
    ``prenorm_nowarmup`` build the same model): what an in-process analysis measures."""
    seen, rows = set(), []
    for variant in VARIANTS.values():
        build = variant.plugin_build(size)
        if build not in seen:
            seen.add(build)
            rows.append(variant)
    return rows


def family_rows(size: str = "") -> List[str]:
    """The first row of each architecture of the table, and every row whose flags
    add parameters to its architecture's (Value-SkipInit's gains): one row per
    family, what a check of every family runs."""
    rows: Dict[str, str] = {}
    for variant in VARIANTS.values():
        rows.setdefault(variant.fairseq_arch(size), variant.name)
    return [*rows.values(), *ADDS_PARAMETERS]


# rows whose flags add parameters to their architecture's
ADDS_PARAMETERS = ("value_skipinit",)
