"""experiments/compare_slices.py: slices trained side by side, merged, then tabulated."""

import importlib.util
import json
from pathlib import Path

import pytest

from pedconv import compare

_PATH = Path(__file__).resolve().parents[2] / "experiments" / "compare_slices.py"
_spec = importlib.util.spec_from_file_location("compare_slices", _PATH)
assert _spec is not None and _spec.loader is not None
slices = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(slices)

TINY = "--preset quick --width 4 --epochs 1 --train-subset 128 --val-subset 100 --batch-size 64"


def test_slices_run_side_by_side_merge_and_tabulate(tmp_path, capsys):
    (tmp_path / "s.txt").write_text(f"# two slices\nstatic {TINY} --models cifar_resnet20 --seeds 0\n"
                                    f"ped {TINY} --models pedconv_cifar_resnet20 --seeds 0\n")
    root, into = tmp_path / "slices", tmp_path / "cmp"
    assert slices.main(["run", str(tmp_path / "s.txt"), "--root", str(root), "--jobs", "2"]) == 0
    moved = slices.main(["merge", "--root", str(root), "--into", str(into), "static", "ped"])
    assert moved == 0 and sorted(p.name for p in (into / "runs").iterdir()) == ["cifar_resnet20",
                                                                                 "pedconv_cifar_resnet20"]
    log = (into / "runs" / "cifar_resnet20" / "seed0" / "log.txt").read_text()
    assert str(into) in log and str(root) not in log
    assert not (into / "runs" / "cifar_resnet20" / "seed0" / ".lock").exists()
    argv = [*TINY.split(), "--models", "cifar_resnet20", "pedconv_cifar_resnet20", "--output", str(into),
            "--report-only"]
    assert compare.main(argv) == 0
    rows = json.loads((into / "compare.json").read_text())["rows"]
    assert [r["seeds"] for r in rows] == [[0], [0]] and rows[1]["devices"] == ["cpu"]
    # Merging again would replace a run: refused, naming it.
    (root / "static" / "runs" / "cifar_resnet20" / "seed0").mkdir(parents=True)
    (root / "static" / "runs" / "cifar_resnet20" / "seed0" / "result.json").write_text("{}")
    with pytest.raises(SystemExit, match="exists already"):
        slices.main(["merge", "--root", str(root), "--into", str(into), "static"])


@pytest.mark.parametrize("text, message", [("static\n", "expected 'TAG"), ("a/b --seeds 0\n", "expected 'TAG"),
                                           ("x --output o --seeds 0\n", "without --output"),
                                           ("x --seeds 0\nx --seeds 1\n", "a tag appears twice")])
def test_a_bad_slices_file_is_refused_with_its_line(tmp_path, text, message):
    (tmp_path / "s.txt").write_text(text)
    with pytest.raises(SystemExit, match=message):
        slices.read_slices(tmp_path / "s.txt")
    with pytest.raises(SystemExit, match="no such slices file"):
        slices.read_slices(tmp_path / "missing.txt")
