"""The sentences the book writes about its own numbers (issue 18, item 4): each case below is a sentence
that once misread its numbers on a page."""
from __future__ import annotations

import math

import pytest

from tl_course.book import wording


def test_ch02_a_network_at_43_percent_training_accuracy_did_not_learn_its_photos_by_heart():
    text = wording.fit_sentence(0.43, 0.333, 60)
    assert "by heart" not in text and "not even fitted" in text and "43.0 %" in text
    assert "by heart" in wording.fit_sentence(1.0, 0.40, 60)
    assert "by heart" not in wording.fit_sentence(0.95, 0.90, 60)  # high train AND test: no memorising


def test_ch05_extraction_twice_a_forward_epoch_is_not_about_one():
    assert wording.ratio_phrase(2.0, 1.0) == "about twice as long as"
    assert wording.ratio_phrase(1.05, 1.0) == "about as long as"
    assert wording.ratio_phrase(3.1, 1.0) == "about 3 times as long as"


def test_ch07_52_s_and_13_s_do_not_cost_about_the_same():
    text = wording.cost_comparison(52, 13, "the pretrained run", "the scratch run")
    assert "about the same" not in text and "4 times" in text and "(52 s and 13 s)" in text
    assert "about the same" in wording.cost_comparison(13, 12, "a", "b")
    assert "about the same" not in wording.cost_comparison(107, 142, "a", "b")  # 25 % less is not the same


def test_ch07_a_fine_tune_that_fell_from_87_4_is_not_already_at_79():
    text = wording.start_sentence(0.790, 0.874, noise=0.02)
    assert "already" not in text and "down from" in text and "87.4 %" in text
    assert "already" in wording.start_sentence(0.90, 0.874, noise=0.02)


def test_ch08_plus_4_7_is_not_as_much_as_plus_2_1():
    text = wording.more_on(0.021, 0.047, "pets", "EuroSAT", noise=0.01)
    assert text.startswith("less on pets") and "as much" not in text
    assert wording.more_on(0.047, 0.021, "EuroSAT", "pets", noise=0.01).startswith("more on EuroSAT")
    close = wording.more_on(0.021, 0.024, "pets", "EuroSAT", noise=0.01)
    assert close.startswith("less on pets") and "within the noise" in close
    wide = wording.more_on(0.021, 0.047, "pets", "EuroSAT", noise=0.05)  # even within the noise: not "as much"
    assert "as much" not in wide and wide.startswith("less") and "within the noise" in wide


def test_ch08_small_different_agrees_when_the_earlier_probe_wins():
    assert wording.regime_agrees("small, different", best_k=1, gain=0.0, noise=0.03, probe_cut=7, top_cut=9,
                                 probe_gain=0.047)
    assert not wording.regime_agrees("small, different", best_k=1, gain=0.0, noise=0.03, probe_cut=9, top_cut=9,
                                     probe_gain=0.0)
    assert not wording.regime_agrees("small, different", best_k=1, gain=0.0, noise=0.03, probe_cut=6, top_cut=9,
                                     probe_gain=-0.01)
    assert wording.regime_agrees("small, similar", best_k=2, gain=0.01, noise=0.03)  # deeper but within noise
    assert not wording.regime_agrees("large, different", best_k=2, gain=-0.01, noise=0.03)
    with pytest.raises(ValueError, match="Unknown regime"):
        wording.regime_agrees("medium", best_k=1, gain=0.0, noise=0.0)


def test_ch09_a_tie_within_one_validation_photo_ships_the_simpler_k():
    assert wording.simplest_within({1: 69 / 76, 2: 70 / 76}, tolerance=1 / 76) == 1
    assert wording.simplest_within({1: 68 / 76, 2: 70 / 76}, tolerance=1 / 76) == 2
    assert wording.simplest_within({3: 0.5, 2: 0.5}, tolerance=0.0) == 2


def test_depth_trend_reads_a_table_of_best_depths():
    assert wording.depth_trend({10: 2, 50: 2, 250: 1}) == "shrinks with the data"
    assert wording.depth_trend({10: 1, 50: 2, 250: 3}) == "grows with the data"
    assert wording.depth_trend({250: 1, 10: 1}) == "stays at 1 at every size"
    assert wording.depth_trend({10: 2, 50: 1, 250: 3}) == "does not grow steadily with the data"
    assert "every size" not in wording.depth_trend({10: 4})  # one size is not a trend


def test_gains_carry_their_sign_and_the_noise_decides_the_verb():
    assert "falls below" in wording.gain_sentence(-0.054, 0.02, "full", "frozen")
    assert "beats" in wording.gain_sentence(0.047, 0.02, "k = 2", "k = 1")
    assert "within the noise" in wording.gain_sentence(0.01, 0.02, "k = 2", "k = 1")
    assert wording.compare(0.5, 0.5) == "about the same as"


def test_flowchart_branches_say_when_the_scale_does_not_show_them():
    assert wording.branch_evidence(0.047, 0.03, "x").startswith("measured: +4.7")
    assert wording.branch_evidence(-0.054, 0.02, "x").startswith("not shown at this scale")
    assert wording.branch_evidence(None, None, "x").startswith("not shown at this scale")


def test_noise_is_at_least_one_photo():
    assert wording.noise_of(1.0, 30) == pytest.approx(1 / 30)
    assert wording.noise_of(0.5, 100) == pytest.approx(0.1)


def test_unmeasured_numbers_are_refused_in_one_sentence():
    with pytest.raises(ValueError, match="NaN"):
        wording.compare(math.nan, 0.5)
    with pytest.raises(ValueError, match="nothing to choose"):
        wording.simplest_within({}, 0.0)
