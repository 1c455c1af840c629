"""Benchmark of the course's speed claims: ``python -m tl_course.book.bench`` prints one table.

1. Feature extraction (decode + preprocess + forward, through a DataLoader) against the pure forward
   pass on already-decoded tensors: how much of the network's speed the pipeline keeps (goal >= 90 %).
2. One epoch training the softmax on cached features against one epoch through the frozen backbone
   (goal >= 1000x faster).
3. Training the top k stages from activations cached at the freeze point against training them from
   images, next to the FLOP ratio of the two: the speed-up caching would give if every layer ran at the
   same FLOP/s. On a CPU the measured speed-up beats it, because the frozen bottom's depthwise
   convolutions run at far fewer FLOP/s than the top's dense 1x1 convolutions and linear layers.
"""
from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..data import ImageDataset, cat_detector_splits
from ..features import bottom_stages, extract_features, top_stages
from ..freezing import freeze, stages
from ..models import load_pretrained, replace_head
from ..profiles import get_device, get_profile
from ..training import TrainOptions, fit


def _forward_flops(module, x) -> int:
    """FLOPs of one forward pass (torch's counter; its backward formulas over-count depthwise convs,
    so backward is estimated as 2x forward, the usual rule)."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(x)
    return counter.get_total_flops()


def run(images: int, image_size: int, device: torch.device, ks: list[int], batch_size: int,
        num_workers: int, head_epochs: int) -> list[tuple[str, str, str, str]]:
    per_class = -(-images // 3)
    splits = cat_detector_splits(train_per_class=per_class, val_per_class=1, test_per_class=1)
    samples = splits.train
    model, preprocess, _ = load_pretrained(image_size=image_size)
    replace_head(model, 3)
    model.to(device).eval()
    dataset = ImageDataset(samples, preprocess)
    rows = []

    # 1. extraction vs pure forward on decoded tensors; each timed twice, best kept (the first pass over
    # a batch size pays one-off allocation and thread start-up costs, which are not the pipeline's)
    decoded = torch.stack([dataset[i][0] for i in range(len(dataset))])
    bottom = bottom_stages(model)

    def pure_forward() -> float:
        with torch.inference_mode():
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for i in range(0, len(decoded), batch_size):
                bottom(decoded[i:i + batch_size].to(device))
            if device.type == "cuda":
                torch.cuda.synchronize()
            return time.perf_counter() - t0

    def extraction():
        t0 = time.perf_counter()
        result = extract_features(model, dataset, device=device, batch_size=batch_size, num_workers=num_workers)
        return time.perf_counter() - t0, result

    forward_s = min(pure_forward() for _ in range(2))
    runs = [extraction() for _ in range(2)]
    extract_s = min(seconds for seconds, _ in runs)
    features, labels = runs[-1][1]
    n = len(decoded)
    rows.append(("extraction vs pure forward", f"{n / extract_s:.1f} img/s", f"{n / forward_s:.1f} img/s",
                 f"{forward_s / extract_s:.0%} (goal >= 90 %)"))

    # 2. head epoch on cached features vs an epoch through the frozen backbone
    freeze(model, trainable_stages=1)
    head = top_stages(model)
    h_head = fit(head, (features, labels), epochs=head_epochs, lr=1e-2, batch_size=batch_size, device=device,
                 progress=False)
    h_full = fit(model, dataset, epochs=1, lr=1e-2, batch_size=batch_size, device=device, progress=False,
                 options=TrainOptions(num_workers=num_workers))
    head_epoch, full_epoch = h_head.seconds_per_epoch(), h_full.seconds_per_epoch()
    rows.append(("softmax epoch: cached vs through backbone", f"{head_epoch * 1e3:.2f} ms", f"{full_epoch:.2f} s",
                 f"{full_epoch / head_epoch:,.0f}x (goal >= 1000x)"))

    # 3. top-k stages from cached activations vs from images, next to the FLOP ratio
    n_stages = len(stages(model))
    x1 = decoded[:batch_size].to(device)
    for k in ks:
        cut = n_stages - k
        freeze(model, trainable_stages=k)
        acts, acts_labels = extract_features(model, dataset, cut=cut, device=device, batch_size=batch_size,
                                             num_workers=num_workers)
        top = top_stages(model, cut)
        h_cached = fit(top, (acts, acts_labels), epochs=2, lr=1e-3, batch_size=batch_size, device=device,
                       progress=False)
        h_images = fit(model, dataset, epochs=1, lr=1e-3, batch_size=batch_size, device=device, progress=False,
                       options=TrainOptions(num_workers=num_workers))
        bottom_k = bottom_stages(model, cut).eval()
        with torch.no_grad():
            a1 = bottom_k(x1)
        f_bottom, f_top = _forward_flops(bottom_k, x1), _forward_flops(top.eval(), a1)
        # from images: frozen bottom forward + top forward and backward; from the cache: the top only
        flops_images, flops_cached = f_bottom + 3 * f_top, 3 * f_top
        cached_epoch = h_cached.epochs[-1]["seconds"]  # second epoch: no first-call warm-up
        rows.append((f"top {k} stages: cached activations vs images", f"{cached_epoch:.3f} s",
                     f"{h_images.seconds_per_epoch():.2f} s",
                     f"{h_images.seconds_per_epoch() / cached_epoch:.1f}x (FLOP ratio {flops_images / flops_cached:.1f}x)"))
    return rows


def format_table(rows, header=("measurement", "fast path", "reference", "ratio")) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _ks(text: str) -> list[int]:
    try:
        ks = [int(k) for k in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of whole numbers") from None
    if not ks or min(ks) < 1 or max(ks) > 9:
        raise argparse.ArgumentTypeError(f"each k must be between 1 and 9 (EfficientNet-Lite0 has 10 stages), got {text}")
    return ks


def main(argv: list[str] | None = None) -> None:
    # The profile only supplies defaults, read after parsing: a bad TL_COURSE_PROFILE must not break --help.
    parser = argparse.ArgumentParser(prog="python -m tl_course.book.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=_positive, default=96, help="images to time (default 96)")
    parser.add_argument("--image-size", type=_positive, default=None, help="default: the profile's")
    parser.add_argument("--device", default=None, help="cuda, mps or cpu (default: best available)")
    parser.add_argument("--batch-size", type=_positive, default=32)
    parser.add_argument("--num-workers", type=int, default=None, help="default: the profile's")
    parser.add_argument("--head-epochs", type=_positive, default=50)
    parser.add_argument("--ks", type=_ks, default=[1, 2, 3, 4],
                        help="numbers of top stages to train (default 1,2,3,4)")
    args = parser.parse_args(argv)
    try:
        profile = get_profile()
        device = get_device(args.device)
    except ValueError as err:
        parser.error(str(err))
    image_size = args.image_size or profile.image_size
    num_workers = profile.num_workers if args.num_workers is None else args.num_workers
    if num_workers < 0:
        parser.error(f"--num-workers must be 0 or more, got {num_workers}")
    torch.manual_seed(0)
    print(f"EfficientNet-Lite0, {image_size} px, {args.images} images, batch {args.batch_size}, "
          f"device {device}, {torch.get_num_threads()} threads, {num_workers} loader workers")
    rows = run(args.images, image_size, device, args.ks, args.batch_size, num_workers, args.head_epochs)
    print(format_table(rows))


if __name__ == "__main__":
    main()
