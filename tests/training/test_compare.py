"""pedconv compare: a tiny real run, resumption by skipping finished runs, and its errors."""

import json

import pytest

import pedconv
from pedconv.tools.flops import profile_model
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
