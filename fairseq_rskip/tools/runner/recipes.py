"""The built-in training recipes: what ``rskip-reproduce`` trains with when it is given no
``--config``, chosen by ``--size``.

``tiny``
    the bundled demo's settings (``examples/translation/configs/bundled-demo.json``):
    the ``*_tiny`` size widened to 128/256 with 4 heads, 3 layers, Adam (0.9, 0.98),
    lr 2e-3 after 200 warm-up updates, dropout 0.1, label smoothing 0.1, 4,096
    tokens per batch, 600 updates, on the CPU; a few CPU minutes per run.
``iwslt_de_en``
    fairseq's ``transformer_iwslt_de_en`` recipe as the papers train it
    (``examples/translation/configs/iwslt14-paper-gpu.json``): Adam (0.9, 0.98),
    lr 5e-4 after 4,000 warm-up updates, dropout 0.3, weight decay 1e-4, label
    smoothing 0.1, 4,096 tokens per batch, 60 epochs; BLEU of the average of the
    last 5 epoch checkpoints, beam 5.
``base``, ``wmt_en_de``
    fairseq's ``transformer_wmt_en_de`` recipe for WMT'14 En-De
    (``examples/translation/README.md``): shared embeddings, Adam (0.9, 0.98), lr
    7e-4 after 4,000 warm-up updates from 1e-7, dropout 0.1, label smoothing 0.1,
    4,096 tokens x 8 accumulated updates, 100,000 updates; BLEU with compounds
    split, average of the last 5 checkpoints, beam 4, length penalty 0.6.
``vaswani_wmt_en_de_big``, ``wmt_en_de_big``
    the same with fairseq's Scaling NMT settings for the big model: lr 5e-4,
    dropout 0.3, 3,584 tokens per batch.

The GPU recipes run in float32 wherever fairseq-train runs; on a GPU add
``-- --fp16`` (the papers' runs) to train in half precision. ``--max-update``
and ``--max-epoch`` replace a recipe's budget.
"""

import copy
from typing import Dict

from fairseq_rskip.tools.runner.config import Config
from fairseq_rskip.errors import UserError
from fairseq_rskip.variants import size_suffix

_ADAM = ["--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--clip-norm", "0.0"]
_LABEL_SMOOTHING = ["--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1"]

TINY = {
    "name": "the bundled demo's recipe",
    "description": "transformer *_tiny size widened to 128/256, 4 heads; Adam (0.9, 0.98); "
                   "inverse_sqrt warm-up (prenorm_nowarmup: inverse_sqrt_nowarmup from the peak)",
    "depths": [3], "lr": 0.002, "warmup_updates": 200, "target_valid_loss": 8.0,
    "log_interval": 10,
    "train_args": [
        "--encoder-embed-dim", "128", "--decoder-embed-dim", "128",
        "--encoder-ffn-embed-dim", "256", "--decoder-ffn-embed-dim", "256",
        "--encoder-attention-heads", "4", "--decoder-attention-heads", "4",
        "--share-decoder-input-output-embed", "--dropout", "0.1",
        *_ADAM, "--weight-decay", "0.0001", *_LABEL_SMOOTHING,
        "--max-tokens", "4096", "--max-update", "600",
        "--validate-interval-updates", "100", "--save-interval-updates", "100",
        "--keep-interval-updates", "1", "--no-epoch-checkpoints", "--num-workers", "0", "--cpu",
    ],
    "eval": {"avg_last": 0, "beam": 5, "lenpen": 1.0, "subset": "test"},
}

IWSLT = {
    "name": "IWSLT'14 De-En paper recipe (transformer_iwslt_de_en)",
    "description": "fairseq transformer_iwslt_de_en recipe: Adam (0.9, 0.98), lr 5e-4, "
                   "inverse_sqrt 4000 warm-up, dropout 0.3, label smoothing 0.1, 4096 tokens, "
                   "60 epochs; BLEU: average of the last 5 epoch checkpoints, beam 5",
    "lr": 0.0005, "warmup_updates": 4000, "target_valid_loss": 4.2, "log_interval": 100,
    "train_args": [
        "--share-decoder-input-output-embed", *_ADAM, "--dropout", "0.3",
        "--weight-decay", "0.0001", *_LABEL_SMOOTHING,
        "--max-tokens", "4096", "--max-epoch", "60", "--keep-last-epochs", "5",
    ],
    "eval": {"avg_last": 5, "beam": 5, "lenpen": 1.0, "subset": "test"},
}


def _wmt(name: str, lr: float, dropout: str, max_tokens: str) -> dict:
    return {
        "name": name,
        "description": f"fairseq WMT'14 En-De recipe: shared embeddings, Adam (0.9, 0.98), lr {lr}, "
                       f"inverse_sqrt 4000 warm-up from 1e-7, dropout {dropout}, label smoothing "
                       f"0.1, {max_tokens} tokens x 8, 100000 updates; BLEU with compounds split, "
                       "average of the last 5 checkpoints, beam 4, lenpen 0.6",
        "lr": lr, "warmup_updates": 4000, "log_interval": 100,
        "train_args": [
            "--share-all-embeddings", *_ADAM, "--warmup-init-lr", "1e-07",
            "--dropout", dropout, "--weight-decay", "0.0", *_LABEL_SMOOTHING,
            "--max-tokens", max_tokens, "--update-freq", "8", "--max-update", "100000",
        ],
        "eval": {"avg_last": 5, "beam": 4, "lenpen": 0.6, "subset": "test",
                 "extra_args": ["--compound-split"]},
    }


WMT_BASE = _wmt("WMT'14 En-De recipe (transformer_wmt_en_de)", 0.0007, "0.1", "4096")
WMT_BIG = _wmt("WMT'14 En-De big recipe (transformer_vaswani_wmt_en_de_big)", 0.0005, "0.3", "3584")

# size suffix (fairseq_rskip.variants.size_suffix) -> recipe
RECIPES: Dict[str, dict] = {
    "_tiny": TINY,
    "_iwslt_de_en": IWSLT,
    "": WMT_BASE,
    "_wmt_en_de": WMT_BASE,
    "_vaswani_wmt_en_de_big": WMT_BIG,
    "_wmt_en_de_big": WMT_BIG,
}


def recipe_sizes() -> list:
    """The ``--size`` values with a built-in recipe."""
    return [suffix.lstrip("_") or "base" for suffix in RECIPES]


def recipe_config(size: str) -> Config:
    """The configuration of the built-in recipe for ``size``."""
    recipe = RECIPES.get(size_suffix(size))
    if recipe is None:
        raise UserError(
            f"no built-in recipe for --size {size}: give --config FILE (see "
            f"examples/translation/configs/) or a size with a recipe: {', '.join(recipe_sizes())}"
        )
    return Config(size=size, **copy.deepcopy(recipe))
