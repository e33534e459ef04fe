from fairseq_rskip.optim.lr_scheduler.inverse_sqrt_nowarmup import (  # noqa: F401 (registers)
    InverseSqrtNoWarmupSchedule,
)
