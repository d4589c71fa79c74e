"""pedconv compare: a tiny real run, resumption by skipping finished runs, and its errors."""

import json

import pytest

from pedconv.training import compare

TINY = ["--models", "cifar_resnet20", "pedconv_cifar_resnet20", "--seeds", "0", "--width", "4", "--epochs", "1",
        "--train-subset", "256", "--val-subset", "200", "--batch-size", "64", "--", "--threads", "1"]


def test_compare_runs_tabulates_and_skips_finished_runs(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert compare.main(["--preset", "quick", "--output", str(out), *TINY]) == 0
    table = (out / "compare.md").read_text()
    assert "| cifar_resnet20 |" in table and "| pedconv_cifar_resnet20 |" in table
    data = json.loads((out / "compare.json").read_text())
    rows = {r["model"]: r for r in data["rows"]}
    assert rows["pedconv_cifar_resnet20"]["params"] > rows["cifar_resnet20"]["params"]
    assert rows["pedconv_cifar_resnet20"]["macs"] > rows["cifar_resnet20"]["macs"]
    assert all(0.0 <= r["top1_mean"] <= 100.0 and r["train_images_per_s"] > 0 for r in data["rows"])
    assert data["meta"]["recipe"]["epochs"] == 1 and data["meta"]["extra_train_options"] == ["--threads", "1"]
    assert (out / "compare.png").is_file()
    for model in ("cifar_resnet20", "pedconv_cifar_resnet20"):
        run = out / "runs" / model / "seed0"
        assert (run / "result.json").is_file() and (run / "metrics.jsonl").is_file() and (run / "last.pt").is_file()
    capsys.readouterr()
    # Same command again: nothing is retrained, the table is rebuilt from the saved results.
    assert compare.main(["--preset", "quick", "--output", str(out), *TINY]) == 0
    assert capsys.readouterr().out.count("(finished earlier)") == 2
    # A different recipe in the same folder is refused instead of mixing results.
    changed = [a if a != "256" else "512" for a in TINY]
    assert compare.main(["--preset", "quick", "--output", str(out), *changed]) == 1
    assert "different recipe" in capsys.readouterr().err


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
    with pytest.raises(SystemExit):
        compare.build_parser().parse_args(["--preset", "nope"])
