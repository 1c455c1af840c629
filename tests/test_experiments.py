"""tl_course.book.experiments: one-pass caches compatible with cached_features, nested subsets, warm-started
runs that leave the model alone, both BatchNorm policies, and the table readers."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import tl_course.features as features_module
from tl_course import freezing
from tl_course.data import eurosat_splits
from tl_course.book.experiments import (RunResult, Setup, SweepPlan, best_k_by_val, check_grid, choose_by_val,
                                   epochs_for, first_per_class, html_table, linear_probe,
                                   split_features, summarise, sweep, sweep_cuts, sweep_plan, train_head,
                                   train_top_k, warm_cache)
from tl_course.cache import cached_features
from tl_course.features import extract_features
from tl_course.data import ImageDataset
from tl_course.models import load_pretrained, replace_head

from conftest import DATA

EUROSAT = DATA / "eurosat" / "2750"
pytestmark = pytest.mark.skipif(not EUROSAT.is_dir(), reason=f"no EuroSAT tiles in {EUROSAT}")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    pre = load_pretrained(image_size=32)
    splits = eurosat_splits(4, 3, 3, seed=0, root=DATA, download=False)
    model = replace_head(pre.model, 10)
    return Setup("eurosat", model, pre.preprocess, splits, (2, 4), splits.classes)


@pytest.fixture(scope="module")
def feats(setup, tmp_path_factory):
    directory = tmp_path_factory.mktemp("cache")
    out = split_features(setup, cuts=sweep_cuts(setup.model, (1, 2, 3)), pooled_cuts=[2, 5], directory=directory)
    out["directory"] = directory
    return out


def test_one_pass_cache_is_what_cached_features_reads(setup, feats, monkeypatch):
    def no_extraction(*args, **kwargs):
        raise AssertionError("cached_features recomputed a cache warm_cache had written")

    monkeypatch.setattr(features_module, "extract_features", no_extraction)
    for cut in (9, 8, 7):
        fs = cached_features(setup.model, setup.splits.train, setup.preprocess, cut=cut,
                             directory=feats["directory"], progress=False)
        assert torch.equal(fs.features, feats["cut"][cut]["train"].features)
    assert warm_cache(setup.model, setup.splits.train, setup.preprocess, cuts=[9, 8], pooled_cuts=[5],
                      directory=feats["directory"]) == 0.0


def test_cached_activations_equal_the_bottom_of_the_network(setup, feats):
    x, y = extract_features(setup.model, ImageDataset(setup.splits.val, setup.preprocess), cut=7)
    assert torch.allclose(feats["cut"][7]["val"].features, x, atol=1e-5)
    assert torch.equal(feats["cut"][7]["val"].labels, y)
    full5, _ = extract_features(setup.model, ImageDataset(setup.splits.val, setup.preprocess), cut=5)
    assert torch.allclose(feats["pooled"][5]["val"].features, full5.mean(dim=(2, 3)), atol=1e-5)
    assert feats["seconds"] > 0


def test_first_per_class_is_the_nested_split(setup, feats):
    small = eurosat_splits(2, 3, 3, seed=0, root=DATA, download=False)
    fs = feats["cut"][9]["train"]
    x, y = first_per_class(fs, 2)
    rows = [fs.files.index(str(f)) for f in small.train.files]
    assert torch.equal(x, fs.features[rows]) and y.tolist() == small.train.labels
    with pytest.raises(ValueError, match="fewer than 5"):
        first_per_class(fs, 5)


def test_epochs_for_gives_equal_budgets_within_limits():
    assert epochs_for(2500, 128, 100, 5, 20) == 5
    assert epochs_for(100, 128, 100, 5, 20) == 20
    assert epochs_for(500, 128, 100, 5, 20) == 20  # 4 steps per epoch: capped
    assert epochs_for(1280, 128, 100, 5, 20) == 10


def test_warm_started_top_k_leaves_the_model_and_starts_from_the_head(setup, feats):
    before = copy.deepcopy(setup.model.state_dict())
    f9, f7 = feats["cut"][9], feats["cut"][7]
    head = train_head(setup.model, f9["train"], f9["val"], f9["test"], epochs=5, seed=0)
    again = train_head(setup.model, f9["train"], f9["val"], f9["test"], epochs=5, seed=0)
    assert all(torch.equal(head.head_state[k], again.head_state[k]) for k in head.head_state)  # seeded
    run = train_top_k(setup.model, 3, head, f7["train"], f7["val"], f7["test"], epochs=2, seed=0)
    assert run.k == 3 and 0 <= run.test_acc <= 1 and run.seconds >= head.seconds
    after = setup.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    with pytest.raises(ValueError, match="bn must be"):
        train_top_k(setup.model, 3, head, f7["train"], f7["val"], bn="sometimes")


def test_top_k_really_starts_from_the_warm_head(setup, feats, monkeypatch):
    f9, f8 = feats["cut"][9], feats["cut"][8]
    head = train_head(setup.model, f9["train"], f9["val"], epochs=5, seed=0)
    seen = {}

    def spy_fit(model, *args, **kwargs):
        seen["head"] = {k: v.clone() for k, v in freezing.stages(model)[-1].state_dict().items()}
        seen["trainable"] = [p.requires_grad for p in model.parameters()]
        raise RuntimeError("stop")

    import tl_course.book.experiments as experiments
    monkeypatch.setattr(experiments, "fit", spy_fit)
    with pytest.raises(RuntimeError, match="stop"):
        train_top_k(setup.model, 2, head, f8["train"], f8["val"], epochs=1)
    assert all(torch.equal(seen["head"][k], head.head_state[k]) for k in head.head_state)
    assert all(seen["trainable"])  # the top 2 stages train, nothing frozen inside them (bn="train")


@pytest.mark.parametrize("bn, moves", [("train", True), ("frozen", False)])
def test_batchnorm_policy(setup, feats, monkeypatch, bn, moves):
    f9, f8 = feats["cut"][9], feats["cut"][8]
    head = train_head(setup.model, f9["train"], f9["val"], epochs=3, seed=0)
    import tl_course.book.experiments as experiments

    real_fit = experiments.fit
    kept = {}

    def spy_fit(model, *args, **kwargs):
        bn_layer = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
        start = bn_layer.running_mean.clone()
        history = real_fit(model, *args, **kwargs)
        kept["moved"] = not torch.equal(start, bn_layer.running_mean)
        kept["weight_trains"] = bn_layer.weight.requires_grad
        return history

    monkeypatch.setattr(experiments, "fit", spy_fit)
    train_top_k(setup.model, 2, head, f8["train"], f8["val"], epochs=2, bn=bn)
    assert kept["moved"] is moves and kept["weight_trains"]


def test_linear_probe_beats_chance_on_real_tiles(feats):
    p = feats["pooled"][5]
    result = linear_probe(p["train"], p["val"], p["test"], epochs=30)
    assert 0.0 <= result.test_acc <= 1.0 and result.val_acc > 0.1  # 10 classes: chance is 0.1


def test_sweep_rows_and_equal_budget_per_row(setup, feats):
    plan = SweepPlan(steps=4, head_steps=10, head_epochs=15, batch_size=8, min_epochs=1, max_epochs=3)
    rows = sweep(setup.model, feats, sizes=(2, 4), ks=(1, 2, 3), seeds=(0,), plan=plan)
    assert [(r["size"], r["k"]) for r in rows] == [(2, 1), (2, 2), (2, 3), (4, 1), (4, 2), (4, 3)]
    for size in (2, 4):
        deep = [r for r in rows if r["size"] == size and r["k"] >= 2]
        assert len({r["steps"] for r in deep}) == 1  # every k >= 2 of a row gets the same budget
    assert set(rows[0]) >= {"size", "k", "seed", "val_acc", "test_acc", "seconds"}


def test_sweep_tries_every_rate_of_the_grid_and_keeps_the_validation_best(setup, feats, monkeypatch):
    import tl_course.book.experiments as ex

    tried = []
    real_head, real_top = ex.train_head, ex.train_top_k

    def spy_head(*args, **kwargs):
        tried.append(("head", kwargs["lr"]))
        run = real_head(*args, **kwargs)
        # the validation accuracy rises with the rate, the test accuracy falls: validation must decide
        run.val_acc, run.test_acc = kwargs["lr"], 1 - kwargs["lr"]
        return run

    def spy_top(*args, **kwargs):
        tried.append(("top", kwargs["lr"]))
        run = real_top(*args, **kwargs)
        run.val_acc, run.test_acc = -kwargs["lr"], kwargs["lr"]  # the smallest rate wins on validation
        return run

    monkeypatch.setattr(ex, "train_head", spy_head)
    monkeypatch.setattr(ex, "train_top_k", spy_top)
    plan = SweepPlan(steps=2, head_steps=4, head_epochs=15, batch_size=8, min_epochs=1, max_epochs=1,
                     head_lrs=(0.001, 0.003, 0.01), lrs=(0.0003, 0.001, 0.003))
    rows = sweep(setup.model, feats, sizes=(2,), ks=(1, 2), seeds=(0,), plan=plan)
    assert tried == [("head", 0.001), ("head", 0.003), ("head", 0.01),
                     ("top", 0.0003), ("top", 0.001), ("top", 0.003)]
    head_row, top_row = rows
    assert head_row["lr"] == 0.01 and head_row["test_acc"] == pytest.approx(0.99)  # validation-best, not test-best
    assert top_row["lr"] == 0.0003 and top_row["lr_at_edge"] and head_row["lr_at_edge"]
    assert len(top_row["curve"]) == top_row["epochs"]


def test_choose_by_val_never_looks_at_test_and_breaks_ties_by_grid_order():
    runs = [RunResult(2, 0, val_acc=v, test_acc=t, seconds=1.0, epochs=3, best_epoch=1, steps=3, lr=lr)
            for lr, v, t in ((1e-4, 0.80, 0.99), (1e-3, 0.85, 0.10), (1e-2, 0.85, 0.50))]
    assert choose_by_val(runs).lr == 1e-3
    with pytest.raises(ValueError, match="at least one"):
        choose_by_val([])


def test_grids_are_checked_and_each_profile_has_one():
    from tl_course.profiles import get_profile

    with pytest.raises(ValueError, match="ascending"):
        SweepPlan(lrs=(1e-2, 1e-3))
    with pytest.raises(ValueError, match="ascending"):
        check_grid((0.0, 1e-3))
    for name in ("cpu", "gpu"):
        plan = sweep_plan(get_profile(name))
        for grid in (plan.head_grid, plan.grid):
            assert len(grid) == 3 and grid[-1] / grid[0] == pytest.approx(10)  # 3 rates spanning 10x
        assert plan.head_grid[0] <= 1e-3 and plan.head_grid[-1] <= 1e-2  # centred lower than 1e-2
    assert len(sweep_plan(get_profile("ci")).grid) == 1  # ci: one rate, said on the page


def test_summarise_and_best_k_choose_on_validation_only():
    rows = [{"size": 10, "k": 1, "seed": s, "val_acc": .80, "test_acc": .99, "seconds": 1.0} for s in (0, 1)]
    rows += [{"size": 10, "k": 2, "seed": 0, "val_acc": .82, "test_acc": .50, "seconds": 2.0},
             {"size": 10, "k": 2, "seed": 1, "val_acc": .84, "test_acc": .50, "seconds": 2.0},
             {"size": 50, "k": 1, "seed": 0, "val_acc": .90, "test_acc": .90, "seconds": 1.0},
             {"size": 50, "k": 2, "seed": 0, "val_acc": .90, "test_acc": .95, "seconds": 1.0}]
    s = summarise(rows)
    assert s[1]["val_acc"] == pytest.approx(.83) and s[1]["val_acc_std"] == pytest.approx(0.01414, abs=1e-4)
    assert s[0]["n"] == 2 and s[2]["val_acc_std"] == 0.0
    assert best_k_by_val(rows) == {10: 2, 50: 1}  # test accuracy ignored; a tie goes to the cheaper k


def test_html_table_is_a_real_escaped_table():
    out = html_table([("a<b", "1.0 %")], ["name", "acc"])
    assert out.startswith("<table>") and "<th" in out and "a&lt;b" in out and "|" not in out


@pytest.mark.parametrize("name", ["ci", "cpu", "gpu"])
def test_every_profile_sweep_fits_the_offline_data(name):
    """Largest train + val + test per class must exist: 200 Bengal / Russian Blue photos, 1,000 tiles per class;
    and every validation set must hold >= 100 photos (one photo <= 1 %)."""
    from tl_course.profiles import get_profile

    p = get_profile(name)
    assert max(p.pets_sizes) + p.pets_val_per_class + p.pets_test_per_class <= 200
    assert max(p.eurosat_sizes) + p.eurosat_val_per_class + p.eurosat_test_per_class <= 1000
    assert 3 * p.pets_val_per_class >= 100 and 10 * p.eurosat_val_per_class >= 100
    assert max(p.eurosat_sizes) >= 250 and all(1 <= k < 10 for k in p.sweep_ks)
    assert name == "ci" or p.sweep_seeds >= 3
