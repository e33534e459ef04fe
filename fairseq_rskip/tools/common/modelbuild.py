"""Build fairseq models and batches in-process, as ``fairseq-train`` would: the one
model builder of the tools and the tests.

Models come from fairseq's own argument parsing (``options.get_training_parser``
and ``parse_args_and_arch`` with ``--user-dir`` this package's folder) and the
registered model class's ``build_model``; batches are fairseq's
``LanguagePairDataset`` collations, either of a binarised data-bin split or of
the synthetic corpus of :mod:`fairseq_rskip.tools.common.synthetic`.
"""

from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np
import torch

from fairseq_rskip.fairseq_tools import PLUGIN_DIR


@dataclass
class DummyTask:
    """What ``TransformerModel.build_model`` reads from a task."""

    source_dictionary: object
    target_dictionary: object


def parse_model_args(arch: str, extra: Sequence[str] = (), data: str = "DUMMY"):
    """fairseq's training arguments for ``--arch arch`` plus ``extra``."""
    import fairseq_rskip  # noqa: F401  (registers the architectures)
    from fairseq import options

    parser = options.get_training_parser()
    argv = [data, "--arch", arch, "--user-dir", str(PLUGIN_DIR), *map(str, extra)]
    return options.parse_args_and_arch(parser, argv)


def synthetic_dictionary(vocab: int = 40):
    """One joint dictionary of the synthetic corpus's words (``w*`` and ``v*``)."""
    from fairseq.data import Dictionary

    d = Dictionary()
    for i in range(vocab):
        d.add_symbol(f"w{i}")
    for i in range(vocab):
        d.add_symbol(f"v{i}")
    d.pad_to_multiple_(8)
    return d


def random_dictionary(size: int):
    """A dictionary of ``size`` made-up symbols (for benchmarks of realistic vocabularies)."""
    from fairseq.data import Dictionary

    d = Dictionary()
    for i in range(size - len(d)):
        d.add_symbol(f"t{i}")
    return d


def build_model(arch: str, extra: Sequence[str] = (), dictionary=None, tgt_dictionary=None,
                seed: Optional[int] = None, save_dir: Optional[str] = None):
    """``(model, args)`` for ``--arch arch`` and the extra flags, on ``dictionary``. A model
    built in-process is no training run: it writes nothing (Admin's ``profile.ratio.init``)
    unless ``save_dir`` names a folder, as ``--save-dir`` does for fairseq-train."""
    from fairseq.models import ARCH_MODEL_REGISTRY

    args = parse_model_args(arch, extra)
    args.save_dir = save_dir
    if seed is not None:
        torch.manual_seed(seed)
    dictionary = dictionary if dictionary is not None else synthetic_dictionary()
    task = DummyTask(dictionary, tgt_dictionary if tgt_dictionary is not None else dictionary)
    model = ARCH_MODEL_REGISTRY[args.arch].build_model(args, task)
    return model, args


def build_variant(variant, size: str = "", extra: Sequence[str] = (), plugin: bool = False, **kwargs):
    """:func:`build_model` of a row of :data:`fairseq_rskip.variants.VARIANTS` at ``size``;
    with ``plugin``, the plugin's build of it (every sublayer a ``ResidualNorm``)."""
    arch, flags = variant.plugin_build(size) if plugin else (variant.fairseq_arch(size), variant.flags)
    return build_model(arch, [*flags, *extra], **kwargs)


def collate_pairs(pairs: Sequence[tuple], src_dict, tgt_dict=None) -> dict:
    """A fairseq batch (``net_input``, ``target``, ``ntokens``) of ``(src, tgt)`` strings."""
    from fairseq.data import LanguagePairDataset

    tgt_dict = tgt_dict if tgt_dict is not None else src_dict
    src = [src_dict.encode_line(s, add_if_not_exist=False, append_eos=True).long() for s, _ in pairs]
    tgt = [tgt_dict.encode_line(t, add_if_not_exist=False, append_eos=True).long() for _, t in pairs]
    ds = LanguagePairDataset(
        src, np.array([len(s) for s in src]), src_dict,
        tgt, np.array([len(t) for t in tgt]), tgt_dict,
        left_pad_source=True, left_pad_target=False,
    )
    return ds.collater([ds[i] for i in range(len(ds))])


def random_batch(dictionary, n_sentences: int, src_len: int, tgt_len: int, seed: int = 0) -> dict:
    """A fairseq batch of random in-vocabulary tokens with fixed lengths."""
    from fairseq.data import LanguagePairDataset

    g = torch.Generator().manual_seed(seed)
    lo, hi = dictionary.nspecial, len(dictionary)

    def sent(n):
        return torch.cat([torch.randint(lo, hi, (n - 1,), generator=g),
                          torch.tensor([dictionary.eos()])])

    src = [sent(src_len) for _ in range(n_sentences)]
    tgt = [sent(tgt_len) for _ in range(n_sentences)]
    ds = LanguagePairDataset(
        src, np.array([len(s) for s in src]), dictionary,
        tgt, np.array([len(t) for t in tgt]), dictionary,
        left_pad_source=True, left_pad_target=False,
    )
    return ds.collater([ds[i] for i in range(len(ds))])


def split_batches(task, split: str, max_tokens: int, shuffle: bool):
    """fairseq's batches of ``max_tokens`` over every sentence of ``split`` (loaded into
    ``task``), in fairseq's order or shuffled with seed 1."""
    task.load_dataset(split)
    return task.get_batch_iterator(
        dataset=task.dataset(split), max_tokens=max_tokens, max_positions=(1024, 1024),
        seed=1, ignore_invalid_inputs=True,
    ).next_epoch_itr(shuffle=shuffle)


def data_bin_batches(data: str, arch: str, split: str = "valid", max_tokens: int = 4096,
                     n_batches: int = 4, extra: Sequence[str] = ()) -> tuple:
    """``(task, batches)``: the first ``n_batches`` batches of a data-bin split."""
    from fairseq import tasks

    args = parse_model_args(arch, list(extra) + ["--max-tokens", str(max_tokens)], data=data)
    task = tasks.setup_task(args)
    batches: List[dict] = []
    for sample in split_batches(task, split, max_tokens, shuffle=True):
        batches.append(sample)
        if len(batches) >= n_batches:
            break
    return task, batches


def nll_loss(model, sample) -> torch.Tensor:
    """Mean token cross-entropy (nats) of a batch, padding left out."""
    logits, _ = model(**sample["net_input"])
    target = sample["target"]
    pad = model.decoder.dictionary.pad()
    return torch.nn.functional.cross_entropy(
        logits.view(-1, logits.size(-1)).float(), target.view(-1), ignore_index=pad
    )


def sublayers(model) -> List[tuple]:
    """``(name, residual_norm, parameter_modules)`` of every sublayer, input to output."""
    out = []
    for i, layer in enumerate(model.encoder.layers):
        out.append((f"encoder.{i}.self_attn", layer.self_attn_layer_norm, [layer.self_attn]))
        out.append((f"encoder.{i}.ffn", layer.final_layer_norm, [layer.fc1, layer.fc2]))
    for i, layer in enumerate(model.decoder.layers):
        out.append((f"decoder.{i}.self_attn", layer.self_attn_layer_norm, [layer.self_attn]))
        if layer.encoder_attn is not None:
            out.append((f"decoder.{i}.cross_attn", layer.encoder_attn_layer_norm, [layer.encoder_attn]))
        out.append((f"decoder.{i}.ffn", layer.final_layer_norm, [layer.fc1, layer.fc2]))
    return out
