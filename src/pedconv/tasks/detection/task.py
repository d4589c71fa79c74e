"""The detection task of ``pedconv detect``: COCO-format data, torchvision detectors, COCO AP.

* **Data**: a COCO-format folder, ``<data-dir>/annotations/instances_<split>.json`` with the
  images in ``<data-dir>/<split>/`` (COCO 2017: ``--train-split train2017 --val-split
  val2017``, the defaults), validated before training (:func:`~pedconv.tasks.detection.coco.load_coco`).
  Without ``--data-dir``, the offline scene set of real Fashion-MNIST items
  (:mod:`pedconv.tasks.scenes`) is generated once into a cache folder and used.
* **Model**: a registered torchvision detector (SSD300 or Faster R-CNN + FPN on a
  (PEDConv-)ResNet, :mod:`pedconv.models.detection`), which takes float images in [0, 1],
  normalises and resizes them itself and returns its losses in training mode.
* **Step**: the sum of the detector's losses; training images are flipped left-right at random
  (with their boxes) by the dataset, seeded by their position in the run.
* **Metrics**: COCO box AP, AP50, AP75, AP_S/M/L and AR100 (%) through torchmetrics'
  ``MeanAveragePrecision`` (:class:`~pedconv.tasks.detection.metrics.DetectionMetric`);
  ``best.pt`` is the best AP.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn as nn
from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import Tensor
from torch.utils.data import Subset

from ...errors import DataError
from ...training.data import DataSpec
from ...training.distributed import DistEnv
from ...training.model_setup import ModelArgs, build_model
from ...training.task import EvalPass, StepResult, Task, TrainStep
from ...utils.options import positive_int
from ..offline import add_offline_arguments, offline_root
from .coco import CocoDetection, collate_detection
from .metrics import DetectionMetric

__all__ = ["Detection", "DetectionStep"]

# Table 2's recipe (also the defaults of `pedconv detect train`). Milestones are in epochs of
# COCO train2017's 117,266 images with boxes at a global batch of 64: 1,832 steps per epoch.
_SSD_PAPER = {"_help": "Table 2's SSD300 recipe (the defaults): pedconv_ssd300_resnet50 at 300x300, SGD momentum "
                       "0.9, global batch 64 (8 processes x 8), weight decay 5e-4, lr 1e-3 for 160k iterations, "
                       "then /10 and /100 for 40k each (epochs 87.3, 109.2 and 131 of COCO train2017); the lr "
                       "follows the global batch (1e-3 per 64 images) when it is not 64",
              "model": "pedconv_ssd300_resnet50", "img_size": 300, "opt": "sgd", "lr": 1e-3, "lr_scale": "linear",
              "lr_base_batch": 64, "momentum": 0.9, "nesterov": False, "weight_decay": 5e-4, "batch_size": 8,
              "sched": "multistep",
              "epochs": 131, "decay_milestones": [87.3, 109.2], "decay_rate": 0.1,
              "_pretrained": "an ImageNet-pretrained ResNet-50 (--init-from a torchvision/timm resnet50 "
                             "state-dict file, a `pedconv train` run, or the authors' PEDConv-ResNet-50 file)"}



class DetectionStep:
    """The training loss of a torchvision detector on one micro-batch (the sum of its losses).

    Images arrive as uint8 [3, H, W] tensors (augmented by the dataset) and go in as floats in [0, 1].

    >>> from pedconv.models import create_model
    >>> model = create_model("ssd300_resnet18", num_classes=3, image_size=64)
    >>> target = {"boxes": torch.tensor([[4.0, 4.0, 30.0, 30.0]]), "labels": torch.tensor([1])}
    >>> batch = ([torch.zeros(3, 64, 64, dtype=torch.uint8)] * 2, [target] * 2)  # BatchNorm needs 2 in training
    >>> DetectionStep(torch.device("cpu"))(model.train(), batch, seed=0).count
    2
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __call__(self, model: nn.Module, batch: tuple[list[Tensor], list[dict[str, Tensor]]], seed: int
                 ) -> StepResult:
        images, targets = batch
        xs = [image.to(self.device, non_blocking=True).float().div_(255) for image in images]
        ts = [{k: v.to(self.device, non_blocking=True) for k, v in t.items()} for t in targets]
        losses = model(xs, ts)
        total = torch.stack(list(losses.values())).sum()
        return StepResult(total, len(xs))


class Detection(Task):
    """``pedconv detect``: COCO-format object detection with SSD300 / Faster R-CNN.

    >>> Detection().best_metric, Detection().result_metrics[:3]
    ('AP', ('AP', 'AP50', 'AP75'))
    """

    name = "detect"
    default_model = "pedconv_ssd300_resnet50"
    best_metric = "AP"
    result_metrics = ("AP", "AP50", "AP75", "AP_S", "AP_M", "AP_L", "AR100")
    defaults: ClassVar[Mapping[str, Any]] = {k: v for k, v in _SSD_PAPER.items() if not k.startswith("_")}
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "paper": _SSD_PAPER,
        "fasterrcnn": {"_help": "the 1x schedule of detection tables: pedconv_fasterrcnn_resnet50_fpn, SGD lr 0.02 "
                                "for a global batch of 16, weight decay 1e-4, 12 epochs, /10 at 8 and 11, "
                                "0.25-epoch warm-up",
                       "model": "pedconv_fasterrcnn_resnet50_fpn", "img_size": 800, "opt": "sgd", "lr": 0.02,
                       "lr_scale": "linear", "lr_base_batch": 16, "momentum": 0.9, "nesterov": False,
                       "weight_decay": 1e-4, "batch_size": 2, "sched": "multistep", "epochs": 12,
                       "decay_milestones": [8, 11], "warmup_epochs": 0.25, "warmup_lr": 1e-4},
        "quick": {"_help": "a few minutes on a CPU: pedconv_ssd300_resnet18 at 128 px on the offline scene set",
                  "model": "pedconv_ssd300_resnet18", "img_size": 128, "offline_scenes": 384, "val_scenes": 96,
                  "opt": "adamw", "lr": 2e-3, "lr_scale": "none", "weight_decay": 1e-4, "batch_size": 16,
                  "sched": "cosine", "epochs": 6, "warmup_epochs": 0.5, "warmup_lr": 1e-5, "val_batch_size": 32},
    }

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """COCO folder and splits, the offline set, the input size, augmentation, workers."""
        g = parser.add_argument_group("data (COCO format)")
        g.add_argument("--data-dir", default=None,
                       help="COCO-format root: annotations/instances_<split>.json and <split>/ image folders "
                            "(default: the offline scene set, generated once into the cache)")
        g.add_argument("--train-split", default="train2017", help="training split name")
        g.add_argument("--val-split", default="val2017", help="validation split name")
        g.add_argument("--img-size", type=positive_int, default=300,
                       help="detector input size (SSD: the square it resizes to; Faster R-CNN: the shorter side)")
        g.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                       help="random horizontal flips in training")
        add_offline_arguments(g)

    def build_data(self, args: argparse.Namespace, need_train: bool = True) -> DataSpec:
        """The two splits, validated (a malformed COCO file fails here, naming the file and the item)."""
        root = Path(args.data_dir) if args.data_dir else offline_root(args, "coco")
        splits = (args.train_split, args.val_split) if args.data_dir else ("train", "val")

        def split(name: str, **kwargs: Any) -> CocoDetection:
            return CocoDetection(root / "annotations" / f"instances_{name}.json", root / name, **kwargs)

        val = split(splits[1])
        train = split(splits[0], skip_crowd=True, skip_empty=True, hflip=args.augment) if need_train else val
        if need_train and train.cat_ids != val.cat_ids:
            raise DataError(f"{train.ann_file} and {val.ann_file} have different categories")
        subset = Subset(val, range(min(args.val_subset, len(val)))) if args.val_subset else val
        return DataSpec(name=f"coco:{root}", train=train, val=subset,
                        num_classes=val.num_classes, in_chans=3, input_size=(args.img_size, args.img_size),
                        mean=tuple(IMAGENET_DEFAULT_MEAN), std=tuple(IMAGENET_DEFAULT_STD), in_memory=False,
                        augment_on_device=True,
                        collate_fn=collate_detection)

    def build_model(self, args: argparse.Namespace, spec: DataSpec) -> tuple[nn.Module, ModelArgs]:
        """The detector for the data's classes (background included) at ``--img-size``."""
        kwargs = dict(args.model_kwargs)
        kwargs.setdefault("image_size", args.img_size)  # every detection builder takes it
        return build_model(args.model, spec.num_classes, 3, kwargs)

    def train_step(self, args: argparse.Namespace, spec: DataSpec, margs: ModelArgs, env: DistEnv) -> TrainStep:
        """:class:`DetectionStep`."""
        return DetectionStep(env.device)

    def evaluate(self, module: nn.Module, loader: Any, args: argparse.Namespace, spec: DataSpec, margs: ModelArgs,
                 env: DistEnv, final: bool = False) -> dict[str, float]:
        """COCO box AP (%) over the validation split (every rank's shard; torchmetrics gathers them)."""
        metric = DetectionMetric().to(env.device)
        with EvalPass(module) as run:
            for batch_images, targets in loader:
                xs = [im.to(env.device).float().div_(255) for im in batch_images]
                preds = module(xs)
                metric.update([{k: v.detach() for k, v in p.items()} for p in preds],
                              [{k: v.to(env.device) for k, v in t.items()} for t in targets])
                run.images += len(xs)
        return {**metric.compute(), **run.speed(env)}
