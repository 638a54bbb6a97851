"""The calibration figures every analyser's benchmarks report (sdl.analysis.calibration)."""

import numpy as np

from sdl.analysis.calibration import ece_noise_floor, expected_calibration_error


def test_ece_is_the_gap_between_confidence_and_accuracy():
    y = np.array([0, 1, 0, 1])
    assert expected_calibration_error(np.eye(2)[y], y) == 0.0  # sure and right
    p = np.tile([0.9, 0.1], (4, 1))  # 90 % sure of class 0, right half the time
    assert abs(expected_calibration_error(p, y) - 0.4) < 1e-12


def test_noise_floor_is_what_a_calibrated_classifier_shows_by_chance():
    assert ece_noise_floor(np.tile([1.0, 0.0], (50, 1))) == (0.0, 0.0)  # sure answers cannot miss
    p = np.tile([0.8, 0.2], (100, 1))
    small, small95 = ece_noise_floor(p)
    large, _ = ece_noise_floor(np.tile([0.8, 0.2], (10000, 1)))
    # one bin, right ~ Binomial(n, 0.8)/n: E|mean - 0.8| = sqrt(2 / pi) * 0.4 / sqrt(n) (about 0.032 at n = 100)
    assert abs(small - np.sqrt(2 / np.pi) * 0.4 / 10) < 0.006
    assert small95 > small
    assert 7 < small / large < 14  # shrinks as 1 / sqrt(n): a tenth at 100 times the samples
    # a classifier calibrated by construction measures within its floor's 95th percentile on most draws
    rng = np.random.default_rng(3)
    conf = rng.uniform(0.5, 1.0, 1000)
    y = (rng.random(1000) >= conf).astype(int)  # class 0 right with probability conf
    assert expected_calibration_error(np.column_stack([conf, 1 - conf]), y) < ece_noise_floor(np.column_stack([conf, 1 - conf]))[1]
