"""steercf models as RecBole 1.2.1 general recommenders, and a runner for them.

RecBole's own ``run_recbole`` only finds models inside ``recbole.model``, and importing
``recbole.quick_start`` imports ray (broken with numpy >= 2 and without
``pkg_resources``). :func:`run_recbole` here is the same pipeline (config, data set,
RecBole's split, trainer, evaluation) built from RecBole's lower-level pieces; it takes a
model class or the name of a RecBole model and never imports ray (it lives in
:mod:`steercf.integrations.recbole_runner` and is re-exported here)::

    from steercf.integrations.recbole import SteerCFSplicedELSA, run_recbole

    result = run_recbole(SteerCFSplicedELSA, dataset="ml-100k",
                         config_dict={"elsa_epochs": 20, "show_progress": False})
    result["test_result"]["ndcg@10"]

The steercf models are closed-form (EASE) or train themselves (ELSA, the SAE), so, like
RecBole's EASE, they are ``ModelType.TRADITIONAL`` with one dummy parameter: the model
is fitted once, in ``__init__``, on the training split's interaction matrix
(``dataset.inter_matrix(form="csr")``, padding user/item 0 included) and RecBole's
trainer then runs one epoch of a zero loss. A spliced model trains its CFAE and then the
SAE on that CFAE's embeddings of the training users, all inside this flow.

Scores for validation and test users are computed from their *training* interactions,
as RecBole's EASE does; RecBole itself sets the padding item and each user's history
(training, plus validation items at test time) to -inf before ranking, so the models
mask nothing themselves.

Configuration keys (RecBole config dict or YAML; defaults in each class's ``defaults``):

``SteerCFEASE`` / ``SteerCFSplicedEASE``
    ``reg_weight`` (RecBole EASE's name for the ridge, default 250 as RecBole),
    ``rank`` (low-rank factorisation; required width for the spliced model).
``SteerCFELSA`` / ``SteerCFSplicedELSA``
    ``elsa_<name>`` for every :class:`~steercf.models.ELSA` parameter (``elsa_factors``,
    ``elsa_lr``, ``elsa_batch_size``, ``elsa_epochs``, ``elsa_input_dropout``, ``elsa_init``,
    ...; RecBole's own ``epochs`` / ``learning_rate`` are left to RecBole's trainer).
spliced models
    ``sae_k``, ``sae_expansion``, ``sae_augment``, ``sae_max_epochs``,
    ``sae_patience``, plus ``sae_options`` / ``sae_train_options`` (dicts merged into
    :class:`~steercf.sae.SAEConfig` / :class:`~steercf.sae.TrainConfig`); defaults are
    the spliced model's own (``steercf.models.spliced.SAE_DEFAULTS``,
    ``TRAIN_DEFAULTS``).

``seed`` (RecBole's) seeds the steercf models too.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from recbole.config import Config
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.utils import InputType, ModelType

from steercf.errors import InputError, UnknownIdError
from steercf.integrations import build_knobs
from steercf.integrations.recbole_runner import RecBoleRun, run_recbole, train_recbole
from steercf.models import EASE, ELSA, MultVAE, SplicedRecommender
from steercf.models.base import Recommender
from steercf.models.spliced import SAE_DEFAULTS, TRAIN_DEFAULTS, default_train_config
from steercf.sae import TrainConfig
from steercf.steering import DEFAULT_RULE, Knob, recommend_rows, score_rows

__all__ = [
    "RecBoleRun",
    "SteerCFEASE",
    "SteerCFELSA",
    "SteerCFMultVAE",
    "SteerCFRecommender",
    "SteerCFSplicedEASE",
    "SteerCFSplicedELSA",
    "SteerCFSplicedMultVAE",
    "run_recbole",
    "train_recbole",
]


class SteerCFRecommender(GeneralRecommender):
    """Base class: a steercf model fitted once on RecBole's training interactions.

    Subclasses set ``defaults`` (config key -> default value) and implement
    :meth:`build`. After construction:

    Attributes:
        steercf_model: the fitted steercf recommender (full steercf API: ``save``,
            ``sparse_code``, :func:`steercf.steering.compare`, ...).
        interaction_matrix: (n_users, n_items) float32 CSR training interactions in
            RecBole's internal ids (row / column 0 are RecBole's padding).
        fit_seconds: wall time of the steercf fit.
    """

    input_type = InputType.POINTWISE
    type = ModelType.TRADITIONAL
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, config: Config, dataset: Any) -> None:
        super().__init__(config, dataset)
        # RecBole's optimiser needs one parameter; the loss never depends on it.
        self.dummy_param = torch.nn.Parameter(torch.zeros(1))
        self.interaction_matrix = dataset.inter_matrix(form="csr").astype(np.float32)
        self.params = {
            key: config[key] if key in config else value for key, value in self.defaults.items()
        }
        self.seed = int(config["seed"]) if config["seed"] is not None else 0
        self._user_tokens = np.asarray(dataset.field2id_token[dataset.uid_field])
        self._item_tokens = np.asarray(dataset.field2id_token[dataset.iid_field])
        model = self.build(self.params, self.seed)
        start = time.perf_counter()
        model.fit(self.interaction_matrix)
        self.fit_seconds = time.perf_counter() - start
        self.steercf_model: Recommender = model
        # Padding user 0 (and any user without training items) scores zeros.
        self._empty_scores = torch.zeros(self.n_items)

    def build(self, params: dict[str, Any], seed: int) -> Recommender:
        """An unfitted steercf model from the resolved ``params``."""
        raise NotImplementedError

    # ---- RecBole's model interface ----------------------------------------------------
    def forward(self) -> None:  # pragma: no cover - RecBole's API, never called for these
        pass

    def calculate_loss(self, interaction: Any) -> torch.Tensor:
        """A zero loss: the model was fitted in ``__init__``."""
        return self.dummy_param.sum() * 0.0

    def user_scores(self, user_ids: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(n, n_items) scores of RecBole-internal user ids from their training items."""
        users = _as_index(user_ids, self.n_users, "user")
        return score_rows(
            self.steercf_model, self.interaction_matrix[users], empty_scores=self._empty_scores
        )

    def full_sort_predict(self, interaction: Any) -> torch.Tensor:
        """Scores of the batch's users over all items, flattened (n_users * n_items,)."""
        users = interaction[self.USER_ID].cpu().numpy()
        return self.user_scores(users).flatten().to(self.device)

    def predict(self, interaction: Any) -> torch.Tensor:
        """Scores of (user, item) pairs, (batch,)."""
        users = interaction[self.USER_ID].cpu().numpy()
        items = interaction[self.ITEM_ID].cpu().numpy()
        unique, inverse = np.unique(users, return_inverse=True)
        scores = self.user_scores(unique)
        return scores[torch.from_numpy(inverse), torch.from_numpy(items)].to(self.device)

    # ---- recommendations and steering in RecBole ids -----------------------------------
    def user_ids(self, tokens: Sequence[str]) -> np.ndarray:
        """RecBole-internal ids of raw user tokens (as in the atomic files)."""
        return _token_ids(self._user_tokens, tokens, "user")

    def item_tokens(self, item_ids: np.ndarray) -> np.ndarray:
        """Raw item tokens of RecBole-internal item ids (any shape)."""
        return self._item_tokens[np.asarray(item_ids)]

    def recommend(
        self,
        user_ids: np.ndarray | Sequence[int],
        N: int = 10,
        steer_latents: dict[int, float] | None = None,
        knobs: Sequence[Knob] | None = None,
        steer_rule: str = DEFAULT_RULE,
        filter_items: Sequence[int] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-N items (RecBole-internal ids) from each user's training history,
        optionally steered.

        The history, the padding item and ``filter_items`` (RecBole-internal item ids)
        are never recommended; a user with fewer than N candidates gets fewer, padded
        with id -1 / score -inf in a batch (:func:`steercf.ranking.top_n`). Steering (one knob per
        ``{latent: strength}`` entry plus ``knobs``, see :mod:`steercf.steering`) needs a
        spliced model.

        Returns:
            ``(ids, scores)``, each (n_users, width), best first.
        """
        users = _as_index(user_ids, self.n_users, "user")
        rows = self.interaction_matrix[users]
        return recommend_rows(
            self.steercf_model,
            rows,
            N,
            build_knobs(steer_latents, knobs),
            steer_rule,
            filter_items=[0, *(filter_items if filter_items is not None else [])],  # 0: padding
            empty_scores=self._empty_scores,
        )

    def steer(
        self,
        user_ids: np.ndarray | Sequence[int],
        knobs: Sequence[Knob] | None = None,
        steer_latents: dict[int, float] | None = None,
        rule: str = DEFAULT_RULE,
        N: int = 10,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Steered top-N (RecBole-internal item ids); see :meth:`recommend`."""
        if not isinstance(self.steercf_model, SplicedRecommender):
            raise InputError(f"{type(self).__name__} has no SAE to steer; use a spliced model")
        if not (knobs or steer_latents):
            raise InputError("give knobs or steer_latents to steer")
        return self.recommend(user_ids, N, steer_latents, knobs, rule)


class SteerCFEASE(SteerCFRecommender):
    """steercf's EASE (``reg_weight`` = its ``l2``; optional low ``rank``)."""

    defaults: ClassVar[dict[str, Any]] = {"reg_weight": 250.0, "rank": None}

    def build(self, params: dict[str, Any], seed: int) -> Recommender:
        rank = params["rank"]
        return EASE(
            l2=float(params["reg_weight"]), rank=None if rank is None else int(rank), seed=seed
        )


# Fitted on RecBole's ml-100k split (random 8:1:1 per user): see benchmarks/recbole_ml100k.py.
# Every ELSA parameter as ``elsa_<name>`` (ELSA's own defaults, read off its signature),
# with the settings fitted on RecBole's ml-100k split (random 8:1:1 per user) over them:
# see benchmarks/recbole_ml100k.py.
_ELSA_DEFAULTS: dict[str, Any] = {
    **{
        f"elsa_{name}": value
        for name, value in ELSA.param_defaults().items()
        if name not in ("seed", *ELSA.RUNTIME_PARAMS)
    },
    "elsa_factors": 256,
    "elsa_lr": 1e-3,
    "elsa_batch_size": 64,
    "elsa_epochs": 15,
    "elsa_input_dropout": 0.7,
}


def _elsa(params: dict[str, Any], seed: int) -> ELSA:
    """ELSA from the ``elsa_<name>`` keys of a resolved RecBole config."""
    settings = {
        key[len("elsa_") :]: value for key, value in params.items() if key.startswith("elsa_")
    }
    return ELSA(**settings, seed=seed, progress=False)


class SteerCFELSA(SteerCFRecommender):
    """steercf's ELSA, trained for ``elsa_epochs`` epochs on the training split."""

    defaults: ClassVar[dict[str, Any]] = dict(_ELSA_DEFAULTS)

    def build(self, params: dict[str, Any], seed: int) -> Recommender:
        return _elsa(params, seed)


# Every MultVAE parameter as ``multvae_<name>`` (MultVAE's own defaults, the published
# recipe, read off its signature), with steercf's ML-100K preset over them
# (steercf.experiment.PRESETS; RecBole's flow gives the model no validation users, so
# it trains for a fixed ``multvae_epochs``: about where the preset's early stopping
# ended on ML-100K's validation users).
_MULTVAE_DEFAULTS: dict[str, Any] = {
    **{
        f"multvae_{name}": list(value) if isinstance(value, tuple) else value
        for name, value in MultVAE.param_defaults().items()
        if name not in ("seed", *MultVAE.RUNTIME_PARAMS)
    },
    "multvae_batch_size": 64,
    "multvae_total_anneal_steps": 2000,
    "multvae_epochs": 30,
}


def _multvae(params: dict[str, Any], seed: int) -> MultVAE:
    """MultVAE from the ``multvae_<name>`` keys of a resolved RecBole config."""
    settings = {
        key[len("multvae_") :]: value for key, value in params.items() if key.startswith("multvae_")
    }
    return MultVAE(**settings, seed=seed, progress=False)


class SteerCFMultVAE(SteerCFRecommender):
    """steercf's Mult-VAE, trained for ``multvae_epochs`` epochs on the training split."""

    defaults: ClassVar[dict[str, Any]] = dict(_MULTVAE_DEFAULTS)

    def build(self, params: dict[str, Any], seed: int) -> Recommender:
        return _multvae(params, seed)


_SAE_DEFAULTS: dict[str, Any] = {  # the spliced model's own (steercf.models.spliced)
    "sae_k": SAE_DEFAULTS["k"],
    "sae_expansion": SAE_DEFAULTS["expansion"],
    "sae_augment": SplicedRecommender.param_defaults()["augment"],
    "sae_max_epochs": TrainConfig.max_epochs,
    "sae_patience": TRAIN_DEFAULTS["patience"],
    "sae_options": None,
    "sae_train_options": None,
}


def _spliced(base: Recommender, params: dict[str, Any], seed: int) -> SplicedRecommender:
    sae_config = {
        "k": int(params["sae_k"]),
        "expansion": int(params["sae_expansion"]),
        **dict(params["sae_options"] or {}),
    }
    train_config = default_train_config(
        **{
            "max_epochs": int(params["sae_max_epochs"]),
            "patience": int(params["sae_patience"]),
            "seed": seed,
            "progress": False,
            **dict(params["sae_train_options"] or {}),
        }
    )
    return SplicedRecommender(
        base,
        sae_config,
        train_config,
        augment=int(params["sae_augment"]),
        seed=seed,
        progress=False,
    )


class SteerCFSplicedELSA(SteerCFRecommender):
    """ELSA with a TopK SAE spliced between encoder and decoder; steerable."""

    defaults: ClassVar[dict[str, Any]] = {**_ELSA_DEFAULTS, **_SAE_DEFAULTS}

    def build(self, params: dict[str, Any], seed: int) -> Recommender:
        return _spliced(_elsa(params, seed), params, seed)


class SteerCFSplicedMultVAE(SteerCFRecommender):
    """Mult-VAE with a TopK SAE spliced in on its mean embeddings; steerable (its
    decoder is nonlinear: see :class:`~steercf.models.MultVAE`)."""

    defaults: ClassVar[dict[str, Any]] = {**_MULTVAE_DEFAULTS, **_SAE_DEFAULTS}

    def build(self, params: dict[str, Any], seed: int) -> Recommender:
        return _spliced(_multvae(params, seed), params, seed)


class SteerCFSplicedEASE(SteerCFRecommender):
    """Low-rank EASE (``rank``) with a TopK SAE spliced in; steerable."""

    defaults: ClassVar[dict[str, Any]] = {"reg_weight": 250.0, "rank": 256, **_SAE_DEFAULTS}

    def build(self, params: dict[str, Any], seed: int) -> Recommender:
        if params["rank"] is None:
            raise InputError("SteerCFSplicedEASE needs a rank (the SAE's input width)")
        base = EASE(l2=float(params["reg_weight"]), rank=int(params["rank"]), seed=seed)
        return _spliced(base, params, seed)


def _as_index(ids: Any, n: int, kind: str) -> np.ndarray:
    array = np.atleast_1d(np.asarray(ids.cpu() if isinstance(ids, torch.Tensor) else ids))
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise InputError(f"{kind} ids must be integers (RecBole internal ids)")
    bad = array[(array < 0) | (array >= n)]
    if len(bad):
        raise UnknownIdError(f"unknown {kind} id(s) {bad[:10].tolist()}; valid ids are 0..{n - 1}")
    return array.astype(np.int64)


def _token_ids(tokens_by_id: np.ndarray, tokens: Sequence[str], kind: str) -> np.ndarray:
    lookup = {str(t): i for i, t in enumerate(tokens_by_id)}
    missing = [t for t in tokens if str(t) not in lookup]
    if missing:
        raise UnknownIdError(f"unknown {kind} token(s) {missing[:10]}")
    return np.array([lookup[str(t)] for t in tokens], dtype=np.int64)
