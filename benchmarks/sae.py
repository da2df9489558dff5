"""What splicing an SAE into a CFAE costs, per SAE recipe.

Per data set and seed: split users (protocol), fit the bases (the data set's splice base,
``steercf.experiment.splice_base``: ML-100K's ELSA preset kept to 128 principal score
directions, ml-latest-small's EASE kept to 256; with ``--ranks`` / ``--ease-ranks`` the
ELSA preset / EASE kept to other numbers of directions; with ``--former`` ELSA trained at
256 factors, the former splice base; a low-rank EASE; optionally Mult-VAE), train one SAE
per setting on each base's embeddings of the training users, and
report validation and test Recall/nDCG@20 of base and spliced model, the drop, the
reconstruction cosine on test users and the dead-latent fraction (never active on a
training user nor on a single-item input).

Settings vary one thing at a time from the reference, the spliced model's defaults
(``steercf.models.spliced.SAE_DEFAULTS`` / ``TRAIN_DEFAULTS``: ``arch=topk,k=32,width=8x,
aux=on,aug=on,refit=on,train=recon``): refit off, k in {8, 16}, BatchTopK, AuxK off,
augmentation off, the published recipe's training (aux off, aug off), independent
initialisation, splice-aware training (``train=e2e``: reconstruction, then up to
``--finetune-epochs`` of a task loss: by default the spliced model ranks the hidden items
of sub-sampled training histories; ``--finetune-loss distill`` matches the base's scores)
and twice the latents (``width=16x``).

The tax is measured against the best plain model of the same split (EASE or the ELSA
preset, whichever has the higher validation Recall@20), not only against the spliced
model's own base: ``tax_recall@20`` / ``tax_ndcg@20`` = best plain minus spliced.

``--published`` instead runs the steerable-CF paper's SAE settings on an ELSA d=512
(random start): TopK 4096 latents, k=16, cosine loss, L1 3e-4, lr 3e-4, batch 1024, no
AuxK, augmentation or refit, up to 250 epochs with patience 50; with our tied
initialisation (encoder = decoder transpose) and with independent weights, each with the
published L1 term and without it (``l1=0``, our core's own training: TopK fixes the
sparsity). Rows ``chosen_preset``: per data set the one setting with the highest mean
validation Recall@20 over all seeds, with its test drop (also printed for the first
three seeds, the published code's count); rows ``best_spliced`` pick per seed instead.

    python benchmarks/sae.py [--quick] [--seeds 5] [--published] [--json out.json]
    python benchmarks/sae.py --no-ease --variants 0 9   # the default recipe, recon vs e2e
    python benchmarks/sae.py --no-ease --variants 0 --ranks 64 128 256 --ease-ranks 128 256
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from steercf.data import load_dataset
from steercf.evaluation import evaluate, split_users
from steercf.experiment import (
    SPLICE_BASES,
    base_params,
    cap_factors,
    make_model,
    splice_base,
    splice_base_params,
    splice_rank,
    splice_train_config,
)
from steercf.models import PrincipalSubspace
from steercf.models.spliced import (
    AUGMENT_COPIES,
    SAE_DEFAULTS,
    SplicedRecommender,
)
from steercf.reporting import format_table, mean_over_seeds, write_records
from steercf.sae import sae_metrics

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DATASETS = ["ml-100k", "ml-latest-small"]
REFERENCE = {
    "arch": "topk",
    "k": SAE_DEFAULTS["k"],
    "aux": "on",
    "aug": "on",
    "refit": "on",
    "train": "recon",
    "init": "tied",
    "width": SAE_DEFAULTS["expansion"],
    "monitor": "loss",
}
VARIANTS = [
    {},
    {"refit": "off"},
    {"k": 8},
    {"k": 16},
    {"arch": "batchtopk"},
    {"aux": "off"},
    {"aug": "off"},
    {"aux": "off", "aug": "off", "refit": "off"},  # the published recipe
    {"init": "independent"},
    {"train": "e2e"},
    {"width": 16},  # twice the latents
    {"width": 4},  # half the latents
    {"monitor": "recall@20"},  # stop on the spliced model's validation recall
]
PUBLISHED = {
    "arch": "topk",
    "k": 16,
    "aux": "off",
    "aug": "off",
    "refit": "off",
    "train": "recon",
    "width": 8,  # 4,096 latents on ELSA d=512
    "monitor": "loss",
    "l1": "3e-4",
}
# l1=0: our core's own training (TopK sets the sparsity; no L1 on the magnitudes)
PUBLISHED_VARIANTS = [
    {"init": "tied"},
    {"init": "independent"},
    {"init": "tied", "l1": "0"},
    {"init": "independent", "l1": "0"},
]
CHOSEN = "chosen on validation, per seed"


def setting_name(setting: dict) -> str:
    name = (
        f"arch={setting['arch']},k={setting['k']},width={setting['width']}x,aux={setting['aux']},"
        f"aug={setting['aug']},refit={setting['refit']},init={setting['init']},"
        f"train={setting['train']}"
    )
    # the default monitor stays out of the name, so earlier records still match
    if setting["monitor"] != "loss":
        name += f",monitor={setting['monitor']}"
    return f"{name},l1={setting['l1']}" if "l1" in setting else name


def run_one(
    dataset: str, base, split, setting: dict, seed: int, args: argparse.Namespace
) -> dict[str, float]:
    started = time.perf_counter()
    given = {}
    if args.published:
        given = {"l1_coef": float(setting["l1"]), "lr": 3e-4, "batch_size": 1024}
    if args.batch_size:
        given["batch_size"] = args.batch_size
    if args.patience:  # else the data set's (steercf.experiment.SPLICE_TRAINING)
        given["patience"] = args.patience
    train_config = splice_train_config(
        dataset,
        aux_coef=1 / 32 if setting["aux"] == "on" else 0.0,
        max_epochs=5 if args.quick else args.max_epochs,
        seed=seed,
        progress=False,
        **given,
    )
    model = SplicedRecommender(
        base,
        {
            "k": setting["k"],
            "expansion": setting["width"],
            "activation": setting["arch"],
            "refit": setting["refit"] == "on",
            "init": setting["init"],
        },
        train_config,
        augment=args.augment if setting["aug"] == "on" else 0,
        seed=seed,
        finetune_epochs=(2 if args.quick else args.finetune_epochs)
        if setting["train"] == "e2e"
        else 0,
        finetune_loss=args.finetune_loss,
        monitor=setting["monitor"],
    ).fit(split.train, split.val_full)
    fit_seconds = time.perf_counter() - started
    result = evaluate(model, split.test_input, split.test_target)
    val = evaluate(model, split.val_input, split.val_target)
    quality = sae_metrics(model.sae_, model.base.encode(split.test_input))
    val_quality = sae_metrics(model.sae_, model.base.encode(split.val_input))
    return {
        "val_cosine": val_quality["cosine"],
        "val_recall@20": val.mean("recall@20"),
        "val_ndcg@20": val.mean("ndcg@20"),
        "recall@20": result.mean("recall@20"),
        "ndcg@20": result.mean("ndcg@20"),
        "cosine": quality["cosine"],
        "dead_fraction": float(model.dead_latents(split.train).mean()),
        "epochs": len(model.history_),
        "seconds": fit_seconds,
    }


def best_plain_model(dataset: str, split, seed: int, args: argparse.Namespace) -> dict[str, float]:
    """Test Recall/nDCG@20 of the best plain model of this split: EASE or the ELSA
    preset, whichever scores higher on the validation users."""
    candidates = {
        "ease": make_model("ease", **base_params(dataset, "ease"), seed=seed),
        "elsa": make_model("elsa", **base_params(dataset, "elsa", quick=args.quick), seed=seed),
    }
    best, best_val = {}, -1.0
    for name, model in candidates.items():
        model.fit(split.train, split.val_full)
        val = evaluate(model, split.val_input, split.val_target).mean("recall@20")
        if val > best_val:
            test = evaluate(model, split.test_input, split.test_target)
            best = {"recall@20": test.mean("recall@20"), "ndcg@20": test.mean("ndcg@20")}
            best.update({"val_recall@20": val, "name": name})
            best_val = val
    return best


def choose_setting_over_seeds(records: list[dict]) -> list[dict]:
    """Per data set, the one setting a user would adopt as a preset: the highest mean
    validation Recall@20 over all seeds (a pick per seed swings with ~60 validation
    users). Returns its per-seed records again under ``model`` ``chosen_preset``, and
    prints every setting's mean validation Recall@20 and test drop over the first three
    seeds (the published code's count) and over all."""
    chosen_records = []
    for dataset in dict.fromkeys(r["dataset"] for r in records):
        spliced = [
            r
            for r in records
            if r["dataset"] == dataset and r["model"] not in ("best_plain", "best_spliced")
        ]

        def values(setting: str, metric: str, spliced: list[dict] = spliced) -> list[float]:
            mine = [r for r in spliced if r["setting"] == setting and r["metric"] == metric]
            return [r["value"] for r in sorted(mine, key=lambda r: r["seed"])]

        settings = list(dict.fromkeys(r["setting"] for r in spliced))
        if not settings:
            continue
        best = max(settings, key=lambda name: float(np.mean(values(name, "val_recall@20"))))
        n_seeds = len(values(best, "val_recall@20"))
        first = min(3, n_seeds)
        label = f"one setting for all {n_seeds} seeds, best mean validation Recall@20: {best}"
        chosen_records += [
            {**r, "model": "chosen_preset", "setting": label}
            for r in spliced
            if r["setting"] == best
        ]
        rows = []
        for name in settings:
            drops = np.asarray(values(name, "recall@20_drop"))
            rows.append(
                {
                    "dataset": dataset,
                    "setting": name + (" <- chosen" if name == best else ""),
                    "val_recall@20": float(np.mean(values(name, "val_recall@20"))),
                    f"drop, seeds 0-{first - 1}": float(drops[:first].mean()),
                    "sd": float(drops[:first].std(ddof=1)) if first > 1 else float("nan"),
                    f"drop, {n_seeds} seeds": float(drops.mean()),
                }
            )
        print(format_table(rows), file=sys.stderr, flush=True)
    return chosen_records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument(
        "--quick", action="store_true", help="one seed, ML-100K, 2 settings, 5 epochs"
    )
    parser.add_argument(
        "--seeds", type=int, default=5, help="seeds 0..N-1, one user split each (default 5)"
    )
    parser.add_argument("--datasets", nargs="+", default=DATASETS)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--factors",
        type=int,
        default=0,
        help="ELSA width cap (default 0: the data set's preset)",
    )
    parser.add_argument(
        "--ranks",
        type=int,
        nargs="+",
        default=[],
        help="also bases of the data set's ELSA preset kept to these many principal score "
        "directions, one base per rank, one ELSA fit (0: the whole ELSA)",
    )
    parser.add_argument(
        "--no-splice",
        action="store_true",
        help="skip the data set's splice base (steercf.experiment.splice_base)",
    )
    parser.add_argument(
        "--ease-ranks",
        type=int,
        nargs="+",
        default=[],
        help="also bases of the data set's full EASE preset kept to these many principal "
        "score directions (one base per rank, one EASE fit)",
    )
    parser.add_argument(
        "--former",
        action="store_true",
        help="also splice ELSA trained at 256 factors (the former splice base)",
    )
    parser.add_argument(
        "--base",
        choices=["elsa", "elsa_random"],
        default="elsa",
        help="ELSA preset: the data set's pick (EASE warm starts) or a random start",
    )
    parser.add_argument("--max-epochs", type=int, default=None, help="SAE epoch cap")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="SAE batch size (default: the recipe's)"
    )
    parser.add_argument("--patience", type=int, default=None, help="SAE early-stopping patience")
    parser.add_argument(
        "--finetune-epochs", type=int, default=6, help="splice-aware epochs (train=e2e)"
    )
    parser.add_argument(
        "--finetune-loss",
        choices=["holdout", "distill"],
        default="holdout",
        help="splice-aware loss: rank hidden items (holdout) or match the base (distill)",
    )
    parser.add_argument(
        "--published",
        action="store_true",
        help="the steerable-CF paper's SAE settings on an ELSA d=512 from a random start "
        "(ML-100K's random-start recipe on both data sets): TopK 4096, k=16, cosine loss, "
        "no AuxK/augmentation/refit, up to 250 epochs, patience 50; init tied or "
        "independent x L1 3e-4 or 0; overrides --base, --factors, --no-ease, --ranks and "
        "the epoch cap; adds rows chosen_preset (one setting per data set, chosen on mean "
        "validation Recall@20 over the seeds)",
    )
    parser.add_argument(
        "--augment", type=int, default=AUGMENT_COPIES, help="sub-histories per user"
    )
    parser.add_argument("--no-ease", action="store_true", help="skip the low-rank EASE base")
    parser.add_argument(
        "--multvae", action="store_true", help="also splice Mult-VAE (reconstruction and e2e)"
    )
    parser.add_argument(
        "--variants", type=int, nargs="+", help="indices into VARIANTS (default: all)"
    )
    args = parser.parse_args(argv)
    seeds = range(1 if args.quick else args.seeds)
    datasets = args.datasets[:1] if args.quick else args.datasets
    reference, all_variants = (
        (PUBLISHED, PUBLISHED_VARIANTS)
        if args.published
        else (
            REFERENCE,
            VARIANTS,
        )
    )
    # --quick: the reference and its splice-aware twin (the published pair's second)
    quick = [v for v in all_variants if v.get("train") == "e2e"] or all_variants[-1:]
    variants = [all_variants[0], quick[0]] if args.quick else all_variants
    if args.variants:
        variants = [all_variants[i] for i in args.variants]
    if args.published:  # the paper's base and schedule
        args.base, args.factors, args.no_ease, args.ranks = "elsa_random", 512, True, [0]
    if args.max_epochs is None:
        args.max_epochs = 250 if args.published else 1000
    if args.patience is None and args.published:
        args.patience = 50

    records: list[dict] = []

    def add(dataset, model, metric, value, seed, setting, n):
        records.append(
            {
                "dataset": dataset,
                "model": model,
                "metric": metric,
                "value": float(value),
                "seed": seed,
                "setting": setting,
                "n": n,
            }
        )

    for dataset in datasets:
        data = load_dataset(dataset, data_dir=SHARED_DATA)
        for seed in seeds:
            split = split_users(data.matrix, seed=seed)
            n_test = int(split.test_input.shape[0])
            # --published: one ELSA d=512 recipe for both data sets (random start, lr 1e-3,
            # batch 64, up to 100 epochs, patience 5: ML-100K's random-start preset)
            preset_set = "ml-100k" if args.published else dataset
            elsa_params = base_params(preset_set, args.base, quick=args.quick)
            if args.factors:
                elsa_params = cap_factors({**elsa_params, "factors": args.factors}, args.factors)
            bases = {}
            if not args.no_splice and not args.published:
                kind, _ = splice_base_params(dataset)
                bases[f"{kind}_pc{splice_rank(dataset)}"] = splice_base(
                    dataset, seed=seed, quick=args.quick
                )
            if args.ranks:
                elsa = make_model("elsa", **elsa_params, seed=seed)
                for rank in args.ranks:  # the wrappers share one ELSA, fitted once
                    bases.setdefault(
                        f"elsa_pc{rank}" if rank else "elsa",
                        PrincipalSubspace(elsa, rank=rank) if rank else elsa,
                    )
            if args.former:
                former = cap_factors({**elsa_params, "factors": 256}, 256)
                bases["elsa256"] = make_model("elsa", **former, seed=seed)
            if args.ease_ranks:
                ease = make_model("ease", **base_params(dataset, "ease"), seed=seed)
                for rank in args.ease_ranks:
                    bases[f"ease_pc{rank}"] = PrincipalSubspace(ease, rank=rank)
            if not args.no_ease:
                bases["ease_lowrank"] = make_model(
                    "ease", **base_params(dataset, "ease_lowrank"), seed=seed
                )
            if args.multvae:
                bases["multvae"] = make_model(
                    "multvae", **base_params(dataset, "multvae", quick=args.quick), seed=seed
                )
            best_plain = best_plain_model(dataset, split, seed, args)
            for metric in ("val_recall@20", "recall@20", "ndcg@20"):
                add(dataset, "best_plain", metric, best_plain[metric], seed, "", n_test)
            print(
                f"{dataset} seed {seed} best plain model on validation users: "
                f"{best_plain['name']}, test {best_plain['recall@20']:.4f}",
                file=sys.stderr,
                flush=True,
            )
            candidates = []  # (validation recall, test figures, name) of each spliced model
            for base_name, base in bases.items():
                if isinstance(base, PrincipalSubspace) or not hasattr(base, "n_items_"):
                    base.fit(split.train, split.val_full)
                base_result = evaluate(base, split.test_input, split.test_target)
                base_recall = base_result.mean("recall@20")
                base_variants = {"multvae": [{}, {"train": "e2e"}]}
                for variant in base_variants.get(base_name, variants):
                    setting = {**reference, **variant}
                    started = time.perf_counter()
                    out = run_one(dataset, base, split, setting, seed, args)
                    name = setting_name(setting)
                    add(dataset, base_name, "base_recall@20", base_recall, seed, name, n_test)
                    add(
                        dataset,
                        base_name,
                        "base_ndcg@20",
                        base_result.mean("ndcg@20"),
                        seed,
                        name,
                        n_test,
                    )
                    for metric in (
                        "val_recall@20",
                        "val_ndcg@20",
                        "val_cosine",
                        "recall@20",
                        "ndcg@20",
                        "cosine",
                        "dead_fraction",
                    ):
                        add(dataset, base_name, metric, out[metric], seed, name, n_test)
                    add(
                        dataset,
                        base_name,
                        "recall@20_drop",
                        base_recall - out["recall@20"],
                        seed,
                        name,
                        n_test,
                    )
                    for metric in ("recall@20", "ndcg@20"):
                        tax = best_plain[metric] - out[metric]
                        add(dataset, base_name, f"tax_{metric}", tax, seed, name, n_test)
                    out["recall@20_drop"] = base_recall - out["recall@20"]
                    candidates.append((out["val_recall@20"], out, f"{base_name}:{name}"))
                    add(
                        dataset,
                        base_name,
                        "spliced_fit_seconds",
                        out["seconds"],
                        seed,
                        name,
                        n_test,
                    )
                    if args.json:  # keep what is done if a long run is interrupted
                        write_records(args.json, records)
                    print(
                        f"{dataset} seed {seed} {base_name} {name}: base {base_recall:.4f} "
                        f"spliced {out['recall@20']:.4f} cos {out['cosine']:.3f} "
                        f"dead {out['dead_fraction']:.3f} ({out['epochs']} epochs, "
                        f"{time.perf_counter() - started:.0f}s)",
                        file=sys.stderr,
                        flush=True,
                    )
            if candidates:  # the best spliced model of this split, chosen on validation
                _, chosen, chosen_name = max(candidates, key=lambda c: c[0])
                for metric in (
                    "val_recall@20",
                    "recall@20",
                    "recall@20_drop",
                    "ndcg@20",
                    "dead_fraction",
                ):
                    add(dataset, "best_spliced", metric, chosen[metric], seed, CHOSEN, n_test)
                for metric in ("recall@20", "ndcg@20"):
                    tax = best_plain[metric] - chosen[metric]
                    add(dataset, "best_spliced", f"tax_{metric}", tax, seed, CHOSEN, n_test)
                print(
                    f"{dataset} seed {seed} best spliced model on validation users: "
                    f"{chosen_name}, tax Recall@20 {best_plain['recall@20'] - chosen['recall@20']:+.4f}",
                    file=sys.stderr,
                    flush=True,
                )

    if args.published:
        records += choose_setting_over_seeds(records)

    metrics = (
        "base_recall@20",
        "val_recall@20",
        "recall@20",
        "recall@20_drop",
        "tax_recall@20",
        "ndcg@20",
        "tax_ndcg@20",
        "cosine",
        "dead_fraction",
        "spliced_fit_seconds",
    )
    rows = mean_over_seeds(records, ("dataset", "model", "setting"), metrics, sd=len(seeds) > 1)
    for row in rows:
        row["setting"] = row["setting"].replace(",width=8x", "")
    bases_note = (
        "base: ELSA d=512 from a random start; aug=off"
        if args.published
        else "bases named kind_pcR are kept to R principal score directions (the splice base: "
        f"{', '.join(f'{d} {k} {r}' for d, (k, r) in SPLICE_BASES.items())}); "
        f"ELSA {args.base} factors={args.factors or 'preset'}; augment={args.augment} when aug=on"
    )
    print(
        f"Test users, mean over {len(seeds)} seed(s); settings omit width=8x (8x the base "
        f"embedding) unless they say otherwise; {bases_note}; SAE max_epochs="
        f"{5 if args.quick else args.max_epochs}, patience={args.patience or 'per data set'}"
        f"{'; --quick: a smoke test (5 epochs, 2 settings), not a result' if args.quick else ''}:"
    )
    print(format_table(rows))
    if args.json:
        write_records(args.json, records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
