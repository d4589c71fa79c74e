"""Tools that measure models: FLOP/parameter counting (``pedconv profile``, :mod:`.flops`)
and the speed/memory benchmark (``pedconv bench``, :mod:`.benchmark`)."""
