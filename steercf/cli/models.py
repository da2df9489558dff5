"""``steercf demo|train|evaluate|recommend|score``: fit, measure and use recommenders."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from steercf.cli.common import (
    add_command,
    add_data_args,
    add_model_out_args,
    add_parallel_args,
    add_saved_model_args,
    check_out,
    load_saved,
    parallel,
    parse_params,
)
from steercf.concepts import MAPPINGS
from steercf.data import load_dataset
from steercf.errors import InputError
from steercf.evaluation import EvalResult, evaluate, split_users
from steercf.experiment import (
    MODELS,
    SPLICE_RANK,
    fit_model,
    make_model,
    preset_params,
    select_on_validation,
    splice_base_params,
    splice_rank,
    tune_candidates,
)
from steercf.models import PrincipalSubspace, SplicedRecommender
from steercf.models.spliced import SAE_DEFAULTS
from steercf.reporting import format_table
from steercf.runs import run_metadata
from steercf.steering import (
    DEFAULT_MAPPING,
    DEFAULT_RULE,
    DEFAULT_STRENGTH,
    DEFAULT_TOP_LATENTS,
    RULES,
    STEERING_MAPPINGS,
    parse_knobs,
)


def cmd_demo(args: argparse.Namespace) -> None:
    from steercf.demo import run_demo

    run_demo(quick=args.quick, seed=args.seed, progress=not args.quiet)


def train_params(args: argparse.Namespace, dataset: str, device: Any) -> dict[str, Any]:
    """The model's settings: the data set's validated preset, overridden by ``--param``
    (checked against the model's parameters and their types), plus seed, device and
    progress from their own flags."""
    if args.model is None:  # the default kind: the splice base's with --for-splice
        for_splice = getattr(args, "for_splice", False)
        args.model = splice_base_params(dataset)[0] if for_splice else "elsa"
    model_class = MODELS[args.model]
    settable = {
        name: value
        for name, value in model_class.param_defaults().items()
        if name not in ("seed", *model_class.RUNTIME_PARAMS)
    }
    given = parse_params(args.param, defaults=settable)
    if getattr(args, "for_splice", False):
        kind, preset = splice_base_params(dataset)
        if args.model != kind:
            raise InputError(f"--for-splice trains {dataset}'s splice base, {kind}: drop --model")
        preset.pop("progress", None)  # --quiet decides
    else:
        preset = preset_params(dataset, args.model)
    params = {**preset, **given}
    if "factors" in given and params.get("init") == "ease_padded" and "init_rank" not in given:
        # the padded warm start needs spare columns: its EASE factor keeps at most half
        params["init_rank"] = min(params["init_rank"], given["factors"] // 2)
    if preset:
        changed = {k: v for k, v in params.items() if preset.get(k) != v}
        what = (
            "splice base (steercf.experiment.splice_base)"
            if getattr(args, "for_splice", False)
            else "preset"
        )
        print(
            f"{args.model} {what} for {dataset}: {preset}"
            + (f", with {changed}" if changed else "")
        )
    elif args.model != "popularity" and not given:
        print(f"no {args.model} preset for {dataset}: the model's defaults")
    for name, value in (("seed", args.seed), ("device", str(device)), ("progress", not args.quiet)):
        if name in model_class.param_names():
            params[name] = value
    return params


def cmd_train(args: argparse.Namespace) -> None:
    check_out(args)
    group, device = parallel(args)
    data = load_dataset(
        args.data,
        min_rating=args.min_rating,
        min_user_positives=args.min_user_positives,
        encoding=args.encoding,
    )
    split = split_users(data.matrix, seed=args.seed)
    params = train_params(args, data.name, device)
    if group.world_size > 1:
        if args.model != "elsa" or args.tune:
            raise InputError(
                "data-parallel training (--nproc, torchrun) covers ELSA without --tune"
            )
        model = make_model("elsa", **params).fit(split.train, split.val_full, group=group)
    elif args.tune:
        if args.for_splice:
            raise InputError("--for-splice trains the fixed splice base; drop --tune")
        given = {pair.split("=", 1)[0] for pair in args.param}
        fixed = {k: v for k, v in params.items() if k in given or k in ("seed", "device")}
        candidates = tune_candidates(args.model, data.name)
        chosen = select_on_validation(
            args.model, split, progress=not args.quiet, candidates=candidates, **fixed
        )
        model = chosen.model
        print(f"chosen on validation users: {chosen.params} (recall@20 {chosen.val_score:.4f})")
    else:
        model = fit_model(args.model, split, **params)
    if getattr(args, "for_splice", False):
        rank = splice_rank(data.name)
        model = PrincipalSubspace(model, rank=rank).fit(split.train)
        print(
            f"kept to its {rank} principal score directions "
            f"({model.explained_:.1%} of the training users' score energy)"
        )
    metadata = run_metadata(
        args.data,
        data,
        args.seed,
        args.min_rating,
        args.min_user_positives,
        encoding=args.encoding,
        nproc=group.world_size,
    )
    if group.is_main:  # every rank holds the same model; one writes it
        model.save(args.out, metadata=metadata, force=args.force)
        print(f"saved {model.describe()} to {args.out}")
    group.barrier()


def cmd_evaluate(args: argparse.Namespace) -> None:
    run = load_saved(args)
    model, split = run.model, run.split
    inputs, targets = (
        (split.test_input, split.test_target)
        if args.split == "test"
        else (split.val_input, split.val_target)
    )
    ks = tuple(args.k or [20])
    result = evaluate(model, inputs, targets, ks=ks, progress=not args.quiet)
    n_users = len(next(iter(result.per_user.values())))
    if isinstance(model, SplicedRecommender):
        # the point of a spliced model is what the SAE costs: show the base beside it
        base = evaluate(model.base, inputs, targets, ks=ks)
        # both lists are scored on the same users: the difference's error is the paired one
        paired = EvalResult(
            {name: result.per_user[name] - base.per_user[name] for name in result.per_user}
        )
        rows = [
            {
                "metric": name,
                f"base {model.base.describe()}": base.mean(name),
                "spliced": result.mean(name),
                "difference": paired.mean(name),
                "sem of difference": paired.sem(name),
            }
            for name in result.per_user
        ]
    else:
        rows = [
            {"metric": name, "mean": result.mean(name), "sem": result.sem(name)}
            for name in result.per_user
        ]
    print(f"{model.kind} on {run.data.name}, {args.split} users ({n_users})")
    print(format_table(rows))


def cmd_recommend(args: argparse.Namespace) -> None:
    run = load_saved(args)
    data = run.data
    rows = np.atleast_1d(data.user_index(np.asarray(args.user, dtype=object)))
    ids, scores = run.model.recommend(data.matrix[rows], N=args.n)
    for user, user_row, items, item_scores in zip(args.user, rows, ids, scores, strict=True):
        listed = items >= 0  # a user with fewer unseen items than -n gets fewer
        print(f"user {user} ({data.matrix[user_row].nnz} items in history):")
        for rank, (item, score) in enumerate(
            zip(items[listed], item_scores[listed], strict=True), 1
        ):
            print(f"  {rank:>2}. {data.titles([item])[0]}  [{data.item_ids[item]}]  {score:.3f}")


def knobs_from_specs(run: Any, specs: list[str], args: argparse.Namespace) -> list:
    """Knobs of ``--concept`` specs; ``latent:N`` knobs need no concept mapping."""
    if not specs:
        return []
    if not isinstance(run.model, SplicedRecommender):
        raise InputError(
            f"{args.model_dir} holds a {run.model.kind} model; steering needs a spliced model"
        )
    return parse_knobs(
        run.model,
        run.data,
        specs,
        run.split.train_users,
        args.source,
        args.mapping,
        args.top_latents,
    )


def cmd_score(args: argparse.Namespace) -> None:
    from steercf.scoring import score_users

    group, device = parallel(args)
    run = load_saved(args)
    knobs = knobs_from_specs(run, args.concept, args)
    report = score_users(
        run.model.to(device),
        run.data.matrix,
        args.out,
        N=args.n,
        chunk_users=args.chunk_users,
        batch_users=args.batch_users,
        knobs=knobs,
        rule=args.rule,
        filter_seen=not args.include_seen,
        user_ids=run.data.user_ids,
        item_ids=run.data.item_ids,
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
    for problem in report.rescored_chunks.values():  # each process reports its own
        print(f"scored again: {problem}")


def add_steering_args(parser: argparse.ArgumentParser) -> None:
    """How concept knobs resolve: the defaults every steering entry point shares."""
    parser.add_argument("--source", default="genres", help="concept source: genres | kg | tags")
    parser.add_argument(
        "--mapping",
        choices=[*STEERING_MAPPINGS, *MAPPINGS],
        default=DEFAULT_MAPPING,
        help="concept -> latent mapping",
    )
    parser.add_argument(
        "--top-latents", type=int, default=DEFAULT_TOP_LATENTS, help="latents per concept"
    )
    parser.add_argument("--rule", choices=RULES, default=DEFAULT_RULE, help="steering rule")


def add_model_commands(sub: Any) -> list[argparse.ArgumentParser]:
    """Register demo, train, evaluate, recommend and score; returns their parsers."""
    demo = add_command(sub, "demo", "train, evaluate and compare models on MovieLens 100K")
    demo.add_argument("--quick", action="store_true", help="small settings (seconds)")
    demo.add_argument("--seed", type=int, default=0, help="split and training seed")
    demo.set_defaults(func=cmd_demo)

    train = add_command(
        sub,
        "train",
        "fit a model on the training users of a data set; to splice an SAE into it "
        "('steercf train-sae'), --for-splice trains the demo's narrow base",
    )
    add_data_args(train)
    train.add_argument(
        "--model",
        choices=sorted(MODELS),
        default=None,
        help="model kind (default: elsa; with --for-splice the data set's splice base)",
    )
    add_model_out_args(train, "model directory to write")
    train.add_argument("--seed", type=int, default=0, help="split and training seed")
    train.add_argument(
        "--param",
        action="append",
        default=[],
        help="hyperparameter key=value over the data set's preset (steercf.experiment.PRESETS)",
    )
    train.add_argument(
        "--for-splice",
        action="store_true",
        help="train the data set's splice base (steercf.experiment.splice_base, what the "
        "demo and the benchmarks splice): its best plain model kept to its principal score "
        f"directions (steercf.models.PrincipalSubspace; ML-100K: the ELSA preset, "
        f"{SPLICE_RANK} directions; ml-latest-small: EASE, "
        f"{splice_rank('ml-latest-small')} directions), so "
        f"'train-sae' builds {SAE_DEFAULTS['expansion'] * SPLICE_RANK:,} latents in "
        f"seconds instead of {SAE_DEFAULTS['expansion'] * 1024:,} in minutes on ML-100K's "
        "1,024-factor preset, at the preset's accuracy",
    )
    train.add_argument(
        "--tune",
        action="store_true",
        help="choose the settings on validation users (grid plus warm-started presets)",
    )
    add_parallel_args(train)
    train.set_defaults(func=cmd_train)

    ev = add_command(sub, "evaluate", "Recall/nDCG of a saved model under the protocol")
    add_saved_model_args(ev)
    ev.add_argument("--split", choices=["test", "val"], default="test", help="which users")
    ev.add_argument(
        "-k",
        "--k",
        type=int,
        action="append",
        default=None,
        help="cut-off K, 1..number of items; repeatable (20)",
    )
    ev.set_defaults(func=cmd_evaluate)

    rec = add_command(sub, "recommend", "top-N items for users of the data set")
    add_saved_model_args(rec)
    rec.add_argument("--user", action="append", required=True, help="original user id")
    rec.add_argument("-n", type=int, default=10, help="items per user (fewer if fewer are unseen)")
    rec.set_defaults(func=cmd_recommend)

    score = add_command(
        sub, "score", "top-N for every user to Parquet, in chunks (resumable, steerable)"
    )
    add_saved_model_args(score)
    score.add_argument("--out", required=True, help="output directory (resumed if unfinished)")
    score.add_argument(
        "-n", type=int, default=20, help="items per user (fewer if fewer are unseen)"
    )
    score.add_argument("--chunk-users", type=int, default=50_000, help="users per part file")
    score.add_argument("--batch-users", type=int, default=1024, help="users scored at once")
    score.add_argument(
        "--concept",
        action="append",
        default=[],
        help=f'steer every user: "+Horror" (toward), "-Comedy" (away; both at strength '
        f'{DEFAULT_STRENGTH}), "-Comedy:0.6", "+tags:pixar", "+kg:actor in Star Wars '
        '(1977), Lion King" (a concept by its id or readable name), "+latent:12:0.3" or '
        '"+neuron:12:0.3" (one SAE latent, spliced models; neuron is an alias of latent)',
    )
    add_steering_args(score)
    score.add_argument("--include-seen", action="store_true", help="do not filter seen items")
    score.add_argument("--overwrite", action="store_true", help="discard an earlier run in --out")
    add_parallel_args(score)
    score.set_defaults(func=cmd_score)
    return [demo, train, ev, rec, score]
