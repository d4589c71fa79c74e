"""``pedconv train`` / ``eval`` / ``compare`` and their building blocks (one concept per module).

* :mod:`.config`       options, YAML configs and their precedence; ``args.yaml``
* :mod:`.datasets`     raw readers: Fashion-MNIST IDX files, CIFAR pickles
* :mod:`.data`         datasets, resumable samplers, on-device preprocessing, the loaders
* :mod:`.model`        building a registered model for a dataset; DY-Conv temperatures
* :mod:`.recipe`       optimizer, lr schedule, losses, AMP (timm building blocks)
* :mod:`.loop`         the training epoch and the evaluation loop
* :mod:`.checkpoint`   the run checkpoint: its schema, its one writer, validated reading, RNG states
* :mod:`.distributed`  torchrun / DDP process groups and metric reduction
* :mod:`.report`       progress, log.txt, metrics.jsonl, curves.png
* :mod:`.train`, :mod:`.evaluate`, :mod:`.compare`   the commands (rows of :data:`pedconv.cli.COMMANDS`)

The programmatic entry points are :func:`pedconv.training.train.train`,
:func:`pedconv.training.evaluate.evaluate_model` and :func:`pedconv.training.compare.run_compare`.
Errors are the typed ones of :mod:`pedconv.errors`; files are written with :mod:`pedconv.utils.atomic`.
"""
