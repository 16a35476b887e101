"""scorepde.stats: means with t-intervals and paired differences, against closed forms."""

import math

import pytest
from scipy import stats as st

from scorepde.stats import mean_se, paired_difference


def test_mean_se_matches_scipy():
    xs = [1.0, 2.5, 2.0, 4.0]
    m = mean_se(xs)
    assert m["mean"] == pytest.approx(2.375)
    assert m["sd"] == pytest.approx(st.tstd(xs))  # ddof = 1
    assert m["se"] == pytest.approx(st.sem(xs))
    lo, hi = st.t.interval(0.95, len(xs) - 1, loc=2.375, scale=st.sem(xs))
    assert (m["lo"], m["hi"]) == (pytest.approx(lo), pytest.approx(hi))


def test_mean_se_single_value_has_no_interval():
    m = mean_se([3.0])
    assert m["mean"] == 3.0 and m["sd"] is None and m["lo"] is None


def test_paired_difference_is_the_interval_of_the_differences():
    a, b = [3.1, 2.9, 3.4], [3.0, 3.0, 3.0]
    d = paired_difference(a, b)
    assert d["diffs"] == pytest.approx([0.1, -0.1, 0.4])
    ref = st.ttest_rel(a, b)  # same t statistic
    assert d["mean"] / d["se"] == pytest.approx(ref.statistic)
    assert d["excludes_zero"] is False
    # a shift shared by both methods (a seed's luck) cancels in the pairs, not in the means
    shared = [10.0, -5.0, 0.0]
    d2 = paired_difference([x + s for x, s in zip(a, shared)], [x + s for x, s in zip(b, shared)])
    assert d2["half_width"] == pytest.approx(d["half_width"])
    assert paired_difference([1.0, 2.0, 3.0], [0.0, 1.1, 1.9])["excludes_zero"] is True


def test_paired_difference_level():
    a, b = [1.0, 1.3, 0.8, 1.1], [0.0, 0.1, 0.2, 0.0]
    w90, w99 = paired_difference(a, b, 0.90)["half_width"], paired_difference(a, b, 0.99)["half_width"]
    assert w90 < paired_difference(a, b)["half_width"] < w99


@pytest.mark.parametrize(
    "a,b,match",
    [([1.0, 2.0], [1.0], "same seeds"), ([], [], "empty"), ([1.0, math.nan], [1.0, 2.0], "non-finite")],
)
def test_bad_input(a, b, match):
    with pytest.raises(ValueError, match=match):
        paired_difference(a, b)


def test_bad_level():
    with pytest.raises(ValueError, match="level"):
        mean_se([1.0, 2.0], level=95)


def test_standard_error_matches_scipy_for_lists_arrays_and_tensors():
    import numpy as np
    import torch

    from scorepde.stats import standard_error

    xs = [1.0, 2.5, 2.0, 4.0, -1.0]
    for v in (xs, np.array(xs), torch.tensor(xs, dtype=torch.float32), torch.tensor([xs])):
        assert standard_error(v) == pytest.approx(st.sem(xs), rel=1e-7)
    assert math.isnan(standard_error([3.0])) and math.isnan(standard_error([]))


def test_pool_chunks_is_one_evaluation_of_all_items():
    """Two chunks of 2 and 3 items, 3 repeats: the pool equals evaluating all 5 items at once."""
    import numpy as np

    from scorepde.stats import pool_chunks, standard_error

    rng = np.random.default_rng(0)
    full = rng.normal(size=(3, 5))  # [repeat, item]
    chunks = [full[:, :2], full[:, 2:]]
    out = pool_chunks([c.mean(1) for c in chunks], [c.mean(0) for c in chunks])
    assert out["per_repeat"] == pytest.approx(full.mean(1).tolist(), rel=1e-12)
    assert out["mean"] == pytest.approx(full.mean(), rel=1e-12) and out["n_items"] == 5
    assert out["se"] == pytest.approx(st.sem(full.mean(1)), rel=1e-12)
    assert out["se"] == standard_error(out["per_repeat"])
    with pytest.raises(ValueError, match="same number of repeats"):
        pool_chunks([[1.0, 2.0], [1.0]], [[1.0], [2.0]])


def test_paired_eval_se_is_rms_over_seeds_of_the_paired_item_se():
    from scorepde.stats import paired_eval_se

    a = {0: [1.0, 2.0, 3.5], 1: [0.0, 0.5, 0.2, 0.1]}
    b = {0: [1.1, 1.8, 3.0], 1: [0.0, 0.4, 0.4, 0.0]}
    se = [st.sem([x - y for x, y in zip(a[s], b[s])]) for s in (0, 1)]
    assert paired_eval_se(a, b) == pytest.approx(math.sqrt((se[0] ** 2 + se[1] ** 2) / 2))
    assert paired_eval_se(a, b, keys=[1]) == pytest.approx(se[1])
    # what both models share per image cancels
    shift = [5.0, -3.0, 0.5]
    assert paired_eval_se(
        {0: [x + d for x, d in zip(a[0], shift)]}, {0: [y + d for y, d in zip(b[0], shift)]}
    ) == pytest.approx(se[0])
    with pytest.raises(ValueError, match="same items"):
        paired_eval_se({0: [1.0, 2.0]}, {0: [1.0]})
