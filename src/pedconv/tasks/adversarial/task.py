"""``pedconv adv``: Free adversarial training and PGD-10/50 evaluation (Table 4 of the paper).

A draft :class:`~pedconv.training.task.Task`: the command wiring (``cli.COMMANDS``, the
Trainer's replay of each batch ``replay`` times) is the integrator's. Everything else is
``pedconv train``'s: data, model registry, recipe, checkpoints, DDP.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any, Optional

import torch.nn as nn
from torch.utils.data import Subset

from ...errors import UsageError
from ...training.data import BatchPreprocessor, DataSpec, ShardBatchSampler, build_data, make_loader
from ...training.model import ModelArgs, build_model
from ...training.recipe import amp_dtype
from ...training.task import Task, TrainStep
from ...utils.options import positive_int
from .attacks import PAPER_EPS, NormalizedModel, parse_eps, robust_accuracy
from .free import FreeAdversarialStep

if TYPE_CHECKING:
    from ...training.distributed import DistEnv

__all__ = ["AdversarialTask"]


def _eps_type(text: str) -> float:
    try:
        return parse_eps(text, option=None)
    except UsageError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


class AdversarialTask(Task):
    """Free adversarial training (Shafahi et al. 2019, m = ``--replay``) evaluated by PGD.

    ``evaluate`` returns ``natural``, ``pgd{k}`` for each ``--pgd-steps`` k (default 10 and
    50, as the paper), in percent, on the first ``--attack-subset`` validation images (all
    by default), with ``images`` and ``eval_images_per_s``. ``best.pt`` follows the first
    PGD metric (``pgd10``).

    >>> task = AdversarialTask()
    >>> p = argparse.ArgumentParser(); task.add_arguments(p)
    >>> args = p.parse_args(["--eps", "8/255", "--pgd-steps", "20"]); task.check_args(args)
    >>> round(args.eps * 255, 6), args.replay, task.best_metric, task.result_metrics
    (8.0, 4, 'pgd20', ('natural', 'pgd20'))
    """

    name = "adv"
    default_model = "pedconv_cifar_resnet20"
    best_metric = "pgd10"
    result_metrics: tuple[str, ...] = ("natural", "pgd10", "pgd50")
    replay = 4

    def __init__(self) -> None:
        self.input_chans: Optional[int] = None  # the model's, set by build_model

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """``--eps``, ``--replay``, ``--pgd-steps``, ``--pgd-alpha``, ``--attack-subset``."""
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
        self.replay = int(args.replay)
        self.best_metric = f"pgd{steps[0]}"
        self.result_metrics = ("natural", *(f"pgd{k}" for k in steps))

    def build_data(self, args: argparse.Namespace, need_train: bool = True) -> DataSpec:
        """As ``pedconv train``: ``--data``, ``--data-dir``, the subsets, ``--img-size``."""
        return build_data(args.data, args.data_dir, getattr(args, "download", False),
                          getattr(args, "train_subset", None), getattr(args, "val_subset", None),
                          getattr(args, "subset_seed", 0), getattr(args, "img_size", None),
                          getattr(args, "crop_pct", 0.875), need_train=need_train,
                          augment=getattr(args, "augment", True))

    def build_model(self, args: argparse.Namespace, spec: DataSpec) -> tuple[nn.Module, ModelArgs]:
        """``--model`` with ``--model-kwargs`` for the dataset's classes and channels."""
        model, margs = build_model(args.model, spec.num_classes, spec.in_chans, getattr(args, "model_kwargs", None))
        self.input_chans = margs.input_chans
        return model, margs

    def _pixel_layout(self, args: argparse.Namespace, spec: DataSpec) -> tuple[Optional[tuple[int, int]],
                                                                                Optional[int]]:
        img_size = getattr(args, "img_size", None)
        size = (img_size, img_size) if (img_size and spec.in_memory) else None
        out_chans = self.input_chans if self.input_chans not in (None, spec.in_chans) else None
        return size, out_chans

    def train_step(self, args: argparse.Namespace, spec: DataSpec, env: DistEnv) -> TrainStep:
        """A :class:`FreeAdversarialStep` with ``--eps`` (one per run: it holds δ)."""
        size, out_chans = self._pixel_layout(args, spec)
        use_amp = bool(getattr(args, "amp", False))
        return FreeAdversarialStep(spec.mean, spec.std, eps=args.eps,
                                   augment=bool(getattr(args, "augment", True)) and spec.augment_on_device,
                                   size=size, out_chans=out_chans, device=env.device, amp=use_amp,
                                   amp_dtype=amp_dtype(env.device, getattr(args, "amp_dtype", None)) if use_amp
                                   else None)

    def evaluate(self, module: nn.Module, loader: Any, spec: DataSpec, env: DistEnv,
                 args: argparse.Namespace) -> dict[str, float]:
        """Natural and PGD accuracy of the bare ``module`` (see the class docstring)."""
        size, out_chans = self._pixel_layout(args, spec)
        if args.attack_subset is not None and args.attack_subset < spec.num_val:
            n = int(args.attack_subset)
            batch = getattr(args, "val_batch_size", None) or 2 * getattr(args, "batch_size", 128)
            loader = make_loader(spec, Subset(spec.val, range(n)), ShardBatchSampler(n, batch, env.world_size,
                                                                                     env.rank),
                                 env.device, getattr(args, "workers", None))
        chans = len(spec.mean)
        to_pixels = BatchPreprocessor((0.0,) * chans, (1.0,) * chans, size=size)
        use_amp = bool(getattr(args, "amp", False))
        return robust_accuracy(NormalizedModel(module, spec.mean, spec.std, out_chans).to(env.device), loader,
                               to_pixels, eps=args.eps, steps_list=tuple(args.pgd_steps), alpha=args.pgd_alpha,
                               env=env, seed=getattr(args, "seed", 0), amp=use_amp,
                               amp_dtype=amp_dtype(env.device, getattr(args, "amp_dtype", None)) if use_amp else None)
