"""Image classification: the task of ``pedconv train`` (Fashion-MNIST, CIFAR, ImageFolder/ImageNet).

Batches are uint8 images and labels; the step normalises and augments them on the device
(:class:`~pedconv.training.loop.ClassifyStep`, with timm ``Mixup``/label smoothing), and
evaluation measures cross-entropy, top-1 and top-5 (:func:`~pedconv.training.loop.evaluate`).
"""

from __future__ import annotations

import argparse
from typing import Any, Optional

import torch.nn as nn

from ..errors import TrainOptionsError
from .config import add_image_data_arguments, add_label_regularisation_arguments
from .data import BatchPreprocessor, DataSpec, build_data
from .distributed import DistEnv
from .loop import ClassifyStep, evaluate
from .model import ModelArgs
from .recipe import amp_dtype, build_criterion
from .task import Task, TrainStep

__all__ = ["Classification", "preprocessor"]


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

    @property
    def train_command(self) -> str:
        """``pedconv train``."""
        return "pedconv train"

    @property
    def curve_metrics(self) -> tuple[str, ...]:
        """None: ``curves.png`` shows train and val top-1."""
        return ()

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

    def build_data(self, args: argparse.Namespace, need_train: bool = True) -> DataSpec:
        """Fashion-MNIST, CIFAR or an ImageFolder, as ``--data`` says."""
        return build_data(args.data, args.data_dir, args.download, args.train_subset, args.val_subset,
                          args.subset_seed, args.img_size, args.crop_pct, augment=args.augment,
                          need_train=need_train)

    def input_size(self, args: argparse.Namespace, spec: DataSpec) -> tuple[int, int]:
        """``--img-size`` for in-memory datasets (resized on the device), else the dataset's."""
        return (args.img_size, args.img_size) if (args.img_size and spec.in_memory) else spec.input_size

    def train_step(self, args: argparse.Namespace, spec: DataSpec, margs: ModelArgs, env: DistEnv) -> TrainStep:
        """:class:`~pedconv.training.loop.ClassifyStep` with the recipe's mixup and loss."""
        mixup, criterion = build_criterion(args, spec.num_classes)
        return ClassifyStep(preprocessor(args, spec, margs, augment=args.augment), mixup, criterion, env.device,
                            augment_on_device=spec.augment_on_device)

    def evaluate(self, module: nn.Module, loader: Any, args: argparse.Namespace, spec: DataSpec, margs: ModelArgs,
                 env: DistEnv, final: bool = False) -> dict[str, float]:
        """``val_loss``, ``val_top1``, ``val_top5`` (%), ``val_images``, ``eval_images_per_s``."""
        dtype: Optional[Any] = amp_dtype(env.device, args.amp_dtype) if args.amp else None
        return evaluate(module, loader, preprocessor(args, spec, margs), env, args.amp, dtype)
