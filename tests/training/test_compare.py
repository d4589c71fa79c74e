"""pedconv compare: a tiny real run, resumption by skipping finished runs, and its errors."""

import io
import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest

import pedconv
import pedconv.training.train
from pedconv import compare
from pedconv.cli import parse_args
from pedconv.tools.flops import format_count, profile_model
from pedconv.utils.lock import FolderLock

TINY = ["--models", "cifar_resnet20", "pedconv_cifar_resnet20", "--seeds", "0", "--width", "4", "--epochs", "1",
        "--train-subset", "256", "--val-subset", "200", "--batch-size", "64", "--", "--threads", "1"]


def test_compare_runs_tabulates_and_skips_finished_runs(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert compare.main(["--preset", "quick", "--output", str(out), *TINY]) == 0
    shown = capsys.readouterr().out
    table = (out / "compare.md").read_text()
    assert "| cifar_resnet20 (static baseline) |" in table and "| pedconv_cifar_resnet20 |" in table
    data = json.loads((out / "compare.json").read_text())
    rows = {r["model"]: r for r in data["rows"]}
    assert rows["pedconv_cifar_resnet20"]["params"] > rows["cifar_resnet20"]["params"]
    # One seed: the mean alone (its spread is unknown, not 0.00).
    assert "±" not in table.split("\n", 2)[2] and rows["cifar_resnet20"]["metric_std"] is None
    assert f"| {rows['cifar_resnet20']['metric_mean']:.2f} | — | 1 |" in table
    # The dynamic model's top-1 minus the static baseline's, paired by seed.
    ped, static = rows["pedconv_cifar_resnet20"], rows["cifar_resnet20"]
    assert ped["delta_vs_reference"] == [pytest.approx(ped["metric_mean"] - static["metric_mean"])]
    assert (ped["role"], static["role"]) == ("", "static baseline") and ped["train_time_s"] > 0
    assert ped["devices"] == static["devices"] == ["cpu"]  # from each run's result.json (its epoch records)
    # Progress while it runs (not a terminal: a line per epoch, with the runs done and the time left).
    assert "compare: run 1/2 cifar_resnet20 seed 0: epoch 1/1, val top-1 " in shown
    assert "compare: run 2/2 pedconv_cifar_resnet20 seed 0: epoch 1/1" in shown and "; 1/2 runs done, " in shown
    # The table's parameter count is the one the run announced (decoders apart).
    log = (out / "runs" / "pedconv_cifar_resnet20" / "seed0" / "log.txt").read_text()
    assert f"pedconv_cifar_resnet20: {format_count(rows['pedconv_cifar_resnet20']['params'])} parameters (+" in log
    assert rows["pedconv_cifar_resnet20"]["macs"] > rows["cifar_resnet20"]["macs"]
    assert all(0.0 <= r["metric_mean"] <= 100.0 and r["train_images_per_s"] > 0 for r in data["rows"])
    assert data["meta"]["recipe"]["epochs"] == 1 and data["meta"]["extra_train_options"] == ["--threads", "1"]
    assert (out / "compare.png").is_file() and (out / "curves.png").is_file()
    assert data["meta"]["runs_time_s"] > 0
    for model in ("cifar_resnet20", "pedconv_cifar_resnet20"):
        run = out / "runs" / model / "seed0"
        assert (run / "result.json").is_file() and (run / "metrics.jsonl").is_file() and (run / "last.pt").is_file()
    # Same command again: nothing is retrained, the table is rebuilt from the saved results.
    assert compare.main(["--preset", "quick", "--output", str(out), *TINY]) == 0
    assert capsys.readouterr().out.count("(finished earlier)") == 2
    # A different recipe in the same folder is refused instead of mixing results.
    changed = [a if a != "256" else "512" for a in TINY]
    assert compare.main(["--preset", "quick", "--output", str(out), *changed]) == 1
    assert "different recipe" in capsys.readouterr().err


def test_report_only_tabulates_the_finished_runs_and_trains_nothing(tmp_path, capsys):
    out = tmp_path / "cmp"
    one = [a for a in TINY if a != "pedconv_cifar_resnet20"]
    assert compare.main(["--preset", "quick", "--output", str(out), *one]) == 0
    capsys.readouterr()
    # Seeds: every seed folder found (the preset's 0 and 1 are not asked for); unfinished runs named.
    unseeded = [a for i, a in enumerate(one) if a != "--seeds" and one[i - 1] != "--seeds"]
    unseeded[unseeded.index("cifar_resnet20") + 1:unseeded.index("cifar_resnet20") + 1] = ["pedconv_cifar_resnet20"]
    (out / "runs" / "pedconv_cifar_resnet20" / "seed3").mkdir(parents=True)
    assert compare.main(["--preset", "quick", "--output", str(out), "--report-only", *unseeded]) == 0
    shown = capsys.readouterr().out
    assert "left out, not finished: pedconv_cifar_resnet20 seed 3" in shown
    data = json.loads((out / "compare.json").read_text())
    assert [r["model"] for r in data["rows"]] == ["cifar_resnet20"] and data["rows"][0]["seeds"] == [0]
    assert data["meta"]["report_only"] and data["meta"]["seeds"] == [0]
    assert not (out / "runs" / "pedconv_cifar_resnet20" / "seed3" / "log.txt").exists()
    # Nothing finished of the models asked for: one line, exit status 2; another recipe: refused.
    assert compare.main(["--output", str(out), "--report-only", "--models", "dyconv_cifar_resnet20"]) == 2
    assert "--report-only: " in capsys.readouterr().err
    changed = [a if a != "256" else "512" for a in one]
    assert compare.main(["--preset", "quick", "--output", str(out), "--report-only", *changed]) == 1
    assert "different recipe" in capsys.readouterr().err
    # A corrupt result.json: one line naming the file.
    (out / "runs" / "cifar_resnet20" / "seed0" / "result.json").write_text("{not json")
    assert compare.main(["--preset", "quick", "--output", str(out), "--report-only", *one]) == 1
    assert "result.json: not valid JSON" in capsys.readouterr().err


def _record(model, seed, top1, devices, seconds):
    history = [{"train_images": 1000, "train_images_per_s": 1000 / seconds, "eval_images_per_s": 500.0}]
    margs = {"name": model, "num_classes": 10, "kwargs": {"width": 4, "in_chans": 1}}
    return {"model": model, "seed": seed, "final": {"val_top1": top1}, "history": history, "devices": devices,
            "input_size": [1, 28, 28], "model_args": margs}


def test_times_are_compared_only_between_runs_on_the_first_runs_devices():
    records = [_record("cifar_resnet20", 0, 90.0, ["cpu"], 10.0), _record("cifar_resnet20", 1, 91.0, ["cpu"], 20.0),
               _record("pedconv_cifar_resnet20", 0, 92.0, ["cpu"], 40.0),
               _record("pedconv_cifar_resnet20", 1, 90.0, ["cuda"], 1.0),
               _record("dyconv_cifar_resnet20", 0, 91.0, ["cuda", "cpu"], 5.0)]
    static, ped, dy = compare.summarize(records)
    assert static["train_time_s"] == 15.0 and ped["train_time_s"] == 40.0 and ped["train_images_per_s"] == 25.0
    assert ped["metric_runs"] == [92.0, 90.0] and ped["delta_vs_reference"] == [2.0, -1.0]  # accuracy: every seed
    assert dy["train_time_s"] is None and dy["devices"] == ["cuda+cpu"] and ped["timed_on"] == "cpu"
    table = compare.markdown([static, ped, dy])
    assert "train time (s) (cpu runs)" in table and "| cpu, cuda |" in table and "| — | — | — | cuda+cpu |" in table
    # One device throughout: the table is the plain one.
    assert "trained on" not in compare.markdown(compare.summarize(records[:3]))
    # A run moved between devices: named, and no time (its seconds mix two machines).
    moved = compare.summarize(records[4:])
    assert moved[0]["train_time_s"] is None and "| cuda+cpu |" in compare.markdown(moved)


def test_finetuning_starts_each_seed_from_that_seeds_static_run(tmp_path, capsys):
    """--init-from: the static arm loads the pretrained weights, the PEDConv arm is converted from
    them with its function kept; a comparison without that seed's run is refused."""
    base, ft = tmp_path / "base", tmp_path / "ft"
    assert compare.main(["--preset", "quick", "--output", str(base), *TINY[:2], *TINY[3:]]) == 0
    assert compare.main(["--preset", "quick", "--output", str(ft), "--init-from", str(base), *TINY]) == 0
    capsys.readouterr()
    import torch

    from pedconv.training.resume import model_from_checkpoint

    pre, _, _ = model_from_checkpoint(base / "runs" / "cifar_resnet20" / "seed0" / "last.pt")
    args = yaml_args(ft / "runs" / "pedconv_cifar_resnet20" / "seed0")
    assert args["init_from"] == str(base / "runs" / "cifar_resnet20" / "seed0")
    record = json.loads((ft / "runs" / "pedconv_cifar_resnet20" / "seed0" / "result.json").read_text())
    assert record["identity"]["init_from"] == str(base)
    # The converted model built from the pretrained weights computes what they compute.
    from pedconv.training.model_setup import ModelArgs, start_from_run

    margs = ModelArgs(**record["model_args"])
    x = torch.randn(2, 1, 28, 28)
    started = start_from_run(margs.build(), margs, str(base / "runs" / "cifar_resnet20" / "seed0")).eval()
    torch.testing.assert_close(started(x), pre.eval()(x))
    # Weights that fit neither the model nor its static architecture: one line that says so.
    wide = ModelArgs("pedconv_cifar_resnet20", 10, {"width": 8, "in_chans": 1}, 1, 1)
    with pytest.raises(ValueError, match="static_weights do not fit the static CifarResNet"):
        start_from_run(wide.build(), wide, str(base / "runs" / "cifar_resnet20" / "seed0"))
    other = ModelArgs("resnet18", 10, {}, 1, 3)
    with pytest.raises(ValueError, match="none of its weight tensors fit resnet18, neither as the same network"):
        start_from_run(other.build(), other, str(base / "runs" / "cifar_resnet20" / "seed0"))
    with pytest.raises(FileNotFoundError):
        start_from_run(other.build(), other, str(tmp_path / "nothing"))
    assert compare.main(["--preset", "quick", "--output", str(tmp_path / "ft2"), "--init-from", str(base),
                         *TINY[:4], "1", *TINY[5:]]) == 2
    assert "no finished seed 1 run" in capsys.readouterr().err


def yaml_args(run):
    import yaml

    return yaml.safe_load((run / "args.yaml").read_text())


def test_model_specs():
    spec = compare.parse_spec("pedconv_cifar_resnet20:rank=4:components=[gamma, psi]:variational=false")
    assert spec.kwargs == {"rank": 4, "components": ["gamma", "psi"], "variational": False}
    assert spec.label == "pedconv_cifar_resnet20:rank=4:components=[gamma,psi]:variational=false"
    assert "/" not in spec.folder and ":" not in spec.folder
    with pytest.raises(ValueError, match="pedconv_cifar_resnet20"):
        compare.parse_spec("pedconv_cifar_resnet2O")
    with pytest.raises(ValueError, match="not key=value"):
        compare.parse_spec("cifar_resnet20:rank")


def test_cli_errors(capsys):
    assert compare.main(["--models", "no_such_model", "--output", "/tmp/never"]) == 2
    assert "unknown model" in capsys.readouterr().err
    assert compare.main(["--preset", "nope", "--output", "/tmp/never"]) == 2
    assert "--preset nope: no such file, and not a shipped study preset (shipped: ablations" in capsys.readouterr().err
    assert compare.main(["--task", "detect", "--preset", "study", "--output", "/tmp/never"]) == 2
    assert "--task detect --preset study: the task's presets are fasterrcnn, paper, quick" in capsys.readouterr().err


@pytest.mark.usefixtures("fashion_mnist")
def test_compare_runs_another_task_with_its_own_preset_and_metric(tmp_path):
    """`pedconv compare --task segment --quick`: the static and PEDConv UperNets on the offline scenes,
    tabulated by mIoU (here shrunk to one seed of one tiny epoch)."""
    out = tmp_path / "seg"
    argv = ["--task", "segment", "--quick", "--seeds", "0", "--epochs", "1", "--batch-size", "4", "--output", str(out),
            "--", "--offline-scenes", "8", "--val-scenes", "4", "--scene-size", "64", "--img-size", "64",
            "--threads", "1", "--offline-dir", str(tmp_path / "cache")]
    assert compare.main(argv) == 0
    report = json.loads((out / "compare.json").read_text())
    assert [r["model"] for r in report["rows"]] == ["upernet_resnet18", "pedconv_upernet_resnet18"]
    assert {r["metric"] for r in report["rows"]} == {"mIoU"} and report["meta"]["task"] == "segment"
    assert "mIoU mean ± std" in (out / "compare.md").read_text()
    record = json.loads((out / "runs" / "upernet_resnet18" / "seed0" / "result.json").read_text())
    assert record["best_metric"] == "mIoU" and record["identity"]["recipe"]["preset"] == "quick"
    assert record["model_args"]["kwargs"] == {"decoder_channels": 64}  # the quick preset's, for every model
    assert record["devices"] == ["cpu"]  # from the epoch records, not from log.txt
    assert compare.main(argv) == 0  # finished: read back (a task recipe has no --data), nothing trained
    assert json.loads((out / "compare.json").read_text())["rows"] == report["rows"]
    bad = compare.main([*argv[:argv.index("--")], "--", "--img-size", "48"])
    assert bad == 2  # checked before any run: the segmenters need a multiple of 32


@pytest.mark.usefixtures("fashion_mnist")
def test_flops_are_counted_at_the_runs_image_size(tmp_path):
    """`-- --img-size 32` trains at 32x32: the table's FLOPs are profile_model's at 32x32 (they were at 28x28),
    also when the table is rebuilt from finished runs, including ones saved before result.json had input_size."""
    out = tmp_path / "cmp"
    argv = ["--models", "cifar_resnet20", "--seeds", "0", "--width", "4", "--epochs", "1", "--train-subset", "64",
            "--val-subset", "32", "--batch-size", "32", "--output", str(out), "--", "--threads", "1",
            "--img-size", "32"]
    model = pedconv.create_model("cifar_resnet20", num_classes=10, in_chans=1, width=4)
    at_32, at_28 = profile_model(model, (1, 1, 32, 32)).macs, profile_model(model, (1, 1, 28, 28)).macs
    assert at_32 != at_28
    assert compare.main(argv) == 0
    assert json.loads((out / "compare.json").read_text())["rows"][0]["macs"] == at_32
    result = out / "runs" / "cifar_resnet20" / "seed0" / "result.json"
    record = json.loads(result.read_text())
    assert record["input_size"] == [1, 32, 32]
    del record["input_size"]  # as written by an older version: the size comes from the run's args.yaml
    result.write_text(json.dumps(record))
    assert compare.main(argv) == 0
    assert json.loads((out / "compare.json").read_text())["rows"][0]["macs"] == at_32


def _one_line(err):
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("argv, message", [
    (["--batch-size", "512", "--train-subset", "100"], "--train-subset 100 is smaller than one optimizer step of 512"),
    (["--epochs", "0"], "argument --epochs: must be >= 1, got 0"),
    (["--data", "imagefolder"], "--data imagefolder needs --data-dir DIR"),
    (["--", "--lr", "-1"], "pedconv train: error: argument --lr: must be > 0, got -1.0"),
])
def test_bad_options_are_refused_before_any_run(tmp_path, capsys, argv, message):
    assert compare.main(["--output", str(tmp_path / "c"), *argv]) == 2
    assert message in _one_line(capsys.readouterr().err)
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("text, message", [
    ("models: [cifar_resnet20]\nseeds: [0]\n", "missing train"),
    ("models: [cifar_resnet20]\nseeds: [0]\ntrain: {}\nepochs: 3\n", "unknown keys epochs"),
    ("models: []\nseeds: [0]\ntrain: {}\n", "models must be a non-empty list"),
    ("models: [cifar_resnet20]\nseeds: [zero]\ntrain: {}\n", "seeds must be a non-empty list of integers"),
    ("models: [cifar_resnet20]\nseeds: [0]\ntrain: [1]\n", "train is [1], of the wrong type"),
    ("models: [cifar_resnet20\n", "not valid YAML"),
    ("- a list\n", "expected a mapping"),
])
def test_a_bad_study_file_is_refused_in_one_line(tmp_path, capsys, text, message):
    study = tmp_path / "mine.yaml"
    study.write_text(text)
    assert compare.main(["--preset", str(study), "--output", str(tmp_path / "c")]) == 2
    line = _one_line(capsys.readouterr().err)
    assert str(study) in line and message in line
    assert compare.main(["--preset", "no-such-study", "--output", str(tmp_path / "c")]) == 2
    assert "no-such-study: no such file, and not a shipped study preset (shipped: ablations, default" in (
        capsys.readouterr().err)


def test_every_shipped_study_is_a_preset_and_a_study_file_of_ones_own_plans_its_runs(tmp_path):
    from pedconv.compare import PRESETS, build_parser
    from pedconv.compare.plan import make_plan
    from pedconv.configs import CONFIG_DIR, shipped

    assert set(PRESETS) == set(shipped("studies")) >= {"default", "quick", "full", "transfer-pretrain"}
    assert PRESETS["full"]["train"]["train_subset"] is None and PRESETS["finetune"]["init_from"]
    shipped_plan = make_plan(build_parser().parse_args(["--preset", "quick"]))
    assert (shipped_plan.preset, shipped_plan.seeds, shipped_plan.out.name) == ("quick", [0], "compare-quick")
    study = tmp_path / "mine.yaml"
    study.write_text((CONFIG_DIR / "studies" / "quick.yaml").read_text().replace("seeds: [0]", "seeds: [3, 4]"))
    plan = make_plan(build_parser().parse_args(["--preset", str(study)]))
    assert (plan.preset, plan.seeds, plan.out.name) == ("mine", [3, 4], "compare-mine")
    assert [s.label for s in plan.specs] == [s.label for s in shipped_plan.specs]
    assert plan.recipe == shipped_plan.recipe


def test_a_second_comparison_on_the_same_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "cmp"
    with FolderLock(out, "pedconv compare"):  # held as a running `pedconv compare` holds it
        assert compare.main(["--output", str(out), *TINY]) == 1
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"pedconv compare: error: {out} is in use by another pedconv compare: pid {os.getpid()}")
    assert not (out / "runs").exists()


def _fake_train(interrupt):
    """train() that finishes the first run and is interrupted in the second."""
    calls = []

    def fake(config, task, on_epoch=None):
        calls.append(config)
        if len(calls) == 2:
            interrupt()
        final = {"val_top1": 50.0, "train_images_per_s": 1.0, "eval_images_per_s": 1.0}
        return {"final": final, "best_metric": "val_top1", "best_value": 50.0, "history": [final], "model_args": {},
                "input_size": [1, 28, 28]}
    return fake


def _keyboard_interrupt():
    raise KeyboardInterrupt


def _sigterm():
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)  # the handler raises before this ends


@pytest.mark.parametrize("interrupt, status, name", [(_keyboard_interrupt, 130, "SIGINT"), (_sigterm, 143, "SIGTERM")])
def test_an_interrupted_comparison_says_how_to_continue(tmp_path, capsys, monkeypatch, interrupt, status, name):
    monkeypatch.setattr(pedconv.training.train, "train", _fake_train(interrupt))
    out = tmp_path / "cmp"
    argv = ["--output", str(out), *TINY]
    assert compare.main(argv) == status
    line = _one_line(capsys.readouterr().err)
    head = (f"pedconv compare: interrupted by {name} in run 2/2 (pedconv_cifar_resnet20 seed 0); finished runs are "
            "kept and an interrupted run continues from its last checkpoint. Resume with: ")
    assert line.startswith(head), line
    command = shlex.split(line[len(head):])
    assert command[:2] == ["pedconv", "compare"]
    assert vars(parse_args(command[1:])) == vars(parse_args(["compare", *argv]))  # the same comparison
    assert (out / "runs" / "cifar_resnet20" / "seed0" / "result.json").is_file()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored


def test_progress_bar_names_the_run_and_its_epoch(tmp_path):
    """On a terminal: one bar over the epochs left to train, with the current run and epoch in it."""
    first, second = tmp_path / "a", tmp_path / "b"
    second.mkdir()
    (second / "metrics.jsonl").write_text('{"epoch": 1}\n')  # an interrupted run: 1 of its 2 epochs done
    stream, lines = io.StringIO(), io.StringIO()
    progress = compare.CompareProgress([("a seed 0", first), ("b seed 0", second)], epochs=2, stream=stream,
                                       out=lines, use_tqdm=True)
    assert progress.todo == 3 and progress.where() == "after 0 of 2 runs"
    with progress.watch(0):
        progress.epoch_done({"epoch": 1})  # what train(on_epoch=...) calls after the run's first epoch
        assert progress.trained == 1 and "run 1/2 a seed 0: epoch 1/2" in stream.getvalue()
        assert progress.where() == "in run 1/2 (a seed 0)"
    progress.run_done("  a: done")
    progress.close()
    assert "1/3" in stream.getvalue() and lines.getvalue() == "  a: done\n"


@pytest.mark.usefixtures("fashion_mnist")
def test_ctrl_c_in_a_real_comparison_then_the_printed_command_finishes_it(tmp_path, subprocess_env):
    """Ctrl-C (SIGINT) while a real `pedconv compare` trains: exit 130 and one line whose command continues it."""
    out = tmp_path / "cmp"
    argv = ["--models", "cifar_resnet20", "--seeds", "0", "1", "--width", "4", "--epochs", "4", "--train-subset",
            "512", "--val-subset", "100", "--batch-size", "64", "--output", str(out), "--", "--threads", "1"]
    python = [sys.executable, "-m", "pedconv"]
    proc = subprocess.Popen([*python, "compare", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=subprocess_env, cwd=tmp_path,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as in a terminal
    try:
        for line in proc.stdout:  # the first epoch of the first run is done: interrupt the training
            if line.startswith("compare: run 1/2"):
                proc.send_signal(signal.SIGINT)
                break
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    line = _one_line(err)
    assert line.startswith("pedconv compare: interrupted by SIGINT in run "), line
    command = shlex.split(line.split("Resume with: ", 1)[1])
    assert command[:2] == ["pedconv", "compare"]
    again = subprocess.run([*python, *command[1:]], capture_output=True, text=True, env=subprocess_env, cwd=tmp_path,
                           timeout=300)
    assert again.returncode == 0, again.stderr
    assert json.loads((out / "compare.json").read_text())["rows"][0]["seeds"] == [0, 1]
    assert len((out / "runs" / "cifar_resnet20" / "seed0" / "metrics.jsonl").read_text().splitlines()) == 4


@pytest.mark.usefixtures("fashion_mnist")
def test_jobs_trains_runs_side_by_side_in_their_own_folders(tmp_path, capsys):
    """`--jobs 2`: two worker processes, each run in its own folder with its own lock; the table
    lists every run in the plan's order and a second invocation reads them back."""
    out = tmp_path / "cmp"
    argv = ["--jobs", "2", "--output", str(out), *TINY]
    assert compare.main(argv) == 0
    report = json.loads((out / "compare.json").read_text())
    assert [r["model"] for r in report["rows"]] == ["cifar_resnet20", "pedconv_cifar_resnet20"]
    for model in ("cifar_resnet20", "pedconv_cifar_resnet20"):
        record = json.loads((out / "runs" / model / "seed0" / "result.json").read_text())
        assert record["identity"]["model"] == model and record["devices"] == ["cpu"]
    lines = capsys.readouterr().out
    assert "run 1/2 cifar_resnet20 seed 0: epoch 1/1" in lines and "run 2/2 pedconv_cifar_resnet20" in lines
    assert compare.main(argv) == 0  # finished: read back, nothing trained
    assert "epoch 1/1" not in capsys.readouterr().out


def test_init_models_start_each_model_from_its_own_pretrained_run(tmp_path):
    """--init-from COMPARISON --init-models A B: model i of this comparison starts from model i's seed-k
    run there (the transfer study: static from static, PEDConv from PEDConv)."""
    pre = tmp_path / "pre"
    for name in ("resnet18", "pedconv_resnet18"):
        (pre / "runs" / name / "seed1").mkdir(parents=True)
        (pre / "runs" / name / "seed1" / "result.json").write_text("{}")
    args = compare.build_parser().parse_args(["--task", "detect", "--seeds", "1", "--init-from", str(pre),
                                              "--init-models", "resnet18", "pedconv_resnet18"])
    plan = compare.command.make_plan(args)
    starts = [compare.plan.run_config(spec, 1, None, plan.recipe, [], tmp_path / spec.folder, True,
                                      plan.init_for(spec), plan.task)["init_from"] for spec in plan.specs]
    assert starts == [str(pre / "runs" / "resnet18" / "seed1"), str(pre / "runs" / "pedconv_resnet18" / "seed1")]
    one = compare.build_parser().parse_args(["--task", "detect", "--init-from", str(pre), "--init-models", "resnet18"])
    with pytest.raises(pedconv.errors.UsageError, match="gives 1 models for 2 compared ones"):
        compare.command.make_plan(one)
