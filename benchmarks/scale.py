"""Beyond one process: data-parallel training epochs and streaming batch scoring.

On synthetic ML-25M-shaped data (``benchmarks/_common.py``: 160k users x 40k items x 12M
interactions, power-law item popularity, log-normal user activity):

* **ELSA seconds per epoch** (after a one-batch warm-up) with 1 and 2 processes (``steercf.distributed.launch``:
  torch.distributed with gloo, one thread per process, so 2 processes use 2 cores). A
  full epoch is minutes on 2 CPU cores, so ``--elsa-batches`` batches are timed (ELSA
  fitted for one epoch on the first ``batches x batch`` users; users are independent
  draws, so they are a fair sample) and the time is scaled to the full epoch's batch
  count. The setting says ``extrapolated from K/M batches``.
* **SAE seconds per epoch** with 1 and 2 processes (DistributedDataParallel): one full
  epoch of ``train_sae`` on the ELSA embeddings of all users (90 % train, 10 %
  validation; the epoch time includes the validation pass, which every process runs).
* **Batch scoring**: steered top-20 of a spliced model (the ELSA and SAE above, one
  latent knob) for the first half and for all of the users, with
  ``steercf.scoring.score_users`` reading the matrix chunk by chunk from a CSR directory
  and writing Parquet. Each size runs in a fresh subprocess whose ``ru_maxrss`` (peak
  resident memory of the whole process: Python, torch, model, buffers) is the
  ``peak_mb`` record, so sizes do not contaminate each other. Bounded memory means
  ``peak_mb`` stays flat while the user count doubles. The weights are whatever the
  short training produced: scoring cost does not depend on them.

Usage (from the repository root)::

    python benchmarks/scale.py                  # 160k x 40k x 12M, d=256 (minutes)
    python benchmarks/scale.py --quick          # small shape, well under a minute (CI)
    python benchmarks/scale.py --json out.json  # also write flat records
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import synthetic_interactions  # noqa: E402

from steercf.distributed import Collective, launch  # noqa: E402
from steercf.models.elsa import ELSA  # noqa: E402
from steercf.models.spliced import SplicedRecommender  # noqa: E402
from steercf.reporting import format_table, write_records  # noqa: E402
from steercf.sae import SAEConfig, SparseAutoencoder, TrainConfig, train_sae  # noqa: E402
from steercf.scoring import CSRDirSource, save_csr_dir  # noqa: E402


def _train_worker(
    group: Collective,
    csr_dir: str,
    elsa_users: int,
    elsa_params: dict[str, Any],
    sae_config: dict[str, Any],
    sae_train: dict[str, Any],
) -> dict[str, Any]:
    """One ELSA epoch on the first ``elsa_users`` users, then one SAE epoch on the
    embeddings of all users, both under ``group``; rank 0 returns the timings (and, in
    a single process, the weights for the scoring model)."""
    source = CSRDirSource(csr_dir)
    rows = source.rows(0, elsa_users)
    # warm-up on one batch: the first fit pays one-off costs (lazy kernels, the first
    # collectives of the process group) that are no part of an epoch
    ELSA(**elsa_params).fit(rows[: elsa_params["batch_size"]], group=group)
    group.barrier()  # start the clock together
    tick = time.perf_counter()
    elsa = ELSA(**elsa_params).fit(rows, group=group)
    elsa_seconds = time.perf_counter() - tick
    matrix = source.rows(0, source.shape[0])
    with torch.no_grad():
        z = torch.cat([elsa.encode(matrix[s : s + 8192]) for s in range(0, matrix.shape[0], 8192)])
    del matrix
    result = train_sae(z, SAEConfig(**sae_config), TrainConfig(**sae_train), group=group)
    out: dict[str, Any] = {
        "elsa_seconds": elsa_seconds,
        "sae_seconds": result.history[0]["seconds"],
        "sae_rows": z.shape[0],
    }
    if group.world_size == 1:
        out["items"] = elsa.items_
        out["sae"] = dict(result.sae.state_dict())
    return out


class _FirstRows:
    """The first ``n`` rows of a row source (a smaller data set of the same shape)."""

    def __init__(self, source: CSRDirSource, n: int) -> None:
        self.source, self.shape = source, (n, source.shape[1])

    def rows(self, start: int, stop: int):
        return self.source.rows(start, stop)

    def fingerprint(self) -> str:
        return f"{self.source.fingerprint()}:first{self.shape[0]}"


def _score_child(argv: list[str]) -> int:
    """``scale.py _score MODEL CSR USERS OUT CHUNK BATCH LATENT THREADS``: score, then
    print one JSON line with seconds, users and the process's peak RSS."""
    model_dir, csr_dir, users, out, chunk, batch, latent, threads = argv
    torch.set_num_threads(int(threads))
    from steercf.models import load_model
    from steercf.scoring import score_users
    from steercf.steering import Knob

    model = load_model(model_dir)
    source = _FirstRows(CSRDirSource(csr_dir), int(users))
    report = score_users(
        model,
        source,
        out,
        N=20,
        chunk_users=int(chunk),
        batch_users=int(batch),
        knobs=[Knob.of(int(latent), 0.3)],
        progress=False,
    )
    maxrss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps({"seconds": report.seconds, "users": report.users_scored, "peak_mb": maxrss_mb})
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_score":
        return _score_child(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small shape (CI smoke test)")
    parser.add_argument("--users", type=int, default=160_000)
    parser.add_argument("--items", type=int, default=40_000)
    parser.add_argument("--interactions", type=int, default=12_000_000)
    parser.add_argument("--factors", type=int, default=256, help="ELSA width d")
    parser.add_argument("--batch", type=int, default=1024, help="ELSA and SAE batch size")
    parser.add_argument("--elsa-batches", type=int, default=16, help="ELSA batches timed")
    parser.add_argument("--chunk-users", type=int, default=20_000, help="scoring part size")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="write flat records here")
    args = parser.parse_args(argv)
    if args.quick:
        args.users, args.items, args.interactions = 4_000, 2_000, 100_000
        args.factors, args.batch, args.elsa_batches, args.chunk_users = 32, 512, 8, 1_000
    n_batches = -(-args.users // args.batch)
    elsa_batches = min(args.elsa_batches, n_batches)

    work = Path(tempfile.mkdtemp(prefix="steercf-scale-"))
    try:
        tick = time.perf_counter()
        matrix = synthetic_interactions(args.users, args.items, args.interactions, seed=args.seed)
        csr_dir = save_csr_dir(matrix, work / "csr")
        print(
            f"synthetic {matrix.shape[0]} users x {matrix.shape[1]} items, {matrix.nnz} "
            f"interactions (power-law items, seed {args.seed}) in {time.perf_counter() - tick:.1f}s; "
            f"torch {torch.__version__}, {args.threads} thread(s) per process",
            flush=True,
        )
        del matrix
        dataset = f"synthetic-{_short(args.users)}x{_short(args.items)}"
        base = {"dataset": dataset, "seed": args.seed}
        records: list[dict[str, Any]] = []

        elsa_params = dict(
            factors=args.factors, batch_size=args.batch, epochs=1, seed=args.seed, progress=False
        )
        sae_config = dict(d_in=args.factors, expansion=8, k=16)
        sae_train = dict(batch_size=args.batch, max_epochs=1, seed=args.seed, progress=False)
        single: dict[str, Any] = {}
        for procs in (1, 2):
            tick = time.perf_counter()
            timed = launch(
                _train_worker,
                procs,
                str(csr_dir),
                min(args.users, elsa_batches * args.batch),
                elsa_params,
                sae_config,
                sae_train,
                threads=args.threads,
            )
            if procs == 1:
                single = timed
            elsa_epoch = timed["elsa_seconds"] * n_batches / elsa_batches
            scaled = (
                ""
                if elsa_batches == n_batches
                else f",extrapolated from {elsa_batches}/{n_batches} batches"
            )
            records += [
                {
                    **base,
                    "model": "elsa",
                    "metric": "epoch_seconds",
                    "value": elsa_epoch,
                    "setting": f"procs={procs},d={args.factors},batch={args.batch}{scaled}",
                    "n": elsa_batches,
                },
                {
                    **base,
                    "model": "sae",
                    "metric": "epoch_seconds",
                    "value": timed["sae_seconds"],
                    "setting": f"procs={procs},latents={8 * args.factors},k=16,rows={timed['sae_rows']}",
                    "n": 1,
                },
            ]
            print(
                f"  {procs} process(es): ELSA {elsa_batches} batches {timed['elsa_seconds']:.1f}s "
                f"(epoch ~{elsa_epoch:.0f}s), SAE epoch {timed['sae_seconds']:.1f}s "
                f"[{time.perf_counter() - tick:.0f}s with start-up]",
                flush=True,
            )

        # the scoring model: the single-process ELSA and SAE, spliced
        elsa = ELSA(**elsa_params)
        elsa.items_ = torch.from_numpy(single["items"])
        elsa.n_items_, elsa.d_ = args.items, args.factors
        sae = SparseAutoencoder(SAEConfig(**sae_config))
        sae.load_state_dict({k: torch.from_numpy(v) for k, v in single["sae"].items()})
        SplicedRecommender.from_parts(elsa, sae).save(work / "model")

        for users in (args.users // 2, args.users):
            command = [sys.executable, __file__, "_score", str(work / "model"), str(csr_dir)]
            command += [str(users), str(work / f"scores-{users}"), str(args.chunk_users)]
            command += [str(args.batch), "0", str(args.threads)]
            env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
            done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
            if done.returncode != 0:
                print(done.stderr, file=sys.stderr)
                raise SystemExit(f"scoring {users} users failed")
            child = json.loads(done.stdout.strip().splitlines()[-1])
            setting = f"users={users},N=20,chunk={args.chunk_users},batch={args.batch},steered"
            for metric, value in (
                ("users_per_second", child["users"] / child["seconds"]),
                ("peak_mb", child["peak_mb"]),
            ):
                records.append(
                    {
                        **base,
                        "model": "elsa+sae",
                        "metric": metric,
                        "value": value,
                        "setting": setting,
                        "n": users,
                    }
                )
            print(
                f"  scored {users} users in {child['seconds']:.1f}s, peak RSS {child['peak_mb']:.0f} MiB",
                flush=True,
            )
            shutil.rmtree(work / f"scores-{users}")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{dataset}: {args.users} users x {args.items} items, {args.interactions} interactions")
    print(
        format_table(
            [{k: r[k] for k in ("model", "metric", "value", "setting")} for r in records],
        )
    )
    speedups = [
        (model, _value(records, model, "procs=1") / _value(records, model, "procs=2"))
        for model in ("elsa", "sae")
    ]
    print("2-process speed-up: " + ", ".join(f"{m} {s:.2f}x" for m, s in speedups))
    peaks = [r["value"] for r in records if r["metric"] == "peak_mb"]
    print(
        f"scoring peak RSS, {args.users // 2} -> {args.users} users: {peaks[0]:.0f} -> {peaks[1]:.0f} MiB"
    )
    if args.json:
        write_records(args.json, records)
        print(f"wrote {args.json}")
    return 0


def _value(records: list[dict[str, Any]], model: str, procs: str) -> float:
    return next(
        r["value"]
        for r in records
        if r["model"] == model and r["metric"] == "epoch_seconds" and r["setting"].startswith(procs)
    )


def _short(count: int) -> str:
    """160000 -> '160k'."""
    return f"{count // 1000}k" if count >= 1000 and count % 1000 == 0 else str(count)


if __name__ == "__main__":
    raise SystemExit(main())
