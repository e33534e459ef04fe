"""``rskip-source-use``: how much trained translation models use their source, and their
cross-entropy by target length, in :mod:`.source_use`.
"""
