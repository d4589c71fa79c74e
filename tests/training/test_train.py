"""`pedconv train` / `pedconv eval` on real Fashion-MNIST: learning, resume, DDP, checkpoints, configs, CLI.

Every training run uses one CPU thread per process (``threads=1``): on a small shared
machine this is both the fastest setting and a fixed one, so runs compare bit for bit.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

import pedconv
import pedconv.cli
import pedconv.training.evaluate
from pedconv.training.checkpoint import (
    CheckpointError,
    atomic_save,
    capture_rng_state,
    load_training_checkpoint,
    restore_rng_state,
)
from pedconv.training.config import build_train_parser, load_yaml_config
from pedconv.training.data import BatchPreprocessor, GlobalBatchSampler, ShardBatchSampler
from pedconv.training.train import TrainError, parse_args, resolve_config, train

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


def _have_fashion_mnist() -> bool:
    try:
        pedconv.training.datasets.load_fashion_mnist(train=False)
    except FileNotFoundError:
        return False
    return True


needs_fmnist = pytest.mark.skipif(not _have_fashion_mnist(),
                                  reason="real Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")

# The small, fast setting shared by the run tests below.
TINY = dict(model="pedconv_cifar_resnet20", model_kwargs={"width": 8}, train_subset=4000, val_subset=1000,
            batch_size=32, lr=1.6, warmup_epochs=0.2, epochs=2, threads=1, seed=0, quiet=True)


def _model_tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_training_checkpoint(path)["model"]


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    src = str(ROOT / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "") if env.get("PYTHONPATH") else src
    return env


# ----------------------------------------------------------------------------- a real run
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """250 steps of a width-8 PEDConv ResNet-20 on 4000 real Fashion-MNIST images (~25 s)."""
    if not _have_fashion_mnist():
        pytest.skip("real Fashion-MNIST not installed")
    out = tmp_path_factory.mktemp("tiny") / "run"
    start = time.perf_counter()
    result = train(dict(TINY, output=str(out)))
    result["seconds"] = time.perf_counter() - start
    return result


@needs_fmnist
def test_tiny_run_learns_fashion_mnist(tiny_run: dict) -> None:
    """Well above chance (10%) after 250 steps: measured 73.4% on the 1000-image subset."""
    out = Path(tiny_run["output_dir"])
    final = tiny_run["final"]
    assert final["val_top1"] > 60.0, tiny_run["history"]
    assert final["val_top5"] > 95.0
    assert final["val_loss"] < tiny_run["history"][0]["val_loss"] + 0.2
    assert final["infomax"] > 0  # the PEDConv info-max term is logged
    assert final["lr"] == pytest.approx(0.0, abs=1e-9)  # cosine down to --min-lr 0 at the last step
    assert tiny_run["lr"] == pytest.approx(1.6 * 32 / 256)  # linear scaling from --lr-base-batch 256
    for name in ("args.yaml", "metrics.jsonl", "curves.png", "log.txt", "last.pt", "best.pt"):
        assert (out / name).is_file(), name
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    expected = {"epoch", "train_loss", "infomax", "train_top1", "val_loss", "val_top1", "val_top5", "lr",
                "train_images_per_s", "eval_images_per_s", "epoch_time_s"}
    assert expected <= set(records[0])
    assert records == tiny_run["history"]
    ckpt = load_training_checkpoint(out / "last.pt")
    assert (ckpt["epoch"], ckpt["batches_done"], ckpt["global_step"]) == (2, 0, 250)
    assert ckpt["best_top1"] == max(r["val_top1"] for r in records)
    assert {"python", "numpy", "torch"} <= set(ckpt["rng"][0]["rng"])
    # args.yaml is the resolved configuration and works as a --config file.
    saved = load_yaml_config(out / "args.yaml", build_train_parser())
    assert saved["model_kwargs"] == {"width": 8} and saved["infomax_weight"] == pedconv.INFOMAX_WEIGHT
    assert not any(p.name.endswith(".tmp") for p in out.iterdir())


@needs_fmnist
def test_eval_reproduces_the_run_metrics(tiny_run: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    best = Path(tiny_run["best_checkpoint"])
    js = tmp_path / "eval.json"
    rc = pedconv.cli.main(["eval", "--checkpoint", str(best), "--val-subset", "1000", "--json", str(js),
                           "--threads", "1"])
    assert rc == 0
    result = json.loads(js.read_text())
    # Same 1000 images (same subset seed), same eval-mode network: the run's best top-1, up to
    # batch-size-dependent rounding flipping at most a couple of predictions.
    assert result["top1"] == pytest.approx(tiny_run["best_top1"], abs=0.21)
    assert result["images"] == 1000 and result["data"] == "fashion_mnist"
    assert result["params"] > 50_000 and result["macs"] > 1_000_000 and result["eval_images_per_s"] > 0
    assert result["input_size"] == [1, 28, 28]
    assert "top-1" in capsys.readouterr().out
    # --model + --weights (a bare state dict) gives the same numbers.
    sd = tmp_path / "sd.pt"
    torch.save(load_training_checkpoint(best)["model"], sd)
    rc = pedconv.cli.main(["eval", "--model", "pedconv_cifar_resnet20", "--model-kwargs", "width=8", "--weights",
                           str(sd), "--val-subset", "1000", "--json", str(js), "--threads", "1", "--no-profile"])
    assert rc == 0 and json.loads(js.read_text())["top1"] == pytest.approx(result["top1"])


@needs_fmnist
def test_eval_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert pedconv.training.evaluate.main(["--checkpoint", str(tmp_path / "missing.pt")]) == 1
    assert "does not exist" in capsys.readouterr().err
    sd = tmp_path / "sd.pt"
    torch.save(pedconv.create_model("cifar_resnet20", num_classes=10, in_chans=1, width=4).state_dict(), sd)
    assert pedconv.training.evaluate.main(["--model", "cifar_resnet20", "--weights", str(sd), "--val-subset", "8"]) == 1
    assert "do not fit the model" in capsys.readouterr().err  # width 16 model, width 4 weights
    assert pedconv.training.evaluate.main(["--model", "cifar_resnet20", "--weights", str(tmp_path / "nope.pt")]) == 1
    assert "no such file" in capsys.readouterr().err


# ----------------------------------------------------------------------------- resume
RESUME_ARGS = ["--model", "pedconv_cifar_resnet20", "--model-kwargs", "width=4", "--epochs", "2",
               "--train-subset", "640", "--val-subset", "200", "--batch-size", "32", "--lr", "0.8",
               "--mixup", "0.2", "--smoothing", "0.1", "--deterministic", "--threads", "1", "--seed", "3",
               "--checkpoint-every-steps", "3", "--log-every", "5"]


@needs_fmnist
def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path: Path) -> None:
    """SIGKILL a real ``pedconv train`` process once a mid-run checkpoint exists, resume, compare.

    The run uses everything that draws random numbers: PEDConv's Gaussian sampling (torch),
    mixup (NumPy), the data order and the crop/flip augmentation. Resumed and uninterrupted
    runs must end with bit-identical weights and identical validation metrics.
    """
    out = tmp_path / "killed"
    log = (tmp_path / "killed.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "pedconv", "train", *RESUME_ARGS, "--output", str(out)],
                            stdout=log, stderr=subprocess.STDOUT, env=_env(), cwd=tmp_path)
    deadline = time.monotonic() + 180
    try:
        while not (out / "last.pt").exists():
            assert proc.poll() is None, (tmp_path / "killed.log").read_text()
            assert time.monotonic() < deadline, "no checkpoint after 180 s"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
        log.close()
    assert proc.returncode == -signal.SIGKILL
    interrupted = load_training_checkpoint(out / "last.pt")
    assert 0 < interrupted["global_step"] < 40  # 2 epochs x 20 steps: killed mid-run
    assert "step 5/20" in (tmp_path / "killed.log").read_text() or interrupted["global_step"] < 5  # plain log lines

    args = RESUME_ARGS + ["--quiet"]
    resumed = train(parse_args(args + ["--output", str(out), "--resume", "auto"]))
    reference = train(parse_args(args + ["--output", str(tmp_path / "reference")]))

    a, b = _model_tensors(out / "last.pt"), _model_tensors(tmp_path / "reference" / "last.pt")
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"resumed run differs in {different[:5]} (killed at step {interrupted['global_step']})"
    for r, u in zip(resumed["history"], reference["history"]):
        assert r["val_top1"] == u["val_top1"] and r["val_loss"] == u["val_loss"]
        assert r["train_loss"] == pytest.approx(u["train_loss"], rel=1e-9)  # float64 sums in another order
        assert r["train_top1"] == u["train_top1"]
    assert [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()] == resumed["history"]


# ----------------------------------------------------------------------------- DDP
@needs_fmnist
def test_ddp_two_processes_equal_gradient_accumulation(tmp_path: Path) -> None:
    """2 CPU processes (torchrun, gloo) vs 1 process with 2 accumulation micro-batches.

    With the same global batch, a DDP step averages the gradients of two micro-batches of 16
    (one per rank); one process with ``--grad-accum-steps 2`` and the same per-pass batch
    averages the gradients of the *same* two micro-batches (the sampler gives rank r the r-th
    slice of each global batch, and the augmentation is seeded by position), and BatchNorm
    normalises each micro-batch by its own statistics in both. So the trained parameters agree
    up to floating-point summation order (measured: bit-identical, since (g0 + g1) / 2 and
    g0 / 2 + g1 / 2 round the same; the tolerance leaves room for other reductions).
    Comparing with one process at batch 32 instead would not be meaningful: BatchNorm would
    normalise over 32 images, a different function.

    The BatchNorm running statistics are not compared: DDP averages the two ranks' (``--dist-bn
    reduce``) where accumulation updates them twice per step; after 16 steps they are far from
    converged, so the validation metrics are not compared either. The PEDConv layers are
    deterministic (``variational=false``) because the two layouts draw their Gaussian noise
    from different per-process streams.
    """
    common = ["--model", "pedconv_cifar_resnet20", "--model-kwargs", "width=4", "variational=false",
              "--epochs", "1", "--train-subset", "512", "--val-subset", "256", "--lr", "0.8", "--batch-size", "16",
              "--threads", "1", "--seed", "0", "--log-every", "8"]
    ddp_out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "pedconv",
           "train", *common, "--output", str(ddp_out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    single = train(parse_args(common + ["--grad-accum-steps", "2", "--output", str(tmp_path / "single"), "--quiet"]))

    ddp_ckpt = load_training_checkpoint(ddp_out / "last.pt")
    assert ddp_ckpt["world_size"] == 2 and ddp_ckpt["global_batch"] == 32 and len(ddp_ckpt["rng"]) == 2
    assert single["global_batch"] == 32 and ddp_ckpt["global_step"] == 16
    params = {n for n, _ in pedconv.create_model("pedconv_cifar_resnet20", num_classes=10, in_chans=1, width=4,
                                                 variational=False).named_parameters()}
    a, b = ddp_ckpt["model"], _model_tensors(tmp_path / "single" / "last.pt")
    worst = max((a[k] - b[k]).abs().max().item() for k in params)
    assert worst < 1e-5, worst
    ddp_hist = [json.loads(x) for x in (ddp_out / "metrics.jsonl").read_text().splitlines()]
    assert len(ddp_hist) == 1  # written once, by rank 0
    assert ddp_hist[0]["train_loss"] == pytest.approx(single["final"]["train_loss"], rel=1e-4)
    assert ddp_hist[0]["train_top1"] == pytest.approx(single["final"]["train_top1"], abs=0.5)
    assert ddp_hist[0]["val_images"] == 256  # both ranks' shards, all-reduced, no padding duplicates
    assert ddp_hist[0]["train_images"] == 512
    assert "2 process(es)" in (ddp_out / "log.txt").read_text()


# ----------------------------------------------------------------------------- checkpoints
class _Unpicklable:
    def __reduce__(self) -> tuple:
        raise RuntimeError("disk full (simulated)")


def test_atomic_save_never_leaves_a_partial_file(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    atomic_save({"step": 1, "w": torch.ones(3)}, path)
    with pytest.raises(RuntimeError, match="simulated"):
        atomic_save({"step": 2, "w": torch.zeros(3), "bad": _Unpicklable()}, path)
    assert torch.load(path)["step"] == 1  # the old checkpoint is intact
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left


def test_rng_state_round_trip_is_weights_only_loadable(tmp_path: Path) -> None:
    import random

    import numpy as np

    state = capture_rng_state()
    first = (random.random(), np.random.rand(), torch.rand(2))
    atomic_save({"rng": state}, tmp_path / "s.pt")
    restore_rng_state(torch.load(tmp_path / "s.pt", weights_only=True)["rng"])
    again = (random.random(), np.random.rand(), torch.rand(2))
    assert first[:2] == again[:2] and torch.equal(first[2], again[2])


@needs_fmnist
def test_resume_rejects_corrupt_foreign_and_mismatched_checkpoints(tiny_run: dict, tmp_path: Path) -> None:
    src = Path(tiny_run["last_checkpoint"])
    quick = dict(TINY, epochs=3, train_subset=4000)
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"last\.pt is corrupt or truncated"):
        train(quick, output=str(run), resume="auto")
    torch.save({"state_dict": {}}, run / "last.pt")
    with pytest.raises(CheckpointError, match="not a pedconv training checkpoint"):
        train(quick, output=str(run), resume="auto")
    shutil.copy(src, run / "last.pt")
    with pytest.raises(CheckpointError, match=r"model_kwargs: checkpoint \{'width': 8\}, run \{'width': 16\}"):
        train(quick, output=str(run), resume="auto", model_kwargs={"width": 16})
    with pytest.raises(CheckpointError, match="global batch of 32"):
        train(quick, output=str(run), resume="auto", batch_size=64)


@needs_fmnist
def test_refuses_to_overwrite_a_run_folder(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(TrainError, match="not empty.*--resume auto.*--overwrite"):
        train(TINY, output=str(tmp_path))
    assert (tmp_path / "notes.txt").read_text() == "mine"


@needs_fmnist
def test_dyconv_temperature_is_annealed(tmp_path: Path) -> None:
    if "dyconv_cifar_resnet20" not in pedconv.list_models():
        pytest.skip("dyconv_cifar_resnet20 not registered")
    from pedconv.baselines import dyconv_temperature

    result = train(model="dyconv_cifar_resnet20", model_kwargs={"width": 4}, epochs=1, train_subset=128,
                   val_subset=64, batch_size=32, dyconv_anneal_epochs=2.0, output=str(tmp_path / "r"), quiet=True,
                   threads=1)
    ckpt = load_training_checkpoint(result["last_checkpoint"])
    # set before each step to the fractional epoch: the last of 4 steps is at epoch 0.75
    assert ckpt["dyconv_temperature"] == pytest.approx(dyconv_temperature(0.75, anneal_epochs=2.0))


# ----------------------------------------------------------------------------- data pieces
def test_global_batch_sampler_layouts_agree_and_resume() -> None:
    ddp = [list(GlobalBatchSampler(100, 8, world_size=2, rank=r, seed=5)) for r in (0, 1)]
    accum = list(GlobalBatchSampler(100, 8, accum=2, seed=5))
    assert accum[0::2] == ddp[0] and accum[1::2] == ddp[1]  # rank r = r-th micro-batch of each step
    s = GlobalBatchSampler(100, 8, seed=5)
    s.set_epoch(3)
    full = list(s)
    s.set_epoch(3, start_step=4)
    assert list(s) == full[4:] and len(s) == len(full) - 4
    s.set_epoch(4)
    assert list(s) != full
    shards = [i for r in range(3) for b in ShardBatchSampler(11, 4, 3, r) for i in b]
    assert shards == list(range(11))


def test_crop_flip_is_a_padded_window_per_sample() -> None:
    torch.manual_seed(0)
    x = torch.randint(0, 256, (6, 1, 8, 8), dtype=torch.uint8)
    pre = BatchPreprocessor((0.5,), (0.25,), augment=True, pad=2)
    y = pre(x, seed=11)
    assert torch.equal(y, pre(x, seed=11)) and not torch.equal(y, pre(x, seed=12))
    norm = (x.float() / 255 - 0.5) / 0.25
    padded = torch.nn.functional.pad(norm, (2, 2, 2, 2), value=(0 - 0.5) / 0.25)
    for b in range(6):
        windows = [padded[b, :, i:i + 8, j:j + 8] for i in range(5) for j in range(5)]
        windows += [w.flip(-1) for w in windows]
        assert any(torch.allclose(y[b], w) for w in windows)


# ----------------------------------------------------------------------------- configuration
def test_config_precedence_and_merging(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("epochs: 7\nlr: 1e-1\nweight_decay: 1e-4\nmodel_kwargs: {width: 8, rank: 2}\nnesterov: false\n")
    a = parse_args(["--config", str(cfg), "--lr", "0.3", "--model-kwargs", "rank=4", "components=[gamma]"])
    assert (a.epochs, a.lr, a.weight_decay, a.nesterov) == (7, 0.3, 1e-4, False)  # flags > YAML > defaults
    assert a.model_kwargs == {"width": 8, "rank": 4, "components": ["gamma"]}
    b = resolve_config({"config": str(cfg), "epochs": 2}, lr=0.05)
    assert (b.epochs, b.lr, b.weight_decay) == (2, 0.05, 1e-4)


@pytest.mark.parametrize("text, message", [
    ("learning_rate: 0.1\n", "unknown key 'learning_rate' (did you mean 'lr'?)"),
    ("epochs: many\n", "epochs: invalid value 'many'"),
    ("sched: linear\n", "'linear' is not one of cosine"),
    ("amp: 1\n", "amp: expected true or false"),
    ("- 1\n", "must be a mapping"),
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
    args = parse_args(["--config", str(path)])
    assert args.model in pedconv.list_models()
    raw = yaml.safe_load(path.read_text())
    for key, value in raw.items():
        assert getattr(args, key) == (pytest.approx(value) if isinstance(value, float) else value), key


def test_paper_recipes_in_configs() -> None:
    def load(name: str) -> dict:
        return load_yaml_config(ROOT / "configs" / name, build_train_parser())

    r = load("resnet_imagenet.yaml")
    assert (r["lr"], r["batch_size"], r["epochs"], r["weight_decay"], r["momentum"], r["img_size"], r["data"]) == \
        (0.512, 512, 120, 1e-4, 0.9, 224, "imagefolder")
    m = load("mobilenet_imagenet.yaml")
    assert (m["lr"], m["epochs"], m["weight_decay"], m["sched"]) == (0.1, 250, 4e-5, "cosine")
    a = load("resnet18_authors.yaml")
    assert (a["epochs"], a["mixup"], a["smoothing"], a["momentum"], a["weight_decay"], a["warmup_epochs"], a["lr"],
            a["lr_base_batch"]) == (250, 0.2, 0.1, 0.875, 3.0517578125e-05, 8, 0.256, 256)


# ----------------------------------------------------------------------------- CLI errors
@pytest.mark.parametrize("argv, message", [
    (["--model", "pedconv_resnet_18"], "did you mean 'pedconv_resnet18'"),
    (["--model-kwargs", "rank"], "expects key=value, got 'rank'"),
    (["--model-kwargs", "rank=[1"], "is not valid YAML"),
    (["--mixup", "0.2", "--batch-size", "31"], "even --batch-size"),
    (["--resume", "auto"], "--resume auto needs --output"),
    (["--epochs", "0"], "must be >= 1"),
])
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture, argv: list, message: str) -> None:
    with pytest.raises(SystemExit) as e:
        pedconv.cli.main(["train", *argv])
    assert e.value.code == 2
    assert message in capsys.readouterr().err


@needs_fmnist
@pytest.mark.parametrize("argv, messages", [
    (["--data-dir", "/nonexistent/fmnist"], ["apt-get install dataset-fashion-mnist", "--download", "--data-dir"]),
    (["--data", "cifar10", "--data-dir", "/nonexistent/cifar"], ["cifar-10-batches-py", "--download"]),
    (["--data", "imagefolder", "--data-dir", "/nonexistent/imagenet"], ["train", "ImageFolder"]),
    (["--model-kwargs", "bogus=1"], ["rejected its options", "bogus"]),
])
def test_runtime_errors_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture, argv: list, messages: list) -> None:
    rc = pedconv.cli.main(["train", "--model", "cifar_resnet20", "--threads", "1", "--quiet",
                           "--output", str(tmp_path / "o"), *argv])
    err = capsys.readouterr().err
    assert rc == 1, err
    for m in messages:
        assert m in err


# ----------------------------------------------------------------------------- resume variants, datasets, progress
@needs_fmnist
def test_resume_takes_options_from_the_run_and_extends_it(tmp_path: Path) -> None:
    """``--resume auto --output DIR`` alone continues with the run's args.yaml; flags override it."""
    out, other = tmp_path / "run", tmp_path / "continued"
    train(model="cifar_resnet20", model_kwargs={"width": 4}, epochs=1, train_subset=128, val_subset=64, batch_size=32,
          lr=0.4, output=str(out), quiet=True, threads=1)
    assert pedconv.cli.main(["train", "--output", str(out), "--resume", "auto", "--epochs", "2",
                             "--weight-decay", "1e-3", "--quiet"]) == 0
    ckpt = load_training_checkpoint(out / "last.pt")
    assert (ckpt["epoch"], ckpt["global_step"], len(ckpt["history"])) == (2, 8, 2)
    assert ckpt["config"]["model_kwargs"] == {"width": 4} and ckpt["config"]["lr"] == 0.4
    log = (out / "log.txt").read_text()
    assert "epochs 1 -> 2" in log and "weight_decay 0.0005 -> 0.001" in log  # changed options are reported
    assert max(g["weight_decay"] for g in ckpt["optimizer"]["param_groups"]) == 1e-3  # ... and applied
    # An explicit checkpoint path, continued into another folder.
    assert pedconv.cli.main(["train", "--resume", str(out / "last.pt"), "--output", str(other), "--epochs", "3",
                             "--quiet"]) == 0
    assert [json.loads(x)["epoch"] for x in (other / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


def _write_image_folder(root: Path, per_class: dict[str, int]) -> None:
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for split, n in per_class.items():
        for cls in ("cat", "dog"):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                pixels = torch.randint(0, 256, (40, 44, 3), generator=g, dtype=torch.uint8).numpy()
                Image.fromarray(pixels).save(root / split / cls / f"{i}.png")


def test_image_folder_training_is_independent_of_worker_count(tmp_path: Path) -> None:
    """RandomResizedCrop/flip are seeded per image and epoch: 0 or 2 loader workers, same weights."""
    _write_image_folder(tmp_path / "data", {"train": 12, "val": 4})
    common = dict(model="cifar_resnet20", model_kwargs={"width": 4}, data="imagefolder",
                  data_dir=str(tmp_path / "data"), img_size=32, epochs=1, batch_size=8, quiet=True, threads=1)
    a = train(common, workers=0, output=str(tmp_path / "w0"))
    train(common, workers=2, output=str(tmp_path / "w2"))
    assert a["model_args"]["num_classes"] == 2 and a["model_args"]["input_chans"] == 3
    assert a["final"]["val_images"] == 8 and a["final"]["train_images"] == 24
    wa, wb = _model_tensors(tmp_path / "w0" / "last.pt"), _model_tensors(tmp_path / "w2" / "last.pt")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    c = train(common, workers=0, seed=1, output=str(tmp_path / "s1"))
    assert c["final"]["train_loss"] != a["final"]["train_loss"]  # the seed does change the augmentation/order


def test_cifar_pickle_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CIFAR-10's python release (rows of 3072 = R, G, B planes) read as (N, 3, 32, 32), and trained on.

    The files here are synthetic (the real archive is not available offline), so
    torchvision's md5 check is bypassed; everything after it is the real code path.
    """
    import pickle

    import torchvision

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    g = torch.Generator().manual_seed(0)
    rows = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        rows[name] = torch.randint(0, 256, (8, 3072), generator=g, dtype=torch.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": rows[name].numpy(), "labels": list(range(8))}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args, **kwargs: True)
    x, y = pedconv.training.datasets.load_cifar(tmp_path, 10, train=False)
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.uint8 and y.tolist() == list(range(8))
    assert torch.equal(x[3], rows["test_batch"][3].view(3, 32, 32))
    assert len(pedconv.training.datasets.load_cifar(folder, 10, train=True)[0]) == 40  # the folder itself works too
    r = train(model="cifar_resnet20", model_kwargs={"width": 4}, data="cifar10", data_dir=str(tmp_path), epochs=1,
              batch_size=8, output=str(tmp_path / "run"), quiet=True, threads=1)
    assert r["model_args"]["input_chans"] == 3 and r["final"]["val_images"] == 8


def test_progress_plain_lines_and_bar() -> None:
    import io

    from pedconv.training.report import Reporter

    plain = io.StringIO()
    r = Reporter(stream=plain, log_every=5, use_tqdm=False)
    r.start_epoch(0, 2, 12, 0)
    for step in range(12):
        r.step(step, lambda: {"loss": 0.5})
    r.end_epoch({"epoch": 1, "train_loss": 0.5, "val_top1": 80.0})
    lines = plain.getvalue().splitlines()
    assert lines == ["epoch 1/2 step 5/12  loss 0.5", "epoch 1/2 step 10/12  loss 0.5",
                     "epoch 1/2 step 12/12  loss 0.5", "epoch 1/2  train_loss 0.5  val_top1 80"]
    bar = io.StringIO()
    r = Reporter(stream=bar, use_tqdm=True)
    r.start_epoch(0, 1, 10, 0)
    for step in range(10):
        r.step(step, lambda: {"loss": 0.5})
    r.end_epoch({"epoch": 1, "train_loss": 0.5})
    assert "epoch 1/1:   0%|" in bar.getvalue() and bar.getvalue().endswith("epoch 1/1  train_loss 0.5\n")
    quiet = io.StringIO()
    r = Reporter(stream=quiet, quiet=True)
    r.info("hidden")
    r.warn("shown")
    assert quiet.getvalue() == "warning: shown\n"


def test_ddp_find_unused_parameters_only_when_needed() -> None:
    """The DDP probe: PEDConv's info-max decoders get gradients only through the info-max term."""
    from pedconv.training.distributed import needs_find_unused_parameters as _needs_find_unused

    cpu = torch.device("cpu")
    ped = pedconv.create_model("pedconv_cifar_resnet20", num_classes=10, in_chans=1, width=4)
    before = {k: v.clone() for k, v in ped.state_dict().items()}
    rng = torch.get_rng_state()
    assert not _needs_find_unused(ped, (2, 1, 28, 28), cpu, pedconv.INFOMAX_WEIGHT)
    assert _needs_find_unused(ped, (2, 1, 28, 28), cpu, 0.0)  # --infomax-weight 0: decoders unused
    # the probe runs on a copy, with the RNG forked: the model and the random stream are untouched
    assert torch.equal(rng, torch.get_rng_state())
    assert all(torch.equal(before[k], v) for k, v in ped.state_dict().items())
    assert all(p.grad is None for p in ped.parameters())
    assert not _needs_find_unused(pedconv.create_model("cifar_resnet20", num_classes=10, in_chans=1, width=4),
                                  (2, 1, 28, 28), cpu, 0.0)
