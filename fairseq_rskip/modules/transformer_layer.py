"""fairseq's Transformer layers with each sublayer wired through :class:`ResidualNorm`.

The layers subclass fairseq's ``TransformerEncoderLayerBase`` and
``TransformerDecoderLayerBase``: attention, feed-forward, dropout and
incremental state are fairseq's own. Only the three places where fairseq
writes ``residual + x`` followed or preceded by a LayerNorm are replaced by
``ResidualNorm``, kept under fairseq's attribute names
(``self_attn_layer_norm``, ``encoder_attn_layer_norm``, ``final_layer_norm``).
The stack's skip weight (:mod:`~fairseq_rskip.modules.skip_weights`) gives
their ``w`` and may then re-initialise the layer (DeepNorm's projections).

The shortcut-free models (``--no-skip``) build their self- and cross-attention
as a :class:`ShapedMultiheadAttention` (its softmax floored, no subnormal
floats); E-SPA, U-SPA and Value-SkipInit (``--spa-kernel``,
``--value-skipinit``) also shape the self-attention, and build their
feed-forward sublayer with TAT's leaky ReLU and orthogonal weights.
"""

import math
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from fairseq.modules.transformer_layer import (
    TransformerDecoderLayerBase,
    TransformerEncoderLayerBase,
)

from fairseq_rskip.config import SkipNormConfig
from fairseq_rskip.modules.normalization import build_norm
from fairseq_rskip.modules.residual_norm import ResidualNorm
from fairseq_rskip.modules.shaped_attention import ShapedMultiheadAttention
from fairseq_rskip.modules.skip_weights import skip_weight_of
from fairseq_rskip.modules.tat import TATLeakyReLU, scaled_orthogonal_, tat_nonlinearities, tat_slope
from fairseq_rskip.modules.tfixup import tfixup_layer_


def init_attention(attention, method: str) -> None:
    """``--attention-init``. ``fairseq`` keeps fairseq's initialisation;
    ``kaiming_uniform`` draws the q, k, v and output projection weights from
    PyTorch's default for ``nn.Linear``, ``kaiming_uniform_(a=sqrt(5))``, i.e.
    ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, and zeroes their biases: what the
    AdaNorm authors' ``--init_method km`` does to the attention projections
    (lancopku/AdaNorm, ``fairseq/modules/multihead_attention.py``)."""
    if method == "fairseq":
        return
    for projection in (attention.q_proj, attention.k_proj, attention.v_proj, attention.out_proj):
        nn.init.kaiming_uniform_(projection.weight, a=math.sqrt(5))
        if projection.bias is not None:
            nn.init.zeros_(projection.bias)


def _saved_state(prev_state: List[Tensor]) -> Dict[str, Optional[Tensor]]:
    """An attention's incremental state from ``[prev_key, prev_value(, padding mask)]``."""
    saved: Dict[str, Optional[Tensor]] = {"prev_key": prev_state[0], "prev_value": prev_state[1]}
    if len(prev_state) >= 3:
        saved["prev_key_padding_mask"] = prev_state[2]
    return saved


class _SkipNormLayer:
    """What encoder and decoder layers share: the wiring of their sublayers
    through ResidualNorms, the feed-forward sublayer, and what the
    shortcut-free models change in a layer."""

    skip_norm: SkipNormConfig
    layer_index: int
    __jit_ignored_attributes__ = ["skip_norm"]  # plain data, not scripted

    def _wire_sublayers(self, cfg, stack: str) -> None:
        """After fairseq's ``__init__``: ``--attention-init``, a ResidualNorm in
        place of each of fairseq's sublayer LayerNorms, the skip weight's
        initialisation of the layer, and the shaped models' feed-forward and
        cross-attention."""
        skip_norm = self.skip_norm
        cross = getattr(self, "encoder_attn", None)
        for attention in [self.self_attn] + ([cross] if cross is not None else []):
            init_attention(attention, skip_norm.attention_init)
        strategy = skip_weight_of(skip_norm)
        layers = (cfg.encoder.layers, cfg.decoder.layers)
        sublayers = 3 if cross is not None else 2
        weight = strategy.initial_weight(skip_norm, stack, *layers, sublayers_per_layer=sublayers)
        pre = (cfg.encoder if stack == "encoder" else cfg.decoder).normalize_before

        # ReZero: one alpha for the layer, in each of its sublayers' ResidualNorm
        shared_gain = (nn.Parameter(torch.full((), float(skip_norm.residual_gain_init)))
                       if skip_norm.residual_gain == "rezero" else None)

        def residual_norm(attention: bool, cross_attention: bool = False) -> ResidualNorm:
            # inplace: each sublayer output is fresh and used once, so the skip adds into it
            return ResidualNorm(self.embed_dim, skip_norm, pre, True, weight, cross_attention=cross_attention,
                                attention=attention, branch_gain=shared_gain)

        self.self_attn_layer_norm = residual_norm(attention=True)
        if getattr(self, "encoder_attn_layer_norm", None) is not None:
            self.encoder_attn_layer_norm = residual_norm(attention=True, cross_attention=True)
        self.final_layer_norm = residual_norm(attention=False)
        # NormFormer's per-head scale and feed-forward norm (its norm on self-attention
        # and its scaled skip are in the ResidualNorms); fairseq's decoder layer builds
        # its own from the same options, replaced here
        self.c_attn = nn.Parameter(torch.ones(self.self_attn.num_heads)) if skip_norm.scale_heads else None
        self.ffn_layernorm = build_norm(self.fc1.out_features, skip_norm) if skip_norm.scale_fc else None
        self.attn_ln = None
        self.w_resid = None
        strategy.initialise_layer_(self, skip_norm, stack, *layers)
        if skip_norm.tfixup:
            tfixup_layer_(self, stack, *layers)
        if skip_norm.shaped:
            self._shape_feed_forward(cfg, decoder=stack == "decoder")
            if cross is not None and skip_norm.cross_attention_shortcut == "zero-out-proj":
                nn.init.zeros_(cross.out_proj.weight)
                nn.init.zeros_(cross.out_proj.bias)

    def _shaped_self_attention(self, cfg, side, causal: bool) -> ShapedMultiheadAttention:
        """The self-attention of the shortcut-free models (``--no-skip``): E-SPA/U-SPA,
        Value-SkipInit, or plain with fairseq's initialisation (vanilla)."""
        skip_norm = self.skip_norm
        kernel = skip_norm.spa_kernel or ""
        return ShapedMultiheadAttention(
            side.embed_dim,
            side.attention_heads,
            cfg.attention_dropout,
            kernel=kernel,
            final=skip_norm.spa_gamma_final if kernel == "exponential" else skip_norm.spa_rho_final,
            layer=self.layer_index + 1,
            num_layers=side.layers,
            causal=causal,
            value_skipinit=bool(skip_norm.value_skipinit),
            q_noise=self.quant_noise,
            qn_block_size=self.quant_noise_block_size,
            max_positions=cfg.max_target_positions if causal else cfg.max_source_positions,
            query_init=skip_norm.shaped_query_init,
            key_init=skip_norm.shaped_key_init,
        )

    def _shape_feed_forward(self, cfg, decoder: bool) -> None:
        """TAT: orthogonal ``fc1``/``fc2`` with zero biases, and the leaky ReLU
        whose slope sends the network's composed C map from 0 to ``--tat-eta``."""
        scaled_orthogonal_(self.fc1)
        scaled_orthogonal_(self.fc2)
        nonlinearities = tat_nonlinearities(
            self.skip_norm.tat_depth, cfg.encoder.layers, cfg.decoder.layers
        )[int(decoder)]
        self.activation_fn = TATLeakyReLU(tat_slope(self.skip_norm.tat_eta, nonlinearities))

    def scale_heads(self, x: Tensor) -> Tensor:
        """NormFormer's ``--scale-heads``: the self-attention's output, viewed as
        heads, times one trainable scale per head (fairseq 0.12 applies it after
        the output projection; ``TransformerDecoderLayerBase.forward``, lines 460-464)."""
        if self.c_attn is None:
            return x
        heads = self.c_attn.size(0)
        return (x.view(x.size(0), x.size(1), heads, -1) * self.c_attn.unsqueeze(-1)).view(x.shape)

    def feed_forward(self, x: Tensor, keep_fc_output: bool) -> Tuple[Tensor, Optional[Tensor]]:
        """``(y, fc2 output or None)`` with ``y`` the sublayer through
        ``final_layer_norm``; the fc2 output is a copy (the skip adds into it)."""
        residual = x
        x = self.final_layer_norm.branch_input(x)
        x = self.activation_dropout_module(self.activation_fn(self.fc1(x)))
        if self.ffn_layernorm is not None:
            x = self.ffn_layernorm(x)
        x = self.fc2(x)
        fc_result = x.clone() if keep_fc_output else None
        x = self.final_layer_norm.branch_output(x)
        return self.final_layer_norm(self.dropout_module(x), residual), fc_result


class RSkipTransformerEncoderLayer(_SkipNormLayer, TransformerEncoderLayerBase):
    """Encoder layer: self-attention and feed-forward, each through a ResidualNorm."""

    def __init__(
        self, cfg, skip_norm: SkipNormConfig, return_fc: bool = False, layer_index: int = 0
    ):
        # plain attributes, read by build_self_attention during fairseq's __init__
        self.skip_norm = skip_norm
        self.layer_index = layer_index
        super().__init__(cfg, return_fc=return_fc)
        self._wire_sublayers(cfg, "encoder")

    def build_self_attention(self, embed_dim, cfg):
        if not self.skip_norm.no_skip:
            return super().build_self_attention(embed_dim, cfg)
        return self._shaped_self_attention(cfg, cfg.encoder, causal=False)

    def forward(
        self,
        x,
        encoder_padding_mask: Optional[Tensor],
        attn_mask: Optional[Tensor] = None,
    ):
        if attn_mask is not None:
            attn_mask = attn_mask.masked_fill(
                attn_mask.to(torch.bool), -1e8 if x.dtype == torch.float32 else -1e4
            )

        residual = x
        x = self.self_attn_layer_norm.branch_input(x)
        x, _ = self.self_attn(
            query=x,
            key=x,
            value=x,
            key_padding_mask=encoder_padding_mask,
            need_weights=False,
            attn_mask=attn_mask,
        )
        x = self.self_attn_layer_norm.branch_output(self.scale_heads(x))
        x = self.self_attn_layer_norm(self.dropout_module(x), residual)

        x, fc_result = self.feed_forward(x, self.return_fc)
        if self.return_fc and not torch.jit.is_scripting():
            return x, fc_result
        return x


class RSkipTransformerDecoderLayer(_SkipNormLayer, TransformerDecoderLayerBase):
    """Decoder layer: self-attention, cross-attention and feed-forward, each
    through a ResidualNorm."""

    def __init__(
        self,
        cfg,
        skip_norm: SkipNormConfig,
        no_encoder_attn=False,
        add_bias_kv=False,
        add_zero_attn=False,
        layer_index: int = 0,
    ):
        self.skip_norm = skip_norm
        self.layer_index = layer_index
        super().__init__(
            cfg,
            no_encoder_attn=no_encoder_attn,
            add_bias_kv=add_bias_kv,
            add_zero_attn=add_zero_attn,
        )
        self._wire_sublayers(cfg, "decoder")

    def build_self_attention(self, embed_dim, cfg, add_bias_kv=False, add_zero_attn=False):
        if not self.skip_norm.no_skip:
            return super().build_self_attention(embed_dim, cfg, add_bias_kv, add_zero_attn)
        assert not add_bias_kv and not add_zero_attn, "--no-skip attention has no bias_kv or zero_attn"
        return self._shaped_self_attention(cfg, cfg.decoder, causal=True)

    def build_encoder_attention(self, embed_dim, cfg):
        """Cross-attention: fairseq's, computed with the floored softmax under ``--no-skip``
        (with ``--cross-attention-shortcut value-skipinit``, Value-SkipInit's)."""
        if not self.skip_norm.no_skip:
            return super().build_encoder_attention(embed_dim, cfg)
        return ShapedMultiheadAttention(
            embed_dim,
            cfg.decoder.attention_heads,
            cfg.attention_dropout,
            kernel="",
            final=0.0,
            layer=self.layer_index + 1,
            num_layers=cfg.decoder.layers,
            causal=False,
            value_skipinit=self.skip_norm.cross_attention_shortcut == "value-skipinit",
            q_noise=self.quant_noise,
            qn_block_size=self.quant_noise_block_size,
            encoder_decoder_attention=True,
            kdim=cfg.encoder.embed_dim,
            query_init="fairseq",
            beta_init=self.skip_norm.cross_attention_gain_init,
        )

    def forward(
        self,
        x,
        encoder_out: Optional[torch.Tensor] = None,
        encoder_padding_mask: Optional[torch.Tensor] = None,
        incremental_state: Optional[Dict[str, Dict[str, Optional[Tensor]]]] = None,
        prev_self_attn_state: Optional[List[torch.Tensor]] = None,
        prev_attn_state: Optional[List[torch.Tensor]] = None,
        self_attn_mask: Optional[torch.Tensor] = None,
        self_attn_padding_mask: Optional[torch.Tensor] = None,
        need_attn: bool = False,
        need_head_weights: bool = False,
    ):
        """fairseq 0.12.3.1's ``TransformerDecoderLayerBase.forward``
        (``fairseq/modules/transformer_layer.py``, lines 384-529), line for line,
        except:

        - each sublayer's ``if self.normalize_before: x = LN(x)`` is
          ``x = LN.branch_input(x)``, and its ``x = self.residual_connection(x,
          residual)`` plus ``if not self.normalize_before: x = LN(x)`` is
          ``x = LN(dropout(x), residual)`` (a :class:`ResidualNorm`);
        - the NormFormer branches (lines 460-466, 508-509, 512-513) are
          :meth:`scale_heads` (``c_attn``), ``branch_output`` (``attn_ln``, an
          output norm of the ResidualNorm, which Sandwich-LN also uses),
          ``ffn_layernorm`` in :meth:`feed_forward`, and the ResidualNorm's
          ``omega`` (``w_resid``, multiplying the skip input);
        - the two copies of the saved-state construction (lines 417-425 and
          477-485) are :func:`_saved_state`, and the feed-forward sublayer
          (lines 502-516) is :meth:`_SkipNormLayer.feed_forward`.
        """
        if need_head_weights:
            need_attn = True

        residual = x
        x = self.self_attn_layer_norm.branch_input(x)
        if prev_self_attn_state is not None:
            assert incremental_state is not None
            self.self_attn._set_input_buffer(incremental_state, _saved_state(prev_self_attn_state))
        _self_attn_input_buffer = self.self_attn._get_input_buffer(incremental_state)
        if self.cross_self_attention and not (
            incremental_state is not None
            and _self_attn_input_buffer is not None
            and "prev_key" in _self_attn_input_buffer
        ):
            if self_attn_mask is not None:
                assert encoder_out is not None
                self_attn_mask = torch.cat(
                    (x.new_zeros(x.size(0), encoder_out.size(0)), self_attn_mask), dim=1
                )
            if self_attn_padding_mask is not None:
                if encoder_padding_mask is None:
                    assert encoder_out is not None
                    encoder_padding_mask = self_attn_padding_mask.new_zeros(
                        encoder_out.size(1), encoder_out.size(0)
                    )
                self_attn_padding_mask = torch.cat(
                    (encoder_padding_mask, self_attn_padding_mask), dim=1
                )
            assert encoder_out is not None
            y = torch.cat((encoder_out, x), dim=0)
        else:
            y = x

        x, attn = self.self_attn(
            query=x,
            key=y,
            value=y,
            key_padding_mask=self_attn_padding_mask,
            incremental_state=incremental_state,
            need_weights=False,
            attn_mask=self_attn_mask,
        )
        x = self.self_attn_layer_norm.branch_output(self.scale_heads(x))
        x = self.self_attn_layer_norm(self.dropout_module(x), residual)

        if self.encoder_attn is not None and encoder_out is not None:
            assert self.encoder_attn_layer_norm is not None
            residual = x
            x = self.encoder_attn_layer_norm.branch_input(x)
            if prev_attn_state is not None:
                assert incremental_state is not None
                self.encoder_attn._set_input_buffer(incremental_state, _saved_state(prev_attn_state))

            x, attn = self.encoder_attn(
                query=x,
                key=encoder_out,
                value=encoder_out,
                key_padding_mask=encoder_padding_mask,
                incremental_state=incremental_state,
                static_kv=True,
                need_weights=need_attn or (not self.training and self.need_attn),
                need_head_weights=need_head_weights,
            )
            x = self.encoder_attn_layer_norm.branch_output(x)
            x = self.encoder_attn_layer_norm(self.dropout_module(x), residual)

        x, _ = self.feed_forward(x, False)

        if self.onnx_trace and incremental_state is not None:
            saved_state = self.self_attn._get_input_buffer(incremental_state)
            assert saved_state is not None
            if self_attn_padding_mask is not None:
                self_attn_state = [
                    saved_state["prev_key"],
                    saved_state["prev_value"],
                    saved_state["prev_key_padding_mask"],
                ]
            else:
                self_attn_state = [saved_state["prev_key"], saved_state["prev_value"]]
            return x, attn, self_attn_state
        return x, attn, None
