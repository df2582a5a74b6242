"""Data-path overhead: a plain SGD epoch on full Fashion-MNIST with LeNet-5, batch 128.

Three ways to feed the same training step (torch.optim.SGD, momentum 0.9), all in this process:

    plain        pre-sliced contiguous batches (no data path at all: the baseline)
    fdshpo       fdshpo.data.ShuffledBatches over the normalised in-memory tensors
    torchvision  torchvision.datasets.FashionMNIST + ToTensor + Normalize through a DataLoader
                 (shuffle=True, batch 128, the standard recipe; --workers sets num_workers)

Rounds alternate the three so background load hits them alike; the median epoch time of each
is reported with its ratio to plain. The feeds are also timed alone (batches drawn, no training):
that time over the plain epoch is the data path's share of a step, which is robust to load on a
shared machine. Target: fdshpo under 1.10x plain (under 10% added to a plain step).

Usage: python bench/data.py [--rounds 3] [--steps N] [--workers 0] [--threads 2]
Needs the full Fashion-MNIST (apt-get install dataset-fashion-mnist, or --path FOLDER).
"""

from __future__ import annotations

import argparse
import gzip
import platform
import shutil
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path

import torch
from torch import nn

from fdshpo.data import ShuffledBatches, load_dataset
from fdshpo.data.sample import FASHION_MNIST_MEAN, FASHION_MNIST_STD
from fdshpo.data.standard import DEBIAN_FASHION_MNIST, IDX_FILES, idx_file
from fdshpo.models import build_model


def train_epoch(batches, steps: int) -> float:
    """Seconds for ``steps`` SGD steps of a fresh LeNet-5 fed by ``batches``."""
    model = build_model("lenet", (1, 28, 28), 10, seed=0)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss_fn = nn.functional.cross_entropy
    started = time.perf_counter()
    for step, (x, y) in enumerate(batches):
        if step == steps:
            break
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()
    return time.perf_counter() - started


def feed_only(batches, steps: int) -> float:
    """Seconds to draw ``steps`` batches without training on them."""
    started = time.perf_counter()
    for step, (x, _) in enumerate(batches):
        if step == steps:
            break
        x.sum()  # touch the batch
    return time.perf_counter() - started


def torchvision_root(folder: Path, into: Path) -> Path:
    """A torchvision FashionMNIST root with the raw files gunzipped (its md5s skip .gz here)."""
    raw = into / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for stem, _ in IDX_FILES.values():
        source = idx_file(folder, stem)
        opener = gzip.open if source.suffix == ".gz" else open
        with opener(source, "rb") as src, open(raw / stem, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return into


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=None, help="steps per epoch (default all)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader num_workers")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--path", type=Path, default=DEBIAN_FASHION_MNIST)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    import torchvision
    from torchvision import transforms

    started = time.perf_counter()
    ds = load_dataset("fashion-mnist", path=args.path)
    load_seconds = time.perf_counter() - started
    x, y = ds.train_images, ds.train_labels
    steps = args.steps or len(x) // 128
    plain = [(x[i * 128:(i + 1) * 128], y[i * 128:(i + 1) * 128]) for i in range(steps)]

    with tempfile.TemporaryDirectory() as tmp:
        root = torchvision_root(args.path, Path(tmp))
        tv = torchvision.datasets.FashionMNIST(
            str(root), train=True, download=False, transform=transforms.Compose([
                transforms.ToTensor(),
                transforms.Normalize((FASHION_MNIST_MEAN,), (FASHION_MNIST_STD,))]))
        feeds = {
            "plain": lambda: plain,
            "fdshpo": lambda: ShuffledBatches(x, y, 128, steps, seed=0),
            "torchvision": lambda: torch.utils.data.DataLoader(
                tv, batch_size=128, shuffle=True, drop_last=True, num_workers=args.workers,
                generator=torch.Generator().manual_seed(0)),
        }
        train_epoch(plain, min(steps, 20))  # warm-up
        times: dict[str, list[float]] = {name: [] for name in feeds}
        alone: dict[str, list[float]] = {name: [] for name in feeds}
        for _ in range(args.rounds):
            for name, feed in feeds.items():
                times[name].append(train_epoch(feed(), steps))
                alone[name].append(feed_only(feed(), steps))

    base = statistics.median(times["plain"])
    print(f"# data path vs plain step: LeNet-5, Fashion-MNIST, batch 128, {steps} steps/epoch")
    print(f"- date: {date.today()}; machine: {platform.machine()} {platform.processor() or ''}"
          f" ({torch.get_num_threads()} torch threads), Python {platform.python_version()}, "
          f"torch {torch.__version__}, torchvision {torchvision.__version__}")
    print(f"- load + normalise the 70,000 images into tensors once: {load_seconds:.2f} s")
    print(f"- rounds: {args.rounds}; DataLoader num_workers={args.workers}\n")
    print("| feed | median epoch (s) | ms/step | vs plain | feed alone ms/step | feed alone / "
          "plain step |\n|---|---|---|---|---|---|")
    for name, values in times.items():
        med, feed = statistics.median(values), statistics.median(alone[name])
        print(f"| {name} | {med:.2f} | {1000 * med / steps:.2f} | {med / base:.3f}x | "
              f"{1000 * feed / steps:.3f} | {feed / base:.1%} |")


if __name__ == "__main__":
    main()
