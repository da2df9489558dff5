"""Command-line interface: ``steercf demo|train|evaluate|recommend``.

Every command reads data through :func:`steercf.data.load_dataset`, so ``--data`` takes
``ml-100k`` (embedded), a GroupLens name (downloaded once, cached) or a directory / file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from steercf.data import InteractionData, load_dataset
from steercf.distributed import PRECISIONS, Collective, configure_precision, init_from_env
from steercf.distributed import shutdown as leave_process_group
from steercf.errors import InputError, SteerCFError
from steercf.evaluation import evaluate, split_users
from steercf.experiment import (
    DEFAULT_GRIDS,
    MODELS,
    fit_model,
    make_model,
    select_on_validation,
)
from steercf.models import CFAE, EASE, Recommender, load_model
from steercf.reporting import format_table
from steercf.sae import TrainConfig
from steercf.spliced import SplicedRecommender


def item_fingerprint(data: InteractionData) -> str:
    """Short hash of the item id order: a model only fits data with the same columns."""
    return hashlib.sha1("\x1f".join(map(str, data.item_ids)).encode()).hexdigest()[:16]


def _data_args(parser: argparse.ArgumentParser, default: str | None = "ml-100k") -> None:
    parser.add_argument(
        "--data", default=default, help="ml-100k | GroupLens name | directory | file"
    )
    parser.add_argument(
        "--min-rating", type=float, default=4.0, help="ratings >= this are positives"
    )
    parser.add_argument("--min-user-positives", type=int, default=5)


def _load(args: argparse.Namespace, metadata: dict[str, Any] | None = None) -> InteractionData:
    spec = args.data or (metadata or {}).get("data")
    if spec is None:
        raise InputError("no data set given: pass --data")
    min_rating = (metadata or {}).get("min_rating", args.min_rating)
    min_pos = (metadata or {}).get("min_user_positives", args.min_user_positives)
    return load_dataset(spec, min_rating=min_rating, min_user_positives=min_pos)


def _portable_spec(spec: str) -> str:
    """A data-set spec that still resolves from another working directory: a path that
    exists is stored absolute; names (``ml-100k``) stay as they are."""
    return str(Path(spec).resolve()) if Path(spec).exists() else spec


def _parse_params(pairs: Sequence[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise InputError(f"--param takes key=value, got {pair!r}")
        key, raw = pair.split("=", 1)
        try:
            params[key] = json.loads(raw)
        except json.JSONDecodeError:
            params[key] = raw
    return params


def _check_matches(model: Recommender, data: InteractionData) -> None:
    fingerprint = getattr(model, "metadata_", {}).get("item_fingerprint")
    if model.n_items_ != data.n_items or (fingerprint and fingerprint != item_fingerprint(data)):
        raise InputError(
            f"the model was fitted on other items ({model.n_items_} items) than data set "
            f"{data.name!r} ({data.n_items} items); pass the --data it was trained on"
        )


# ---- commands --------------------------------------------------------------------------


def _parallel(args: argparse.Namespace) -> tuple[Collective, Any]:
    """``(collective, device)``: the process group torchrun describes (a single process
    otherwise) and this process's device, with the matmul precision set for it."""
    group, device = init_from_env(args.device)
    configure_precision(device, args.precision)
    return group, device


def cmd_train(args: argparse.Namespace) -> None:
    group, device = _parallel(args)
    data = _load(args)
    split = split_users(data.matrix, seed=args.seed)
    params = {"seed": args.seed, **_parse_params(args.param)}
    if args.model == "popularity":
        params.pop("seed")
    else:
        params.setdefault("device", str(device))
    if group.world_size > 1:
        if args.model != "elsa" or args.tune:
            raise InputError(
                "data-parallel training (--nproc, torchrun) covers ELSA without --tune"
            )
        params.setdefault("progress", not args.quiet)
        model = make_model("elsa", **params).fit(split.train, split.val_full, group=group)
    elif args.tune:
        chosen = select_on_validation(args.model, split, progress=not args.quiet, **params)
        model = chosen.model
        print(f"chosen on validation users: {chosen.params} (recall@20 {chosen.val_score:.4f})")
    else:
        model = fit_model(args.model, split, progress=not args.quiet, **params)
    metadata = {
        "data": _portable_spec(args.data),
        "min_rating": args.min_rating,
        "min_user_positives": args.min_user_positives,
        "seed": args.seed,
        "item_fingerprint": item_fingerprint(data),
        "nproc": group.world_size,
    }
    if group.is_main:  # every rank holds the same model; one writes it
        model.save(args.out, metadata=metadata)
        print(f"saved {model.kind} to {args.out}")
    group.barrier()


def cmd_evaluate(args: argparse.Namespace) -> None:
    model = load_model(args.model_dir)
    metadata = getattr(model, "metadata_", {})
    data = _load(args, metadata if args.data is None else None)
    _check_matches(model, data)
    split = split_users(data.matrix, seed=metadata.get("seed", args.seed))
    inputs, targets = (
        (split.test_input, split.test_target)
        if args.split == "test"
        else (split.val_input, split.val_target)
    )
    ks = tuple(args.k)
    result = evaluate(model, inputs, targets, ks=ks, progress=not args.quiet)
    n_users = len(next(iter(result.per_user.values())))
    if isinstance(model, SplicedRecommender):
        # the point of a spliced model is what the SAE costs: show the base beside it
        base = evaluate(model.base, inputs, targets, ks=ks)
        rows = [
            {
                "metric": name,
                f"base {model.base.kind}": base.mean(name),
                "spliced": result.mean(name),
                "difference": result.mean(name) - base.mean(name),
                "sem": result.sem(name),
            }
            for name in result.per_user
        ]
    else:
        rows = [
            {"metric": name, "mean": result.mean(name), "sem": result.sem(name)}
            for name in result.per_user
        ]
    print(f"{model.kind} on {data.name}, {args.split} users ({n_users})")
    print(format_table(rows))


def cmd_train_sae(args: argparse.Namespace) -> None:
    group, device = _parallel(args)
    base = load_model(args.model_dir)
    if not isinstance(base, CFAE):
        raise InputError(
            f"{args.model_dir} holds a {base.kind}; train-sae needs ELSA or low-rank EASE"
        )
    if isinstance(base, EASE) and base.rank is None:
        raise InputError("EASE without rank has no bottleneck; train it with --param rank=256")
    metadata = dict(getattr(base, "metadata_", {}))
    data = _load(args, metadata if args.data is None else None)
    _check_matches(base, data)
    split = split_users(data.matrix, seed=metadata.get("seed", args.seed))
    sae_config = {
        "k": args.k,
        "expansion": args.expansion,
        "activation": args.activation,
    }
    train_config = TrainConfig(
        loss=args.loss,
        aux_coef=args.aux_coef,
        max_epochs=args.max_epochs,
        seed=args.seed,
        device=str(device),
        progress=not args.quiet,
    )
    model = SplicedRecommender(
        base.to(device), sae_config, train_config, augment=args.augment, seed=args.seed
    ).fit(split.train, split.val_full, group=group)
    model.to("cpu")  # labelling below reads tensors as numpy arrays
    if not group.is_main:  # every rank holds the same model; one writes it
        group.barrier()
        return
    model.save(args.out, metadata=metadata)
    from steercf.concepts import label_model, save_labels

    # label latents now so they travel with the model (`steercf latents` reads them)
    save_labels(args.out, label_model(model, data, train_users=split.train_users))
    final = model.history_[model.best_epoch_]
    print(
        f"saved {base.kind}+SAE ({model.n_latents} latents, k={args.k}) to {args.out}; "
        f"best epoch {model.best_epoch_}, val cosine {final.get('val_cosine', float('nan')):.4f}"
    )
    group.barrier()


def cmd_recommend(args: argparse.Namespace) -> None:
    model = load_model(args.model_dir)
    data = _load(args, getattr(model, "metadata_", {}) if args.data is None else None)
    _check_matches(model, data)
    rows = data.user_index(np.asarray(args.user, dtype=object))
    rows = np.atleast_1d(rows)
    ids, scores = model.recommend(data.matrix[rows], N=args.n)
    for user, user_row, items, item_scores in zip(args.user, rows, ids, scores, strict=True):
        print(f"user {user} ({data.matrix[user_row].nnz} items in history):")
        for rank, (item, score) in enumerate(zip(items, item_scores, strict=True), 1):
            print(f"  {rank:>2}. {data.titles([item])[0]}  [{data.item_ids[item]}]  {score:.3f}")


def _load_spliced(args: argparse.Namespace):
    """A saved spliced model, its data set and the split it was trained under."""
    model = load_model(args.model_dir)
    if not isinstance(model, SplicedRecommender):
        raise InputError(
            f"{args.model_dir} holds a {model.kind}; this command needs a spliced model "
            "(make one with `steercf train-sae`)"
        )
    metadata = getattr(model, "metadata_", {})
    data = _load(args, metadata if args.data is None else None)
    _check_matches(model, data)
    split = split_users(data.matrix, seed=metadata.get("seed", args.seed))
    return model, data, split


def cmd_concepts(args: argparse.Namespace) -> None:
    from steercf.concepts import concepts_report, format_reports, plot_reports

    model, data, split = _load_spliced(args)
    reports = concepts_report(model, data, sources=args.source, train_users=split.train_users)
    print(format_reports(reports, titles=data.titles(np.arange(data.n_items))))
    if args.plot:
        print(f"plots: {plot_reports(reports, args.plot, title=data.name)}")


def _labels(args: argparse.Namespace, loaded: tuple | None = None):
    """Labels stored with the model, computed and stored on first use.

    Args:
        loaded: ``(model, data, split)`` when the caller has them already."""
    from steercf.concepts import label_model, load_labels, save_labels

    if (Path(args.model_dir) / "labels.json").exists():
        return load_labels(args.model_dir)
    model, data, split = loaded or _load_spliced(args)
    labels = label_model(model, data, train_users=split.train_users)
    save_labels(args.model_dir, labels)
    return labels


def cmd_latents(args: argparse.Namespace) -> None:
    from steercf.concepts import format_latents

    print(format_latents(_labels(args), top=args.top, dead=args.dead))


def cmd_latent(args: argparse.Namespace) -> None:
    from steercf.concepts import format_latent

    print(format_latent(_labels(args), args.latent))


def _user_row(data: InteractionData, user: str):
    row = int(np.atleast_1d(data.user_index(np.asarray([user], dtype=object)))[0])
    return data.matrix[row]


def _latent_text(labels, latent: int) -> str:
    return labels[latent].text if labels is not None else f"latent {latent}"


def cmd_steer(args: argparse.Namespace) -> None:
    from steercf.steering import ConceptKnobs, compare, explain_items

    model, data, split = _load_spliced(args)
    knobs_from = ConceptKnobs.for_model(
        model, data, args.source, args.mapping, split.train_users, top_latents=args.top_latents
    )
    knobs = [knobs_from.parse(spec) for spec in args.concept]
    history = _user_row(data, args.user)
    result = compare(model, history, knobs, rule=args.rule, N=args.n)
    labels = _labels(args, (model, data, split))
    turned = ", ".join(
        f"{k.name} {k.strength:+.2f} (latents {', '.join(map(str, k.latents))})" for k in knobs
    )
    print(f"user {args.user}, steering {turned} with the {args.rule} rule ({args.mapping}):")
    entered = set(result.entered(0))
    why = dict(
        zip(
            result.after_ids[0].tolist(),
            explain_items(model, history, result.after_ids[0], knobs, args.rule),
            strict=True,
        )
    )
    for rank in range(args.n):
        before = data.titles([result.before_ids[0, rank]])[0]
        item = int(result.after_ids[0, rank])
        mark = "+" if item in entered else " "
        print(f"  {rank + 1:>2}. {before[:42]:<42} | {mark} {data.titles([item])[0]}")
        if item in entered and why[item]:
            latent = why[item][0][0]
            print(
                f"  {'':>46} |     because of latent {latent}: {_latent_text(labels, latent)[:70]}"
            )
    left = result.left(0)
    print(f"left the list: {'; '.join(data.titles(left)) if left else 'nothing'}")


def cmd_explain(args: argparse.Namespace) -> None:
    from steercf.steering import ConceptKnobs, explain_items, user_concepts

    model, data, split = _load_spliced(args)
    # the same resolution as `steer`, so every mapping name (decoder_effect too) works
    mapping = ConceptKnobs.for_model(
        model, data, args.source, args.mapping, split.train_users
    ).mapping
    labels = _labels(args, (model, data, split))
    history = _user_row(data, args.user)
    concepts = user_concepts(model, history, mapping)
    print(
        f"user {args.user} ({history.nnz} items): " + ", ".join(f"{c} {w:.2f}" for c, w in concepts)
    )
    print("active latents:")
    for latent, value in model.sparse_code(history).of(0)[: args.latents]:
        print(f"  {latent:>5}  {value:.3f}  {_latent_text(labels, latent)[:90]}")
    ids, scores = model.recommend(history, N=args.n)
    print("recommendations (top contributing latents):")
    for item, score, why in zip(
        ids[0], scores[0], explain_items(model, history, ids[0]), strict=True
    ):
        reasons = ", ".join(f"{n} ({c:.2f})" for n, c in why)
        print(f"  {data.titles([item])[0][:50]:<50} {score:.3f}  <- {reasons}")


def cmd_score(args: argparse.Namespace) -> None:
    from steercf.scoring import score_users
    from steercf.steering import ConceptKnobs

    group, device = _parallel(args)
    model = load_model(args.model_dir)
    metadata = getattr(model, "metadata_", {})
    data = _load(args, metadata if args.data is None else None)
    _check_matches(model, data)
    knobs = []
    if args.concept:
        if not isinstance(model, SplicedRecommender):
            raise InputError(
                f"{args.model_dir} holds a {model.kind}; steering needs a spliced model"
            )
        if all(spec.lstrip("+-").startswith("latent:") for spec in args.concept):
            knobs_from = ConceptKnobs(mapping=None)  # latent knobs need no concept mapping
        else:
            split = split_users(data.matrix, seed=metadata.get("seed", args.seed))
            knobs_from = ConceptKnobs.for_model(
                model, data, args.source, args.mapping, split.train_users, args.top_latents
            )
        knobs = [knobs_from.parse(spec) for spec in args.concept]
    report = score_users(
        model.to(device),
        data.matrix,
        args.out,
        N=args.n,
        chunk_users=args.chunk_users,
        batch_users=args.batch_users,
        knobs=knobs,
        rule=args.rule,
        filter_seen=not args.include_seen,
        user_ids=data.user_ids,
        item_ids=data.item_ids,
        precision="bf16" if args.precision == "bf16" else "fp32",
        overwrite=args.overwrite,
        group=group,
        progress=not args.quiet,
    )
    if group.is_main:
        done = len(report.skipped_chunks) if group.world_size == 1 else "some"
        print(
            f"top-{report.N} of {report.n_users} users in {report.n_chunks} part files under "
            f"{args.out} ({len(report.scored_chunks)} scored now, {done} found complete)"
        )


def cmd_demo(args: argparse.Namespace) -> None:
    from steercf.demo import run_demo

    run_demo(quick=args.quick, seed=args.seed, progress=not args.quiet)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="steercf", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="train, evaluate and compare models on MovieLens 100K")
    demo.add_argument("--quick", action="store_true", help="small settings (seconds)")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=cmd_demo)

    train = sub.add_parser("train", help="fit a model on the training users of a data set")
    _data_args(train)
    train.add_argument("--model", choices=sorted(MODELS), default="elsa")
    train.add_argument("--out", required=True, help="model directory to write")
    train.add_argument("--seed", type=int, default=0, help="split and training seed")
    train.add_argument("--param", action="append", default=[], help="hyperparameter key=value")
    train.add_argument(
        "--tune",
        action="store_true",
        help=f"grid-search on validation users (grids: {json.dumps(DEFAULT_GRIDS)})",
    )
    _parallel_args(train)
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser("evaluate", help="Recall/nDCG of a saved model under the protocol")
    ev.add_argument("model_dir")
    _data_args(ev, default=None)
    ev.add_argument("--seed", type=int, default=0, help="split seed if the model has none stored")
    ev.add_argument("--split", choices=["test", "val"], default="test")
    ev.add_argument("-k", "--k", type=int, action="append", default=None)
    ev.set_defaults(func=cmd_evaluate)

    tsae = sub.add_parser(
        "train-sae", help="splice an SAE into a saved CFAE (ELSA / low-rank EASE)"
    )
    tsae.add_argument("model_dir", help="a model saved by `steercf train`")
    tsae.add_argument("--out", required=True, help="spliced model directory to write")
    _data_args(tsae, default=None)
    tsae.add_argument("--seed", type=int, default=0, help="split seed if the model has none stored")
    tsae.add_argument("--k", type=int, default=16, help="active latents per user")
    tsae.add_argument("--expansion", type=int, default=8, help="latents per embedding dimension")
    tsae.add_argument("--activation", choices=["topk", "batchtopk", "relu"], default="topk")
    tsae.add_argument("--loss", choices=["cosine", "mse", "nmse"], default="cosine")
    tsae.add_argument("--aux-coef", type=float, default=1 / 32, help="AuxK weight (0: off)")
    tsae.add_argument("--augment", type=int, default=8, help="sub-histories per training user")
    tsae.add_argument("--max-epochs", type=int, default=1000)
    _parallel_args(tsae)
    tsae.set_defaults(func=cmd_train_sae)

    concepts = sub.add_parser("concepts", help="monosemanticity report of a spliced model")
    concepts.add_argument("model_dir")
    _data_args(concepts, default=None)
    concepts.add_argument("--seed", type=int, default=0, help="split seed if none is stored")
    concepts.add_argument(
        "--source", action="append", default=None, help="genres | kg | tags (default: all)"
    )
    concepts.add_argument("--plot", help="write distribution plots to this PNG")
    concepts.set_defaults(func=cmd_concepts)

    latents = sub.add_parser("latents", help="labels of a spliced model's latents")
    latents.add_argument("model_dir")
    _data_args(latents, default=None)
    latents.add_argument("--seed", type=int, default=0, help="split seed if none is stored")
    latents.add_argument("--top", type=int, default=30, help="how many latents to list")
    latents.add_argument("--dead", action="store_true", help="also list dead latents")
    latents.set_defaults(func=cmd_latents)

    latent = sub.add_parser("latent", help="one latent: label, concepts, top items")
    latent.add_argument("model_dir")
    latent.add_argument("latent", type=int)
    _data_args(latent, default=None)
    latent.add_argument("--seed", type=int, default=0, help="split seed if none is stored")
    latent.set_defaults(func=cmd_latent)

    steer = sub.add_parser("steer", help="turn concept knobs for a user; before/after lists")
    steer.add_argument("model_dir")
    _data_args(steer, default=None)
    steer.add_argument("--seed", type=int, default=0, help="split seed if none is stored")
    steer.add_argument("--user", required=True, help="original user id")
    steer.add_argument(
        "--concept",
        action="append",
        required=True,
        help='"+Horror" (toward), "-Comedy" (remove), "+Horror:0.2", "+latent:12:0.3"',
    )
    steer.add_argument("--source", default="genres", help="concept source: genres | kg | tags")
    steer.add_argument("--mapping", default="best_characterizes")
    steer.add_argument("--top-latents", type=int, default=1, help="latents per concept")
    steer.add_argument("--rule", choices=["convex", "additive"], default="convex")
    steer.add_argument("-n", type=int, default=10)
    steer.set_defaults(func=cmd_steer)

    explain = sub.add_parser("explain", help="a user's concepts, latents and why each item")
    explain.add_argument("model_dir")
    _data_args(explain, default=None)
    explain.add_argument("--seed", type=int, default=0, help="split seed if none is stored")
    explain.add_argument("--user", required=True, help="original user id")
    explain.add_argument("--source", default="genres")
    explain.add_argument("--mapping", default="best_characterizes")
    explain.add_argument("--latents", type=int, default=8, help="active latents to show")
    explain.add_argument("-n", type=int, default=10)
    explain.set_defaults(func=cmd_explain)

    rec = sub.add_parser("recommend", help="top-N items for users of the data set")
    rec.add_argument("model_dir")
    _data_args(rec, default=None)
    rec.add_argument("--user", action="append", required=True, help="original user id")
    rec.add_argument("-n", type=int, default=10)
    rec.set_defaults(func=cmd_recommend)

    score = sub.add_parser(
        "score", help="top-N for every user to Parquet, in chunks (resumable, steerable)"
    )
    score.add_argument("model_dir")
    score.add_argument("--out", required=True, help="output directory (resumed if unfinished)")
    _data_args(score, default=None)
    score.add_argument("--seed", type=int, default=0, help="split seed if none is stored")
    score.add_argument("-n", type=int, default=20, help="items per user")
    score.add_argument("--chunk-users", type=int, default=50_000, help="users per part file")
    score.add_argument("--batch-users", type=int, default=1024, help="users scored at once")
    score.add_argument(
        "--concept",
        action="append",
        default=[],
        help='steer every user: "+Horror", "-Comedy:0.5", "+latent:12:0.3" (spliced models)',
    )
    score.add_argument("--source", default="genres", help="concept source: genres | kg | tags")
    score.add_argument("--mapping", default="best_characterizes")
    score.add_argument("--top-latents", type=int, default=1, help="latents per concept")
    score.add_argument("--rule", choices=["convex", "additive"], default="convex")
    score.add_argument("--include-seen", action="store_true", help="do not filter seen items")
    score.add_argument("--overwrite", action="store_true", help="discard an earlier run in --out")
    _parallel_args(score)
    score.set_defaults(func=cmd_score)

    from steercf.text.cli import add_text_commands  # imports nothing heavy until run

    add_text_commands(sub)

    from steercf.explorer.cli import add_serve_command  # web imports only when it runs

    add_serve_command(sub)

    for command in (demo, train, ev, tsae, concepts, latents, latent, steer, explain, rec, score):
        command.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def _parallel_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", default="auto", help="auto (CUDA when present) | cpu | cuda | cuda:N"
    )
    parser.add_argument(
        "--nproc",
        type=int,
        default=1,
        help="data-parallel processes on this machine (runs torchrun; gloo on CPU, nccl on CUDA)",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="auto: TF32 matmuls on CUDA, float32 on CPU; bf16: scores in bfloat16 (score)",
    )


def _run_torchrun(nproc: int, argv: list[str]) -> int:
    """Rerun this command line in ``nproc`` processes under torchrun (standalone: it
    picks a free local port), which sets RANK / WORLD_SIZE for each."""
    # torchrun's parser looks at the script's arguments too: "--nproc" would be an
    # ambiguous abbreviation of its --nproc-per-node, so it is not passed on (WORLD_SIZE
    # tells the processes they run under torchrun).
    forwarded, skip = [], False
    for arg in argv:
        if skip or arg.startswith("--nproc="):
            skip = False
        elif arg == "--nproc":
            skip = True
        else:
            forwarded.append(arg)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += [f"--nproc_per_node={nproc}", "-m", "steercf", *forwarded]
    env = dict(os.environ)
    # one intra-op thread per process unless asked otherwise (torchrun's own default)
    env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.run(command, env=env, check=False).returncode


def _join_negative_knobs(argv: list[str]) -> list[str]:
    """``--concept -Comedy`` would read as an unknown option; glue it to its flag."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] == "--concept" and arg.startswith("-"):
            out[-1] = f"--concept={arg}"
        else:
            out.append(arg)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = _join_negative_knobs(sys.argv[1:] if argv is None else list(argv))
    args = parser.parse_args(argv)
    if getattr(args, "k", None) is None and args.command == "evaluate":
        args.k = [20]
    nproc = getattr(args, "nproc", 1)
    if nproc < 1:
        print(f"steercf: error: --nproc must be >= 1, got {nproc}", file=sys.stderr)
        return 2
    if nproc > 1 and "WORLD_SIZE" not in os.environ:  # not yet under torchrun
        return _run_torchrun(nproc, argv)
    started = time.perf_counter()
    try:
        args.func(args)
    except SteerCFError as err:
        print(f"steercf: error: {err}", file=sys.stderr)
        return 2
    finally:
        leave_process_group()
    if not getattr(args, "quiet", False):
        print(f"({time.perf_counter() - started:.1f}s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
