"""The `pedconv` command line: one table, lazy imports, one line per error, exit status 2 (usage) / 1 (run)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import pedconv.cli
from pedconv.tasks.classification.readers import DEBIAN_FASHION_MNIST, find_idx

SRC = Path(__file__).resolve().parents[1] / "src"
no_fashion_mnist = find_idx(DEBIAN_FASHION_MNIST, "t10k-images-idx3-ubyte") is None


def _pedconv(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m pedconv ARGS`` in a child process (this checkout's sources)."""
    env = dict(os.environ, PYTHONPATH=str(SRC), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "pedconv", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)


def test_every_command_row_has_a_parser_and_a_runner(capsys: pytest.CaptureFixture) -> None:
    """The contract a new command (pedconv detect, ...) fulfils: build_parser(parser) and run(args)."""
    names = [c.name for c in pedconv.cli.COMMANDS]
    assert names == ["bench", "profile", "train", "eval", "compare", "detect", "segment", "adv"]
    for command in pedconv.cli.COMMANDS:
        module = command.load()
        assert callable(module.build_parser) and callable(module.run), command
        assert pedconv.cli.main([command.name, "--help"]) == 0
        assert capsys.readouterr().out.startswith(f"usage: pedconv {command.name}")


def test_help_imports_only_the_chosen_command(tmp_path: Path) -> None:
    """`pedconv --help` imports no command module; `pedconv train --help` imports train's only."""
    code = """
import contextlib, io, sys
from pedconv.cli import main

def show(argv):
    with contextlib.redirect_stdout(io.StringIO()) as out:
        try:
            main(argv)
        except SystemExit as e:
            assert e.code == 0, e.code
    return out.getvalue()

def commands():  # pedconv.tools.flops is not among them: the package itself exports profile_model
    return sorted(m for m in ("pedconv.tools.benchmark", "pedconv.compare.command",
                              "pedconv.tasks.classification.evaluate", "pedconv.tasks.classification.command")
                  if m in sys.modules)

text = show(["--help"])
assert all(name in text for name in ("bench", "profile", "train", "eval", "compare")), text
print(commands())
show(["train", "--help"])
print(commands())
"""
    env = dict(os.environ, PYTHONPATH=str(SRC))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["[]", "['pedconv.tasks.classification.command']"]


def test_errors_are_one_line_with_the_exit_status_of_their_kind(tmp_path: Path) -> None:
    """A usage error exits with 2, a run that cannot be done with 1: one line on stderr, no traceback."""
    usage = _pedconv("compare", "--models", "cifar_resnet20", "cifar_resnet20", "--output", str(tmp_path / "c"),
                     cwd=tmp_path)
    assert usage.returncode == 2
    assert usage.stderr == ("pedconv compare: error: --models lists the same model spec twice "
                            "(see pedconv compare --help)\n")
    missing = tmp_path / "missing.pt"
    run = _pedconv("eval", "--checkpoint", str(missing), cwd=tmp_path)
    assert run.returncode == 1
    assert run.stderr == f"pedconv eval: error: checkpoint {missing} does not exist\n"
    assert run.stdout == ""


def test_library_errors_map_to_exit_codes_in_process(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert pedconv.cli.main(["compare", "--models", "no_such_model", "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pedconv compare: error: unknown model 'no_such_model'") and err.count("\n") == 1
    assert pedconv.cli.main(["eval", "--model", "cifar_resnet20", "--checkpoint", str(tmp_path / "x.pt")]) == 2
    assert capsys.readouterr().err == ("pedconv eval: error: give either --checkpoint PATH or --model NAME / "
                                       "--authors-arch ARCH (with --weights) (see pedconv eval --help)\n")


# ----------------------------------------------------------------------------- `pedconv train`

@pytest.mark.parametrize("argv, message", [
    (["--model", "pedconv_resnet_18"], "did you mean 'pedconv_resnet18'"),
    (["--model-kwargs", "rank"], "expects key=value, got 'rank'"),
    (["--model-kwargs", "rank=[1"], "is not valid YAML"),
    (["--mixup", "0.2", "--batch-size", "31"], "even --batch-size"),
    (["--resume", "auto"], "--resume auto needs --output"),
    (["--epochs", "0"], "must be >= 1"),
])
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture, argv: list, message: str) -> None:
    assert pedconv.cli.main(["train", *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.skipif(no_fashion_mnist, reason="real Fashion-MNIST not installed")
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
    assert err.startswith("pedconv train: error: ") and err.count("\n") == 1, err
    for m in messages:
        assert m in err


# ----------------------------------------------------------------------------- one line, no traceback

def _one_line(err: str) -> str:
    """The only non-empty line of ``err`` (and no traceback)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("argv, message", [
    (["--lr", "-1"], "argument --lr: must be > 0, got -1.0"),
    (["--lr", "nan"], "argument --lr: must be a finite number, got nan"),
    (["--momentum", "2"], "argument --momentum: must be in [0, 1), got 2.0"),
    (["--clip-grad", "-1"], "argument --clip-grad: must be > 0, got -1.0"),
    (["--weight-decay", "-0.1"], "argument --weight-decay: must be >= 0, got -0.1"),
    (["--epochs", "0"], "argument --epochs: must be >= 1, got 0"),
    (["--label-smoothing", "1"], "argument --smoothing/--label-smoothing: must be in [0, 1), got 1.0"),
    (["--mixup-prob", "1.5"], "argument --mixup-prob: must be in [0, 1], got 1.5"),
    (["--batch-size", "many"], "argument --batch-size: expected an integer, got 'many'"),
    (["--batch-size", "512", "--train-subset", "100"], "--train-subset 100 is smaller than one optimizer step of 512"),
    (["--data", "imagefolder"], "--data imagefolder needs --data-dir DIR"),
    (["--device", "tpu"], "--device tpu: not a device"),
    (["--opt", "adamx"], "--opt adamx: unknown optimizer; did you mean 'adamax'"),
    (["--weight-dacay", "0.1"], "unrecognized arguments: --weight-dacay 0.1; did you mean '--weight-decay'?"),
    (["--sched", "linear"], "argument --sched: invalid choice: 'linear'"),
])
def test_usage_errors_are_one_line_with_a_pointer_to_help(tmp_path: Path, capsys: pytest.CaptureFixture, argv: list,
                                                         message: str) -> None:
    """Not argparse's 37-line usage block: the error, then where the options are described."""
    assert pedconv.cli.main(["train", "--output", str(tmp_path / "run"), *argv]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("pedconv train: error: ") and line.endswith(" (see pedconv train --help)"), line
    assert message in line
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_help_shows_the_defaults_but_not_none(capsys: pytest.CaptureFixture) -> None:
    assert pedconv.cli.main(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "--lr LR learning rate for --lr-base-batch images per step (default: 0.1)" in text
    assert "--epochs EPOCHS (default: 10)" in text and "--sched {cosine,step,multistep,poly,tanh}" in text
    assert "(default: None)" not in text and "(default: False)" not in text and "(default: {})" not in text


def test_runtime_errors_before_the_run_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A device or an output folder this machine does not have: exit 1, one line, checked before the data load."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    cases = [(["--output", str(blocker / "run")], f"--output {blocker / 'run'}: {blocker} is a file, not a folder"),
             (["--output", "/sys/pedconv-test/run"], "--output /sys/pedconv-test/run: cannot write in /sys")]
    import torch

    if not torch.cuda.is_available():
        cases.append((["--device", "cuda", "--output", str(tmp_path / "r")], "--device cuda: CUDA is not available"))
    for argv, message in cases:
        assert pedconv.cli.main(["train", *argv]) == 1
        line = _one_line(capsys.readouterr().err)
        assert line.startswith(f"pedconv train: error: {message}"), line


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    with pytest.raises(pedconv.errors.RunError, match="is a file, not a folder"):
        (tmp_path / "f").write_text("")
        pedconv.cli.main(["--debug", "train", "--output", str(tmp_path / "f" / "run")])


@pytest.mark.skipif(no_fashion_mnist, reason="real Fashion-MNIST not installed")
def test_a_model_that_rejects_its_options_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rc = pedconv.cli.main(["train", "--model", "cifar_resnet20", "--model-kwargs", "width=-8", "--train-subset", "64",
                           "--val-subset", "64", "--batch-size", "32", "--quiet", "--output", str(tmp_path / "o")])
    line = _one_line(capsys.readouterr().err)
    assert rc == 1
    assert line == ("pedconv train: error: model 'cifar_resnet20' rejected its options {'width': -8}: width must be "
                    ">= 1, got -8")


# ----------------------------------------------------------------------------- fast without torch

_NO_TORCH = """
import contextlib, io, sys, time
start = time.perf_counter()
from pedconv.cli import main
with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(io.StringIO()) as err:
    status = main(sys.argv[1:])
print(round(time.perf_counter() - start, 2), status, 'torch' in sys.modules, repr(err.getvalue()))
"""


@pytest.mark.parametrize("argv, status, err", [
    (["--help"], 0, ""),
    (["--version"], 0, ""),
    (["trian"], 2, "pedconv: error: unknown command 'trian'; did you mean 'train'? (see pedconv --help)\n"),
    ([], 2, "pedconv: error: the following arguments are required: COMMAND (see pedconv --help)\n"),
])
def test_help_and_typos_do_not_import_torch(tmp_path: Path, argv: list, status: int, err: str) -> None:
    """`pedconv --help` and a mistyped command answer in well under a second: no torch, no command module."""
    env = dict(os.environ, PYTHONPATH=str(SRC))
    proc = subprocess.run([sys.executable, "-c", _NO_TORCH, *argv], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    _seconds, got_status, torch_loaded, got_err = proc.stdout.strip().split(" ", 3)
    assert (int(got_status), torch_loaded, got_err) == (status, "False", repr(err))


def test_interruptions_are_one_line_with_their_status(monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture) -> None:
    """Ctrl-C in any command: 130, no traceback; a RunInterrupted (train saving on SIGTERM): its message and 128 + N."""
    import signal

    import pedconv.tools.flops

    def ctrl_c(args: object) -> int:
        raise KeyboardInterrupt

    def terminated(args: object) -> int:
        raise pedconv.errors.RunInterrupted("stopped by SIGTERM after saving; resume with: pedconv ...", signal.SIGTERM)

    monkeypatch.setattr(pedconv.tools.flops, "run", ctrl_c)
    assert pedconv.cli.main(["profile"]) == 130
    assert _one_line(capsys.readouterr().err) == "pedconv profile: interrupted"
    monkeypatch.setattr(pedconv.tools.flops, "run", terminated)
    assert pedconv.cli.main(["profile"]) == 143
    assert _one_line(capsys.readouterr().err) == ("pedconv profile: stopped by SIGTERM after saving; resume with: "
                                                  "pedconv ...")


@pytest.mark.parametrize("argv", [["profile", "--input-size", "0"], ["bench", "--reps", "-1"],
                                  ["eval", "--batch-size", "0"], ["compare", "--width", "0"]])
def test_every_command_checks_its_numbers(capsys: pytest.CaptureFixture, argv: list) -> None:
    assert pedconv.cli.main(argv) == 2
    assert "must be >= 1" in _one_line(capsys.readouterr().err)
