"""The segmentation task of ``pedconv segment``: ADE20K-layout data, UperNet / PSPNet, mIoU.

* **Data**: the ADEChallengeData2016 layout, ``<data-dir>/images/{training,validation}/`` and
  ``<data-dir>/annotations/{training,validation}/*.png`` (0 = unlabelled, 1..K the classes),
  validated before training (:class:`~pedconv.tasks.segmentation.ade20k.ADE20KSegmentation`);
  labels are reduced by one with 0 becoming the ignore index 255, as the standard ADE20K
  evaluation does. Without ``--data-dir``, the offline scene set of real Fashion-MNIST items
  (:mod:`pedconv.tasks.scenes`, 10 classes) is generated once into a cache folder.
* **Model**: a registered segmentation_models_pytorch network (UperNet, dilated PSPNet on a
  (PEDConv-)ResNet, :mod:`pedconv.models.segmentation`) returning logits at the input size.
* **Step**: pixel cross-entropy with the ignore index, on normalised images (ImageNet mean/std).
* **Metrics**: mIoU (classes absent from both prediction and ground truth are left out of
  the mean), aAcc and mAcc (%) from a confusion matrix accumulated over the split and summed
  over processes (:class:`~pedconv.tasks.segmentation.metrics.SegmentationMetric`); ``best.pt``
  is the best mIoU.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import Tensor
from torch.utils.data import Subset

from ...errors import TrainOptionsError
from ...training.data import BatchPreprocessor, DataSpec
from ...training.distributed import DistEnv
from ...training.model_setup import ModelArgs
from ...training.recipe import autocast
from ...training.task import EvalPass, StepResult, Task, TrainStep
from ...utils.options import positive_int
from ..offline import add_offline_arguments, offline_root
from .ade20k import IGNORE_INDEX, NUM_CLASSES, PAD_MULTIPLE, ADE20KSegmentation, collate_segmentation
from .metrics import SegmentationMetric

__all__ = ["Segmentation", "SegmentationStep"]


# The ADE20K 160k-iteration schedule of the UperNet/PSPNet reference implementations
# (mmsegmentation's): 512x512 crops, global batch 16, SGD lr 0.01 momentum 0.9 weight decay
# 5e-4, poly decay (power 0.9) to 1e-4. Epochs of ADE20K's 20,210 training images: 126.7.
_PAPER = {"_help": "the ADE20K 160k schedule (the defaults): pedconv_upernet_resnet50, 512x512 crops, global batch "
                   "16 (8 processes x 2), SGD lr 0.01 momentum 0.9, weight decay 5e-4, poly decay to 1e-4 over "
                   "160k iterations (126.7 epochs of ADE20K's 20,210 training images); the lr follows the global "
                   "batch (0.01 per 16 images) when it is not 16",
          "model": "pedconv_upernet_resnet50", "img_size": 512, "opt": "sgd", "lr": 0.01, "lr_scale": "linear",
          "lr_base_batch": 16,
          "momentum": 0.9, "nesterov": False, "weight_decay": 5e-4, "batch_size": 2, "sched": "poly",
          "min_lr": 1e-4, "epochs": 127,
          "_pretrained": "an ImageNet-pretrained ResNet-50 (--init-from a torchvision/timm resnet50 state-dict file, a "
                         "`pedconv train` run, or the authors' PEDConv-ResNet-50 file)"}


class SegmentationStep:
    """Pixel cross-entropy (ignoring :data:`IGNORE_INDEX`) of a segmentation network on one micro-batch.

    >>> net = nn.Conv2d(3, 4, 1)
    >>> batch = (torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.full((2, 8, 8), 255))  # (images, masks[, sizes])
    >>> step = SegmentationStep(BatchPreprocessor((0.5,) * 3, (0.5,) * 3), torch.device("cpu"))
    >>> r = step(net, (batch[0], torch.zeros(2, 8, 8, dtype=torch.long)), seed=0); r.count
    2
    """

    def __init__(self, preprocess: BatchPreprocessor, device: torch.device) -> None:
        self.preprocess, self.device = preprocess, device

    def __call__(self, model: nn.Module, batch: tuple[Tensor, ...], seed: int) -> StepResult:
        images, masks = batch[0], batch[1]
        x = self.preprocess(images.to(self.device, non_blocking=True))
        y = masks.to(self.device, non_blocking=True)
        logits = model(x)
        return StepResult(F.cross_entropy(logits, y, ignore_index=IGNORE_INDEX), int(y.shape[0]))


class Segmentation(Task):
    """``pedconv segment``: semantic segmentation on ADE20K-layout data with UperNet / PSPNet.

    >>> Segmentation().best_metric, Segmentation().result_metrics
    ('mIoU', ('mIoU', 'aAcc', 'mAcc'))
    """

    name = "segment"
    default_model = "pedconv_upernet_resnet50"
    best_metric = "mIoU"
    result_metrics = ("mIoU", "aAcc", "mAcc")
    defaults: ClassVar[Mapping[str, Any]] = {k: v for k, v in _PAPER.items() if not k.startswith("_")}
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "paper": _PAPER,
        "pspnet": {**_PAPER, "_help": "the same schedule for the dilated PSPNet: pedconv_pspnet_resnet50",
                   "model": "pedconv_pspnet_resnet50"},
        "quick": {"_help": "a few minutes on a CPU: pedconv_upernet_resnet18 (64 decoder channels) on the offline "
                           "scene set resized to 96 px",
                  "model": "pedconv_upernet_resnet18", "model_kwargs": {"decoder_channels": 64}, "img_size": 96,
                  "offline_scenes": 2048, "val_scenes": 128, "augment": False, "opt": "adamw", "lr": 1e-3,
                  "lr_scale": "none", "weight_decay": 1e-4, "batch_size": 16, "sched": "cosine", "epochs": 2,
                  "warmup_epochs": 0.1, "warmup_lr": 1e-5, "min_lr": 0.0, "val_batch_size": 32},
    }

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """ADE20K folder, classes, crop size, augmentation, workers, the offline set."""
        g = parser.add_argument_group("data (ADE20K layout)")
        g.add_argument("--data-dir", default=None,
                       help="ADEChallengeData2016-style root: images/{training,validation}/ and "
                            "annotations/{training,validation}/*.png (default: the offline scene set, generated "
                            "once into the cache)")
        g.add_argument("--num-classes", type=positive_int, default=None,
                       help=f"classes, not counting the unlabelled 0 (default: {NUM_CLASSES} for --data-dir, "
                            "10 for the offline set)")
        g.add_argument("--img-size", type=positive_int, default=512, help="the square images are resized to")
        g.add_argument("--eval-resize", choices=("keep-ratio", "square"), default="keep-ratio",
                       help="validation images: keep-ratio (the standard: resized to fit 4*img-size x img-size, "
                            "e.g. 2048x512, scored at the masks' original resolution) or square (img-size, masks "
                            "resized too: faster, not comparable to published numbers)")
        g.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                       help="random horizontal flips and scale-crops in training")
        add_offline_arguments(g)

    def check_args(self, args: argparse.Namespace) -> None:
        """The segmenters' encoders halve the input 5 times: ``--img-size`` is a multiple of 32."""
        if args.img_size % PAD_MULTIPLE:
            raise TrainOptionsError(f"--img-size {args.img_size}: the segmenters need a multiple of {PAD_MULTIPLE} "
                                    f"(their encoders halve the image 5 times), e.g. "
                                    f"{-(-args.img_size // PAD_MULTIPLE) * PAD_MULTIPLE}")

    def build_data(self, args: argparse.Namespace, need_train: bool = True) -> DataSpec:
        """Both splits, validated (a bad mask fails here, naming the file)."""
        root = args.data_dir or offline_root(args, "ade20k")
        classes = args.num_classes or (NUM_CLASSES if args.data_dir else 10)
        if args.eval_resize == "keep-ratio":
            val = ADE20KSegmentation(root, "validation", num_classes=classes,
                                     eval_scale=(4 * args.img_size, args.img_size))
        else:
            val = ADE20KSegmentation(root, "validation", num_classes=classes, size=args.img_size)
        train = ADE20KSegmentation(root, "training", num_classes=classes, size=args.img_size,
                                   augment=args.augment) if need_train else val
        subset = Subset(val, range(min(args.val_subset, len(val)))) if args.val_subset else val
        return DataSpec(name=f"ade20k:{root}", train=train, val=subset, num_classes=classes, in_chans=3,
                        input_size=(args.img_size, args.img_size), mean=tuple(IMAGENET_DEFAULT_MEAN),
                        std=tuple(IMAGENET_DEFAULT_STD), in_memory=False, augment_on_device=False,
                        collate_fn=collate_segmentation)

    def train_step(self, args: argparse.Namespace, spec: DataSpec, margs: ModelArgs, env: DistEnv) -> TrainStep:
        """:class:`SegmentationStep`."""
        return SegmentationStep(BatchPreprocessor(spec.mean, spec.std, channels_last=args.channels_last), env.device)

    def evaluate(self, module: nn.Module, loader: Any, args: argparse.Namespace, spec: DataSpec, margs: ModelArgs,
                 env: DistEnv, final: bool = False) -> dict[str, float]:
        """mIoU, aAcc, mAcc (%) over the validation split, the confusion matrix summed over processes."""
        pre = BatchPreprocessor(spec.mean, spec.std, channels_last=args.channels_last)
        metric = SegmentationMetric(spec.num_classes, ignore_index=IGNORE_INDEX, device=env.device)
        with EvalPass(module) as run:
            for raw, masks, sizes in loader:
                with autocast(env.device, args.amp, None):
                    logits = module(pre(raw.to(env.device)))
                masks = masks.to(env.device)
                for k, (h, w, mh, mw) in enumerate(sizes.tolist()):
                    # each image's own region, scored at its mask's resolution (upsampled where the
                    # image was resized keeping its ratio)
                    scores = logits[k : k + 1, :, :h, :w]
                    if (h, w) != (mh, mw):
                        scores = F.interpolate(scores.float(), size=(mh, mw), mode="bilinear",
                                               align_corners=False)
                    metric.update(scores.argmax(1), masks[k : k + 1, :mh, :mw])
                run.images += int(raw.shape[0])
        result = metric.compute()
        return {**{k: float(result[k]) for k in self.result_metrics}, **run.speed(env)}
