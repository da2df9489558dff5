"""ELSA training speed against the floor of its matrix products.

One ELSA epoch must at least do, per batch of b users (x: the batch's sparse rows,
A: the (n_items, d) item matrix, G: the (b, n_items) gradient of the scores):

    z = x @ A          sparse (b, n) x dense (n, d)
    S = z @ A^T        dense  (b, d) x (d, n)      -> the (b, n) score matrix
    G @ A              dense  (b, n) x (n, d)      -> gradient of z
    G^T @ z            dense  (n, b) x (b, d)      -> decoder-side gradient of A
    x^T @ gz           sparse (n, b) x dense (b, d) -> encoder-side gradient of A

The *floor* is the time of exactly these products on the same batches, with the sparse
operands prepared in advance and outputs written into preallocated buffers. The *epoch*
is ``ELSA(epochs=1).fit`` on the same matrix with the same batch order (everything one
real epoch does: batch slicing, loss, gradient, Adam, renormalisation). Floor and epoch
runs alternate ``--repeats`` times and the fastest of each is reported, so that load from
other processes on the machine inflates neither side alone.

Peak memory is the peak resident set size (RSS, sampled every 2 ms from
/proc/self/statm in a background thread) during the epoch minus the RSS just before it:
what training adds on top of the interaction matrix, counting numpy and torch
allocations alike. ``ru_maxrss`` of the whole process is printed for reference.

*Splicing* (``spliced_fit_seconds``): seconds from a fitted base to a spliced model on
MovieLens 100K (the embedded copy; the data set's splice base and the spliced model's
default SAE recipe, seed 0 split), median of ``--splice-repeats`` fits, with the spliced
model's test Recall@20 beside it so that speed is never bought with accuracy unseen.

Usage (from the repository root)::

    python benchmarks/speed.py                 # 100k users x 20k items x 5M, d=512
    python benchmarks/speed.py --quick         # small shape, a few seconds (CI smoke test)
    python benchmarks/speed.py --json out.json # also write flat records
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import threading
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import synthetic_interactions  # noqa: E402

from steercf.models.base import csr_to_torch  # noqa: E402
from steercf.models.elsa import ELSA  # noqa: E402
from steercf.reporting import format_table, write_records  # noqa: E402

_PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20


def _rss_mb() -> float:
    """Current resident set size of this process in MiB."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE_MB


class PeakRSS:
    """Context manager sampling the RSS every ``interval`` seconds; ``peak_mb`` is the
    highest value seen minus the value on entry."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.peak_mb = 0.0
        self._stop = threading.Event()

    def __enter__(self) -> PeakRSS:
        self._start = _rss_mb()
        self._peak = self._start
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, _rss_mb())
            time.sleep(self.interval)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, _rss_mb())
        self.peak_mb = self._peak - self._start


def floor_seconds(matrix: sp.csr_matrix, order: np.ndarray, factors: int, batch_size: int) -> float:
    """Seconds for the five bare products of one epoch over the batches of ``order``.

    Args:
        matrix: (n_users, n_items) CSR.
        order: (n_users,) the epoch's user permutation.
    """
    n_items = matrix.shape[1]
    items = torch.nn.functional.normalize(torch.randn(n_items, factors), dim=1)
    scores = torch.empty(batch_size, n_items)
    grad_items = torch.empty(n_items, factors)
    total = 0.0
    for start in range(0, len(order), batch_size):
        batch = matrix[np.sort(order[start : start + batch_size])]
        x = csr_to_torch(batch)
        x_t = csr_to_torch(batch.T.tocsr())
        s = scores[: batch.shape[0]]
        tick = time.perf_counter()
        z = torch.sparse.mm(x, items)  # x @ A
        torch.mm(z, items.T, out=s)  # z @ A^T
        grad_z = s @ items  # G @ A
        torch.mm(s.T, z, out=grad_items)  # G^T @ z
        grad_items.addmm_(x_t, grad_z)  # x^T @ gz
        total += time.perf_counter() - tick
    return total


def epoch_order(n_users: int, n_items: int, factors: int, seed: int) -> np.ndarray:
    """The user permutation of ``ELSA(seed=seed).fit``'s first epoch: it draws the
    initial (n_items, factors) matrix and then the permutation from one generator."""
    generator = torch.Generator().manual_seed(seed)
    torch.randn(n_items, factors, generator=generator)
    return torch.randperm(n_users, generator=generator).numpy()


def epoch_seconds(
    matrix: sp.csr_matrix, factors: int, batch_size: int, seed: int
) -> tuple[float, float]:
    """``(seconds, peak MiB)`` of one ``ELSA.fit`` epoch."""
    model = ELSA(factors=factors, batch_size=batch_size, epochs=1, seed=seed, progress=False)
    with PeakRSS() as peak:
        tick = time.perf_counter()
        model.fit(matrix)
        seconds = time.perf_counter() - tick
    return seconds, peak.peak_mb


def splice_seconds(repeats: int, quick: bool) -> tuple[list[float], float, int]:
    """``(seconds per fit, test Recall@20, epochs)`` of splicing an SAE into ML-100K's
    fitted splice base with the default recipe (``quick``: 3 epochs)."""
    from steercf.data import load_ml100k
    from steercf.evaluation import evaluate, split_users
    from steercf.experiment import splice_base
    from steercf.models.spliced import SplicedRecommender, default_train_config

    split = split_users(load_ml100k().matrix, seed=0)
    base = splice_base("ml-100k").fit(split.train, split.val_full)
    overrides = {"max_epochs": 3} if quick else {}
    seconds = []
    for _ in range(repeats):
        train = default_train_config(seed=0, progress=False, **overrides)
        tick = time.perf_counter()
        model = SplicedRecommender(base, train_config=train, progress=False)
        model.fit(split.train, split.val_full)
        seconds.append(time.perf_counter() - tick)
    recall = evaluate(model, split.test_input, split.test_target).mean("recall@20")
    return seconds, recall, len(model.history_)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small shape (CI smoke test)")
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--interactions", type=int, default=5_000_000)
    parser.add_argument("--factors", type=int, default=512)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=2, help="alternating floor/epoch runs")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--splice-repeats", type=int, default=3, help="spliced fits timed")
    parser.add_argument("--json", type=Path, default=None, help="write flat records here")
    args = parser.parse_args(argv)
    if args.quick:
        args.users, args.items, args.interactions = 4_000, 2_000, 100_000
        args.factors, args.batch, args.repeats, args.splice_repeats = 64, 512, 2, 1
    if args.threads:
        torch.set_num_threads(args.threads)

    tick = time.perf_counter()
    matrix = synthetic_interactions(args.users, args.items, args.interactions, seed=args.seed)
    print(
        f"synthetic {matrix.shape[0]} users x {matrix.shape[1]} items, {matrix.nnz} interactions "
        f"(power-law items, seed {args.seed}) in {time.perf_counter() - tick:.1f}s; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads",
        flush=True,
    )
    order = epoch_order(matrix.shape[0], matrix.shape[1], args.factors, args.seed)
    n_batches = -(-matrix.shape[0] // args.batch)
    floors, epochs, peaks = [], [], []
    for repeat in range(args.repeats):
        floors.append(floor_seconds(matrix, order, args.factors, args.batch))
        seconds, peak = epoch_seconds(matrix, args.factors, args.batch, args.seed)
        epochs.append(seconds)
        peaks.append(peak)
        print(
            f"  run {repeat + 1}/{args.repeats}: floor {floors[-1]:.2f}s, epoch {seconds:.2f}s, "
            f"peak +{peak:.0f} MiB",
            flush=True,
        )
    floor, epoch, peak = min(floors), min(epochs), max(peaks)
    maxrss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    dataset = f"synthetic-{_short(args.users)}x{_short(args.items)}"
    setting = f"d={args.factors},batch={args.batch}"
    rows = [
        {
            "what": "epoch (ELSA.fit, 1 epoch)",
            "seconds": epoch,
            "per batch ms": 1e3 * epoch / n_batches,
        },
        {
            "what": "floor (5 bare products)",
            "seconds": floor,
            "per batch ms": 1e3 * floor / n_batches,
        },
        {"what": "epoch / floor", "seconds": epoch / floor, "per batch ms": None},
    ]
    print(f"\n{dataset}, {setting}, {n_batches} batches, best of {args.repeats}")
    print(format_table(rows))
    print(
        f"peak memory during the epoch: +{peak:.0f} MiB RSS over the data (process ru_maxrss {maxrss_mb:.0f} MiB)"
    )
    splices, splice_recall, splice_epochs = splice_seconds(args.splice_repeats, args.quick)
    splice_median = float(np.median(splices))
    print(
        f"\nsplicing an SAE into ML-100K's fitted base (default recipe{', 3 epochs' if args.quick else ''}): "
        f"median {splice_median:.1f}s of {', '.join(f'{s:.1f}' for s in splices)}; "
        f"{splice_epochs} epochs, test Recall@20 {splice_recall:.4f}"
    )
    if args.json:
        base = {"dataset": dataset, "model": "elsa", "setting": setting, "n": args.repeats}
        splice = {"dataset": "ml-100k", "model": "spliced", "n": args.splice_repeats}
        splice["setting"] = "default recipe" + (",max_epochs=3" if args.quick else "")
        records = [
            {**base, "metric": "epoch_seconds", "value": epoch},
            {**base, "metric": "floor_seconds", "value": floor},
            {**base, "metric": "peak_mb", "value": peak},
            {**splice, "metric": "spliced_fit_seconds", "value": splice_median},
            {**splice, "metric": "recall@20", "value": splice_recall},
        ]
        write_records(args.json, records)
        print(f"wrote {args.json}")
    return 0


def _short(count: int) -> str:
    """100000 -> '100k'."""
    return f"{count // 1000}k" if count >= 1000 and count % 1000 == 0 else str(count)


if __name__ == "__main__":
    raise SystemExit(main())
