"""``python -m tl_course demo``: the whole lecture in one offline run, with timings.

Loads the pretrained weights, builds the Tigger / Misty / neither splits, caches the frozen network's
features, trains the new softmax on them and prints validation-selected test accuracy.
"""
from __future__ import annotations

import argparse
import time

from . import (cached_features, count_parameters, fit, freeze, get_device, get_profile, load_pretrained,
               replace_head, seed_everything, top_stages)
from .data import CLASSES, cat_detector_splits


def demo(profile_name: str | None = None, device: str | None = None) -> float:
    profile = get_profile(profile_name)
    device = get_device(device)
    print(f"profile {profile.name}: {profile.image_size} px, {profile.train_per_class} training photos per class,"
          f" device {device}")
    t = time.perf_counter()
    model, preprocess, categories = load_pretrained("efficientnet_lite0", image_size=profile.image_size)
    print(f"[{time.perf_counter() - t:6.2f} s] loaded EfficientNet-Lite0 ImageNet weights "
          f"({len(categories)} classes)")
    t = time.perf_counter()
    splits = cat_detector_splits(profile.train_per_class, profile.val_per_class, profile.test_per_class)
    print(f"[{time.perf_counter() - t:6.2f} s] splits: train {splits.train.counts()}, val {len(splits.val)},"
          f" test {len(splits.test)}")
    seed_everything(0)  # the new head's initial weights: the same on every run
    replace_head(model, len(CLASSES))
    freeze(model, trainable_stages=1)
    trainable, total = count_parameters(model)
    print(f"          new 3-way softmax; trainable parameters {trainable:,} of {total:,}")
    features = {}
    for name in ("train", "val", "test"):
        t = time.perf_counter()
        features[name] = cached_features(model, getattr(splits, name), preprocess, device=device,
                                         batch_size=profile.batch_size, progress=False)
        print(f"[{time.perf_counter() - t:6.2f} s] {name} features {tuple(features[name].features.shape)}"
              " (cached on disk: instant on the next run)")
    t = time.perf_counter()
    history = fit(top_stages(model), features["train"], features["val"], test=features["test"],
                  epochs=profile.head_epochs, lr=1e-2, device=device, progress=False)
    print(f"[{time.perf_counter() - t:6.2f} s] trained the softmax for {profile.head_epochs} epochs on cached "
          f"features ({history.seconds_per_epoch() * 1e3:.1f} ms per epoch); best validation epoch "
          f"{history.best_epoch}, val accuracy {history.best_val_acc:.3f}")
    result = history.test
    per_class = ", ".join(f"{c} {a:.2f}" for c, a in zip(CLASSES, result.per_class_accuracy))
    print(f"test accuracy {result.accuracy:.3f} ({per_class})")
    return result.accuracy


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tl_course")
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="offline end-to-end demo: cache features, train the softmax, print accuracy")
    d.add_argument("--profile", choices=["ci", "cpu", "gpu"], default=None)
    d.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    if args.command == "demo":
        try:  # a bad TL_COURSE_PROFILE or device: one sentence, not a traceback (and --help never reads them)
            get_profile(args.profile)
            get_device(args.device)
        except ValueError as err:
            parser.error(str(err))
        demo(args.profile, args.device)


if __name__ == "__main__":
    main()
