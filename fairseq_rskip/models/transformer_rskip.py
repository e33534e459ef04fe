"""``transformer_rskip``: fairseq's Transformer with configurable skip connections
and normalisation (see :mod:`fairseq_rskip.modules.residual_norm`).

One model, three families of architectures, each in fairseq's usual sizes:

==============================  ==============================================
``transformer_rskip*``          rSkip+LN, ``--skip-recursions 2``
``transformer_adanorm*``        AdaNorm in place of every LayerNorm
``transformer_prenorm_nowarmup*``  Pre-LN (meant for ``--lr-scheduler
                                inverse_sqrt_nowarmup``)
==============================  ==============================================

Every architecture accepts every flag below, so e.g. ``--arch
transformer_rskip --skip-recursions 1`` is fairseq's Post-LN ``transformer``
(same parameter names, same outputs) and ``--arch transformer_rskip
--skip-recursions 1 --skip-scale 2`` is the paper's xSkip+LN.
"""

from fairseq.distributed import fsdp_wrap
from fairseq.models import register_model, register_model_architecture
from fairseq.models.transformer import (
    TransformerConfig,
    TransformerDecoderBase,
    TransformerEncoderBase,
    TransformerModel,
)
from fairseq.models.transformer.transformer_legacy import (
    base_architecture,
    tiny_architecture,
    transformer_iwslt_de_en,
    transformer_vaswani_wmt_en_de_big,
    transformer_wmt_en_de,
    transformer_wmt_en_de_big,
)
from fairseq.modules.checkpoint_activations import checkpoint_wrapper

from fairseq_rskip.modules import (
    NORM_TYPES,
    RSkipTransformerDecoderLayer,
    RSkipTransformerEncoderLayer,
    SkipNormConfig,
)


def _wrap_layer(layer, cfg):
    """Activation checkpointing and FSDP wrapping, as fairseq does for its layers."""
    checkpoint = cfg.checkpoint_activations
    if checkpoint:
        layer = checkpoint_wrapper(layer, offload_to_cpu=cfg.offload_activations)
    min_params_to_wrap = cfg.min_params_to_wrap if not checkpoint else 0
    return fsdp_wrap(layer, min_num_params=min_params_to_wrap)


def _replace_stack_norms(module, cfg) -> None:
    """Give the embedding norm and the final (Pre-LN) norm the configured type."""
    skip = SkipNormConfig.from_args(cfg)
    for name in ("layernorm_embedding", "layer_norm"):
        old = getattr(module, name)
        if old is not None:
            setattr(module, name, skip.build_norm(old.normalized_shape[0]))


class RSkipTransformerEncoder(TransformerEncoderBase):
    def __init__(self, cfg, dictionary, embed_tokens, return_fc=False):
        super().__init__(cfg, dictionary, embed_tokens, return_fc=return_fc)
        _replace_stack_norms(self, cfg)

    def build_encoder_layer(self, cfg):
        return _wrap_layer(RSkipTransformerEncoderLayer(cfg, return_fc=self.return_fc), cfg)


class RSkipTransformerDecoder(TransformerDecoderBase):
    def __init__(self, cfg, dictionary, embed_tokens, no_encoder_attn=False, output_projection=None):
        super().__init__(
            cfg,
            dictionary,
            embed_tokens,
            no_encoder_attn=no_encoder_attn,
            output_projection=output_projection,
        )
        _replace_stack_norms(self, cfg)

    def build_decoder_layer(self, cfg, no_encoder_attn=False):
        return _wrap_layer(RSkipTransformerDecoderLayer(cfg, no_encoder_attn), cfg)


@register_model("transformer_rskip")
class RSkipTransformerModel(TransformerModel):
    """fairseq's ``transformer`` with every sublayer wired through a ResidualNorm."""

    @classmethod
    def hub_models(cls):
        return {}

    @classmethod
    def add_args(cls, parser):
        super().add_args(parser)
        # fairseq hands us its model group, whose default is argparse.SUPPRESS:
        # flags left unset stay absent, and the architecture fills them in.

        parser.add_argument(
            "--norm-type",
            metavar="TYPE",
            help=f"normalisation of every sublayer and stack: one of {', '.join(NORM_TYPES)} "
            "(simple = LayerNorm-simple, no gain or bias; none = plain skip)",
        )
        parser.add_argument(
            "--skip-recursions",
            type=int,
            metavar="N",
            help="rSkip+LN recursions n >= 1: y_1 = N_1(x + F(x)), y_i = N_i(x + y_(i-1)); "
            "1 = Post-LN",
        )
        parser.add_argument(
            "--skip-scale",
            type=float,
            metavar="LAMBDA",
            help="fixed input scale of the skip, y = N(LAMBDA * x + F(x)) (xSkip); > 0, "
            "needs --skip-recursions 1",
        )
        parser.add_argument(
            "--skip-shared-norm",
            action="store_true",
            help="ablation: the rSkip recursions share one normalisation",
        )
        parser.add_argument(
            "--adanorm-scale",
            type=float,
            metavar="C",
            help="AdaNorm scale C > 0 (default 1; --norm-type adanorm only)",
        )
        parser.add_argument(
            "--adanorm-k",
            type=float,
            metavar="K",
            help="AdaNorm k in [0, 1) (default 0.1; --norm-type adanorm only)",
        )

    @classmethod
    def build_model(cls, args, task):
        skip_norm_defaults(args)  # checkpoints written before a flag existed
        skip = SkipNormConfig.from_args(args)  # refuses bad values before building
        skip.check_placement(getattr(args, "encoder_normalize_before", False), "encoder")
        skip.check_placement(getattr(args, "decoder_normalize_before", False), "decoder")
        return super().build_model(args, task)

    @classmethod
    def build_encoder(cls, args, src_dict, embed_tokens):
        return RSkipTransformerEncoder(TransformerConfig.from_namespace(args), src_dict, embed_tokens)

    @classmethod
    def build_decoder(cls, args, tgt_dict, embed_tokens):
        cfg = TransformerConfig.from_namespace(args)
        return RSkipTransformerDecoder(
            cfg, tgt_dict, embed_tokens, no_encoder_attn=cfg.no_cross_attention
        )


def skip_norm_defaults(args):
    """Defaults of the flags above; the AdaNorm ones stay unset unless given."""
    args.norm_type = getattr(args, "norm_type", "layernorm")
    args.skip_recursions = getattr(args, "skip_recursions", 1)
    args.skip_scale = getattr(args, "skip_scale", 1.0)
    args.skip_shared_norm = getattr(args, "skip_shared_norm", False)
    args.adanorm_scale = getattr(args, "adanorm_scale", None)
    args.adanorm_k = getattr(args, "adanorm_k", None)


# Architectures: a family's defaults, then fairseq's defaults of a size. Both
# only fill what the command line left unset.
FAMILIES = {
    "transformer_rskip": {"skip_recursions": 2},
    "transformer_adanorm": {"norm_type": "adanorm"},
    "transformer_prenorm_nowarmup": {
        "encoder_normalize_before": True,
        "decoder_normalize_before": True,
    },
}
SIZES = {
    "": base_architecture,
    "_tiny": tiny_architecture,
    "_iwslt_de_en": transformer_iwslt_de_en,
    "_wmt_en_de": transformer_wmt_en_de,
    "_vaswani_wmt_en_de_big": transformer_vaswani_wmt_en_de_big,
    "_wmt_en_de_big": transformer_wmt_en_de_big,
}


def _register_architecture(family: str, suffix: str):
    family_defaults, size_defaults = FAMILIES[family], SIZES[suffix]

    def architecture(args):
        for key, value in family_defaults.items():
            setattr(args, key, getattr(args, key, value))
        skip_norm_defaults(args)
        size_defaults(args)

    architecture.__name__ = family + suffix
    architecture.__doc__ = f"{family} defaults {family_defaults} on fairseq's {size_defaults.__name__}"
    register_model_architecture("transformer_rskip", family + suffix)(architecture)


for _family in FAMILIES:
    for _suffix in SIZES:
        _register_architecture(_family, _suffix)
