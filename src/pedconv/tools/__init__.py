"""Tools that measure models: FLOP/parameter counting (``pedconv profile``, :mod:`.flops`),
the speed/memory benchmark (``pedconv bench``, :mod:`.benchmark`; its timing primitives in
:mod:`.measure`, its tables in :mod:`.bench_tables`) and the operator (kernel launch) count per
layer call (:mod:`.opcount`)."""
