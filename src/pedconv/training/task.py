"""What a training run optimises and measures: the :class:`Task` interface.

``pedconv train`` (image classification) and the downstream tasks of :mod:`pedconv.tasks`
(``pedconv detect``, ``pedconv segment``, ``pedconv adv``) run on one pipeline: the run
folder, the option layers, the resumable epoch loop (:class:`~pedconv.training.loop.Trainer`),
the checkpoints, DDP, the progress bar, ``metrics.jsonl`` and the curves all live in
:mod:`pedconv.training`. A task supplies only what differs:

* its options (:meth:`Task.add_arguments`) and its default model;
* its data (:meth:`Task.build_data`: a :class:`~pedconv.training.data.DataSpec` whose
  ``train``/``val`` datasets and ``collate_fn`` produce the batches its step expects),
  checked up front so that a malformed dataset fails before training starts;
* its model (:meth:`Task.build_model`);
* its loss on one micro-batch (:meth:`Task.train_step` returns a :class:`TrainStep`);
* its metrics (:meth:`Task.evaluate`), of which :attr:`Task.best_metric` chooses ``best.pt``
  (higher is better) and :attr:`Task.result_metrics` go to ``result.json``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import torch
import torch.nn as nn
from torch import Tensor

from .distributed import DistEnv

if TYPE_CHECKING:
    from .data import DataSpec
    from .model_setup import ModelArgs

__all__ = ["EvalPass", "StepResult", "Task", "TrainStep"]


@dataclass
class StepResult:
    """One micro-batch's forward.

    Attributes:
        loss: the task's scalar loss (mean over the micro-batch), before the info-max term;
            the loop adds ``infomax_weight * pedconv.infomax_loss(model)`` and calls backward.
        count: items in the micro-batch (images), for averages and images/s.
        metrics: the step's own training metrics, each the *sum* over the micro-batch's items of a
            per-item value (classification: ``{"top1": 100 * correct}``); the loop sums them over
            the epoch and reports their mean per item as ``train_<name>`` (and in the progress bar).
            Every step of a run reports the same names.
    """

    loss: Tensor
    count: int
    metrics: Mapping[str, Tensor] = field(default_factory=dict)


class EvalPass:
    """One pass of a task's evaluation: the module in eval mode without gradients (its mode is
    restored afterwards), timed; count the images with :attr:`images`, then :meth:`speed`
    gives ``val_images`` and ``eval_images_per_s`` over every rank.

    >>> net = nn.BatchNorm1d(2)
    >>> with EvalPass(net) as p:
    ...     p.images += 4
    >>> net.training, p.speed(DistEnv())["val_images"]
    (True, 4.0)
    """

    def __init__(self, module: nn.Module) -> None:
        self.module, self.images, self.seconds = module, 0, 0.0

    def __enter__(self) -> EvalPass:
        self.was_training = self.module.training
        self.module.eval()
        self._no_grad = torch.no_grad()
        self._no_grad.__enter__()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self._start
        self._no_grad.__exit__(*exc)
        self.module.train(self.was_training)

    def speed(self, env: DistEnv) -> dict[str, float]:
        """``val_images`` and ``eval_images_per_s`` summed over the ranks (every rank calls it)."""
        from .distributed import all_reduce_sum

        total, seconds = all_reduce_sum([float(self.images), self.seconds], env)
        return {"val_images": total, "eval_images_per_s": total / max(seconds / env.world_size, 1e-9)}


class TrainStep(Protocol):
    """A task's forward on one micro-batch of the training loader (called by the Trainer).

    ``seed`` is a function of ``(run seed, epoch, position)``: use it for any random
    augmentation done on the device, so that a resumed run draws the same.

    A step with state that must survive a resume (Free adversarial training's perturbation)
    also has ``state_dict()`` / ``load_state_dict(d)``; one that acts after the backward pass
    has ``after_backward()``; the loop calls them when present.
    """

    def __call__(self, model: nn.Module, batch: Any, seed: int) -> StepResult: ...


class Task:
    """The base of every task (:class:`pedconv.tasks.classification.Classification` is ``pedconv train``'s).

    Class attributes:
        name: the command word (``"detect"``); train and eval are its sub-commands.
        default_model: the ``--model`` default.
        best_metric: the metric (a key of :meth:`evaluate`'s result) that picks ``best.pt``.
        result_metrics: the metrics written to ``result.json`` and printed by ``eval``.
        defaults: option defaults of the task's ``train`` (its recipe: ``{"lr": 1e-3, ...}``).
        presets: named option sets (``--preset NAME``; ``quick`` is also ``--quick``), applied
            under ``--config`` and the flags; a ``_help`` key describes the preset.
    """

    name: str = ""
    default_model: str = ""
    best_metric: str = ""
    result_metrics: tuple[str, ...] = ()
    defaults: ClassVar[Mapping[str, Any]] = {}
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    evaluates_checkpoints_of: tuple[str, ...] = ()
    """Other commands whose checkpoints this task's ``eval`` also takes (``pedconv adv eval``: ``pedconv train``'s)."""
    probe_with_images: bool = False
    """Whether a random image batch can probe the model in training mode (DDP's unused-parameter check)."""
    loads_authors_checkpoints: bool = False
    """Whether its ``eval`` takes the authors' released classifiers (``--authors-arch``)."""

    @property
    def train_command(self) -> str:
        """The command line that trains this task (``pedconv detect train``)."""
        return f"pedconv {self.name} train"

    @property
    def eval_command(self) -> str:
        """The command line that evaluates this task's models (``pedconv detect eval``)."""
        return f"pedconv {self.name} eval"

    @property
    def curve_metrics(self) -> tuple[str, ...]:
        """The metrics ``curves.png`` plots (a ``val_X`` with its ``train_X``); default: the result metrics."""
        return self.result_metrics

    def replay(self, args: argparse.Namespace) -> int:
        """Optimizer steps per loaded batch (Free adversarial training replays each batch ``m`` times)."""
        return 1

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add the task's own options (shared by its ``train`` and ``eval``) to ``parser``."""

    def check_args(self, args: argparse.Namespace) -> None:
        """Refuse options that do not work together (raise a :class:`~pedconv.errors.UsageError`)."""

    def add_eval_arguments(self, parser: argparse.ArgumentParser) -> None:
        """The task's options of its ``eval`` (the data, say); default: all of :meth:`add_arguments`."""
        self.add_arguments(parser)

    def check_eval_args(self, args: argparse.Namespace) -> None:
        """:meth:`check_args` for the ``eval`` options; default: the same checks."""
        self.check_args(args)

    def input_size(self, args: argparse.Namespace, spec: DataSpec) -> tuple[int, int]:
        """The image size (height, width) the model sees (for the FLOP count and the DDP probe)."""
        return spec.input_size

    def data_info(self, args: argparse.Namespace, spec: DataSpec) -> dict[str, Any]:
        """What checkpoints record about the data (``pedconv <task> eval`` rebuilds it from this)."""
        return {"name": spec.name, "num_classes": spec.num_classes, "in_chans": spec.in_chans,
                "input_size": list(self.input_size(args, spec)), "mean": list(spec.mean), "std": list(spec.std)}

    def build_data(self, args: argparse.Namespace, need_train: bool = True) -> DataSpec:
        """The datasets (validated: a malformed dataset raises a :class:`~pedconv.errors.DataError`
        naming the file and the item)."""
        raise NotImplementedError

    def build_model(self, args: argparse.Namespace, spec: DataSpec) -> tuple[nn.Module, ModelArgs]:
        """The model for ``spec``: ``args.model`` with ``args.model_kwargs``, ``spec.num_classes``
        outputs (raises ValueError for an unknown model or options it rejects)."""
        from .model_setup import build_model

        return build_model(args.model, spec.num_classes, spec.in_chans, args.model_kwargs)

    def train_step(self, args: argparse.Namespace, spec: DataSpec, margs: ModelArgs, env: DistEnv) -> TrainStep:
        """The loss of one training micro-batch."""
        raise NotImplementedError

    def evaluate(self, module: nn.Module, loader: Any, args: argparse.Namespace, spec: DataSpec, margs: ModelArgs,
                 env: DistEnv, final: bool = False) -> dict[str, float]:
        """The task's metrics over every rank's shard of ``loader`` (the bare module, not DDP:
        shards may differ in length), reduced over the ranks; with ``eval_images_per_s``.
        ``final``: the evaluation after the last epoch (may measure more, e.g. PGD-50)."""
        raise NotImplementedError

    def describe(self, metrics: Mapping[str, float]) -> str:
        """One line of results for the log (``AP 12.3  AP50 30.1``)."""
        return "  ".join(f"{k} {metrics[k]:.2f}" for k in self.result_metrics if k in metrics)
