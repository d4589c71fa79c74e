"""The study presets of ``pedconv compare --preset NAME``: models, seeds, width and recipe.

Each is this project's own setting for one published study (README, results/); their costs
are on the 2-core CPU the project is built on.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PRESETS"]


_SMALL = ["cifar_resnet20", "pedconv_cifar_resnet20", "condconv_cifar_resnet20", "dyconv_cifar_resnet20"]


# The main job: the static baseline, PEDConv, and the systems of the paper's Table 1 that run at
# this scale, ODConv with one kernel (PEDConv's parameter count) and DCD among them.
_MAIN = [*_SMALL, "odconv_cifar_resnet20", "dcd_cifar_resnet20"]


# Every Table 1 system with a CIFAR-style ResNet-20 (SK: timm's SelectiveKernel in each block).
_SYSTEMS = [*_MAIN, "weightnet_cifar_resnet20", "kw_cifar_resnet20", "sk_cifar_resnet20"]


# Recipes. ``train`` holds `pedconv train` options shared by every run of the preset. Widths
# and budgets are sized from `experiments/train_throughput.py` on the 2-core CPU this project
# is built on (width-8 ResNet-20 train steps: ~1500 (static) / ~700 (PEDConv) / ~1100
# (CondConv) / ~950 (DY-Conv) images/s there).
_RECIPE = {"batch_size": 128, "lr": 0.2, "weight_decay": 5e-4, "val_subset": None}


_ABLATIONS = [
    "pedconv_cifar_resnet20:components=[gamma]",
    "pedconv_cifar_resnet20:components=[phi]",
    "pedconv_cifar_resnet20:components=[psi]",
    "pedconv_cifar_resnet20:rank=4",
    "pedconv_cifar_resnet20:variational=false",
    "pedconv_cifar_resnet20:infomax=false",
]


_FULL = ["cifar_resnet20", "pedconv_cifar_resnet20", "pedconv_cifar_resnet20:variational=false",
         "pedconv_cifar_resnet20:sigma=learned", "pedconv_cifar_resnet20:init=authors", "condconv_cifar_resnet20",
         "dyconv_cifar_resnet20", "odconv_cifar_resnet20", "dcd_cifar_resnet20"]


PRESETS: dict[str, dict[str, Any]] = {
    # The main job, sized to the 10-15 min goal on 2 cores (measured in the README): 4 epochs on
    # 10k images took 25 min for these six models; 3 epochs on 6k images take 13.6 min.
    "default": {"models": _MAIN, "seeds": [0, 1], "width": 8,
                "train": {**_RECIPE, "epochs": 3, "train_subset": 6000, "warmup_epochs": 0.5}},
    # Every Table 1 system, with the study's recipe (~1.5 h here).
    "systems": {"models": _SYSTEMS, "seeds": [0, 1, 2], "width": 8,
                "train": {**_RECIPE, "epochs": 12, "train_subset": 10000, "warmup_epochs": 1.0}},
    # CI smoke: well under 2 minutes.
    "quick": {"models": _SMALL, "seeds": [0], "width": 8,
              "train": {**_RECIPE, "epochs": 2, "train_subset": 2048, "val_subset": 2000, "warmup_epochs": 0.0}},
    # The converged comparison: 3 seeds, 12 epochs on 10k images (about 30 min per seed here).
    "study": {"models": _SMALL, "seeds": [0, 1, 2], "width": 8,
              "train": {**_RECIPE, "epochs": 12, "train_subset": 10000, "warmup_epochs": 1.0}},
    # The converged full-data study (README, "The full-data study"; ~30 runs of 25-40 min on one
    # CPU thread each, so run side by side: --jobs N, one process and run folder per run):
    # all 60k training images, width 8, every system and PEDConv's generator variants.
    "full": {"models": _FULL, "seeds": [0, 1, 2], "width": 8,
             "train": {**_RECIPE, "epochs": 10, "train_subset": None, "warmup_epochs": 1.0}},
    # Its sigma / info-max sweep, seed 0 (sigma 0 = variational=false, 0.1 = the default; lambda 0 =
    # infomax=false, 1e-3 = the default; lambda 1e-2 is `--preset full --models pedconv_cifar_resnet20
    # --output <another folder> -- --infomax-weight 0.01`: static does not depend on lambda).
    "full-sweep": {"models": ["cifar_resnet20", "pedconv_cifar_resnet20", "pedconv_cifar_resnet20:variational=false",
                              "pedconv_cifar_resnet20:sigma=0.05", "pedconv_cifar_resnet20:sigma=0.2",
                              "pedconv_cifar_resnet20:infomax=false"], "seeds": [0], "width": 8,
                   "train": {**_RECIPE, "epochs": 10, "train_subset": None, "warmup_epochs": 1.0}},
    # Fine-tuning from pretrained static networks (README, "Fine-tuning"): first the static
    # width-16 ResNet-20s, trained until top-1 is flat (20 epochs on the main job's 12k images)...
    "finetune-base": {"models": ["cifar_resnet20"], "seeds": [0, 1, 2], "width": 16,
                      "train": {**_RECIPE, "epochs": 20, "train_subset": 12000, "warmup_epochs": 1.0}},
    # ...then, from each seed's network, N = 5 more epochs at a tenth of the lr with the same data
    # order: kept static (the reference) or converted with its function kept. CondConv is not in
    # it: its from_conv cannot keep a conv's function (sigmoid routing).
    "finetune": {"models": ["cifar_resnet20", "pedconv_cifar_resnet20", "odconv_cifar_resnet20",
                            "dyconv_cifar_resnet20"], "seeds": [0, 1, 2], "width": 16,
                 "init_from": "runs/compare-finetune-base",
                 "train": {**_RECIPE, "lr": 0.02, "epochs": 5, "train_subset": 12000, "warmup_epochs": 0.0}},
    # The paper's ablations (Table 5a/5b, Sec. 4.5 info-max) with the study's recipe; their
    # reference rows (static, default PEDConv) are the study's runs with the same seeds.
    "ablations": {"models": _ABLATIONS, "seeds": [0, 1, 2], "width": 8,
                  "train": {**_RECIPE, "epochs": 12, "train_subset": 10000, "warmup_epochs": 1.0}},
    # The transfer study's first half (the paper's protocol at this machine's scale): ImageNet-style
    # ResNet-18 backbones, static and PEDConv, pretrained as classifiers on all of Fashion-MNIST
    # (the grey images replicated to 3 channels), for `pedconv compare --task detect|segment
    # --init-from ... --init-models resnet18 pedconv_resnet18` to fine-tune the SSD300 and UperNet
    # ResNet-18s from. 48 px is the scale at which the scenes show
    # an item (16-64 px tall on the 128 px detection canvas, 12-48 px on the 96 px segmentation
    # one), so the backbone meets its objects at the size it learnt them; one pass over the 60k
    # images keeps the six runs at about 45 min on this 2-core CPU (96 px and 3 epochs: ~9 h).
    "transfer-pretrain": {"models": ["resnet18", "pedconv_resnet18"], "seeds": [0, 1, 2], "width": None,
                          "train": {**_RECIPE, "epochs": 1, "train_subset": None, "img_size": 48,
                                    "warmup_epochs": 0.2, "checkpoint_every_steps": 50}},
}
