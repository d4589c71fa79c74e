"""``pedconv train``: train any registered model, single process or ``torchrun`` (DDP), resumable.

Examples::

    pedconv train --model pedconv_cifar_resnet20 --epochs 10              # real Fashion-MNIST, offline
    pedconv train --config configs/fashion_mnist.yaml --model-kwargs rank=2 --output runs/r2
    pedconv train --config configs/resnet_imagenet.yaml --data-dir /data/imagenet --model pedconv_resnet50
    torchrun --nproc_per_node 8 -m pedconv.cli train --config configs/resnet_imagenet.yaml --batch-size 64 ...
    pedconv train --output runs/r2 --resume auto                          # continue after an interruption

The loss is ``task_loss + infomax_weight * pedconv.infomax_loss(model)`` (the PEDConv
info-max term of Eq. 6; zero for models without PEDConv layers). DY-Conv layers get their
softmax temperature annealed every step.

Learning rate: ``--lr`` is the rate for ``--lr-base-batch`` (256) images per optimizer step;
with ``--lr-scale linear`` (default) the rate used is ``lr * batch_size * processes *
grad_accum_steps / lr_base_batch``. ``--batch-size`` is per process.

Run folder (``--output``, default ``runs/<model>-<timestamp>``): ``args.yaml`` (the resolved
options; reusable with ``--config``), ``metrics.jsonl`` (one record per epoch), ``curves.png``,
``log.txt``, ``last.pt`` (every epoch and every ``--checkpoint-every-steps``) and ``best.pt``
(best validation top-1), written atomically with the user's umask. One run writes a folder
at a time (a second is refused, naming the first), and a folder's results are never replaced
without ``--overwrite`` (see :mod:`pedconv.training.run_folder`).

Stopping: SIGINT (Ctrl-C) or SIGTERM finishes the step in flight, writes ``last.pt`` and exits
with 130 / 143, printing the command that resumes the run; a loss that turns nan/inf stops
the run before anything is saved (``last.pt`` and ``best.pt`` keep the last good state), unless
``--skip-nonfinite N`` is given to skip up to N such steps.

Resuming (``--resume auto|PATH``; ``auto`` continues only the folder's own run) restores the
model, the optimizer state, the GradScaler,
the position in the epoch, every process's RNG states and the running epoch sums; the lr
schedule is recomputed from the options and the step count, and the data order and
augmentation are functions of ``(seed, epoch, position)``. Without ``--config`` the options
come from the run's ``args.yaml`` (flags given now override them, with a warning). With
``--deterministic`` an interrupted and resumed run ends with the same weights as an
uninterrupted one.

Metrics (``metrics.jsonl``): ``epoch`` (epochs completed), ``train_loss`` (task loss, without
the info-max term), ``infomax`` (unweighted), ``train_top1`` (against the un-mixed labels),
``val_loss``, ``val_top1``, ``val_top5``, ``lr`` (at the end of the epoch),
``train_images_per_s``, ``eval_images_per_s``, ``epoch_time_s``, ``global_step``,
``train_images`` / ``val_images`` (images seen in the epoch / evaluated, over all processes).
"""


from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any, Callable, Optional, Union

from ...training.config import build_train_parser
from ...training.config import config_layer as task_config_layer
from ...training.config import validate_args as validate_task_args
from ...training.train import run as run_task
from ...training.train import train as train_task
from .task import Classification

__all__ = ["build_parser", "config_layer", "main", "parse_args", "run", "train", "validate_args"]

_TASK = Classification()


def build_parser(parser: Optional[argparse.ArgumentParser] = None) -> argparse.ArgumentParser:
    """The ``pedconv train`` options, added to ``parser`` (the CLI's sub-command) or to a new parser.

    >>> build_parser().parse_args(["--epochs", "2"]).epochs
    2
    """
    if parser is None:
        parser = argparse.ArgumentParser(prog=_TASK.train_command, description=__doc__,
                                         formatter_class=argparse.RawDescriptionHelpFormatter)
    return build_train_parser(parser, _TASK)


def config_layer(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """The values under the command line: ``--preset``, then ``--config`` (or a resumed run's ``args.yaml``)."""
    return task_config_layer(args, parser, _TASK)


def validate_args(args: argparse.Namespace) -> None:
    """Refuse options that cannot work, before anything is loaded (:func:`pedconv.training.config.validate_args`)."""
    validate_task_args(args, _TASK)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse ``pedconv train`` options (``--config`` YAML < flags) as the CLI does; usage errors exit with status 2.

    When resuming (``--resume``) without ``--config``, the resumed run's ``args.yaml`` is the
    YAML layer, so ``pedconv train --output DIR --resume auto`` continues with the same options.

    >>> parse_args(["--model", "cifar_resnet20", "--lr", "0.2"]).lr
    0.2
    """
    from ...cli import parse_args as parse_command_line

    return parse_command_line(["train", *(sys.argv[1:] if argv is None else argv)])


def train(config: Union[str, os.PathLike, Mapping[str, Any], argparse.Namespace, None] = None, *,
          on_epoch: Optional[Callable[[dict[str, Any]], None]] = None, **overrides: Any) -> dict[str, Any]:
    """``pedconv train`` from Python: :func:`pedconv.training.train.train` with :class:`Classification`.

    Example (a real run, so not run as a doctest; tests/training/test_train.py runs it):
        >>> import tempfile
        >>> out = tempfile.mkdtemp()
        >>> r = train(model="cifar_resnet20", model_kwargs={"width": 8}, epochs=1, train_subset=256,
        ...           val_subset=128, batch_size=64, output=out, quiet=True)  # doctest: +SKIP
        >>> r["best_metric"], r["output_dir"] == out  # doctest: +SKIP
        ('val_top1', True)
    """
    return train_task(config, _TASK, on_epoch=on_epoch, **overrides)


def run(args: argparse.Namespace) -> int:
    """``pedconv train`` on parsed options: the exit status (errors propagate to :func:`pedconv.cli.main`)."""
    return run_task(args, _TASK)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``pedconv train`` entry point: the exit status (0 ok, 1 error, 2 usage error, 130 interrupted).

    >>> main(["--model", "resnet_20"])  # stderr: one line, "... error: unknown model 'resnet_20'; did you mean ..."
    2
    """
    from ...cli import main as cli_main

    return cli_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
