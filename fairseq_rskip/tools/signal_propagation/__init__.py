"""``rskip-signal-propagation``: rank collapse at initialisation (He et al. 2023), in
:mod:`.signal_propagation`.
"""
