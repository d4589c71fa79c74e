"""The task of ``pedconv adv``: Free adversarial training and PGD-10/50 evaluation (Table 4 of the paper).

The data, models and recipe options are ``pedconv train``'s (Fashion-MNIST, CIFAR,
ImageFolder/ImageNet); the loop replays each minibatch ``--replay`` times with an optimizer
step each time (:class:`~pedconv.training.data.GlobalBatchSampler`), and the step
(:class:`~pedconv.tasks.adversarial.free.FreeAdversarialStep`) carries the perturbation from
one replay to the next. An epoch of ``--epochs`` is ``--replay`` passes over the data: divide
a clean schedule's epochs by ``m`` to keep the cost equal, as Free AT does (the presets do).
Each epoch's evaluation measures natural accuracy and the first ``--pgd-steps`` attack; the
last one measures every attack (PGD-10 and PGD-50 by default).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Optional

import torch.nn as nn
from torch.utils.data import Subset

from ...errors import UsageError
from ...training.data import BatchPreprocessor, DataSpec, ShardBatchSampler, make_loader
from ...training.model_setup import ModelArgs
from ...training.recipe import amp_dtype
from ...training.task import Task, TrainStep
from ...utils.options import positive_int
from ..classification.data import add_image_data_arguments, build_data
from .attacks import PAPER_EPS, NormalizedModel, parse_eps, robust_accuracy
from .free import FreeAdversarialStep

if TYPE_CHECKING:
    from ...training.distributed import DistEnv

__all__ = ["AdversarialTraining"]


def _eps_type(text: str) -> float:
    try:
        return parse_eps(text, option=None)
    except UsageError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


class AdversarialTraining(Task):
    """Free adversarial training (Shafahi et al. 2019, m = ``--replay``) evaluated by PGD.

    ``evaluate`` returns ``natural``, ``pgd{k}`` for each ``--pgd-steps`` k (default 10 and
    50, as the paper), in percent, on the first ``--attack-subset`` validation images (all
    by default), with ``images`` and ``eval_images_per_s``. ``best.pt`` follows the first
    PGD metric (``pgd10``).

    >>> task = AdversarialTraining()
    >>> p = argparse.ArgumentParser(); task.add_arguments(p)
    >>> args = p.parse_args(["--eps", "8/255", "--pgd-steps", "20"]); task.check_args(args)
    >>> round(args.eps * 255, 6), args.replay, task.best_metric, task.result_metrics
    (8.0, 4, 'pgd20', ('natural', 'pgd20'))
    """

    name = "adv"
    default_model = "pedconv_cifar_resnet20"
    best_metric = "pgd10"
    result_metrics: tuple[str, ...] = ("natural", "pgd10", "pgd50")
    evaluates_checkpoints_of = ("pedconv train",)  # a classifier trained without attacks, under attack
    probe_with_images = True
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "paper": {"_help": "Table 4: pedconv_resnet50 on ImageNet (--data-dir), Free AT m=4 at eps 4/255, 92/m = 23 "
                           "epochs, as the Free-AT reference: plain SGD (momentum 0.9, no Nesterov) lr 0.1 per 256 "
                           "images, /10 at epochs 8 and 16, weight decay 1e-4 on every parameter",
                  "model": "pedconv_resnet50", "data": "imagefolder", "img_size": 224, "replay": 4, "epochs": 23,
                  "opt": "sgd", "lr": 0.1, "lr_base_batch": 256, "momentum": 0.9, "nesterov": False,
                  "weight_decay": 1e-4, "wd_norm_bias": True, "sched": "multistep", "decay_milestones": [8.0, 16.0],
                  "decay_rate": 0.1, "warmup_epochs": 0.0, "batch_size": 64},
        "quick": {"_help": "a few minutes on a CPU: width-8 pedconv_cifar_resnet20 on 4096 Fashion-MNIST images, "
                           "2 epochs x m=4 replays, attacks on 512 test images",
                  "model": "pedconv_cifar_resnet20", "model_kwargs": {"width": 8}, "data": "fashion_mnist",
                  "train_subset": 4096, "epochs": 2, "replay": 4, "batch_size": 128, "lr": 0.1,
                  "weight_decay": 5e-4, "warmup_epochs": 0.0, "attack_subset": 512},
    }

    def replay(self, args: argparse.Namespace) -> int:
        """``--replay`` (m): optimizer steps per minibatch."""
        return int(args.replay)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """``pedconv train``'s data options, then ``--eps``, ``--replay``, ``--pgd-steps``, ``--pgd-alpha``,
        ``--attack-subset``."""
        add_image_data_arguments(parser)
        g = parser.add_argument_group("Adversarial training and evaluation")
        g.add_argument("--eps", type=_eps_type, default=PAPER_EPS, metavar="EPS",
                       help="l-inf budget in pixel units, a number or a fraction (default 4/255, the paper's); "
                            "also Free AT's FGSM step")
        g.add_argument("--replay", type=positive_int, default=4, metavar="M",
                       help="Free adversarial training: optimizer steps per minibatch (default 4, the paper's m)")
        g.add_argument("--pgd-steps", type=positive_int, nargs="+", default=[10, 50], metavar="K",
                       help="PGD attacks to evaluate, one metric pgdK each (default 10 50)")
        g.add_argument("--pgd-alpha", type=_eps_type, default=None, metavar="ALPHA",
                       help="PGD step size in pixel units (default eps/4: 1/255 at 4/255)")
        g.add_argument("--attack-subset", type=positive_int, default=None, metavar="N",
                       help="evaluate (natural and PGD) on the first N validation images only (PGD-50 is ~50 "
                            "forward+backward passes per image)")

    def check_args(self, args: argparse.Namespace) -> None:
        """Refuse mixup/cutmix (no adversarial meaning here); set the metrics from ``--pgd-steps``."""
        for option in ("mixup", "cutmix"):
            if getattr(args, option, 0):
                raise UsageError(f"--{option} does not combine with Free adversarial training")
        steps = list(dict.fromkeys(args.pgd_steps))
        args.pgd_steps = steps
        self.best_metric = f"pgd{steps[0]}"
        self.result_metrics = ("natural", *(f"pgd{k}" for k in steps))

    def build_data(self, args: argparse.Namespace, need_train: bool = True) -> DataSpec:
        """As ``pedconv train``: ``--data``, ``--data-dir``, the subsets, ``--img-size``."""
        return build_data(args.data, args.data_dir, getattr(args, "download", False),
                          getattr(args, "train_subset", None), getattr(args, "val_subset", None),
                          getattr(args, "subset_seed", 0), getattr(args, "img_size", None),
                          getattr(args, "crop_pct", 0.875), need_train=need_train,
                          augment=getattr(args, "augment", True))

    def input_size(self, args: argparse.Namespace, spec: DataSpec) -> tuple[int, int]:
        """``--img-size`` for in-memory datasets (resized on the device), else the dataset's."""
        img_size = getattr(args, "img_size", None)
        return (img_size, img_size) if (img_size and spec.in_memory) else spec.input_size

    @staticmethod
    def _pixel_layout(args: argparse.Namespace, spec: DataSpec, margs: ModelArgs
                      ) -> tuple[Optional[tuple[int, int]], Optional[int]]:
        img_size = getattr(args, "img_size", None)
        size = (img_size, img_size) if (img_size and spec.in_memory) else None
        out_chans = margs.input_chans if margs.input_chans != spec.in_chans else None
        return size, out_chans

    def train_step(self, args: argparse.Namespace, spec: DataSpec, margs: ModelArgs, env: DistEnv) -> TrainStep:
        """A :class:`FreeAdversarialStep` with ``--eps`` (one per run: it holds δ)."""
        size, out_chans = self._pixel_layout(args, spec, margs)
        use_amp = bool(getattr(args, "amp", False))
        return FreeAdversarialStep(spec.mean, spec.std, eps=args.eps,
                                   augment=bool(getattr(args, "augment", True)) and spec.augment_on_device,
                                   size=size, out_chans=out_chans, device=env.device, amp=use_amp,
                                   amp_dtype=amp_dtype(env.device, getattr(args, "amp_dtype", None)) if use_amp
                                   else None)

    def evaluate(self, module: nn.Module, loader: Any, args: argparse.Namespace, spec: DataSpec, margs: ModelArgs,
                 env: DistEnv, final: bool = False) -> dict[str, float]:
        """Natural and PGD accuracy of the bare ``module`` (see the class docstring): every
        ``--pgd-steps`` attack when ``final``, the first one after the other epochs."""
        size, out_chans = self._pixel_layout(args, spec, margs)
        steps = tuple(args.pgd_steps) if final else tuple(args.pgd_steps[:1])
        if args.attack_subset is not None and args.attack_subset < spec.num_val:
            n = int(args.attack_subset)
            batch = getattr(args, "val_batch_size", None) or 2 * getattr(args, "batch_size", 128)
            loader = make_loader(spec, Subset(spec.val, range(n)), ShardBatchSampler(n, batch, env.world_size,
                                                                                     env.rank),
                                 env.device, getattr(args, "workers", None))
        chans = len(spec.mean)
        to_pixels = BatchPreprocessor((0.0,) * chans, (1.0,) * chans, size=size)
        use_amp = bool(getattr(args, "amp", False))
        result = robust_accuracy(NormalizedModel(module, spec.mean, spec.std, out_chans).to(env.device), loader,
                                 to_pixels, eps=args.eps, steps_list=steps, alpha=args.pgd_alpha, env=env,
                                 seed=getattr(args, "seed", 0), amp=use_amp,
                                 amp_dtype=amp_dtype(env.device, getattr(args, "amp_dtype", None)) if use_amp
                                 else None)
        result["val_images"] = result.pop("images")
        return result


AdversarialTask = AdversarialTraining
"""Its former name (named like :class:`~pedconv.tasks.detection.task.Detection` now)."""
