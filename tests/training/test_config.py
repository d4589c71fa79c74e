"""`pedconv train` options: YAML configs under the flags, their errors, the shipped configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import pedconv
from pedconv.errors import ConfigError, TrainOptionsError
from pedconv.tasks.classification import Classification
from pedconv.tasks.classification.command import parse_args
from pedconv.training.config import build_train_parser, load_yaml_config, resolve_config

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


def test_config_precedence_and_merging(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("epochs: 7\nlr: 1e-1\nweight_decay: 1e-4\nmodel_kwargs: {width: 8, rank: 2}\nnesterov: false\n")
    a = parse_args(["--config", str(cfg), "--lr", "0.3", "--model-kwargs", "rank=4", "components=[gamma]"])
    assert (a.epochs, a.lr, a.weight_decay, a.nesterov) == (7, 0.3, 1e-4, False)  # flags > YAML > defaults
    assert a.model_kwargs == {"width": 8, "rank": 4, "components": ["gamma"]}
    b = resolve_config({"config": str(cfg), "epochs": 2}, Classification(), lr=0.05)
    assert (b.epochs, b.lr, b.weight_decay) == (2, 0.05, 1e-4)


@pytest.mark.parametrize("text, message", [
    ("learning_rate: 0.1\n", "unknown key 'learning_rate' (did you mean 'lr'?)"),
    ("epochs: many\n", "epochs: invalid value 'many'"),
    ("sched: linear\n", "'linear' is not one of cosine"),
    ("amp: 1\n", "amp: expected true or false"),
    ("- 1\n", "must be a mapping"),
    ("lr: -1\n", "lr: invalid value -1 (must be > 0, got -1.0)"),
    ("lr: .nan\n", "lr: invalid value nan (must be a finite number, got nan)"),
    ("momentum: 2\n", "momentum: invalid value 2 (must be in [0, 1), got 2.0)"),
    ("decay_milestones: [30, -1]\n", "decay_milestones: invalid value -1 (must be >= 0, got -1.0)"),
])
def test_bad_config_files_are_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture, text: str,
                                           message: str) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    with pytest.raises(SystemExit) as e:
        parse_args(["--config", str(cfg)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "bad.yaml" in err


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_load(path: Path) -> None:
    args = parse_args(["--config", str(path), "--data-dir", "/data/imagenet"])  # the ImageFolder ones need it
    assert args.model in pedconv.list_models()
    raw = yaml.safe_load(path.read_text())
    for key, value in raw.items():
        assert getattr(args, key) == (pytest.approx(value) if isinstance(value, float) else value), key


def test_paper_recipes_in_configs() -> None:
    def load(name: str) -> dict:
        return load_yaml_config(ROOT / "configs" / name, build_train_parser(None, Classification()))

    r = load("resnet_imagenet.yaml")
    assert (r["lr"], r["batch_size"], r["epochs"], r["weight_decay"], r["momentum"], r["img_size"], r["data"]) == \
        (0.512, 512, 120, 1e-4, 0.9, 224, "imagefolder")
    m = load("mobilenet_imagenet.yaml")
    assert (m["lr"], m["epochs"], m["weight_decay"], m["sched"]) == (0.1, 250, 4e-5, "cosine")
    a = load("resnet18_authors.yaml")
    assert (a["epochs"], a["mixup"], a["smoothing"], a["momentum"], a["weight_decay"], a["warmup_epochs"], a["lr"],
            a["lr_base_batch"]) == (250, 0.2, 0.1, 0.875, 3.0517578125e-05, 8, 0.512, 512)
    # The authors' README: -b 64 per GPU on 8 GPUs = 512, lr 0.512; their wd rule and init.
    assert (a["batch_size"], a["wd_skip"], a["model_kwargs"]) == (64, ["bn"], {"init": "authors"})


@pytest.mark.parametrize("options, message", [
    ({"lr": -1}, "lr: invalid value -1 (must be > 0, got -1.0)"),
    ({"clip_grad": 0}, "clip_grad: invalid value 0 (must be > 0, got 0.0)"),
    ({"smoothing": 1.0}, "smoothing: invalid value 1.0 (must be in [0, 1), got 1.0)"),
    ({"seed": -1}, "seed: invalid value -1 (must be >= 0, got -1)"),
    ({"opt": "adamx"}, "--opt adamx: unknown optimizer"),
])
def test_train_refuses_out_of_range_options_as_the_command_line_does(options: dict, message: str) -> None:
    """train() and YAML configs go through the options' own argparse types: the same ranges everywhere."""
    with pytest.raises(TrainOptionsError) as e:
        resolve_config(options, Classification())
    assert message in str(e.value)


def test_the_poly_schedule_decays_with_power_0_9_as_mmsegmentation() -> None:
    """The segmentation `paper` preset: lr 0.01 -> 1e-4 with poly power 0.9 (mmseg's PolyLR): at 90%
    of training 0.0014, not the 0.0080 that timm's default step factor 0.1 read as the power gave."""
    import argparse

    import torch

    from pedconv.tasks.segmentation.task import Segmentation
    from pedconv.training.config import build_train_parser, preset_values
    from pedconv.training.recipe import build_scheduler

    task = Segmentation()
    parser = build_train_parser(argparse.ArgumentParser(), task)
    args = parser.parse_args([])
    vars(args).update(preset_values(parser, task, "paper"))
    assert args.sched == "poly" and args.poly_power == 0.9
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=args.lr)
    steps = 100
    sched = build_scheduler(opt, args, steps)
    at = int(0.9 * args.epochs * steps)
    expected = args.min_lr + (args.lr - args.min_lr) * (1 - at / (args.epochs * steps)) ** 0.9
    assert abs(sched._get_lr(at)[0] - expected) < 1e-6
    assert abs(expected - 0.0014) < 1e-4


def test_a_shipped_config_is_found_by_name_and_a_missing_one_lists_them(tmp_path: Path, monkeypatch) -> None:
    """`--config fashion_mnist` (and `configs/fashion_mnist.yaml` outside a checkout) finds the
    config that ships inside the package; a name that is neither a file nor shipped says which are."""
    from pedconv.configs import CONFIG_DIR

    parser = build_train_parser(None, Classification())
    by_path = load_yaml_config(CONFIG_DIR / "fashion_mnist.yaml", parser)
    assert load_yaml_config("fashion_mnist", parser) == by_path
    monkeypatch.chdir(tmp_path)  # no configs/ folder here
    assert load_yaml_config("configs/fashion_mnist.yaml", parser) == by_path
    shipped = r"^config nope.yaml: no such file, and not a shipped config \(shipped: fashion_mnist, "
    with pytest.raises(ConfigError, match=shipped):
        load_yaml_config("nope.yaml", parser)
    with pytest.raises(ConfigError, match="no such file"):
        load_yaml_config("elsewhere/fashion_mnist.yaml", parser)  # a path elsewhere is not the shipped file


def test_the_checkouts_configs_folder_is_the_packages() -> None:
    assert (ROOT / "configs").resolve() == (ROOT / "src" / "pedconv" / "configs").resolve()
