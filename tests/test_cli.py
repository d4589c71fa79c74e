"""The `pedconv` command line: one table, lazy imports, one line per error, exit status 2 (usage) / 1 (run)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import pedconv.cli
from pedconv.training.datasets import DEBIAN_FASHION_MNIST, find_idx

SRC = Path(__file__).resolve().parents[1] / "src"
no_fashion_mnist = find_idx(DEBIAN_FASHION_MNIST, "t10k-images-idx3-ubyte") is None


def _pedconv(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m pedconv ARGS`` in a child process (this checkout's sources)."""
    env = dict(os.environ, PYTHONPATH=str(SRC), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "pedconv", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)


def test_every_command_row_has_a_parser_and_a_runner(capsys: pytest.CaptureFixture) -> None:
    """The contract a new command (pedconv detect, ...) fulfils: build_parser(parser) and run(args)."""
    assert [c.name for c in pedconv.cli.COMMANDS] == ["bench", "profile", "train", "eval", "compare"]
    for command in pedconv.cli.COMMANDS:
        module = command.load()
        assert callable(module.build_parser) and callable(module.run), command
        with pytest.raises(SystemExit) as e:
            pedconv.cli.main([command.name, "--help"])
        assert e.value.code == 0
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
    return sorted(m for m in ("pedconv.tools.benchmark", "pedconv.training.compare", "pedconv.training.evaluate",
                              "pedconv.training.train") if m in sys.modules)

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
    assert proc.stdout.splitlines() == ["[]", "['pedconv.training.train']"]


def test_errors_are_one_line_with_the_exit_status_of_their_kind(tmp_path: Path) -> None:
    """A usage error exits with 2, a run that cannot be done with 1: one line on stderr, no traceback."""
    usage = _pedconv("compare", "--models", "cifar_resnet20", "cifar_resnet20", "--output", str(tmp_path / "c"),
                     cwd=tmp_path)
    assert usage.returncode == 2
    assert usage.stderr == "pedconv compare: error: --models lists the same model spec twice\n"
    missing = tmp_path / "missing.pt"
    run = _pedconv("eval", "--checkpoint", str(missing), cwd=tmp_path)
    assert run.returncode == 1
    assert run.stderr == f"pedconv eval: error: checkpoint {missing} does not exist\n"
    assert run.stdout == ""


def test_library_errors_map_to_exit_codes_in_process(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert pedconv.cli.main(["compare", "--models", "no_such_model", "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pedconv compare: error: unknown model 'no_such_model'") and err.count("\n") == 1
    assert pedconv.cli.main(["eval", "--model", "cifar_resnet20", "--checkpoint", str(tmp_path / "x.pt")]) == 1
    assert capsys.readouterr().err == ("pedconv eval: error: give either --checkpoint PATH, or --model NAME / "
                                       "--authors-arch ARCH (with --weights)\n")


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
    with pytest.raises(SystemExit) as e:
        pedconv.cli.main(["train", *argv])
    assert e.value.code == 2
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
