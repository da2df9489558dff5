"""``steercf train-sae|concepts|latents|latent|steer|explain``: splice an SAE in, then
read, label and turn its latents."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from steercf.cli.common import (
    add_command,
    add_config_flags,
    add_model_out_args,
    add_parallel_args,
    add_saved_model_args,
    check_out,
    config_values,
    load_saved,
    parallel,
)
from steercf.cli.models import add_steering_args, knobs_from_specs
from steercf.concepts import (
    concepts_report,
    format_latent,
    format_latents,
    format_reports,
    label_model,
    labels_json,
    load_labels,
    plot_reports,
    save_labels,
)
from steercf.data import InteractionData
from steercf.errors import InputError
from steercf.experiment import SPLICE_RANK, SPLICE_TRAINING, splice_rank, splice_train_config
from steercf.models import CFAE, EASE, SplicedRecommender
from steercf.models.spliced import SAE_DEFAULTS, TRAIN_DEFAULTS
from steercf.reporting import one_line
from steercf.runs import Run
from steercf.sae import SAEConfig, TrainConfig
from steercf.sae.config import ACTIVATIONS, LOSSES
from steercf.sae.trainer import epoch_seconds_estimate
from steercf.steering import (
    DEFAULT_STRENGTH,
    ConceptKnobs,
    compare,
    explain_items,
    score_parts,
    user_concepts,
)

SAE_FLAGS = ("k", "expansion", "width", "activation", "refit")
TRAIN_FLAGS = ("loss", "l1_coef", "aux_coef", "lr", "batch_size", "max_epochs", "patience")


def cmd_train_sae(args: argparse.Namespace) -> None:
    check_out(args)
    group, device = parallel(args)
    run = load_saved(args)
    base = run.model
    if not isinstance(base, CFAE) or isinstance(base, SplicedRecommender):
        raise InputError(
            f"{args.model_dir} holds a {base.kind} model; "
            "train-sae needs ELSA, Mult-VAE or low-rank EASE"
        )
    if isinstance(base, EASE) and base.rank is None:
        raise InputError("EASE without rank has no bottleneck; train it with --param rank=256")
    given = config_values(args, TRAIN_FLAGS)
    if given["patience"] is None:  # the data set's (steercf.experiment.SPLICE_TRAINING)
        del given["patience"]
    train_config = splice_train_config(
        run.data.name,
        **given,
        seed=run.split.seed if args.seed is None else args.seed,
        device=str(device),
        progress=not args.quiet,
    )
    if group.is_main:
        print(sae_plan(base, config_values(args, SAE_FLAGS), train_config, run, args.augment))
    model = SplicedRecommender(
        base.to(device),
        config_values(args, SAE_FLAGS),
        train_config,
        augment=args.augment,
        seed=train_config.seed,
        monitor=args.monitor,
        error_term=args.error_term,
    ).fit(run.split.train, run.split.val_full, group=group)
    model.to("cpu")  # labelling below reads tensors as numpy arrays
    if not group.is_main:  # every rank holds the same model; one writes it
        group.barrier()
        return
    # label latents now and save them in the same step as the model (`steercf latents`
    # reads them): no saved model lacks its labels
    labels = label_model(model, run.data, train_users=run.split.train_users)
    model.save(
        args.out,
        metadata=dict(base.metadata_),
        extra_json=labels_json(labels, model),
        force=args.force,
    )
    final = model.history_[model.best_epoch_]
    print(
        f"saved {base.describe()} + SAE ({model.n_latents} latents, k={args.k}"
        f"{', error-term mode' if model.error_term else ''}) to {args.out}; "
        f"best epoch {model.best_epoch_}, val cosine {final.get('val_cosine', float('nan')):.4f}"
    )
    group.barrier()


def sae_plan(
    base: Any, flags: dict[str, Any], train_config: TrainConfig, run: Run, augment: int
) -> str:
    """What ``train-sae`` is about to build and roughly how long it takes, said before
    training: the SAE's width follows the base's (``expansion`` x its factors), so the
    CLI's 1,024-factor ELSA preset gives 8,192 latents (minutes), the demo's splice base
    (``steercf train --for-splice``) 1,024 (seconds)."""
    config = SAEConfig.from_dict(
        {**{k: v for k, v in flags.items() if v is not None}, "d_in": base.d_}
    )
    rows = int(len(run.split.train_users) * (1 + augment))
    epoch = epoch_seconds_estimate(config, train_config, rows)
    sized = (
        f"width {config.width}"
        if config.width is not None
        else f"expansion {config.expansion} x the base's {base.d_} factors"
    )
    lines = [
        f"building an SAE of {config.n_latents:,} latents ({sized}), k={config.k}, on "
        f"{rows:,} training rows: about {_duration(epoch)} per epoch on {train_config.device}, "
        f"at most {train_config.max_epochs} epoch{'s' if train_config.max_epochs != 1 else ''} ({_duration(epoch * train_config.max_epochs)}"
        "; early stopping usually ends sooner), plus labelling"
    ]
    rank = splice_rank(run.data.name)
    if base.d_ > rank and config.width is None:
        lines.append(
            f"  (the benchmarks splice the data set's best plain model kept to its {rank} "
            f"principal score directions: {config.expansion * rank:,} latents in seconds; "
            "train it with 'steercf train --for-splice', or pass --width)"
        )
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def cmd_concepts(args: argparse.Namespace) -> None:
    run = load_saved(args, spliced=True)
    reports = concepts_report(
        run.model, run.data, sources=args.source, train_users=run.split.train_users
    )
    print(format_reports(reports, titles=run.data.titles(np.arange(run.data.n_items))))
    if args.plot:
        print(f"plots: {plot_reports(reports, args.plot, title=run.data.name)}")


def stored_labels(args: argparse.Namespace, run: Run | None = None):
    """Labels stored with the model, computed and stored on first use."""
    stored = load_labels(args.model_dir, missing_ok=True)
    if stored is not None:
        return stored
    run = run or load_saved(args, spliced=True)
    labels = label_model(run.model, run.data, train_users=run.split.train_users)
    save_labels(args.model_dir, labels)
    return labels


def cmd_latents(args: argparse.Namespace) -> None:
    print(format_latents(stored_labels(args), top=args.top, dead=args.dead))


def cmd_latent(args: argparse.Namespace) -> None:
    print(format_latent(stored_labels(args), args.latent))


def _user_row(data: InteractionData, user: str):
    row = int(np.atleast_1d(data.user_index(np.asarray([user], dtype=object)))[0])
    return data.matrix[row]


def _latent_text(labels: Any, latent: int, width: int) -> str:
    """A latent's label on one line of at most ``width`` characters, ending in "…" when
    cut (:func:`steercf.reporting.one_line`, the one rule for shortened text)."""
    return one_line(labels[latent].text if labels is not None else f"latent {latent}", width)


def cmd_steer(args: argparse.Namespace) -> None:
    run = load_saved(args, spliced=True)
    model, data = run.model, run.data
    knobs = knobs_from_specs(run, args.concept, args)
    history = _user_row(data, args.user)
    result = compare(model, history, knobs, rule=args.rule, N=args.n)
    labels = stored_labels(args, run)
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
    for before, item in zip(
        result.before_ids[0].tolist(), result.after_ids[0].tolist(), strict=False
    ):
        mark = "+" if item in entered else " "
        print(f"  {one_line(data.titles([before])[0], 42):<42} | {mark} {data.titles([item])[0]}")
        if item in entered and why[item]:
            latent = why[item][0][0]
            text = _latent_text(labels, latent, 70)
            print(f"  {'':>42} |     because of latent {latent}: {text}")
    left = result.left(0)
    print(f"left the list: {'; '.join(data.titles(left)) if left else 'nothing'}")


def cmd_explain(args: argparse.Namespace) -> None:
    run = load_saved(args, spliced=True)
    model, data = run.model, run.data
    # the same resolution as `steer`, so every mapping name (decoder_effect too) works
    mapping = ConceptKnobs.for_model(
        model, data, args.source, args.mapping, run.split.train_users
    ).mapping
    labels = stored_labels(args, run)
    history = _user_row(data, args.user)
    concepts = user_concepts(model, history, mapping)
    print(
        f"user {args.user} ({history.nnz} items): " + ", ".join(f"{c} {w:.2f}" for c, w in concepts)
    )
    print("active latents:")
    for latent, value in model.sparse_code(history).of(0)[: args.latents]:
        print(f"  {latent:>5}  {value:.3f}  {_latent_text(labels, latent, 90)}")
    ids, scores = model.recommend(history, N=args.n)
    print(
        "recommendations: each score split into what the user's latents add and take away, "
        + ("the SAE's error term, " if model.error_term else "")
        + "and the rest (the SAE's decoder bias and the user's mean); then the latents "
        "adding most, each with its share of all that the latents add"
        + (" and the error term adds" if model.error_term else "")
        + " (as the explorer shows it):"
    )
    parts = score_parts(model, history, ids[0])
    reasons = explain_items(model, history, ids[0], shares=True)
    for j, (item, why) in enumerate(zip(ids[0], reasons, strict=True)):
        split = (
            f"latents {parts['latents'][j]:+.3f} ({parts['latents_added'][j]:+.3f} added, "
            f"{parts['latents_taken'][j]:+.3f} taken away)"
        )
        if model.error_term:  # what the sparse code does not explain, signed
            split += f", error term {parts['error_term'][j]:+.3f}"
        split += f", rest {parts['rest'][j]:+.3f}"
        title = one_line(data.titles([item])[0], 60)
        print(f"  {title:<60} score {float(parts['score'][j]):.3f} = {split}")
        for latent, value, share in why:
            print(
                f"      {value:+.3f} ({share:>4.0%} of what they add): #{latent} "
                f"{_latent_text(labels, latent, 70)}"
            )


def add_latent_commands(sub: Any) -> list[argparse.ArgumentParser]:
    """Register train-sae, concepts, latents, latent, steer and explain."""
    tsae = add_command(
        sub,
        "train-sae",
        "splice an SAE into a saved CFAE (ELSA, Mult-VAE, low-rank EASE); it has --expansion "
        "x the base's factors latents (or --width): "
        f"{SAE_DEFAULTS['expansion'] * 1024:,} on 'steercf train''s 1,024-factor ELSA "
        f"preset for ML-100K (minutes), {SAE_DEFAULTS['expansion'] * SPLICE_RANK:,} "
        "on the demo's base from 'steercf train --for-splice' (seconds); it says what it "
        "builds, with a time estimate, before training",
    )
    add_saved_model_args(tsae)
    add_model_out_args(tsae, "spliced model directory to write")
    add_config_flags(
        tsae, SAEConfig, SAE_FLAGS, defaults=SAE_DEFAULTS, choices={"activation": ACTIVATIONS}
    )
    per_set = "; ".join(
        f"{settings['patience']} on {dataset}"
        for dataset, settings in SPLICE_TRAINING.items()
        if "patience" in settings
    )
    add_config_flags(
        tsae,
        TrainConfig,
        TRAIN_FLAGS,
        defaults={**TRAIN_DEFAULTS, "patience": None},  # None: the data set's
        choices={"loss": LOSSES},
        notes={
            "patience": f"(default: {TRAIN_DEFAULTS['patience']}, or the data set's entry in "
            f"steercf.experiment.SPLICE_TRAINING: {per_set})"
        },
    )
    spliced_defaults = SplicedRecommender.param_defaults()
    tsae.add_argument(
        "--augment",
        type=int,
        default=spliced_defaults["augment"],
        help="random sub-histories per training user added to the SAE's training rows",
    )
    tsae.add_argument(
        "--monitor",
        default=spliced_defaults["monitor"],
        help="early stopping on the SAE's validation 'loss' or the splice's 'recall@K'",
    )
    tsae.add_argument(
        "--error-term",
        action="store_true",
        help="recommend through decode(SAE(z) + (z - SAE(z))): the base's exact scores, "
        "steering still edits the sparse code, explain reports what the error term adds "
        "(off: the pure splice)",
    )
    add_parallel_args(tsae)
    tsae.set_defaults(func=cmd_train_sae)

    concepts = add_command(sub, "concepts", "monosemanticity report of a spliced model")
    add_saved_model_args(concepts)
    concepts.add_argument(
        "--source", action="append", default=None, help="genres | kg | tags (default: all)"
    )
    concepts.add_argument("--plot", help="write distribution plots to this PNG")
    concepts.set_defaults(func=cmd_concepts)

    latents = add_command(sub, "latents", "labels of a spliced model's latents")
    add_saved_model_args(latents)
    latents.add_argument("--top", type=int, default=30, help="how many latents to list")
    latents.add_argument("--dead", action="store_true", help="also list dead latents")
    latents.set_defaults(func=cmd_latents)

    latent = add_command(sub, "latent", "one latent: label, concepts, top items")
    add_saved_model_args(latent)
    latent.add_argument("latent", type=int, help="latent id")
    latent.set_defaults(func=cmd_latent)

    steer = add_command(sub, "steer", "turn concept knobs for a user; before/after lists")
    add_saved_model_args(steer)
    steer.add_argument("--user", required=True, help="original user id")
    steer.add_argument(
        "--concept",
        action="append",
        required=True,
        help=f'"+Horror" (toward), "-Comedy" (away; both at strength {DEFAULT_STRENGTH}), '
        '"+Horror:0.6", "+tags:pixar" (another concept source), "+kg:actor in Star Wars '
        '(1977), Lion King" (a knowledge-graph concept by its id or the name `steercf latent` shows, '
        'or the start of that name), "+latent:12:0.3" or "+neuron:12:0.3" (one SAE latent; '
        "neuron is an alias of latent); repeatable",
    )
    add_steering_args(steer)
    steer.add_argument("-n", type=int, default=10, help="list length (fewer if fewer are unseen)")
    steer.set_defaults(func=cmd_steer)

    explain = add_command(sub, "explain", "a user's concepts, latents and why each item")
    add_saved_model_args(explain)
    explain.add_argument("--user", required=True, help="original user id")
    add_steering_args(explain)
    explain.add_argument("--latents", type=int, default=8, help="active latents to show")
    explain.add_argument("-n", type=int, default=10, help="list length")
    explain.set_defaults(func=cmd_explain)
    return [tsae, concepts, latents, latent, steer, explain]
