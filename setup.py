"""fairseq_rskip: a fairseq --user-dir plugin for skip connections and normalisation.

Install with scripts/setup_env.sh (see README.md): fairseq-fixed must be built
against the installed torch and without its torchaudio requirement, which a
plain ``pip install`` of this package cannot express. Installing it also
installs the commands (rskip-prepare, rskip-evaluate, ...), each the ``cli.py`` of its tool.
"""

import re
from pathlib import Path

from setuptools import find_packages, setup

VERSION = re.search(r'^__version__ = "([^"]+)"', Path("fairseq_rskip/__init__.py").read_text(encoding="utf-8"),
                    re.M).group(1)

setup(
    name="fairseq_rskip",
    version=VERSION,
    description="Skip connections and normalisation for fairseq's Transformer: rSkip+LN, xSkip, AdaNorm, "
    "LayerNorm-simple, Pre-LN without warm-up, DeepNorm, Admin, and deep Transformers without shortcuts "
    "(vanilla, E-SPA, U-SPA, Value-SkipInit)",
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    # the code is MIT; the bundled corpus (package data) is GPL-2.0-or-later
    license_expression="MIT AND GPL-2.0-or-later",
    license_files=["LICENSE", "fairseq_rskip/corpus/ding-de-en/LICENSE"],
    python_requires=">=3.11",
    packages=find_packages(include=["fairseq_rskip", "fairseq_rskip.*"]),
    # the bundled corpus ships with the package, so rskip-prepare bundled works installed
    package_data={"fairseq_rskip": ["corpus/ding-de-en/*"]},
    install_requires=[
        "torch==2.13.0",
        "fairseq-fixed==0.12.3.1",
        "sacrebleu==2.6.0",
        "sentencepiece==0.2.3",
        "subword-nmt==0.3.8",
        "tqdm==4.70.1",
        "filelock==4.3.1",
        # the commands: rskip-prepare (Moses tokenisation), rskip-reproduce (plots)
        "sacremoses==0.2.0",
        "matplotlib==3.11.2",
        # rskip-reproduce's t-intervals over seeds (scikit-learn, which fairseq imports, needs it too)
        "scipy==1.17.1",
    ],
    entry_points={
        "console_scripts": [
            "rskip-prepare = fairseq_rskip.data_prep.cli:cli_main",
            "rskip-evaluate = fairseq_rskip.scoring.cli:cli_main",
            "rskip-average-checkpoints = fairseq_rskip.tools.average_checkpoints.cli:cli_main",
            "rskip-reproduce = fairseq_rskip.tools.runner.cli:cli_main",
            "rskip-gradient-analysis = fairseq_rskip.tools.gradients.cli:cli_main",
            "rskip-warmup-demo = fairseq_rskip.tools.warmup.cli:cli_main",
            "rskip-signal-propagation = fairseq_rskip.tools.signal_propagation.cli:cli_main",
            "rskip-gpu-check = fairseq_rskip.tools.gpu_check.cli:cli_main",
            "rskip-output-change = fairseq_rskip.tools.output_change.cli:cli_main",
            "rskip-source-use = fairseq_rskip.tools.source_use.cli:cli_main",
            "rskip-benchmark = fairseq_rskip.tools.benchmark.cli:cli_main",
        ],
    },
)
