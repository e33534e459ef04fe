"""Data preparation and BLEU evaluation for fairseq_rskip (not imported by the plugin).

Command-line entry points, each run as ``python -m fairseq_rskip.data_prep.NAME``
by the shell scripts in ``scripts/``:

- ``pipeline``  generic: raw parallel text -> tokenised, cleaned, BPE -> data-bin
- ``iwslt14``, ``iwslt15_envi``, ``wmt14_en2de``  find/parse one benchmark's raw
  files, then run the same pipeline
- ``download``  download with resume and checksum verification
- ``evaluate``  BLEU (tokenised and sacreBLEU) from fairseq-generate output
- ``bundled``   build the bundled De-En corpus from its Debian package
"""
