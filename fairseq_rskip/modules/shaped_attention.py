"""Attention of the shortcut-free models: E-SPA, U-SPA, Value-SkipInit, vanilla.

He et al., "Deep Transformers without Shortcuts", ICLR 2023 (arXiv 2302.10322).
Per head, with ``X`` the layer input, ``Q, K, V`` its projections and
``d_k`` the head size:

================  ==============================================================
E-SPA, U-SPA      ``D_l softmax(Q K^T / sqrt(d_k) + B_l) V`` with the fixed bias
                  ``B_l`` and row scaling ``D_l`` of :mod:`fairseq_rskip.modules.spa`
                  for layer ``l`` of ``L``; ``W_Q = 0`` at start, so that the
                  attention is ``A_l`` whatever the input
Value-SkipInit    ``(alpha I + beta softmax(Q K^T / sqrt(d_k))) V``, trainable
                  scalars ``alpha = 1``, ``beta = 0`` at start; ``W_Q = 0``;
                  as cross-attention (``--cross-attention-shortcut
                  value-skipinit``) ``alpha X W_V + beta softmax(Q K^T /
                  sqrt(d_k)) S W_V``, ``X`` the decoder's states, ``S`` the
                  encoder's output, ``beta`` starting at ``beta_init``,
                  fairseq's ``W_Q``, ``W_K``
plain             ``softmax(Q K^T / sqrt(d_k)) V``: the vanilla model's
                  self-attention and every shortcut-free model's cross-attention,
                  with fairseq's initialisation
================  ==============================================================

followed by the output projection. With SPA or Value-SkipInit the values and
output projection start random orthogonal and all biases zero, so that at
start the sublayer keeps the kernel of its input up to the attention's mixing
(``--shaped-query-init``, ``--shaped-key-init``: the queries' and keys' start).
Every softmax is :func:`~fairseq_rskip.modules.subnormals.floored_softmax`
(probabilities of at most ``2**-50`` exactly zero, so that no subnormal float
enters the products), computed as written (no fused kernel).

Positions are those of the real tokens: a sequence's first non-padding token
is position 0, whatever fairseq's (left) padding. Decoder (causal)
self-attention uses row ``t`` of ``B_l`` and ``D_l`` for the token at
position ``t``, so incremental decoding gives full decoding's outputs.
Encoder (bidirectional) self-attention uses the matrices of each sequence's
own length. Matrices are built in float64 once per length (causal: once, for
the decoder's ``--max-target-positions``, of which shorter lengths take the
leading block) and kept on the module, outside its state dict; under
TorchScript they are rebuilt on every call.
"""

from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fairseq.modules.multihead_attention import MultiheadAttention

from fairseq_rskip.modules.spa import bias_and_log_scale, correlation_schedule, log_attention_matrix
from fairseq_rskip.modules.subnormals import FLOOR, floored_softmax

# bidirectional matrices kept per layer (one per sequence length, the oldest dropped first)
MAX_CACHED_LENGTHS = 256


class ShapedMultiheadAttention(MultiheadAttention):
    """fairseq's ``MultiheadAttention`` (self- or encoder-decoder attention; same
    parameters and incremental state) with E-SPA/U-SPA's shaping, Value-SkipInit,
    or neither, and the floored softmax.

    ``kernel`` is ``"exponential"``, ``"uniform"`` or ``""`` (no shaping);
    ``final`` its ``gamma_L`` or ``rho_L``; ``layer`` is ``l`` in ``1 .. num_layers``.
    ``encoder_decoder_attention``: keys and values from ``key`` (the encoder's
    output), cached across decoding steps (``static_kv``), no shaping (Value-SkipInit
    allowed: the query's own value is ``v_proj(query)``).
    """

    __jit_ignored_attributes__ = ["_matrices"]

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float,
        kernel: str,
        final: float,
        layer: int,
        num_layers: int,
        causal: bool,
        value_skipinit: bool,
        q_noise: float = 0.0,
        qn_block_size: int = 8,
        max_positions: int = 1024,
        encoder_decoder_attention: bool = False,
        kdim: Optional[int] = None,
        query_init: str = "zero",
        key_init: str = "fairseq",
        beta_init: float = 0.0,
    ):
        super().__init__(
            embed_dim,
            num_heads,
            kdim=kdim,
            vdim=kdim,
            dropout=dropout,
            self_attention=not encoder_decoder_attention,
            encoder_decoder_attention=encoder_decoder_attention,
            q_noise=q_noise,
            qn_block_size=qn_block_size,
        )
        assert not (encoder_decoder_attention and kernel), (
            "cross-attention has no identity-like attention to shape"
        )
        self.kernel = kernel
        self.causal = causal
        self.max_positions = max_positions
        self.layer = layer
        self.num_layers = num_layers
        self.rho = 0.0
        self.rho_prev = 0.0
        if kernel:
            rhos = correlation_schedule(kernel, final, num_layers)
            self.rho, self.rho_prev = rhos[layer], rhos[layer - 1]
        if value_skipinit:
            self.value_skipinit_alpha = nn.Parameter(torch.ones(()))
            self.value_skipinit_beta = nn.Parameter(torch.full((), float(beta_init)))
        else:
            self.register_parameter("value_skipinit_alpha", None)
            self.register_parameter("value_skipinit_beta", None)
        self.probability_floor = FLOOR
        self._matrices: Dict[Tuple[int, str], Tuple[Tensor, Tensor]] = {}
        if kernel or value_skipinit:
            self.reset_shaped_parameters(query_init, key_init)

    def reset_shaped_parameters(self, query_init: str = "zero", key_init: str = "fairseq") -> None:
        """Orthogonal ``W_V``, ``W_O``; ``W_Q = 0`` (``query_init`` ``zero``) or
        fairseq's; ``W_K`` fairseq's or ``N(0, 1/d)`` (``key_init`` ``normal``);
        zero biases."""
        nn.init.orthogonal_(self.v_proj.weight)
        nn.init.orthogonal_(self.out_proj.weight)
        if query_init == "zero":
            nn.init.zeros_(self.q_proj.weight)
        if key_init == "normal":
            nn.init.normal_(self.k_proj.weight, std=self.k_proj.weight.size(1) ** -0.5)
        for proj in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            if proj.bias is not None:
                nn.init.zeros_(proj.bias)

    # -- the fixed matrices -------------------------------------------------------

    def _build(self, n: int, device: torch.device) -> Tuple[Tensor, Tensor]:
        """``(B_l, diag of D_l)`` for ``n`` positions, float32 on ``device``."""
        log_a = log_attention_matrix(self.kernel, self.rho, self.rho_prev, n, self.causal)
        bias, log_scale = bias_and_log_scale(log_a)
        return bias.float().to(device), log_scale.exp().float().to(device)

    @torch.jit.unused
    def _cached(self, n: int, device: torch.device) -> Tuple[Tensor, Tensor]:
        if self.causal:
            # one matrix for every length, built for the most positions the decoder
            # takes, so that each length's numbers do not depend on the lengths seen
            # before (ranks and processes agree bit for bit)
            key = (-1, str(device))
            held = self._matrices.get(key)
            if held is None or held[1].size(0) < n:
                held = self._build(max(n, self.max_positions), device)
                self._matrices[key] = held
            return held[0][:n, :n], held[1][:n]
        key = (n, str(device))
        held = self._matrices.pop(key, None)
        if held is None:
            held = self._build(n, device)
            while len(self._matrices) >= MAX_CACHED_LENGTHS:
                self._matrices.pop(next(iter(self._matrices)))
        self._matrices[key] = held  # most recently used last
        return held

    def _matrices_for(self, n: int, device: torch.device) -> Tuple[Tensor, Tensor]:
        if torch.jit.is_scripting():
            return self._build(n, device)
        return self._cached(n, device)

    def shaping(
        self, key_padding_mask: Optional[Tensor], tgt_len: int, src_len: int, device: torch.device
    ) -> Tuple[Tensor, Tensor]:
        """``(B, d)`` for queries ``src_len - tgt_len .. src_len - 1`` over
        ``src_len`` keys: ``B`` of shape ``(bsz or 1, 1, tgt_len, src_len)``,
        ``d`` of shape ``(bsz or 1, 1, tgt_len, 1)``, float32."""
        first = src_len - tgt_len
        if key_padding_mask is None or (self.causal and not bool(key_padding_mask[:, 0].any())):
            # every sequence starts at position 0 (causal: right padding is never seen)
            bias, scale = self._matrices_for(src_len, device)
            return bias[first:].unsqueeze(0).unsqueeze(0), scale[first:].view(1, 1, tgt_len, 1)
        real = ~key_padding_mask.to(torch.bool)
        positions = (real.long().cumsum(1) - 1).clamp(min=0)  # padding before a sequence: 0
        lengths = real.long().sum(1)
        bsz = key_padding_mask.size(0)
        if self.causal:
            bias, scale = self._matrices_for(int(lengths.max()), device)
            query = positions[:, first:]
            return (
                bias[query.unsqueeze(2), positions.unsqueeze(1)].unsqueeze(1),
                scale[query].view(bsz, 1, tgt_len, 1),
            )
        batch_bias = torch.zeros(bsz, tgt_len, src_len, device=device)
        batch_scale = torch.ones(bsz, tgt_len, device=device)
        distinct: List[int] = torch.unique(lengths).tolist()
        for n in distinct:
            if n == 0:
                continue
            rows = (lengths == n).nonzero().squeeze(1)
            at = positions.index_select(0, rows).clamp(max=n - 1)
            bias, scale = self._matrices_for(n, device)
            query = at[:, first:]
            batch_bias[rows] = bias[query.unsqueeze(2), at.unsqueeze(1)]
            batch_scale[rows] = scale[query]
        return batch_bias.unsqueeze(1), batch_scale.view(bsz, 1, tgt_len, 1)

    # -- forward ----------------------------------------------------------------------

    def forward(
        self,
        query: Tensor,
        key: Optional[Tensor],
        value: Optional[Tensor],
        key_padding_mask: Optional[Tensor] = None,
        incremental_state: Optional[Dict[str, Dict[str, Optional[Tensor]]]] = None,
        need_weights: bool = True,
        static_kv: bool = False,
        attn_mask: Optional[Tensor] = None,
        before_softmax: bool = False,
        need_head_weights: bool = False,
    ) -> Tuple[Tensor, Optional[Tensor]]:
        """The attention of ``query`` (Time x Batch x Channel), as fairseq's
        ``MultiheadAttention.forward`` (0.12.3.1) takes and returns it. Self-attention:
        ``key`` and ``value`` must be ``query`` (or None); encoder-decoder attention:
        keys and values come from ``key``. ``before_softmax`` is not supported.
        Returned weights (``need_weights``) are the mixing matrix ``D_l softmax(.)``
        (SPA) or ``softmax(.)`` (otherwise; Value-SkipInit's ``A(X)``)."""
        assert not before_softmax, "before_softmax is not supported"
        assert static_kv == self.encoder_decoder_attention, "static_kv is for encoder-decoder attention"
        if need_head_weights:
            need_weights = True
        tgt_len, bsz, embed_dim = query.size()
        saved_state: Optional[Dict[str, Optional[Tensor]]] = None
        if incremental_state is not None:
            saved_state = self._get_input_buffer(incremental_state)
        source = key if self.encoder_decoder_attention else query
        if static_kv and saved_state is not None and "prev_key" in saved_state:
            source = None  # the encoder's keys and values are cached
        if source is not None and static_kv and self.beam_size > 1 and source.size(1) == bsz:
            # set_beam_size: keys once per sentence, as fairseq caches (and reorders) them
            source = source.view(source.size(0), -1, self.beam_size, source.size(2))[:, :, 0, :]
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.view(-1, self.beam_size, key_padding_mask.size(1))[:, 0, :]

        # (T, B, C) -> (B, H, T, C / H)
        q = self._heads(self.q_proj(query))
        k: Optional[Tensor] = None
        v: Optional[Tensor] = None
        if source is not None:
            k = self._heads(self.k_proj(source))
            v = self._heads(self.v_proj(source))
        if saved_state is not None:
            k, v, key_padding_mask = self._with_cache(saved_state, k, v, key_padding_mask, static_kv)
            assert incremental_state is not None
            self._set_input_buffer(incremental_state, saved_state)
        assert k is not None and v is not None
        if k.size(0) != bsz:  # keys cached once per sentence, queries per beam (set_beam_size)
            k = k.repeat_interleave(bsz // k.size(0), dim=0)
            v = v.repeat_interleave(bsz // v.size(0), dim=0)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.repeat_interleave(bsz // key_padding_mask.size(0), dim=0)
        src_len = k.size(2)

        mask: Optional[Tensor] = None  # added to the attention logits
        scale: Optional[Tensor] = None  # D_l
        if self.kernel != "":
            mask, scale = self.shaping(key_padding_mask, tgt_len, src_len, q.device)
        if attn_mask is not None:
            mask = attn_mask if mask is None else mask + attn_mask
        if key_padding_mask is not None:
            padding = key_padding_mask.to(torch.bool).view(bsz, 1, 1, src_len)
            base = mask if mask is not None else torch.zeros(1, 1, 1, 1, device=q.device)
            mask = base.masked_fill(padding, float("-inf"))

        # the bias B_l and the masks are added in float32, where the softmax runs: in
        # half precision B_l's rounding would move rows of softmax(B_l) by up to 0.4 %
        logits = torch.matmul(q * self.scaling, k.transpose(-1, -2)).float()
        if mask is not None:
            logits = logits + mask.float()
        probs = floored_softmax(logits, self.probability_floor)
        dropout_p = self.dropout_module.p if self.training or self.dropout_module.apply_during_inference else 0.0
        attn = torch.matmul(F.dropout(probs.type_as(q), dropout_p, training=dropout_p > 0), v)
        weights: Optional[Tensor] = None
        if scale is not None:
            attn = attn * scale.to(attn.dtype)
            if need_weights:
                probs = probs * scale
        if need_weights:
            weights = probs.transpose(0, 1)  # (H, B, T, S), as fairseq returns them
            if not need_head_weights:
                weights = weights.mean(dim=0)
        if self.value_skipinit_alpha is not None and self.value_skipinit_beta is not None:
            # the query's own value: X W_V (self-attention: the last tgt_len of the values)
            own = self._heads(self.v_proj(query)) if self.encoder_decoder_attention else v[:, :, src_len - tgt_len :]
            attn = self.value_skipinit_alpha * own + self.value_skipinit_beta * attn
        attn = attn.permute(2, 0, 1, 3).reshape(tgt_len, bsz, embed_dim)
        return self.out_proj(attn), weights

    def _heads(self, x: Tensor) -> Tensor:
        """(T, B, C) -> (B, H, T, C / H)."""
        return x.view(x.size(0), x.size(1), self.num_heads, self.head_dim).permute(1, 2, 0, 3)

    def _with_cache(
        self,
        saved_state: Dict[str, Optional[Tensor]],
        k: Optional[Tensor],
        v: Optional[Tensor],
        key_padding_mask: Optional[Tensor],
        static_kv: bool,
    ) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
        """Keys, values and padding mask with the cached ones of earlier steps
        (self-attention: appended; encoder-decoder: the cached ones), and the
        cache updated, as fairseq's ``MultiheadAttention`` keeps it."""
        if "prev_key" in saved_state:
            prev_key, prev_value = saved_state["prev_key"], saved_state["prev_value"]
            assert prev_key is not None and prev_value is not None
            if static_kv or k is None or v is None:
                k, v = prev_key, prev_value
            else:
                k = torch.cat([prev_key.view(k.size(0), self.num_heads, -1, self.head_dim), k], dim=2)
                v = torch.cat([prev_value.view(v.size(0), self.num_heads, -1, self.head_dim), v], dim=2)
        assert k is not None and v is not None
        prev_key_padding_mask: Optional[Tensor] = None
        if "prev_key_padding_mask" in saved_state:
            prev_key_padding_mask = saved_state["prev_key_padding_mask"]
        key_padding_mask = self._append_prev_key_padding_mask(
            key_padding_mask=key_padding_mask,
            prev_key_padding_mask=prev_key_padding_mask,
            batch_size=k.size(0),
            src_len=k.size(2),
            static_kv=static_kv,
        )
        saved_state["prev_key"] = k
        saved_state["prev_value"] = v
        saved_state["prev_key_padding_mask"] = key_padding_mask
        return k, v, key_padding_mask

    def extra_repr(self) -> str:
        if self.encoder_decoder_attention:
            return "encoder_decoder_attention=True"
        shaping = f"kernel={self.kernel}, rho={self.rho:.6g}, rho_prev={self.rho_prev:.6g}, " if self.kernel else ""
        return (
            f"{shaping}layer={self.layer}/{self.num_layers}, causal={self.causal}, "
            f"value_skipinit={self.value_skipinit_alpha is not None}"
        )
