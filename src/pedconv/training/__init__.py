"""The training pipeline every task runs on (one concept per module); tasks live in :mod:`pedconv.tasks`.

* :mod:`.task`         the :class:`~pedconv.training.task.Task` interface a task implements
* :mod:`.config`       the options every task shares, YAML configs, their precedence and checks
* :mod:`.data`         the DataSpec, resumable samplers, on-device preprocessing, the loaders
* :mod:`.model_setup`  building a registered model for a dataset; starting from another run's weights
* :mod:`.recipe`       optimizer, lr schedule, losses, AMP (timm building blocks)
* :mod:`.loop`         the training epoch (:class:`~pedconv.training.loop.Trainer`)
* :mod:`.state`        what a run carries besides the model: RNG states, progress, running sums
* :mod:`.checkpoint`   the run checkpoint: its schema, its one writer, validated reading
* :mod:`.resume`       restoring a run from its checkpoint; rebuilding a checkpoint's model
* :mod:`.assembly`     what a run is made of, built from its options
* :mod:`.train`        :func:`~pedconv.training.train.train`: the run folder, the epochs, ``result.json``
* :mod:`.task_command` ``pedconv <task> train|eval`` for a task
* :mod:`.distributed`  torchrun / DDP process groups and metric reduction
* :mod:`.run_folder`, :mod:`.interruption`   run folder safety; stopping cleanly on a signal
* :mod:`.run_log`      what a run shows and writes as it goes: progress, log.txt, metrics.jsonl, curves.png

The programmatic entry point is :func:`pedconv.training.train.train` with a task;
:func:`pedconv.tasks.classification.train` is ``pedconv train``'s. Errors are the typed ones of
:mod:`pedconv.errors`; files are written with :mod:`pedconv.utils.atomic`.
"""

# The interface a task implements. (train() stays in its module: a package attribute named
# like the submodule would hide pedconv.training.train from `import ... as`.)
from .task import EvalPass, StepResult, Task, TrainStep
from .task_command import TaskCommand

__all__ = ["EvalPass", "StepResult", "Task", "TaskCommand", "TrainStep"]
