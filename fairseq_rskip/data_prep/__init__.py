"""Data preparation for fairseq_rskip (not imported by the plugin; the command is
``rskip-prepare``, :mod:`fairseq_rskip.data_prep.cli`).

- ``pipeline``  generic: raw parallel text -> tokenised, cleaned, BPE -> data-bin
- ``datasets``  the benchmark recipes (IWSLT'14 De-En, IWSLT'15 En-Vi, WMT'14
  En-De): fetch and parse one data set's raw files, then run the pipeline
- ``bundled``   the bundled De-En corpus: prepare it, or build it from its Debian package
- ``download``  download with resume and checksum verification
- ``formats``, ``text``, ``bpe``, ``common``  the steps and helpers these share
"""

from fairseq_rskip.errors import refuse_import_as_top_level

refuse_import_as_top_level(__name__, __file__)  # --user-dir given this folder
