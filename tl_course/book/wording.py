"""The sentences a book page writes about its own numbers: every comparison is decided here, from the
numbers, never typed on the page (so "higher" is never printed under a number that is lower).

Each function takes measured values and returns the words; the pages glue the result. Percentages are
fractions (0.874 = 87.4 %); a difference of accuracies is printed in percentage *points*.

>>> compare(0.874, 0.790, noise=0.02)
'higher than'
>>> points(0.047)
'+4.7 points'
"""
from __future__ import annotations

import math
from typing import Mapping

__all__ = [
    "accuracy_se",
    "noise_of",
    "points",
    "compare",
    "gain_sentence",
    "ratio_phrase",
    "cost_comparison",
    "fit_sentence",
    "start_sentence",
    "depth_trend",
    "more_on",
    "simplest_within",
    "regime_agrees",
    "branch_evidence",
]


def _fraction(name: str, value: float) -> float:
    value = float(value)
    if math.isnan(value):
        raise ValueError(f"{name} is NaN: a sentence cannot be written about a number that was not measured.")
    return value


def accuracy_se(p: float, n: int) -> float:
    """The standard error of an accuracy ``p`` measured on ``n`` photos (binomial): ``sqrt(p (1 - p) / n)``.

    >>> round(accuracy_se(0.9, 100), 3)
    0.03
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a whole number of photos >= 1, got {n!r}.")
    p = _fraction("p", p)
    return math.sqrt(max(p * (1 - p), 0.0) / n)


def noise_of(p: float, n: int, one_photo: bool = True) -> float:
    """The difference below which two accuracies on ``n`` photos are "about the same" here: twice the
    standard error of one accuracy, and never less than one photo (``1 / n``) when ``one_photo``.

    >>> round(noise_of(0.9, 100), 3), round(noise_of(1.0, 30), 3)
    (0.06, 0.033)
    """
    noise = 2 * accuracy_se(p, n)
    return max(noise, 1 / n) if one_photo else noise


def points(diff: float, signed: bool = True) -> str:
    """A difference of two accuracies in percentage points, with its sign.

    >>> points(0.047), points(-0.054), points(0.0), points(0.021, signed=False)
    ('+4.7 points', '-5.4 points', '+0.0 points', '2.1 points')
    """
    diff = _fraction("diff", diff)
    return f"{100 * diff:+.1f} points" if signed else f"{100 * abs(diff):.1f} points"


def compare(a: float, b: float, noise: float = 0.0) -> str:
    """How ``a`` compares with ``b``: "higher than", "lower than", or "about the same as" when
    ``|a - b| <= noise``.

    >>> compare(0.82, 0.874), compare(0.874, 0.82), compare(0.80, 0.81, noise=0.02)
    ('lower than', 'higher than', 'about the same as')
    """
    a, b = _fraction("a", a), _fraction("b", b)
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise!r}.")
    if abs(a - b) <= noise:
        return "about the same as"
    return "higher than" if a > b else "lower than"


def gain_sentence(gain: float, noise: float, what: str, over: str) -> str:
    """One sentence on a measured gain of ``what`` over ``over``: its sign, its size in points, and
    whether it is larger than ``noise``.

    >>> gain_sentence(0.047, 0.03, "k = 2", "the softmax alone")
    'k = 2 beats the softmax alone by 4.7 points, more than the noise (3.0 points).'
    >>> gain_sentence(-0.054, 0.02, "the full fine-tune", "the frozen head")
    'the full fine-tune falls below the frozen head by 5.4 points, more than the noise (2.0 points).'
    >>> gain_sentence(0.011, 0.033, "k = 2", "k = 1")
    'k = 2 and k = 1 are within the noise of each other (+1.1 points; noise 3.3 points).'
    """
    gain = _fraction("gain", gain)
    if abs(gain) <= noise:
        return f"{what} and {over} are within the noise of each other ({points(gain)}; noise {points(noise, False)})."
    verb = "beats" if gain > 0 else "falls below"
    return f"{what} {verb} {over} by {points(gain, False)}, more than the noise ({points(noise, False)})."


def ratio_phrase(a: float, b: float) -> str:
    """How ``a`` compares with ``b`` as a duration, in words that fit "took ___ the other": "about as long as"
    (within 25 %), "about twice as long as", "about 4 times as long as", "about three quarters as long as",
    "about half as long as", "a small fraction of" (under a third).

    >>> ratio_phrase(52, 13), ratio_phrase(2.1, 1.0), ratio_phrase(1.1, 1.0)
    ('about 4 times as long as', 'about twice as long as', 'about as long as')
    >>> ratio_phrase(0.5, 1.0), ratio_phrase(0.05, 1.0), ratio_phrase(2.6, 1.0)
    ('about half as long as', 'a small fraction of', 'about 3 times as long as')
    >>> ratio_phrase(107, 142), ratio_phrase(1.5, 1.0)
    ('about three quarters as long as', 'about one and a half times as long as')
    """
    a, b = _fraction("a", a), _fraction("b", b)
    if a < 0 or b <= 0:
        raise ValueError(f"need a >= 0 and b > 0 to compare durations, got {a!r} and {b!r}.")
    r = a / b
    if r < 1 / 3:
        return "a small fraction of"
    if r < 0.8:
        words = {0.5: "half", 2 / 3: "two thirds", 0.75: "three quarters"}
        return f"about {words[min(words, key=lambda f: abs(f - r))]} as long as"
    if r <= 1.25:
        return "about as long as"
    if r < 1.75:
        return "about one and a half times as long as"
    if r < 2.5:
        return "about twice as long as"
    return f"about {round(r)} times as long as"


def cost_comparison(a_seconds: float, b_seconds: float, a_name: str, b_name: str) -> str:
    """A sentence comparing two wall times; "cost about the same" only within 25 %.

    >>> cost_comparison(52, 13, "the pretrained run", "the scratch run")
    'the pretrained run took about 4 times as long as the scratch run (52 s and 13 s)'
    >>> cost_comparison(50, 45, "the pretrained run", "the scratch run")
    'the pretrained run and the scratch run cost about the same (50 s and 45 s)'
    """
    phrase = ratio_phrase(a_seconds, b_seconds)
    numbers = f"({a_seconds:.0f} s and {b_seconds:.0f} s)"
    if phrase == "about as long as":
        return f"{a_name} and {b_name} cost about the same {numbers}"
    return f"{a_name} took {phrase} {b_name} {numbers}"


def fit_sentence(train_acc: float, test_acc: float, n_train: int) -> str:
    """What the training accuracy says about a model's fit: memorised (training accuracy >= 90 % and far above
    test), under-trained (training accuracy below 70 %: it has not even fitted its own photos), or in between.

    >>> fit_sentence(0.43, 0.33, 60)[:64]
    'The training accuracy in the last epoch was 43.0 %: in this budg'
    >>> "by heart" in fit_sentence(0.43, 0.33, 60), "by heart" in fit_sentence(1.0, 0.4, 60)
    (False, True)
    """
    train_acc, test_acc = _fraction("train_acc", train_acc), _fraction("test_acc", test_acc)
    head = f"The training accuracy in the last epoch was {100 * train_acc:.1f} %"
    if train_acc >= 0.9 and train_acc - test_acc > 0.2:
        return (f"{head}: the network has learnt its {n_train} training photos nearly by heart, and what it learnt "
                "does not carry over to new photos.")
    if train_acc < 0.7:
        return (f"{head}: in this budget the network has not even fitted its own {n_train} training photos, so the "
                "test accuracy above measures a short schedule as much as a lack of data.")
    return (f"{head}, {100 * (train_acc - test_acc):+.1f} points above the test accuracy: it fits its "
            f"{n_train} training photos better than new ones.")


def start_sentence(first_val: float, start_val: float, noise: float) -> str:
    """Where a fine-tune is after its first epoch, against the validation accuracy of the head it started
    from (chapter 7): "already at" only when it did not fall.

    >>> start_sentence(0.79, 0.874, 0.02)
    'after its first epoch it is at 79.0 % on validation, down from the 87.4 % of the warm-started head it began with'
    >>> start_sentence(0.88, 0.874, 0.02)
    'after its first epoch it is already at 88.0 % on validation, about where its warm-started head was (87.4 %)'
    """
    first_val, start_val = _fraction("first_val", first_val), _fraction("start_val", start_val)
    where = compare(first_val, start_val, noise)
    if where == "lower than":
        return (f"after its first epoch it is at {100 * first_val:.1f} % on validation, down from the "
                f"{100 * start_val:.1f} % of the warm-started head it began with")
    if where == "higher than":
        return (f"after its first epoch it is already at {100 * first_val:.1f} % on validation, up from the "
                f"{100 * start_val:.1f} % of the warm-started head it began with")
    return (f"after its first epoch it is already at {100 * first_val:.1f} % on validation, about where its "
            f"warm-started head was ({100 * start_val:.1f} %)")


def depth_trend(best: Mapping[int, int]) -> str:
    """Whether the best depth (trainable stages, or any "how much is trained" rank) grows with the data, from
    ``{size: best depth}``: "grows with the data", "stays at k", "shrinks with the data", or "does not grow
    steadily with the data".

    >>> depth_trend({10: 1, 50: 2, 250: 2}), depth_trend({10: 2, 50: 2, 250: 1})
    ('grows with the data', 'shrinks with the data')
    >>> depth_trend({5: 1, 20: 1, 100: 1}), depth_trend({10: 1, 50: 3, 250: 2})
    ('stays at 1 at every size', 'does not grow steadily with the data')
    >>> depth_trend({10: 4})
    'is 4 at the one size measured (no trend to read)'

    """
    if not best:
        raise ValueError("best is empty: there is no depth to read a trend from.")
    depths = [best[n] for n in sorted(best)]
    if len(depths) == 1:
        return f"is {depths[0]} at the one size measured (no trend to read)"
    if len(set(depths)) == 1:
        return f"stays at {depths[0]} at every size"
    if all(a <= b for a, b in zip(depths, depths[1:])):
        return "grows with the data"
    if all(a >= b for a, b in zip(depths, depths[1:])):
        return "shrinks with the data"
    return "does not grow steadily with the data"


def more_on(a: float, b: float, a_name: str, b_name: str, noise: float) -> str:
    """Which of two gains is bigger, in words, with both gains: "more on X (...) than on Y (...)", or "less";
    "as much" only when they are equal to the printed digit. When the difference is within ``noise`` the
    sentence says so, instead of calling two different numbers equal.

    >>> more_on(0.021, 0.047, "the near domain", "the far one", noise=0.01)
    'less on the near domain (+2.1 points) than on the far one (+4.7 points)'
    >>> more_on(0.018, 0.049, "the far domain", "the near one", noise=0.05)
    'less on the far domain (+1.8 points) than on the near one (+4.9 points), a difference within the noise (5.0 points)'
    >>> more_on(0.0, 0.0, "the far domain", "the near one", noise=0.03)
    'as much on the far domain (+0.0 points) as on the near one (+0.0 points)'
    """
    a, b = _fraction("a", a), _fraction("b", b)
    pa, pb = points(a), points(b)
    if pa == pb:
        return f"as much on {a_name} ({pa}) as on {b_name} ({pb})"
    text = f"{'more' if a > b else 'less'} on {a_name} ({pa}) than on {b_name} ({pb})"
    if abs(a - b) <= noise:
        text += f", a difference within the noise ({points(noise, False)})"
    return text


def simplest_within(scores: Mapping[int, float], tolerance: float) -> int:
    """The simplest (smallest) option whose score is within ``tolerance`` of the best: what to ship when the
    validation set cannot tell two settings apart (chapter 9's graded answer: a tie within one validation photo
    ships the smaller ``k``).

    >>> simplest_within({1: 69 / 76, 2: 70 / 76}, tolerance=1 / 76)
    1
    >>> simplest_within({1: 60 / 76, 2: 70 / 76}, tolerance=1 / 76)
    2
    """
    if not scores:
        raise ValueError("scores is empty: there is nothing to choose from.")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance!r}.")
    best = max(_fraction(f"score of {k}", v) for k, v in scores.items())
    return min(k for k, v in scores.items() if v >= best - tolerance - 1e-12)


def regime_agrees(regime: str, *, best_k: int, gain: float, noise: float, probe_cut: int | None = None,
                  top_cut: int | None = None, probe_gain: float | None = None) -> bool:
    """Whether a measurement agrees with CS231n's advice for one of its four regimes ("small, similar",
    "large, similar", "small, different", "large, different"):

    - small, similar (a linear classifier on the top features): k = 1 chosen, or the deeper gain within noise;
    - large, similar / large, different (fine-tune): a deeper k chosen on validation and it gains on test;
    - small, different (a linear classifier on *earlier* layers): the probe chosen on validation sits below
      the top cut and beats the top cut on test (``probe_gain > 0``).

    >>> regime_agrees("small, different", best_k=1, gain=0.0, noise=0.03, probe_cut=7, top_cut=9,
    ...               probe_gain=0.047)
    True
    >>> regime_agrees("large, similar", best_k=1, gain=0.0, noise=0.03)
    False
    """
    if regime == "small, similar":
        return best_k == 1 or gain <= noise
    if regime in ("large, similar", "large, different"):
        return best_k > 1 and gain > 0
    if regime == "small, different":
        if probe_cut is None or top_cut is None or probe_gain is None:
            raise ValueError("small, different needs probe_cut, top_cut and probe_gain.")
        return probe_cut < top_cut and probe_gain > 0
    raise ValueError(f"Unknown regime {regime!r}: use 'small, similar', 'large, similar', 'small, different' or "
                     "'large, different'.")


def branch_evidence(gain: float | None, noise: float | None, where: str) -> str:
    """The measured line a flowchart branch carries (chapter 10): the gain that supports the branch and
    whether it clears the noise, or "not shown at this scale" when nothing measured it (``gain`` None) or it
    went the other way.

    >>> branch_evidence(0.047, 0.03, "EuroSAT, 250/class")
    'measured: +4.7 points (EuroSAT, 250/class)'
    >>> branch_evidence(0.011, 0.03, "pets, 100/class")
    'within noise: +1.1 points (pets, 100/class)'
    >>> branch_evidence(-0.054, 0.02, "EuroSAT, 50/class")
    'not shown at this scale: -5.4 points (EuroSAT, 50/class)'
    >>> branch_evidence(None, None, "")
    'not shown at this scale (not measured)'
    """
    if gain is None:
        return "not shown at this scale (not measured)"
    gain = _fraction("gain", gain)
    noise = 0.0 if noise is None else float(noise)
    if gain > noise:
        return f"measured: {points(gain)} ({where})"
    if gain > 0 or abs(gain) <= noise:
        return f"within noise: {points(gain)} ({where})"
    return f"not shown at this scale: {points(gain)} ({where})"
