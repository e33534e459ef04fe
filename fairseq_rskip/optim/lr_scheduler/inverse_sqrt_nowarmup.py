"""``--lr-scheduler inverse_sqrt_nowarmup``: start at the peak rate, then decay.

For Pre-LN trained without warm-up (Xiong et al. 2020)::

    lr(t) = lr_peak * sqrt(T / (T + t))        t = number of updates done

so the first update runs at ``--lr`` and, once ``t >> T``, the rate equals
fairseq's ``inverse_sqrt`` with ``--warmup-updates T`` (``lr_peak *
sqrt(T / t)``). fairseq's ``inverse_sqrt`` cannot do this: with
``--warmup-updates 0`` it divides by zero when it is built.
"""

import math
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import List

from omegaconf import II

from fairseq.dataclass import FairseqDataclass
from fairseq.optim.lr_scheduler import FairseqLRScheduler, register_lr_scheduler

from fairseq_rskip.config import Interval


@dataclass
class InverseSqrtNoWarmupConfig(FairseqDataclass):
    decay_timescale: float = field(
        default=4000,
        metadata={
            "range": Interval(0),
            "help": "T in lr = lr_peak * sqrt(T / (T + updates)): after T updates the rate "
            "has fallen by sqrt(2); later it matches inverse_sqrt with --warmup-updates T"
        },
    )
    lr: List[float] = II("optimization.lr")


@register_lr_scheduler("inverse_sqrt_nowarmup", dataclass=InverseSqrtNoWarmupConfig)
class InverseSqrtNoWarmupSchedule(FairseqLRScheduler):
    def __init__(self, cfg: InverseSqrtNoWarmupConfig, optimizer):
        super().__init__(cfg, optimizer)
        lrs = list(cfg.lr) if isinstance(cfg.lr, Collection) else [cfg.lr]
        if len(lrs) != 1:
            raise ValueError(
                f"--lr takes one value with --lr-scheduler inverse_sqrt_nowarmup; got {lrs}"
            )
        self.peak_lr = float(lrs[0])
        if not math.isfinite(self.peak_lr) or self.peak_lr <= 0:
            raise ValueError(f"--lr must be a finite number > 0; got {self.peak_lr}")
        self.timescale = float(cfg.decay_timescale)
        if not math.isfinite(self.timescale) or self.timescale <= 0:
            raise ValueError(
                f"--decay-timescale must be a finite number > 0; got {cfg.decay_timescale}"
            )
        self.optimizer.set_lr(self.peak_lr)

    def step(self, epoch, val_loss=None):
        """The rate does not change at epoch boundaries."""
        super().step(epoch, val_loss)
        return self.optimizer.get_lr()

    def step_update(self, num_updates):
        lr = self.peak_lr * math.sqrt(self.timescale / (self.timescale + num_updates))
        self.optimizer.set_lr(lr)
        return lr
