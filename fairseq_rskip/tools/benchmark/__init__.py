"""``rskip-benchmark``: training speed, generation speed and peak memory of the variants
against fairseq's stock transformer (:mod:`.throughput`, measured by :mod:`.measure`,
printed by :mod:`.report`; the command in :mod:`.cli`), and the count of subnormal
floats in training (:mod:`.subnormals`)."""
