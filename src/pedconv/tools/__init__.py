"""Tools that measure models: FLOP/parameter counting (``pedconv profile``, :mod:`.flops`),
the speed/memory benchmark (``pedconv bench``, :mod:`.benchmark`) and the operator (kernel
launch) count per layer call (:mod:`.opcount`)."""
