"""Eq. (1)-(2): the CP tensor and the per-sample weight, against explicit loops."""

import pytest
import torch

from pedconv.method.cp import CPFactors, compose_weight, cp_tensor


def test_compose_weight_is_the_sum_over_ranks_of_outer_products_times_the_base():
    torch.manual_seed(0)
    batch, rank, cout, cin, kh, kw = 2, 3, 4, 5, 3, 2
    w = torch.randn(cout, cin, kh, kw, dtype=torch.float64)
    g, p, s = (torch.rand(batch, rank, n, dtype=torch.float64) for n in (cout, cin, kh * kw))
    out = compose_weight(w, g, p, s)
    want = torch.zeros(batch, cout, cin, kh, kw, dtype=torch.float64)
    for b in range(batch):
        for r in range(rank):
            for t in range(cout):
                for c in range(cin):
                    for k in range(kh * kw):
                        want[b, t, c, k // kw, k % kw] += g[b, r, t] * p[b, r, c] * s[b, r, k]
    torch.testing.assert_close(out, w * want)


@pytest.mark.parametrize("disabled", ["gamma", "phi", "psi"])
def test_a_disabled_factor_is_ones(disabled):
    torch.manual_seed(0)
    w = torch.randn(4, 2, 3, 3)
    factors = {"gamma": torch.rand(2, 1, 4), "phi": torch.rand(2, 1, 2), "psi": torch.rand(2, 1, 9)}
    sizes = {"gamma": 4, "phi": 2, "psi": 9}
    full = dict(factors, **{disabled: torch.ones(2, 1, sizes[disabled])})
    partial = dict(factors, **{disabled: None})
    torch.testing.assert_close(compose_weight(w, **partial), compose_weight(w, **full))


def test_factors_record():
    f = CPFactors(None, torch.ones(3, 2, 4), None)
    assert (f.batch, f.rank) == (3, 2)
    g, p, s = f.dense(5, 4, 9)
    assert g.shape == (3, 2, 5) and s.shape == (3, 2, 9) and p is f.phi
    assert f.narrow(1, 2).phi.shape == (2, 2, 4) and f.narrow(1, 2).gamma is None
    assert cp_tensor(f, torch.Size((5, 4, 3, 3))).shape == (3, 5, 4, 9)
    with pytest.raises(ValueError, match="at least one of gamma, phi, psi"):
        _ = CPFactors(None, None, None).rank
