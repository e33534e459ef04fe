"""T-Fixup's initialisation (Huang, Perez, Ba, Volkovs, ICML 2020), for a model
without any normalisation (``--tfixup``, ``transformer_tfixup``).

As the authors' fairseq fork (layer6ai-labs/T-Fixup,
``fairseq/modules/transformer_layer.py``, ``fixup_initialization``, and
``fairseq/models/transformer.py``), with ``N_e``/``N_d`` the encoder's and
decoder's layers, after fairseq's own initialisation:

- ``fc1`` and ``fc2`` start from Xavier-uniform weights and zero biases (the
  fork's ``Linear``; fairseq 0.12 builds them with PyTorch's default);
- encoder layers: ``fc1``, ``fc2`` and ``self_attn.out_proj`` weights times
  ``0.67 N_e^(-1/4)``, ``self_attn.v_proj`` times ``0.67 N_e^(-1/4) sqrt(2)``
  (the ``sqrt(2)`` undoes fairseq's gain ``1/sqrt(2)`` on the values);
- decoder layers: ``fc1``, ``fc2``, ``self_attn.out_proj`` and
  ``encoder_attn.out_proj`` weights times ``(9 N_d)^(-1/4)``, both
  ``v_proj`` times ``(9 N_d)^(-1/4) sqrt(2)``; queries and keys unscaled;
- token embeddings: the encoder's times ``(9 N_e)^(-1/4)``, the decoder's
  times ``(9 N_d)^(-1/4)`` unless all embeddings are shared (then the
  encoder's scaling is the only one).
"""

import math

import torch
from torch import nn


def tfixup_layer_scale(stack: str, encoder_layers: int, decoder_layers: int) -> float:
    """The factor of a layer's output and feed-forward weights."""
    if stack == "encoder":
        return 0.67 * encoder_layers ** -0.25
    return (9 * decoder_layers) ** -0.25


def tfixup_embedding_scale(layers: int) -> float:
    """The factor of a stack's token embeddings, ``(9 N)^(-1/4)``."""
    return (9 * layers) ** -0.25


@torch.no_grad()
def tfixup_layer_(layer: nn.Module, stack: str, encoder_layers: int, decoder_layers: int) -> None:
    """Initialise one encoder or decoder layer as T-Fixup does."""
    for fc in (layer.fc1, layer.fc2):
        nn.init.xavier_uniform_(fc.weight)
        nn.init.zeros_(fc.bias)
    scale = tfixup_layer_scale(stack, encoder_layers, decoder_layers)
    attentions = [layer.self_attn]
    if getattr(layer, "encoder_attn", None) is not None:
        attentions.append(layer.encoder_attn)
    weights = [layer.fc1.weight, layer.fc2.weight] + [a.out_proj.weight for a in attentions]
    for weight in weights:
        weight.mul_(scale)
    for attention in attentions:
        attention.v_proj.weight.mul_(scale * math.sqrt(2))


@torch.no_grad()
def tfixup_embedding_(embedding: nn.Embedding, layers: int) -> None:
    embedding.weight.mul_(tfixup_embedding_scale(layers))
