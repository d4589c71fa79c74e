"""Image classification: the task of ``pedconv train`` (Fashion-MNIST, CIFAR, ImageFolder/ImageNet).

Batches are uint8 images and labels; the step normalises and augments them on the device
(:class:`ClassifyStep`, with timm ``Mixup``/label smoothing) and reports the batch's top-1 as
a step metric (``train_top1`` in ``metrics.jsonl``); evaluation measures cross-entropy, top-1
and top-5 (:func:`evaluate_classifier`).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterable
from typing import Any, Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ...errors import TrainOptionsError, UsageError
from ...training.data import BatchPreprocessor, DataSpec
from ...training.distributed import DistEnv, all_reduce_sum, sync_device
from ...training.model_setup import ModelArgs
from ...training.recipe import amp_dtype, autocast, build_criterion
from ...training.task import StepResult, Task, TrainStep
from ...utils.options import non_negative, number, probability
from .data import add_data_arguments, add_image_data_arguments, build_data

__all__ = ["Classification", "ClassifyStep", "add_label_regularisation_arguments", "evaluate_classifier",
           "preprocessor", "topk_correct"]


def add_label_regularisation_arguments(p: argparse.ArgumentParser) -> None:
    """Label smoothing, mixup and cutmix (classification)."""
    g = p.add_argument_group("regularisation")
    g.add_argument("--smoothing", "--label-smoothing", type=number(float, 0, 1, high_open=True), default=0.0,
                   help="label smoothing")
    g.add_argument("--mixup", type=non_negative, default=0.0, help="mixup alpha (0 = off)")
    g.add_argument("--cutmix", type=non_negative, default=0.0, help="cutmix alpha (0 = off)")
    g.add_argument("--mixup-prob", type=probability, default=1.0, help="probability of mixing a batch")
    g.add_argument("--mixup-switch-prob", type=probability, default=0.5, help="probability of cutmix when both are on")
    g.add_argument("--mixup-mode", choices=("batch", "pair", "elem"), default="batch")


def preprocessor(args: argparse.Namespace, spec: DataSpec, margs: ModelArgs, augment: bool = False
                 ) -> BatchPreprocessor:
    """The device-side normalisation (and training augmentation) of a classification dataset for
    the model ``margs``: resizes in-memory datasets to ``--img-size`` and repeats a grey channel
    for 3-channel models.

    >>> spec = build_data("fashion_mnist", train_subset=64, val_subset=32)
    >>> args = argparse.Namespace(img_size=None, channels_last=False)
    >>> preprocessor(args, spec, ModelArgs("resnet18", 10, {}, 1, 3)).out_chans
    3
    """
    size = (args.img_size, args.img_size) if (args.img_size and spec.in_memory) else None
    out_chans = margs.input_chans if margs.input_chans != spec.in_chans else None
    return BatchPreprocessor(spec.mean, spec.std, augment=augment and spec.augment_on_device, size=size,
                             out_chans=out_chans, channels_last=args.channels_last)


def topk_correct(logits: Tensor, target: Tensor, ks: Iterable[int] = (1, 5)) -> list[Tensor]:
    """Number of samples whose label is among the top-k logits, for each k (capped at the class count).

    >>> topk_correct(torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1]]), torch.tensor([1, 2]), (1, 5))
    [tensor(1), tensor(2)]
    """
    ks = list(ks)
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices.eq(target[:, None])
    return [top[:, :min(k, kmax)].any(dim=1).sum() for k in ks]


class ClassifyStep:
    """The classification :class:`~pedconv.training.task.TrainStep`: normalise and augment the
    uint8 batch on the device (``seed`` makes the augmentation a function of the position in
    the run), mix it (timm ``Mixup`` or None), forward, ``criterion``.

    >>> step = ClassifyStep(BatchPreprocessor((0.5,), (0.5,)), None, nn.CrossEntropyLoss(), torch.device("cpu"))
    >>> r = step(nn.Sequential(nn.Flatten(), nn.Linear(4, 3)), (torch.zeros(2, 1, 2, 2, dtype=torch.uint8),
    ...                                                       torch.tensor([0, 2])), seed=0)
    >>> r.count, r.loss.shape
    (2, torch.Size([]))
    """

    def __init__(self, preprocess: BatchPreprocessor, mixup: Optional[Callable], criterion: nn.Module,
                 device: torch.device, augment_on_device: bool = True) -> None:
        self.preprocess, self.mixup, self.criterion = preprocess, mixup, criterion
        self.device, self.augment_on_device = device, augment_on_device

    def __call__(self, model: nn.Module, batch: tuple[Tensor, Tensor], seed: int) -> StepResult:
        raw, labels = batch
        x = self.preprocess(raw.to(self.device, non_blocking=True), seed if self.augment_on_device else None)
        y = labels.to(self.device, non_blocking=True)
        target = y
        if self.mixup is not None:
            x, target = self.mixup(x, y)
        out = model(x)
        correct = (out.detach().argmax(1) == y).sum()
        # top-1 against the un-mixed labels, as a sum of per-image percentages (the loop averages it)
        return StepResult(self.criterion(out, target), int(y.shape[0]), {"top1": 100.0 * correct})


@torch.no_grad()
def evaluate_classifier(model: nn.Module, loader: Iterable, preprocess: BatchPreprocessor, env: DistEnv,
             amp: bool = False, amp_dtype: Optional[torch.dtype] = None) -> dict[str, float]:
    """Cross-entropy, top-1 and top-5 (%) of ``model`` over every rank's shard of ``loader``.

    Pass the unwrapped module (not the DDP wrapper): shards may hold different numbers of
    batches, and a DDP forward would wait for the other ranks.

    >>> from pedconv.training.data import TensorImageDataset, collate_batch
    >>> ds = TensorImageDataset(torch.zeros(8, 1, 4, 4, dtype=torch.uint8), torch.zeros(8, dtype=torch.long))
    >>> loader = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=collate_batch)
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    >>> m = evaluate_classifier(net, loader, BatchPreprocessor((0.5,), (0.5,)), DistEnv())
    >>> m["val_images"], 0 <= m["val_top1"] <= 100
    (8.0, True)
    """
    was_training = model.training
    model.eval()
    device = env.device
    loss = torch.zeros((), dtype=torch.float64, device=device)
    c1 = torch.zeros((), dtype=torch.float64, device=device)
    c5 = torch.zeros((), dtype=torch.float64, device=device)
    n = 0
    sync_device(device)
    start = time.perf_counter()
    for images, labels in loader:
        x = preprocess(images.to(device, non_blocking=True))
        y = labels.to(device, non_blocking=True)
        with autocast(device, amp, amp_dtype):
            out = model(x)
        out = out.float()
        loss += F.cross_entropy(out, y, reduction="sum").double()
        top1, top5 = topk_correct(out, y, (1, 5))
        c1 += top1
        c5 += top5
        n += len(y)
    sync_device(device)
    seconds = time.perf_counter() - start
    model.train(was_training)
    total_loss, total1, total5, total_n, total_s = all_reduce_sum(
        [loss.item(), c1.item(), c5.item(), float(n), seconds], env)
    denom = max(total_n, 1.0)
    return {"val_loss": total_loss / denom, "val_top1": 100.0 * total1 / denom, "val_top5": 100.0 * total5 / denom,
            "val_images": total_n, "eval_images_per_s": total_n / max(total_s / env.world_size, 1e-9)}


class Classification(Task):
    """``pedconv train``: cross-entropy on labelled images; ``best.pt`` is the best validation top-1.

    >>> Classification().train_command, Classification().best_metric
    ('pedconv train', 'val_top1')
    """

    name = "train"
    default_model = "pedconv_cifar_resnet20"
    best_metric = "val_top1"
    result_metrics = ("val_top1", "val_top5", "val_loss")
    probe_with_images = True
    loads_authors_checkpoints = True

    @property
    def train_command(self) -> str:
        """``pedconv train``."""
        return "pedconv train"

    @property
    def eval_command(self) -> str:
        """``pedconv eval``."""
        return "pedconv eval"

    @property
    def curve_metrics(self) -> tuple[str, ...]:
        """Top-1: ``curves.png`` shows the validation top-1 with the training one."""
        return ("val_top1",)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Dataset options, ``--train-subset``, ``--augment``, label smoothing and mixup/cutmix."""
        add_image_data_arguments(parser)
        add_label_regularisation_arguments(parser)

    def check_args(self, args: argparse.Namespace) -> None:
        """Mixup pairs need an even batch; an ImageFolder needs its folder."""
        if (args.mixup > 0 or args.cutmix > 0) and args.batch_size % 2:
            raise TrainOptionsError(f"mixup/cutmix need an even --batch-size (timm Mixup pairs samples), got "
                                    f"{args.batch_size}")
        if args.data == "imagefolder" and not args.data_dir:
            raise TrainOptionsError("--data imagefolder needs --data-dir DIR (the folder holding train/ and val/ with "
                                    "one subfolder per class)")

    def add_eval_arguments(self, parser: argparse.ArgumentParser) -> None:
        """The dataset options (defaults: the checkpoint's dataset and subset seed)."""
        add_data_arguments(parser, defaults_from_checkpoint=True)

    def check_eval_args(self, args: argparse.Namespace) -> None:
        """An ImageFolder needs its folder."""
        if args.data == "imagefolder" and not args.data_dir:
            raise UsageError("--data imagefolder needs --data-dir DIR (val/ holds one subfolder per class)")

    def build_data(self, args: argparse.Namespace, need_train: bool = True) -> DataSpec:
        """Fashion-MNIST, CIFAR or an ImageFolder, as ``--data`` says."""
        return build_data(args.data, args.data_dir, args.download, args.train_subset, args.val_subset,
                          args.subset_seed, args.img_size, args.crop_pct, augment=args.augment,
                          need_train=need_train)

    def input_size(self, args: argparse.Namespace, spec: DataSpec) -> tuple[int, int]:
        """``--img-size`` for in-memory datasets (resized on the device), else the dataset's."""
        return (args.img_size, args.img_size) if (args.img_size and spec.in_memory) else spec.input_size

    def train_step(self, args: argparse.Namespace, spec: DataSpec, margs: ModelArgs, env: DistEnv) -> TrainStep:
        """:class:`ClassifyStep` with the recipe's mixup and loss."""
        mixup, criterion = build_criterion(args, spec.num_classes)
        return ClassifyStep(preprocessor(args, spec, margs, augment=args.augment), mixup, criterion, env.device,
                            augment_on_device=spec.augment_on_device)

    def evaluate(self, module: nn.Module, loader: Any, args: argparse.Namespace, spec: DataSpec, margs: ModelArgs,
                 env: DistEnv, final: bool = False) -> dict[str, float]:
        """``val_loss``, ``val_top1``, ``val_top5`` (%), ``val_images``, ``eval_images_per_s``."""
        dtype: Optional[Any] = amp_dtype(env.device, args.amp_dtype) if args.amp else None
        return evaluate_classifier(module, loader, preprocessor(args, spec, margs), env, args.amp, dtype)
