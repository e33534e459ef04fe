"""What a measurement ran on, in one line, for the tables that report it."""

import datetime
import os
import platform


def machine_description() -> str:
    """``2 CPUs (x86_64), no GPU, Python 3.11.9, torch 2.13.0, fairseq 0.12.3``: the
    processors, the GPUs torch sees, and the versions that decide the numbers (torch's
    CUDA too, where torch was built with it: ``torch 2.13.0 (CUDA 12.8)``)."""
    import fairseq
    import torch

    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        gpus = ", ".join(f"{names.count(n)}x {n}" for n in dict.fromkeys(names))
    else:
        gpus = "no GPU"
    cuda = f" (CUDA {torch.version.cuda})" if torch.version.cuda else ""
    return (f"{os.cpu_count()} CPUs ({platform.machine()}), {gpus}, Python "
            f"{platform.python_version()}, torch {torch.__version__}{cuda}, fairseq {fairseq.__version__}")


def today() -> str:
    """The UTC date, ``YYYY-MM-DD``."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
