"""Explorer latency: one user's steering request through the web app, MovieLens 100K.

Fits ELSA (the ML-100K preset width) and splices the reference SAE (TopK, k=16, 8x the
ELSA width), saves it as ``steercf train-sae`` does, starts ``steercf serve`` in its own
process on a loopback port and times ``POST /api/recommend`` for one user (the first
test user) over a kept-alive HTTP connection, as the page does when a slider moves.
(A server thread inside the timing process would share its interpreter lock with the
client and add tens of milliseconds that a real server does not have.)

Every request turns the knobs to a new strength (a concept slider sweeping 0.01-0.6 and
one latent slider at -0.5), so no steered list can come from a cache. The server does
keep a user's unsteered answer (code, plain list, concepts) while sliders move, so the
``new_user`` setting times a different user on every request as well. Settings are
interleaved request by request after warm-up requests, so load from other processes
falls on all of them alike. The figure is the median. Latency depends on the model's
widths, not on how long the SAE trained, so the SAE epochs are capped (``--max-epochs``).

    python benchmarks/explorer.py [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from steercf.concepts import label_model, labels_json
from steercf.data import load_dataset
from steercf.evaluation import split_users
from steercf.experiment import base_params, make_model
from steercf.models.spliced import SplicedRecommender
from steercf.reporting import format_table, write_records
from steercf.runs import run_metadata
from steercf.sae import TrainConfig

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
WARMUP = 5
SETTINGS = {  # name -> (knobs on, explanations on, a user not seen before)
    "knobs=2,explain=1": (True, True, False),  # what the page sends when a slider moves
    "knobs=2,explain=0": (True, False, False),
    "knobs=0,explain=1": (False, True, False),  # the plain list, for comparison
    # the first request for a user: nothing of theirs is cached by the server yet
    "knobs=2,explain=1,new_user": (True, True, True),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--quick", action="store_true", help="small model, 20 requests")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--requests", type=int, help="timed requests per setting (default 100)")
    parser.add_argument("--max-epochs", type=int, default=30, help="SAE epoch cap")
    args = parser.parse_args(argv)
    n_requests = args.requests or (20 if args.quick else 100)
    import httpx

    started = time.perf_counter()
    data = load_dataset("ml-100k", data_dir=SHARED_DATA)
    split = split_users(data.matrix, seed=args.seed)
    params = base_params("ml-100k", "elsa", quick=args.quick)
    if args.quick:
        params["factors"] = 64
    base = make_model("elsa", **params, seed=args.seed)
    train = TrainConfig(
        max_epochs=3 if args.quick else args.max_epochs, seed=args.seed, progress=False
    )
    model = SplicedRecommender(base, {"k": 16, "expansion": 8}, train, augment=2, seed=args.seed)
    model.fit(split.train, split.val_full)
    print(
        f"fitted ELSA ({base.d_} factors) + SAE ({model.n_latents} latents, k=16) in "
        f"{time.perf_counter() - started:.0f}s; torch threads {torch.get_num_threads()}",
        file=sys.stderr,
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "spliced"
        metadata = run_metadata("ml-100k", data, args.seed)
        labels = label_model(model, data, train_users=split.train_users)
        model.save(model_dir, metadata=metadata, extra_json=labels_json(labels, model))
        with serving(model_dir) as url, httpx.Client(base_url=url, timeout=60) as client:
            times, changed, user = time_requests(client, n_requests)
    if changed == 0:
        raise RuntimeError("no steered request changed the list: the knobs had no effect")

    records, rows = [], []
    for name, values in times.items():
        setting = f"transport=http,{name},latents={model.n_latents},user={user}"
        median = float(np.median(values))
        records.append(
            {
                "dataset": "ml-100k",
                "model": "elsa+sae",
                "metric": "steer_request_ms",
                "value": median,
                "setting": setting,
                "n": len(values),
            }
        )
        rows.append(
            {
                "setting": name,
                "median_ms": median,
                "p90_ms": float(np.percentile(values, 90)),
                "max_ms": float(np.max(values)),
                "requests": len(values),
            }
        )
    print(
        f"Explorer steering requests on ML-100K (user {user}, ELSA {base.d_} factors + SAE "
        f"{model.n_latents} latents), HTTP over loopback, {WARMUP} warm-up requests each:"
    )
    print(format_table(rows))
    if args.json:
        write_records(args.json, records)
    return 0


@contextmanager
def serving(model_dir: Path, timeout: float = 300.0) -> Iterator[str]:
    """``steercf serve model_dir`` in a child process on a free loopback port."""
    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "steercf", "serve", str(model_dir), "--port", str(port), "--quiet"],
        stdout=subprocess.DEVNULL,
        env=os.environ.copy(),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                httpx.get(f"{url}/api/health", timeout=1)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("steercf serve did not start") from None
                time.sleep(0.25)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def time_requests(client, n_requests: int) -> tuple[dict[str, list[float]], int, str]:
    """Milliseconds per setting (after warm-up), how many steered answers changed the
    list, and the user."""
    user = client.get("/api/info").json()["defaults"]["user"]
    others = [u["id"] for u in client.get("/api/users", params={"limit": 500}).json()["users"]]
    others = [u for u in others if u != user]
    plain = client.post("/api/recommend", json={"user": user, "explain": False}).json()
    latent = plain["latents"][0]["latent"]
    strengths = np.linspace(0.01, 0.6, n_requests + WARMUP)
    times: dict[str, list[float]] = {name: [] for name in SETTINGS}
    changed = 0
    for i, strength in enumerate(strengths):
        for name, (knobs_on, explain, new_user) in SETTINGS.items():
            knobs = [
                {"concept": "Horror", "strength": round(float(strength), 4)},
                {"latent": latent, "strength": -0.5},
            ]
            who = others[i % len(others)] if new_user else user
            body = {"user": who, "knobs": knobs if knobs_on else [], "explain": explain}
            t0 = time.perf_counter()
            response = client.post("/api/recommend", json=body)
            elapsed = (time.perf_counter() - t0) * 1000
            if response.status_code != 200:
                raise RuntimeError(f"{name}: HTTP {response.status_code}: {response.text}")
            if i >= WARMUP:
                times[name].append(elapsed)
                changed += bool(knobs_on and response.json()["entered"])
    return times, changed, user


if __name__ == "__main__":
    started = time.perf_counter()
    code = main()
    print(f"({time.perf_counter() - started:.0f}s)", file=sys.stderr)
    sys.exit(code)
