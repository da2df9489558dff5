"""The study loop shared by the CLI, the demo and the benchmarks: build a model by name,
pick its hyperparameters on validation users, report test metrics."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from steercf.errors import InputError
from steercf.evaluation import Split, evaluate
from steercf.models import EASE, ELSA, MultVAE, Popularity, PrincipalSubspace, Recommender
from steercf.models.elsa import PRESETS as ELSA_PRESETS
from steercf.models.multvae import PRESETS as MULTVAE_PRESETS
from steercf.models.spliced import default_train_config
from steercf.sae import TrainConfig

MODELS: dict[str, Callable[..., Recommender]] = {
    "popularity": Popularity,
    "ease": EASE,
    "elsa": ELSA,
    "multvae": MultVAE,
}

# Models that train by epochs (they take ``progress`` and early-stop on validation users).
TRAINED = ("elsa", "multvae")

# Validation grids. Small on purpose: validation sets of MovieLens 100K / latest-small
# hold ~60-90 users, so finer grids mostly fit noise.
DEFAULT_GRIDS: dict[str, dict[str, list[Any]]] = {
    "popularity": {},
    "ease": {"l2": [50.0, 100.0, 200.0, 300.0, 500.0, 1000.0]},
    "elsa": {
        "factors": [512, 1024],
        "lr": [1e-3],
        "batch_size": [64],
        "epochs": [100],
        "patience": [5],
    },
    # the grid the Mult-VAE presets were chosen from (steercf/models/multvae.py)
    "multvae": {
        "hidden_dims": [(600,), (200,)],
        "latent_dim": [200, 64],
        "total_anneal_steps": [500, 2000],
        "batch_size": [64],
        "epochs": [100],
        "patience": [10],
    },
}


# Per-data-set settings chosen on validation users of seeds 0-4 (ELSA's search is
# documented in steercf/models/elsa.py; Mult-VAE's, on seeds 0-2, in
# steercf/models/multvae.py); used where one good base model is needed.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "ml-100k": {
        "elsa": ELSA_PRESETS["ml-100k"],
        "elsa_random": ELSA_PRESETS["ml-100k-random"],
        "ease": {"l2": 300.0},
        "ease_lowrank": {"l2": 300.0, "rank": 256},
        "multvae": MULTVAE_PRESETS["ml-100k"],
    },
    "ml-latest-small": {
        "elsa": ELSA_PRESETS["ml-latest-small"],
        "elsa_random": ELSA_PRESETS["ml-latest-small-random"],
        "ease": {"l2": 100.0},
        "ease_lowrank": {"l2": 100.0, "rank": 256},  # val R@20 0.308 vs r128 0.294 (seed 0)
        "multvae": MULTVAE_PRESETS["ml-latest-small"],
    },
}


# The base each data set's spliced model is built on: (preset, principal directions). The
# data set's best plain model on validation users (mean Recall@20 and nDCG@20 over seeds
# 0-4: ML-100K ELSA 0.432 / 0.364 vs EASE 0.423 / 0.359; ml-latest-small EASE 0.313 /
# 0.285 vs ELSA 0.313 / 0.274), kept to the principal directions of its training users'
# item scores (steercf.models.PrincipalSubspace) that the splice's validation recall
# prefers (ML-100K 128 of 64/128/256; ml-latest-small 256 of 128/256), so the SAE (8x as
# many latents as its input is wide) trains in seconds while the splice keeps the wide
# model's ranking. benchmarks/sae.py --ranks / --ease-ranks; the README's tax table.
SPLICE_BASES: dict[str, tuple[str, int]] = {
    "ml-100k": ("elsa", 128),
    "ml-latest-small": ("ease", 256),
}
SPLICE_RANK = SPLICE_BASES["ml-100k"][1]  # the demo's, and any other data set's


# The spliced model's SAE training per data set, over steercf.models.spliced's
# TRAIN_DEFAULTS, chosen on validation users (benchmarks/sae.py --patience N, seeds 0-4,
# 16 augmented copies): ml-latest-small's short epochs (about 8 optimiser steps, ML-100K's
# 13) stop too soon at patience 5 (validation Recall@20 / nDCG@20 0.3052 / 0.2694 at 10
# against 0.3043 / 0.2686), while ML-100K keeps 5 (0.4200 / 0.3572 against 0.4190 /
# 0.3560 at 10, and half the training time).
SPLICE_TRAINING: dict[str, dict[str, Any]] = {"ml-latest-small": {"patience": 10}}


def splice_train_config(dataset: str, **overrides: Any) -> TrainConfig:
    """The SAE training settings of ``dataset``'s spliced model: the spliced model's
    defaults (:func:`~steercf.models.spliced.default_train_config`), then the data set's
    :data:`SPLICE_TRAINING` entry (none for unknown sets), then ``overrides``."""
    return default_train_config(**{**SPLICE_TRAINING.get(dataset, {}), **overrides})


def splice_rank(dataset: str) -> int:
    """Principal directions :func:`splice_base` keeps for ``dataset`` (ML-100K's for
    unknown sets)."""
    return _splice_entry(dataset)[1]


def _splice_entry(dataset: str) -> tuple[str, int]:
    """``dataset``'s :data:`SPLICE_BASES` entry, ML-100K's for unknown sets."""
    return SPLICE_BASES.get(dataset, SPLICE_BASES["ml-100k"])


def splice_base(dataset: str, seed: int = 0, quick: bool = False) -> PrincipalSubspace:
    """An unfitted base CFAE for ``dataset``'s spliced model (ML-100K's for unknown sets):
    the :data:`SPLICE_BASES` preset kept to its principal score directions
    (:class:`~steercf.models.PrincipalSubspace`; ``fit`` fits both)."""
    model, params = splice_base_params(dataset, quick=quick)
    return PrincipalSubspace(make_model(model, **params, seed=seed), rank=splice_rank(dataset))


def splice_base_params(dataset: str, quick: bool = False) -> tuple[str, dict[str, Any]]:
    """``(model kind, hyperparameters)`` of the model inside :func:`splice_base` (what
    ``steercf train --for-splice`` trains before keeping its principal directions)."""
    preset = _splice_entry(dataset)[0]
    params = base_params(dataset, preset, quick=quick)
    return ("ease" if preset == "ease_lowrank" else preset.removesuffix("_random")), params


def base_params(dataset: str, model: str, quick: bool = False) -> dict[str, Any]:
    """Preset hyperparameters of ``model`` for ``dataset`` (ML-100K's for unknown sets);
    ``quick`` caps training epochs and width for smoke runs."""
    params = dict(PRESETS.get(dataset, PRESETS["ml-100k"])[model])
    if quick and "epochs" in params:
        params["epochs"] = 3
        if "factors" in params:
            params = cap_factors(params, 128)  # a 1,024-latent SAE
    if "epochs" in params:
        params["progress"] = False
    return params


def cap_factors(params: dict[str, Any], max_factors: int) -> dict[str, Any]:
    """ELSA ``params`` with the width capped at ``max_factors``; a padded warm start's
    EASE factor keeps at most half of the capped width (it needs spare columns)."""
    params = dict(params)
    params["factors"] = min(params.get("factors", max_factors), max_factors)
    if params.get("init") == "ease_padded":
        params["init_rank"] = min(params.get("init_rank", 128), params["factors"] // 2)
    return params


def preset_params(dataset: str, model: str) -> dict[str, Any]:
    """The validated preset of ``model`` for ``dataset`` (``{}`` when there is none: the
    model's own defaults, the published large-data recipe for ELSA)."""
    return dict(PRESETS.get(dataset, {}).get(model, {}))


def tune_candidates(model: str, dataset: str) -> list[dict[str, Any]]:
    """Settings ``--tune`` tries on validation users: the grid of
    :data:`DEFAULT_GRIDS`, for ELSA every warm-started preset (the EASE spectral start
    of ML-100K and the padded start of latest-small), and the data set's own preset."""
    grid = DEFAULT_GRIDS.get(model, {})
    keys = list(grid)
    candidates = [
        dict(zip(keys, values, strict=True))
        for values in itertools.product(*(grid[key] for key in keys))
    ]
    own = preset_params(dataset, model)
    extra = [p for p in ELSA_PRESETS.values() if p.get("init", "random") != "random"]
    factory = MODELS.get(model)
    is_model = isinstance(factory, type) and issubclass(factory, Recommender)
    defaults = factory.param_defaults() if is_model else {}
    seen = [{**defaults, **c} for c in candidates]
    for params in [*(extra if model == "elsa" else []), *([own] if own else [])]:
        if {**defaults, **params} not in seen:  # a preset that is a grid point runs once
            candidates.append(dict(params))
            seen.append({**defaults, **params})
    return candidates


def make_model(name: str, **params: Any) -> Recommender:
    """Instantiate a recommender by name (``popularity``, ``ease``, ``elsa``, ``multvae``)."""
    if name not in MODELS:
        raise InputError(f"unknown model {name!r}; choose from {sorted(MODELS)}")
    return MODELS[name](**params)


def fit_model(name: str, split: Split, progress: bool = False, **params: Any) -> Recommender:
    """Fit on the split's training users (validation users' full rows drive early stopping)."""
    if name in TRAINED:
        params.setdefault("progress", progress)
    return make_model(name, **params).fit(split.train, split.val_full)


@dataclass
class Selection:
    """Outcome of a validation grid search."""

    model: Recommender
    params: dict[str, Any]
    val_score: float
    trials: list[tuple[dict[str, Any], float]]


def select_on_validation(
    name: str,
    split: Split,
    grid: dict[str, list[Any]] | None = None,
    metric: str = "recall@20",
    progress: bool = False,
    candidates: list[dict[str, Any]] | None = None,
    **fixed: Any,
) -> Selection:
    """Fit every grid point (or listed candidate) on training users and keep the best by
    ``metric`` on validation users. Test users are never looked at.

    Args:
        grid: ``{param: [values]}``; defaults to :data:`DEFAULT_GRIDS`.
        candidates: explicit settings to try instead of a grid (``tune_candidates``).
        fixed: parameters passed to every model (e.g. ``seed``); a candidate's own
            value wins.
    """
    if candidates is None:
        grid = DEFAULT_GRIDS.get(name, {}) if grid is None else grid
        keys = list(grid)
        candidates = [
            dict(zip(keys, values, strict=True))
            for values in itertools.product(*(grid[key] for key in keys))
        ]
    k = int(metric.split("@")[1])
    best: Selection | None = None
    trials = []
    for candidate in candidates or [{}]:
        params = {**fixed, **candidate}
        model = fit_model(name, split, progress=progress, **params)
        score = evaluate(model, split.val_input, split.val_target, ks=(k,)).mean(metric)
        trials.append((params, score))
        if best is None or score > best.val_score:
            best = Selection(model, params, score, trials)
    assert best is not None
    return best


def test_metrics(model: Recommender, split: Split, ks: tuple[int, ...] = (20,)) -> dict[str, float]:
    """Mean and standard error of Recall@K / nDCG@K on the split's test users."""
    return evaluate(model, split.test_input, split.test_target, ks=ks).summary()


test_metrics.__test__ = False  # type: ignore[attr-defined]  # not a pytest test
