"""Run profiles and device choice: one place that decides how big a run is and where it runs.

``TL_COURSE_PROFILE`` = ``ci`` | ``cpu`` | ``gpu`` (unset: ``gpu`` when CUDA is present, else ``cpu``)
sets image size, epochs and caps, so the same notebook runs in seconds in CI, in minutes on a
laptop and at full size on a Colab GPU.
"""
from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Mapping

import torch

__all__ = ["Profile", "PROFILES", "get_profile", "get_device", "autocast"]


@dataclass(frozen=True)
class Profile:
    """How big a run is. Every chapter reads its sizes from here, never from literals."""

    name: str
    image_size: int  #: side of the centre crop fed to the network
    train_per_class: int  #: cap on training images per class ("a few photos of Tigger")
    val_per_class: int
    test_per_class: int
    head_epochs: int  #: epochs for a softmax trained on cached features
    finetune_epochs: int  #: epochs for training through (part of) the backbone
    batch_size: int
    num_workers: int  #: DataLoader worker processes (the book's speed bench)
    # Chapter 8's two-domain sweep (and the caches chapter 7 and the ch08 notebook share with it).
    pets_sizes: tuple[int, ...] = (5, 20, 100)  #: Tigger / Misty / neither photos per class
    pets_val_per_class: int = 34  #: 102 validation photos: one photo is under 1 %
    pets_test_per_class: int = 50
    eurosat_sizes: tuple[int, ...] = (10, 50, 250)  #: EuroSAT tiles per class
    #: 500 validation tiles: with 200, picking the best epoch of the k = 1 head on validation was noisy enough
    #: to keep an epoch-1 head at 250 tiles per class (val .91, test .84)
    eurosat_val_per_class: int = 50
    eurosat_test_per_class: int = 100
    eurosat_image_size: int = 64  #: the tiles' native size
    sweep_ks: tuple[int, ...] = (1, 2, 3)  #: trainable stages in the sweep (``freeze(model, trainable_stages=k)``)
    sweep_seeds: int = 1
    #: EuroSAT tiles per class for chapter 7's runs through the *whole* network (scratch, full
    #: fine-tune): forward and backward on every tile, so CI stops well below ``eurosat_sizes``.
    eurosat_full_sizes: tuple[int, ...] = (10, 50)
    #: chapter 8's protocol (:func:`tl_course.book.experiments.sweep_plan`): the learning rates tried per cell,
    #: chosen on validation. ci tries one of each (the centre of the cpu grids), to stay fast.
    sweep_head_lrs: tuple[float, ...] = (3e-3,)
    sweep_lrs: tuple[float, ...] = (1e-3,)
    sweep_steps: int = 100  #: optimizer steps of every k >= 2 run (after the warm start)
    sweep_max_epochs: int = 15


#: The three profiles by name (read-only).
PROFILES: Mapping[str, Profile] = MappingProxyType({
    # CI: seconds per chapter on 2 CPU cores.
    "ci": Profile("ci", image_size=160, train_per_class=20, val_per_class=10, test_per_class=30,
                  head_epochs=60, finetune_epochs=3, batch_size=32, num_workers=0),
    # A laptop CPU: minutes per chapter; the two-domain sweep of chapter 8 bigger and with three seeds.
    "cpu": Profile("cpu", image_size=224, train_per_class=40, val_per_class=20, test_per_class=50,
                   head_epochs=100, finetune_epochs=5, batch_size=32, num_workers=2,
                   eurosat_sizes=(10, 50, 250, 500), sweep_ks=(1, 2, 3, 4), sweep_seeds=3,
                   eurosat_full_sizes=(10, 50, 250), sweep_head_lrs=(1e-3, 3e-3, 1e-2),
                   sweep_lrs=(3e-4, 1e-3, 3e-3), sweep_steps=300, sweep_max_epochs=40),
    # A GPU (Colab): full size.
    "gpu": Profile("gpu", image_size=224, train_per_class=100, val_per_class=30, test_per_class=70,
                   head_epochs=200, finetune_epochs=15, batch_size=64, num_workers=4,
                   pets_sizes=(5, 20, 50, 116), eurosat_sizes=(10, 50, 250, 880),
                   eurosat_val_per_class=20,  # 880 + 20 + 100 = all 1,000 tiles of a class
                   sweep_ks=(1, 2, 3, 4, 5, 6), sweep_seeds=3, eurosat_full_sizes=(10, 50, 250, 880),
                   sweep_head_lrs=(1e-3, 3e-3, 1e-2), sweep_lrs=(3e-4, 1e-3, 3e-3), sweep_steps=500,
                   sweep_max_epochs=60),
})


def get_profile(name: str | None = None, **overrides) -> Profile:
    """The active profile: ``name``, else ``$TL_COURSE_PROFILE``, else ``gpu`` if CUDA is present, else ``cpu``.

    >>> get_profile("ci").image_size
    160
    >>> get_profile("ci", head_epochs=5).head_epochs
    5
    """
    name = name or os.environ.get("TL_COURSE_PROFILE") or ("gpu" if torch.cuda.is_available() else "cpu")
    name = name.strip().lower()
    if name not in PROFILES:
        raise ValueError(f"Unknown TL_COURSE_PROFILE {name!r}: use one of {', '.join(PROFILES)}.")
    return replace(PROFILES[name], **overrides)


def get_device(device: str | torch.device | None = None) -> torch.device:
    """The device to run on: ``device`` if given, else CUDA > MPS > CPU.

    >>> get_device("cpu")
    device(type='cpu')
    """
    if device is not None:
        try:
            device = torch.device(device)
        except RuntimeError as err:
            raise ValueError(f"{device!r} is not a device: use 'cpu', 'cuda', 'cuda:0' or 'mps' ({err}).") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={str(device)!r} but PyTorch sees no CUDA GPU here (torch.cuda.is_available() "
                             "is False): pass device=None to use the best device there is, or 'cpu'.")
        if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device={str(device)!r} but there are only {torch.cuda.device_count()} CUDA GPU(s).")
        mps = getattr(torch.backends, "mps", None)
        if device.type == "mps" and not (mps is not None and mps.is_available()):
            raise ValueError("device='mps' but this PyTorch has no Apple GPU available: pass device=None or 'cpu'.")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def autocast(device: torch.device, enabled: bool = True):
    """Mixed precision (fp16) where it pays: on CUDA. A no-op elsewhere (CPU autocast is slower on small CPUs).

    >>> model, images = torch.nn.Linear(8, 2), torch.randn(4, 8)
    >>> with autocast(torch.device("cpu")):
    ...     logits = model(images)
    >>> logits.dtype  # fp32 on a CPU; torch.float16 on CUDA
    torch.float32
    """
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return nullcontext()
