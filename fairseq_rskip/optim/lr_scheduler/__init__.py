from fairseq_rskip.errors import refuse_import_as_top_level

refuse_import_as_top_level(__name__, __file__)  # --user-dir given this folder

from fairseq_rskip.optim.lr_scheduler.inverse_sqrt_nowarmup import (  # noqa: F401 (registers)
    InverseSqrtNoWarmupSchedule,
)
