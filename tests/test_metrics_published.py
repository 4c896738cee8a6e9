"""The P1 features as the papers' code defines them (challenge.metrics.*_published), checked
against values computed by hand from those definitions (shared/reference/protocols.md)."""

import numpy as np
import pytest

from challenge import metrics as M
from challenge.errors import ConfigError


def test_ms_published_uses_the_raw_curve_and_pads_slope_zero():
    # slopes: [pad=1, 1, 0, 5, 0]; max 5 at step 3 (the suite would normalise by v[-1] = 7 first)
    v = np.array([0.0, 1.0, 1.0, 6.0, 6.0])
    assert M.max_slope_step_published(v)[0] == 3
    # every slope 0.01 (<= 0.02 on the raw curve): 99, a fixed number, whatever the length
    flat = np.arange(10) * 0.01
    assert M.max_slope_step_published(flat)[0] == M.PUBLISHED_MS_NONE == 99
    # slopes 0.005, 0.005, 0.015, 0.005 stay under 0.02 on the raw curve (99), but normalised to
    # end at 1 (the suite's definition) they are 0.17, 0.17, 0.5, 0.17: step 3
    v = np.array([0.0, 0.005, 0.01, 0.025, 0.03])
    assert M.max_slope_step_published(v)[0] == 99
    assert M.max_slope_step(v, normalise=True)[0] == 3
    # max at step 1 ties with the padded slope 0: the suite's tie rule reports the later step (1);
    # the notebook's unstable argsort may give 0 or 1 here, depending on numpy's sort
    assert M.max_slope_step_published(np.array([0.0, 5.0, 5.5, 5.6]))[0] == 1


def test_ms_published_flat_start():
    v = np.array([[0.0, 0.0, 0.5, 0.5]])
    assert M.max_slope_step_published(v)[0] == 2


def test_ap_published_cuts_at_the_target_step_and_returns_100():
    v = np.array([0.0, 5.0, 19.9, 20.0, 30.0])
    assert M.plateau_length_published(v)[0] == 3  # first value >= 20
    assert M.plateau_length_published(v, target_steps=3)[0] == 100  # v[:3] never reaches 20
    assert M.plateau_length_published(v, target_steps=4)[0] == 3
    assert M.plateau_length_published(v, target_steps=0)[0] == 100
    two = np.stack([v, v * 0.1])
    np.testing.assert_array_equal(M.plateau_length_published(two, [5, 5]), [3, 100])


def test_nl_published_two_point_line_and_off_by_one():
    # line through (0, 0) and (9, 9): y = i. v[i] = i up to 11, then 14 at i = 12:
    # deviation at 12 = |14 - 12| / 12 * 100 = 16.7 % (not > 20), at 13: |20 - 13| / 13 = 53.8 %
    v = np.concatenate([np.arange(12.0), [14.0, 20.0, 21.0]])
    assert M.nonlinearity_step_published(v)[0] == 12  # first flagged i = 13, returned as i - 1
    assert M.nonlinearity_step_published(np.arange(15.0))[0] == 15  # never: n
    # a negative line never flags (division by the signed line), as in their code
    assert M.nonlinearity_step_published(-np.arange(15.0) * np.r_[np.ones(12), 3, 3, 3])[0] == 15


def test_nl_published_line_through_steps_0_and_9():
    # the first 10 points are not on a line: only steps 0 and 9 define it
    v = np.array([0, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3.4, 4.2, 5, 6, 7.0])
    pub = M.nonlinearity_step_published(v)[0]
    # line y = i / 3 through (0, 0), (9, 3); at i = 10: |3.4 - 3.333| / 3.333 = 2 %; i = 11:
    # |4.2 - 3.667| / 3.667 = 14.5 %; i = 12: |5 - 4| / 4 = 25 % > 20 -> 11
    assert pub == 11


def test_ar_published_returns_i_minus_one():
    # a curve flat at 1 then jumping: r_i = (v[i-1] i / 2) / trapz(v[:i]) with trapz over i - 1
    # unit intervals; flat part: r_i = (i / 2) / (i - 1), decreasing; the jump v[7] = 10 gives
    # i = 8: (10 * 8 / 2) / (6 + (1 + 10) / 2) = 40 / 11.5 = 3.48, the largest -> returns 7
    v = np.array([1.0] * 7 + [10.0, 10.0, 10.0])
    r = {i: (v[i - 1] * i / 2) / np.trapezoid(v[:i]) for i in range(2, 10)}
    best_i = max((i for i in r if i >= 6), key=lambda i: r[i])
    assert best_i == 8
    assert M.area_ratio_step_published(v)[0] == best_i - 1 == 7
    # the suite's area_ratio_step searches from i = 5 and returns i itself
    assert M.area_ratio_step(v)[0] == 8


def test_published_definitions_refuse_bad_input():
    with pytest.raises(ConfigError, match="end_step"):
        M.nonlinearity_step_published(np.arange(5.0))
    with pytest.raises(ConfigError, match="target steps"):
        M.plateau_length_published(np.arange(5.0), target_steps=-1)
