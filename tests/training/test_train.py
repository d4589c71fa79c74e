"""`pedconv train` on real Fashion-MNIST: learning, the run folder, resume (also after SIGKILL), DDP."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

import pedconv
import pedconv.cli
from pedconv.errors import DivergedError, TrainError
from pedconv.tasks.classification import Classification, train
from pedconv.tasks.classification.command import parse_args
from pedconv.training.checkpoint import load_training_checkpoint
from pedconv.training.config import build_train_parser, load_yaml_config
from pedconv.training.run_folder import ARTIFACTS
from pedconv.utils.atomic import atomic_write_text, temp_prefix


def _model_tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_training_checkpoint(path)["model"]


# ----------------------------------------------------------------------------- a real run
@pytest.mark.usefixtures("fashion_mnist")
def test_tiny_run_learns_fashion_mnist(tiny_run: dict) -> None:
    """Well above chance (10%) after 150 steps: measured 69.0% on the 1000-image subset."""
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
    assert (ckpt["epoch"], ckpt["batches_done"], ckpt["global_step"]) == (2, 0, 150)  # 2 x 2400 / 32
    assert (ckpt["best_metric"], ckpt["best_value"]) == ("val_top1", max(r["val_top1"] for r in records))
    assert json.loads((out / "result.json").read_text())["val_top1"] == records[-1]["val_top1"]
    assert {"python", "numpy", "torch"} <= set(ckpt["rng"][0]["rng"])
    # args.yaml is the resolved configuration and works as a --config file.
    saved = load_yaml_config(out / "args.yaml", build_train_parser(None, Classification()))
    assert saved["model_kwargs"] == {"width": 8} and saved["infomax_weight"] == pedconv.INFOMAX_WEIGHT
    assert not any(p.name.endswith(".tmp") for p in out.iterdir())


# ----------------------------------------------------------------------------- resume
RESUME_ARGS = ["--model", "pedconv_cifar_resnet20", "--model-kwargs", "width=4", "--epochs", "2",
               "--train-subset", "640", "--val-subset", "200", "--batch-size", "32", "--lr", "0.8",
               "--mixup", "0.2", "--smoothing", "0.1", "--deterministic", "--threads", "1", "--seed", "3",
               "--checkpoint-every-steps", "3", "--log-every", "5"]


@pytest.mark.usefixtures("fashion_mnist")
def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    """SIGKILL a real ``pedconv train`` process once a mid-run checkpoint exists, resume, compare.

    The run uses everything that draws random numbers: PEDConv's Gaussian sampling (torch),
    mixup (NumPy), the data order and the crop/flip augmentation. Resumed and uninterrupted
    runs must end with bit-identical weights and identical validation metrics.
    """
    out = tmp_path / "killed"
    log = (tmp_path / "killed.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "pedconv", "train", *RESUME_ARGS, "--output", str(out)],
                            stdout=log, stderr=subprocess.STDOUT, env=subprocess_env, cwd=tmp_path)
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

    args = [*RESUME_ARGS, "--quiet"]
    resumed = train(parse_args([*args, "--output", str(out), "--resume", "auto"]))
    reference = train(parse_args([*args, "--output", str(tmp_path / "reference")]))

    a, b = _model_tensors(out / "last.pt"), _model_tensors(tmp_path / "reference" / "last.pt")
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"resumed run differs in {different[:5]} (killed at step {interrupted['global_step']})"
    for r, u in zip(resumed["history"], reference["history"]):
        assert r["val_top1"] == u["val_top1"] and r["val_loss"] == u["val_loss"]
        assert r["train_loss"] == pytest.approx(u["train_loss"], rel=1e-9)  # float64 sums in another order
        assert r["train_top1"] == u["train_top1"]
    assert [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()] == resumed["history"]


@pytest.mark.usefixtures("fashion_mnist")
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


# ----------------------------------------------------------------------------- DDP
@pytest.mark.usefixtures("fashion_mnist")
def test_ddp_two_processes_equal_gradient_accumulation(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
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
    proc = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    single = train(parse_args([*common, "--grad-accum-steps", "2", "--output", str(tmp_path / "single"), "--quiet"]))

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


# ----------------------------------------------------------------------------- the run folder
@pytest.mark.usefixtures("fashion_mnist")
def test_refuses_to_overwrite_a_run_folder(tmp_path: Path, tiny: dict[str, Any]) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(TrainError, match=r"not a pedconv run's \(notes\.txt\).*another --output"):
        train(tiny, output=str(tmp_path))
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.usefixtures("fashion_mnist")
def test_a_run_removes_the_temp_files_of_interrupted_writes(tmp_path: Path) -> None:
    """A killed write leaves ``.<name>.<random>.tmp`` (or, from older versions, ``.<name>.tmp``) beside the
    run's files; a new run or its resumption removes those of every artifact, ``args.yaml`` and
    ``curves.png`` included, and leaves other files alone."""
    out = tmp_path / "run"
    out.mkdir()
    leftovers = [out / f"{temp_prefix(name)}k2j4x.tmp" for name in ARTIFACTS] + [out / ".args.yaml.tmp"]
    for p in leftovers:
        p.write_bytes(b"partial")
    mine = atomic_write_text(out / ".notes.tmp", "not a temp file of the run")
    options: dict[str, Any] = dict(model="cifar_resnet20", model_kwargs={"width": 4}, epochs=1, train_subset=64,
                                   val_subset=32, batch_size=32, quiet=True, threads=1, output=str(out))
    train(options, resume="auto")
    assert [p.name for p in leftovers if p.exists()] == []
    assert mine.is_file()
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp") and p != mine]
    (out / f"{temp_prefix('curves.png')}x.tmp").write_bytes(b"partial")
    train(options, resume="auto", epochs=2)  # resuming cleans up as well
    assert sorted(p.name for p in out.iterdir()) == sorted([*ARTIFACTS, mine.name, ".lock"])


@pytest.mark.usefixtures("fashion_mnist")
def test_dyconv_temperature_is_annealed(tmp_path: Path) -> None:
    if "dyconv_cifar_resnet20" not in pedconv.list_models():
        pytest.skip("dyconv_cifar_resnet20 not registered")
    from pedconv.baselines import dyconv_temperature

    result = train(model="dyconv_cifar_resnet20", model_kwargs={"width": 4}, epochs=1, train_subset=128,
                   val_subset=64, batch_size=32, attention_anneal_epochs=2.0, output=str(tmp_path / "r"), quiet=True,
                   threads=1)
    ckpt = load_training_checkpoint(result["last_checkpoint"])
    # set before each step to the fractional epoch: the last of 4 steps is at epoch 0.75
    assert ckpt["attention_temperature"] == pytest.approx(dyconv_temperature(0.75, anneal_epochs=2.0))


# ----------------------------------------------------------------------------- ImageFolder
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


# ----------------------------------------------------------------------------- divergence
@pytest.mark.usefixtures("fashion_mnist")
@pytest.mark.parametrize("every", [None, 2], ids=["epoch-checkpoints", "step-checkpoints"])
def test_a_diverging_run_stops_before_saving_and_keeps_the_last_good_checkpoint(tmp_path: Path, every) -> None:
    out = tmp_path / "run"
    small = dict(model="cifar_resnet20", model_kwargs={"width": 4}, train_subset=128, val_subset=64, batch_size=32,
                 threads=1, quiet=True, output=str(out), checkpoint_every_steps=every)
    train(dict(small, epochs=1))
    good = {name: (out / name).read_bytes() for name in ("last.pt", "best.pt", "metrics.jsonl")}
    with pytest.raises(DivergedError, match=r"nan/inf at global step [4-7]\b.*last good state \(epoch 1"):
        train(dict(small, epochs=2, resume="auto", lr=1e30))
    assert {name: (out / name).read_bytes() for name in good} == good  # nothing diverged was saved
    assert "nan" not in (out / "metrics.jsonl").read_text()


@pytest.mark.usefixtures("fashion_mnist")
def test_skip_nonfinite_rides_out_a_spike_and_stops_past_its_allowance(tmp_path: Path, monkeypatch) -> None:
    from pedconv.training import loop

    calls = {"n": 0}
    real = loop.Trainer._micro_batch

    def spiky(self, batch, epoch, step, micro, *sums):  # step 1's loss is nan, the others are real
        images, labels = batch
        calls["n"] += 1
        if step == 1:
            images = images.float().fill_(float("nan"))
        return real(self, (images, labels), epoch, step, micro, *sums)

    monkeypatch.setattr(loop.Trainer, "_micro_batch", spiky)
    small = dict(model="cifar_resnet20", model_kwargs={"width": 4}, epochs=1, train_subset=128, val_subset=64,
                 batch_size=32, threads=1, quiet=True)
    result = train(dict(small, output=str(tmp_path / "a"), skip_nonfinite=1))
    assert result["final"]["epoch"] == 1 and result["final"]["val_loss"] == result["final"]["val_loss"]  # finite
    with pytest.raises(DivergedError, match="global step 1"):
        train(dict(small, output=str(tmp_path / "b")))


# ----------------------------------------------------------------------------- torch.compile
@pytest.mark.usefixtures("fashion_mnist")
def test_compiled_training_matches_eager_training(tmp_path: Path) -> None:
    """``--compile``: the training step runs under torch.compile (dynamo's capture here; inductor
    is in -m slow), with the same losses as eager in a deterministic run, and the checkpoint keeps
    the plain module's keys (no compile wrapper prefix)."""
    opts = dict(model="pedconv_cifar_resnet20", model_kwargs={"width": 4}, epochs=1, train_subset=64, val_subset=32,
                batch_size=32, quiet=True, threads=1, deterministic=True)
    from torch._dynamo.utils import counters

    eager = train(**opts, output=str(tmp_path / "eager"))
    torch._dynamo.reset()
    counters.clear()
    compiled = train(**opts, output=str(tmp_path / "compiled"), compile="default", compile_backend="eager")
    assert counters["stats"]["unique_graphs"] == 1  # the whole step, one graph
    assert not counters["graph_break"]
    assert compiled["final"]["train_loss"] == pytest.approx(eager["final"]["train_loss"], rel=1e-5)
    keys = load_training_checkpoint(compiled["last_checkpoint"])["model"].keys()
    assert not any(k.startswith("_orig_mod") for k in keys)


@pytest.mark.slow
@pytest.mark.usefixtures("fashion_mnist")
@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_inductor_compiled_training_runs(tmp_path: Path, mode: str) -> None:
    result = train(model="pedconv_cifar_resnet20", model_kwargs={"width": 4}, epochs=1, train_subset=64,
                   val_subset=32, batch_size=32, quiet=True, threads=2, compile=mode, output=str(tmp_path / "r"))
    assert math.isfinite(result["final"]["train_loss"])


@pytest.mark.parametrize(("flags", "message"), [
    (["--compile-backend", "aot_eager"], "--compile-backend aot_eager needs --compile MODE"),
    (["--compile", "default", "--compile-backend", "nope"], "--compile-backend nope: not a torch.compile backend"),
    (["--compile", "reduce-overhead", "--compile-backend", "eager"], "is a mode of the inductor backend"),
])
def test_compile_options_are_checked(tmp_path: Path, capsys, flags: list[str], message: str) -> None:
    code = pedconv.cli.main(["train", "--output", str(tmp_path / "r"), *flags])
    assert code == 2 and message in capsys.readouterr().err


@pytest.mark.usefixtures("fashion_mnist")
def test_a_run_written_under_the_former_option_names_still_resumes(tmp_path: Path, capsys) -> None:
    """--dyconv-anneal-epochs became --attention-anneal-epochs, the checkpoint key dyconv_temperature
    attention_temperature: a run folder written before still resumes, with no option reported changed."""
    out = tmp_path / "old"
    options = dict(model="dyconv_cifar_resnet20", model_kwargs={"width": 4}, train_subset=64, val_subset=32,
                   batch_size=32, attention_anneal_epochs=3.0, quiet=True, threads=1)
    train(epochs=1, output=str(out), **options)
    args_yaml = (out / "args.yaml").read_text()
    atomic_write_text(out / "args.yaml", args_yaml.replace("attention_anneal_epochs", "dyconv_anneal_epochs"))
    ckpt = torch.load(out / "last.pt", weights_only=True)
    ckpt["dyconv_temperature"] = ckpt.pop("attention_temperature")
    ckpt["config"]["dyconv_anneal_epochs"] = ckpt["config"].pop("attention_anneal_epochs")
    torch.save(ckpt, out / "last.pt")
    capsys.readouterr()
    args = parse_args(["--output", str(out), "--resume", "auto", "--epochs", "2"])
    assert args.attention_anneal_epochs == 3.0  # read from the old args.yaml key
    resumed = train(args)
    assert [r["epoch"] for r in resumed["history"]] == [1, 2]
    warning = capsys.readouterr().err
    assert "epochs 1 -> 2" in warning and "anneal" not in warning  # only the option that did change
    assert parse_args(["--dyconv-anneal-epochs", "4"]).attention_anneal_epochs == 4.0  # the former flag
