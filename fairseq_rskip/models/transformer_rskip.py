"""``transformer_rskip``: fairseq's Transformer with configurable skip connections
and normalisation (see :mod:`fairseq_rskip.modules.residual_norm`).

One model; its architectures are the families of ``FAMILIES`` (in
:mod:`fairseq_rskip.models.architectures`, each with its wiring and source;
the table in README.md and docs/architectures.md is made from it), each in
fairseq's usual sizes.

Every architecture accepts every flag below, so e.g. ``--arch
transformer_rskip --skip-recursions 1`` is fairseq's Post-LN ``transformer``
(same parameter names, same outputs) and ``--arch transformer_rskip
--skip-recursions 1 --skip-scale 2`` is the paper's xSkip+LN.
"""

import os
from dataclasses import dataclass
from typing import Optional

import torch
from fairseq.dataclass.utils import gen_parser_from_dataclass
from fairseq.distributed import fsdp_wrap
from fairseq.models import ARCH_CONFIG_REGISTRY, register_model
from fairseq.models.transformer import (
    DEFAULT_MAX_SOURCE_POSITIONS,
    DEFAULT_MAX_TARGET_POSITIONS,
    DEFAULT_MIN_PARAMS_TO_WRAP,
    TransformerConfig,
    TransformerDecoderBase,
    TransformerEncoderBase,
    TransformerModel,
)
from fairseq.modules.checkpoint_activations import checkpoint_wrapper

from fairseq_rskip.checkpoint_compat import check_checkpoint_file
from fairseq_rskip.config import SkipNormConfig
from fairseq_rskip.errors import ModelBuildError, UserError
from fairseq_rskip.models.architectures import DEFAULTS_VERSION, DEFAULTS_VERSION_ATTR
from fairseq_rskip.modules import (
    RSkipTransformerDecoderLayer,
    RSkipTransformerEncoderLayer,
    build_norm,
)
from fairseq_rskip.modules.admin_profile import (
    check_profile_kept,
    profile_admin_,
    start_from_profile_,
    write_profile_on_rank_0,
)
from fairseq_rskip.modules.skip_weights import skip_weight_of
from fairseq_rskip.modules.tat import check_tat_reach
from fairseq_rskip.modules.tfixup import tfixup_embedding_


def _wrap_layer(layer, cfg):
    """Activation checkpointing and FSDP wrapping, as fairseq does for its layers."""
    checkpoint = cfg.checkpoint_activations
    if checkpoint:
        layer = checkpoint_wrapper(layer, offload_to_cpu=cfg.offload_activations)
    min_params_to_wrap = cfg.min_params_to_wrap if not checkpoint else 0
    return fsdp_wrap(layer, min_num_params=min_params_to_wrap)


def validated_skip_norm(args) -> SkipNormConfig:
    """The config of fairseq's model arguments ``args`` (after the architecture
    has filled them), validated: its own flags, their rules with fairseq's
    flags, and whether TAT's ``--tat-eta`` is in reach of the model's depth."""
    skip_norm = SkipNormConfig.from_namespace(args)
    encoder_pre = bool(getattr(args, "encoder_normalize_before", False))
    decoder_pre = bool(getattr(args, "decoder_normalize_before", False))
    skip_norm.validate(
        encoder_pre,
        decoder_pre,
        args.arch,
        encoder_pre
        or (decoder_pre and not getattr(args, "no_decoder_final_norm", False))
        or bool(getattr(args, "layernorm_embedding", False)),
        model_args=args,
    )
    if skip_norm.shaped:
        check_tat_reach(skip_norm.tat_eta, skip_norm.tat_depth, skip_norm.tat_fallback,
                        args.encoder_layers, args.decoder_layers)
    return skip_norm


def fill_legacy_defaults(args) -> None:
    """What fairseq 0.12.3.1's ``TransformerModel.build_model`` writes into ``args``
    before it makes their ``TransformerConfig``
    (``fairseq/models/transformer/transformer_legacy.py``, lines 95-131), in its
    order; its ``base_architecture(args)`` is left to the architecture, which
    ends with it, and its checks of ``--share-all-embeddings`` to
    ``TransformerModelBase.build_model``, which repeats them."""
    if args.encoder_layers_to_keep:
        args.encoder_layers = len(args.encoder_layers_to_keep.split(","))
    if args.decoder_layers_to_keep:
        args.decoder_layers = len(args.decoder_layers_to_keep.split(","))
    if getattr(args, "max_source_positions", None) is None:
        args.max_source_positions = DEFAULT_MAX_SOURCE_POSITIONS
    if getattr(args, "max_target_positions", None) is None:
        args.max_target_positions = DEFAULT_MAX_TARGET_POSITIONS
    if args.share_all_embeddings:
        args.share_decoder_input_output_embed = True
    if getattr(args, "offload_activations", False):
        args.checkpoint_activations = True
    if not args.share_all_embeddings:
        args.min_params_to_wrap = getattr(args, "min_params_to_wrap", DEFAULT_MIN_PARAMS_TO_WRAP)


@dataclass
class RSkipTransformerConfig(TransformerConfig):
    """fairseq's ``TransformerConfig`` of the model's arguments with the model's
    validated :class:`SkipNormConfig`: fairseq's ``build_model`` hands
    ``build_encoder`` and ``build_decoder`` this config alone."""

    skip_norm: Optional[SkipNormConfig] = None

    @classmethod
    def of(cls, args, skip_norm: SkipNormConfig) -> "RSkipTransformerConfig":
        cfg = cls.from_namespace(args)
        cfg.skip_norm = skip_norm
        return cfg


class _SkipNormStack:
    """What the encoder and decoder stacks share: the config they hand to their
    layers, and the embedding and final (Pre-LN) norms of its type."""

    skip_norm: SkipNormConfig
    __jit_ignored_attributes__ = ["skip_norm"]  # plain data, not scripted

    def _next_layer_index(self) -> int:
        """0, 1, 2, ... on successive calls: fairseq builds a stack's layers in
        order, without telling ``build_*_layer`` the index."""
        index = self.__dict__.get("_layers_built", 0)
        self.__dict__["_layers_built"] = index + 1
        return index

    def _replace_stack_norms(self) -> None:
        norm_type = self.skip_norm.stack_norm
        for name in ("layernorm_embedding", "layer_norm"):
            old = getattr(self, name)
            if old is not None:
                setattr(self, name, build_norm(old.normalized_shape[0], self.skip_norm, norm_type))


class RSkipTransformerEncoder(_SkipNormStack, TransformerEncoderBase):
    def __init__(self, cfg, dictionary, embed_tokens, skip_norm: SkipNormConfig, return_fc=False):
        self.skip_norm = skip_norm  # a plain attribute, read by build_encoder_layer below
        super().__init__(cfg, dictionary, embed_tokens, return_fc=return_fc)
        self._replace_stack_norms()
        if skip_norm.tfixup:
            tfixup_embedding_(self.embed_tokens, cfg.encoder.layers)

    def build_encoder_layer(self, cfg):
        layer = RSkipTransformerEncoderLayer(
            cfg, self.skip_norm, return_fc=self.return_fc, layer_index=self._next_layer_index()
        )
        return _wrap_layer(layer, cfg)


class RSkipTransformerDecoder(_SkipNormStack, TransformerDecoderBase):
    def __init__(
        self,
        cfg,
        dictionary,
        embed_tokens,
        skip_norm: SkipNormConfig,
        no_encoder_attn=False,
        output_projection=None,
    ):
        self.skip_norm = skip_norm
        super().__init__(
            cfg,
            dictionary,
            embed_tokens,
            no_encoder_attn=no_encoder_attn,
            output_projection=output_projection,
        )
        self._replace_stack_norms()
        if skip_norm.tfixup and not cfg.share_all_embeddings:  # shared: scaled by the encoder
            tfixup_embedding_(self.embed_tokens, cfg.decoder.layers)

    def build_decoder_layer(self, cfg, no_encoder_attn=False):
        layer = RSkipTransformerDecoderLayer(
            cfg, self.skip_norm, no_encoder_attn, layer_index=self._next_layer_index()
        )
        return _wrap_layer(layer, cfg)


@register_model("transformer_rskip")
class RSkipTransformerModel(TransformerModel):
    """fairseq's ``transformer`` with every sublayer wired through a ResidualNorm.

    With ``--skip-weight admin --admin-init profile`` the model holds the
    buffer ``admin_profiled`` (0, then 1): the first forward pass in training
    mode while it is 0 first sets every Admin ``omega`` by the profiling
    recursion on that batch (:func:`~fairseq_rskip.modules.admin_profile.profile_admin_`),
    before the first update, inside a stock ``fairseq-train``, and writes them
    to ``profile.ratio.init`` in ``--save-dir``
    (:mod:`~fairseq_rskip.modules.admin_profile`). With ``--admin-profile
    FILE`` the omegas come from such a file when the model is built (a file
    that does not fit stops the command there, :class:`ModelBuildError`), and
    the buffer starts at 1. The buffer is saved with the weights, so resuming,
    averaging, fine-tuning and generation never profile again. After the first
    update :meth:`set_num_updates` checks that the omegas this process set are
    still in effect (:func:`~fairseq_rskip.modules.admin_profile.check_profile_kept`).
    """

    def __init__(self, args, encoder, decoder):
        super().__init__(args, encoder, decoder)
        skip_norm = encoder.skip_norm  # the one build_model validated
        if skip_weight_of(skip_norm).profiles(skip_norm):
            # the buffer's name is Admin's, the one skip weight that profiles
            self.register_buffer("admin_profiled", torch.zeros(()))
        else:
            self.admin_profiled = None

    def forward(
        self,
        src_tokens,
        src_lengths,
        prev_output_tokens,
        return_all_hiddens: bool = True,
        features_only: bool = False,
        alignment_layer: Optional[int] = None,
        alignment_heads: Optional[int] = None,
    ):
        """fairseq 0.12.3.1's ``TransformerModelBase.forward``
        (``fairseq/models/transformer/transformer_base.py``, lines 145-173)
        after Admin's profiling, when it is due (never in TorchScript)."""
        if not torch.jit.is_scripting() and self.training and self._admin_profile_due():
            self._profile_admin(src_tokens, src_lengths, prev_output_tokens)
        encoder_out = self.encoder(
            src_tokens, src_lengths=src_lengths, return_all_hiddens=return_all_hiddens
        )
        decoder_out = self.decoder(
            prev_output_tokens,
            encoder_out=encoder_out,
            features_only=features_only,
            alignment_layer=alignment_layer,
            alignment_heads=alignment_heads,
            src_lengths=src_lengths,
            return_all_hiddens=return_all_hiddens,
        )
        return decoder_out

    @torch.jit.unused
    def _admin_profile_due(self) -> bool:
        return self.admin_profiled is not None and not bool(self.admin_profiled)

    @torch.jit.unused
    def _profile_admin(self, src_tokens, src_lengths, prev_output_tokens) -> None:
        def run_forward():
            encoder_out = self.encoder(src_tokens, src_lengths=src_lengths)
            self.decoder(prev_output_tokens, encoder_out=encoder_out, src_lengths=src_lengths)

        profiled = profile_admin_(self, run_forward)
        self.admin_profiled.fill_(1.0)
        write_profile_on_rank_0(profiled, getattr(self.args, "save_dir", None))

    def set_num_updates(self, num_updates):
        """fairseq's, and after the first update the check that Admin's omegas are
        those this process profiled or read."""
        super().set_num_updates(num_updates)
        if num_updates >= 1:
            check_profile_kept(self, num_updates, getattr(self.args, "lr", None))

    def load_state_dict(self, state_dict, strict=True, model_cfg=None, args=None):
        """fairseq's; the loaded omegas are the checkpoint's, not this process's to check."""
        self.__dict__.pop("_admin_start", None)
        return super().load_state_dict(state_dict, strict=strict, model_cfg=model_cfg, args=args)

    @classmethod
    def hub_models(cls):
        return {}

    @classmethod
    def from_pretrained(cls, model_name_or_path, checkpoint_file="model.pt", data_name_or_path=".",
                        **kwargs):
        """fairseq's ``BaseFairseqModel.from_pretrained`` (0.12.3.1), after checking each
        checkpoint file: an empty, damaged or other file is a UserError that names the cause
        and the fix (from fairseq's loader: EOFError with no message, KeyError, RuntimeError)."""
        if os.path.isdir(model_name_or_path):
            for name in checkpoint_file.split(os.pathsep):
                check_checkpoint_file(os.path.join(model_name_or_path, name))
        return super().from_pretrained(model_name_or_path, checkpoint_file, data_name_or_path,
                                       **kwargs)

    @classmethod
    def add_args(cls, parser):
        super().add_args(parser)
        # fairseq hands us its model group, whose default is argparse.SUPPRESS:
        # flags left unset stay absent, and the architecture fills them in.
        gen_parser_from_dataclass(parser, SkipNormConfig(), delete_default=True)
        # arguments parsed now carry the version of the family defaults; saved
        # arguments without it come from an earlier version (a parser default,
        # not an option: fairseq's legacy upgrade of saved arguments copies
        # option defaults only)
        parser.set_defaults(**{DEFAULTS_VERSION_ATTR: DEFAULTS_VERSION})

    @classmethod
    def build_model(cls, args, task):
        """fairseq's ``TransformerModel.build_model``, with the config of this
        package's flags validated once, here, and handed down in the model's
        :class:`RSkipTransformerConfig`."""
        # fairseq has run the architecture already; run it here too for callers
        # that build the model from arguments directly
        ARCH_CONFIG_REGISTRY[args.arch](args)
        fill_legacy_defaults(args)
        try:
            try:
                skip_norm = validated_skip_norm(args)
            except ValueError as err:  # the rules between the flags
                raise UserError(str(err)) from None
            # TransformerModelBase.build_model: embeddings, build_encoder, build_decoder
            model = super(TransformerModel, cls).build_model(RSkipTransformerConfig.of(args, skip_norm), task)
            if model.admin_profiled is not None:
                start_from_profile_(model, args)  # --admin-profile FILE; keeps its text in args
            return model
        except UserError as err:
            # inside a stock fairseq command: one error line, before any data loads
            raise ModelBuildError(str(err)) from None

    @classmethod
    def build_encoder(cls, cfg: RSkipTransformerConfig, src_dict, embed_tokens):
        return RSkipTransformerEncoder(cfg, src_dict, embed_tokens, cfg.skip_norm)

    @classmethod
    def build_decoder(cls, cfg: RSkipTransformerConfig, tgt_dict, embed_tokens):
        return RSkipTransformerDecoder(
            cfg, tgt_dict, embed_tokens, cfg.skip_norm, no_encoder_attn=cfg.no_cross_attention
        )
