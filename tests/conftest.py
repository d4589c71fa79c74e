import inspect
import os
import re
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings

# Two threads per test process; under pytest-xdist the workers share the cores instead of
# oversubscribing them (torch's OpenMP threads spin while they wait).
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
THREADS = max(1, min(2, (os.cpu_count() or 1) // _WORKERS))
torch.set_num_threads(THREADS)

settings.register_profile(
    "ci",
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
settings.register_profile("dev", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Local edit-test loops: HYPOTHESIS_PROFILE=quick pytest ... (a tenth of the CI examples).
settings.register_profile("quick", max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def _seed_and_threads():
    """Seed 0 for every test; the thread count a test (or a CLI it calls) set is put back."""
    torch.manual_seed(0)
    yield
    if torch.get_num_threads() != THREADS:
        torch.set_num_threads(THREADS)


# The "triton" strategy on these CPU tensors runs in Triton's interpreter: switched on for every
# test (torch reads the variable only to compile GPU code), skipped where triton is missing. Its
# cases in the generic strategy matrices are slow there: tests/execution/test_fused.py checks the
# kernels in the default run, the matrices' "triton" cases run with -m slow.
INTERPRETED_IN_DEFAULT_RUN = ("test_fused.py", "test_ecosystem.py")


# A test that starts another Python process (the CLI, torchrun, a lock holder, a killed run) is
# an integration test: `pytest -m "not slow and not integration"` is the quick in-process loop.
_STARTS_A_PROCESS = re.compile(r"\bsubprocess\.|\bsubprocess_env\b|\b_pedconv\(")


def _starts_a_process(item) -> bool:
    function = getattr(item, "function", None)
    if function is None:
        return False
    try:
        return bool(_STARTS_A_PROCESS.search(inspect.getsource(function)))
    except (OSError, TypeError):
        return False


def pytest_collection_modifyitems(config, items):
    for item in items:
        if _starts_a_process(item):
            item.add_marker(pytest.mark.integration)
        params = getattr(getattr(item, "callspec", None), "params", {})
        if "triton" in [v for v in params.values() if isinstance(v, str)] and item.path.name not in (
            INTERPRETED_IN_DEFAULT_RUN
        ):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _triton_interpreter(request, monkeypatch):
    params = getattr(getattr(request.node, "callspec", None), "params", {})
    if "triton" in [v for v in params.values() if isinstance(v, str)]:
        pytest.importorskip("triton", reason="strategy 'triton' needs the triton package, which is not installed")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    yield


@pytest.fixture
def subprocess_env() -> dict[str, str]:
    """The environment of a ``python -m pedconv`` child: this checkout's sources, one thread."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else src
    return env
