"""The benchmark harness runs end to end and reports sane, complete tables (no timing asserts)."""

import json

import pytest

from pedconv.cli import main as cli_main
from pedconv.tools import benchmark


def test_conv_shapes_are_distinct_and_skip_the_stem():
    shapes = benchmark.conv_shapes("resnet50")
    assert len(shapes) == len(set(shapes))
    assert all(s.cin != 3 for s in shapes)  # the stem (3 -> 64) is not benchmarked
    assert {s.kind for s in shapes} == {"pointwise", "dense"}
    kinds = {s.kind for s in benchmark.conv_shapes("mobilenet_v2")}
    assert {"pointwise", "depthwise"} <= kinds


def test_layer_and_model_benches_tiny():
    rows = benchmark.bench_layers(["mobilenet_v2"], batch=2, reps=1, image_size=32, max_shapes=2, log=lambda s: None)
    assert len(rows) == 2
    for r in rows:
        for mode in ("train", "eval", "eval_b1"):
            assert r[mode]["static"] == pytest.approx(1.0)
            assert {"pedconv", "ped_factored", "ped_materialize", "ped_naive", "condconv4", "dyconv4"} <= set(r[mode])
            assert all(v > 0 for v in r[mode].values())
        assert r["mem"]["static"] == pytest.approx(1.0) and r["mem"]["pedconv"] > 0
    models = benchmark.bench_models((("resnet18", 2),), reps=1, image_size=32, eval_batch=2, log=lambda s: None)
    assert models[0]["train"]["static"] == pytest.approx(1.0) and "ped_naive" in models[0]["train"]


@pytest.mark.slow
def test_small_network_and_nd_sections_tiny():
    rows = benchmark.bench_small(widths=(4,), batch=4, reps=1, repeats=2, log=lambda s: None)
    (row,) = rows
    assert set(row["train"]) == set(benchmark.SMALL_MODELS)
    for mode in ("train", "eval"):
        assert row[mode]["static"] == {"median": 1.0, "min": 1.0, "max": 1.0}
        assert all(0 < v["min"] <= v["median"] <= v["max"] for v in row[mode].values())
    cases = {
        "1d": dict(benchmark.ND_CASES["1d"], cin=4, cout=4, input=(2, 4, 50)),
        "3d": dict(benchmark.ND_CASES["3d"], cin=4, cout=4, input=(2, 4, 3, 6, 6)),
    }
    nd = benchmark.bench_nd(reps=1, cases=cases, log=lambda s: None)
    assert [r["case"] for r in nd] == ["1d", "3d"]
    assert all(r[m]["pedconv"] > 0 and r[m]["static"] == 1.0 for r in nd for m in ("train", "eval", "eval_b1"))


def test_cli_quick_writes_markdown_json_png(tmp_path):
    out = tmp_path / "bench"
    assert cli_main(["bench", "--quick", "--threads", "1", "--out", str(out)]) == 0
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["layers"] and data["models"] and data["meta"]["quick"]
    assert "| resnet18" in out.with_suffix(".md").read_text()
    assert out.with_suffix(".png").stat().st_size > 1000


def test_models_with_every_strategy_under_autocast():
    """The GPU script's model section (experiments/gpu_bench.py), on the CPU: every strategy
    forced, bf16 autocast; the device and precision are named."""
    import torch

    with benchmark.use_runtime(benchmark.Runtime(amp=torch.bfloat16)) as rt:
        rows = benchmark.bench_models((("resnet18", 2),), reps=1, image_size=32, eval_batch=2, include_naive=False,
                                      strategies=True, log=lambda s: None)
        assert "bfloat16" in rt.describe()
    assert {"static", "pedconv", "ped_factored", "ped_materialize", "ped_hybrid"} == set(rows[0]["train"])
    assert all(v > 0 for mode in ("train", "eval", "eval_b1") for v in rows[0][mode].values())


@pytest.mark.slow
def test_models_with_the_registered_peers():
    rows = benchmark.bench_models((("resnet18", 2),), reps=1, image_size=32, eval_batch=2, include_naive=False,
                                  peers=True, log=lambda s: None)
    names = set(rows[0]["train"])
    assert {"dyconv", "odconv", "odconv4x", "kw", "dcd"} <= names
    assert "condconv" not in names  # no condconv_resnet18 is registered
    assert all(v > 0 for mode in ("train", "eval", "eval_b1") for v in rows[0][mode].values())


def test_bench_on_a_missing_gpu_is_a_one_line_error(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert cli_main(["bench", "--quick", "--device", "cuda", "--out", str(tmp_path / "b")]) == 1
    assert "--device cuda: CUDA is not available" in capsys.readouterr().err


@pytest.mark.parametrize(("flags", "message"), [
    (["--compile-mode", "reduce-overhead"], "--compile-mode needs --compile"),
    (["--skip-small", "--small-contestants", "pedconv"], "--small-contestants has no effect with --skip-small"),
    (["--skip-models", "--peers"], "--peers has no effect with --skip-models"),
])
def test_options_that_would_do_nothing_are_refused(tmp_path, capsys, flags, message):
    assert cli_main(["bench", "--quick", *flags, "--out", str(tmp_path / "b")]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_the_fused_kernel_gpu_script_runs_every_section_on_the_cpu(tmp_path):
    """experiments/fused_bench.py --quick on the CPU (the kernels in Triton's interpreter): every
    section written, correctness passed."""
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("triton", reason="the script times the triton strategy, which needs the triton package")
    script = Path(__file__).resolve().parents[2] / "experiments" / "fused_bench.py"
    subprocess.run([sys.executable, str(script), "--device", "cpu", "--quick", "--out", str(tmp_path)], check=True,
                   capture_output=True, timeout=600)
    for section in ("fused_correctness", "fused_ops_bf16", "fused_calibration", "fused_models_bf16",
                    "fused_layers_bf16"):
        assert (tmp_path / f"{section}.md").read_text().startswith(f"# {section}")
    assert json.loads((tmp_path / "fused_correctness.json").read_text())["data"]["ok"]
