"""Small helpers shared by the commands, one concept per module (no torch imports here).

* :mod:`.atomic`     all-or-nothing file writes, and the clean-up of an interrupted write's temp file
* :mod:`.reporting`  the report pieces: markdown tables, matplotlib figures, the machine line
* :mod:`.kv`         ``key=value`` items with YAML values (``--model-kwargs``, compare's model specs)
* :mod:`.options`    option checks: numbers in a range (argparse types), a writable output folder
"""
