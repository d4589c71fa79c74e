"""Building blocks of ``pedconv train`` / ``pedconv eval`` (one concept per module).

* :mod:`.config`       options, YAML configs and their precedence
* :mod:`.data`         datasets, resumable samplers, on-device preprocessing
* :mod:`.model`        building a registered model for a dataset; DY-Conv temperatures
* :mod:`.recipe`       optimizer, lr schedule, losses, AMP (timm building blocks)
* :mod:`.loop`         the training epoch and the evaluation loop
* :mod:`.checkpoint`   atomic, validated checkpoints and RNG states
* :mod:`.distributed`  torchrun / DDP process groups and metric reduction
* :mod:`.report`       progress, log.txt, metrics.jsonl, curves.png

The entry points are :func:`pedconv.train.train` and :func:`pedconv.evaluate.run`.
"""
