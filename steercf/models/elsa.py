"""ELSA (Vančura et al., RecSys 2022): a scalable linear shallow autoencoder.

One item matrix ``A`` (n_items x d) with unit-norm rows; ``encode(x) = x A`` and
``decode(z) = z A^T``. Per user the loss is the squared distance between
``normalize(relu(x A A^T - x))`` and ``normalize(x)``, i.e. ``2 - 2 cos``.

The loss and its hand-written gradient live in :mod:`steercf.models.elsa_loss`, the
EASE warm starts in :mod:`steercf.models.elsa_init`; their public names are re-exported
here. Early stopping is :class:`steercf.training.EarlyStopping`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from steercf.data.rows import thin_rows
from steercf.distributed import Collective
from steercf.errors import InputError
from steercf.evaluation import parse_monitor
from steercf.io import require_tensors
from steercf.models.base import CFAE, UserRows, as_user_rows, csr_to_torch
from steercf.models.elsa_init import _check_init_rank, ease_padded_init, ease_spectral_init
from steercf.models.elsa_loss import (
    Workspace,
    _canonical,
    _normalize_rows_,
    _remove_parallel_,
    _Validator,
    elsa_loss_and_grad,
)
from steercf.training import EarlyStopping

__all__ = [
    "ELSA",
    "INITS",
    "PRESETS",
    "Workspace",
    "ease_padded_init",
    "ease_spectral_init",
    "elsa_loss_and_grad",
]

# Recommended hyperparameters per data set, chosen on validation users of the protocol
# (``split_users`` seeds 0-4, early stopping on ``split.val_full``); pass as
# ``ELSA(**PRESETS[name])`` and ``fit(split.train, split.val_full)``. Why these values: see
# "Small data sets" in the ELSA docstring.
PRESETS: dict[str, dict[str, Any]] = {
    # 943 users x 1682 items: warm-started from EASE (l2 and scale picked on validation:
    # val Recall@20 0.430 over seeds 0-4, against 0.398 for the best random start,
    # factors 512, lr 1e-3, batch 64), then fine-tuned with the ELSA loss at a small lr,
    # stopping on validation recall (the warm start itself is a candidate).
    "ml-100k": {
        "factors": 1024,
        "init": "ease",
        "init_l2": 300.0,
        "init_scale": 10.0,
        "lr": 1e-4,
        "batch_size": 64,
        "epochs": 30,
        "patience": 3,
        "monitor": "recall@20",
    },
    # 603 users x 6298 items, 59 % of items seen <= 2 times in training: a rank-64 factor
    # of EASE plus unit-norm filler for the rare items (val Recall@20 0.313 over seeds
    # 0-4, as EASE; the plain spectral start 0.19-0.26, the best random start 0.276),
    # fine-tuned at lr 1e-3 and stopped on validation recall. Grid: factors 256-1024,
    # init_rank 32-128, init_quantile 0.9-0.98, lr 3e-4/1e-3.
    "ml-latest-small": {
        "factors": 512,
        "init": "ease_padded",
        "init_l2": 100.0,
        "init_rank": 64,
        "init_quantile": 0.95,
        "lr": 1e-3,
        "batch_size": 64,
        "epochs": 30,
        "patience": 3,
        "monitor": "recall@20",
    },
    # latest-small from a random start (val 0.276): a bottleneck narrower than the 482
    # training users stops the model memorising single users. The SAE and steering
    # figures of latest-small were measured on this base (``--base elsa_random``).
    "ml-latest-small-random": {
        "factors": 128,
        "lr": 1e-3,
        "batch_size": 64,
        "epochs": 60,
        "patience": 5,
    },
    # ML-100K from a random start (val 0.398): the published recipe with a batch small
    # enough to take ~12 steps per epoch. Its embeddings splice an SAE in more cheaply
    # than the warm start's (benchmarks/sae.py --base elsa_random).
    "ml-100k-random": {"factors": 512, "lr": 1e-3, "batch_size": 64, "epochs": 100, "patience": 5},
    # Large data (ML-20M/25M): the published configuration.
    "ml-25m": {"factors": 1024, "lr": 3e-4, "batch_size": 1024, "epochs": 25, "patience": 3},
}


INITS = ("random", "ease", "ease_padded")


class ELSA(CFAE):
    """Linear shallow autoencoder trained with the ELSA loss.

    Args:
        factors: embedding width d.
        lr: Adam learning rate.
        batch_size: users per step.
        epochs: maximum epochs.
        patience: epochs without a validation improvement before stopping (needs
            validation rows in ``fit``).
        input_dropout: share of each training user's items hidden from the encoder (but
            kept as targets) at every step. 0 is the published loss; on small data sets
            a denoising share regularises and mimics the partial histories seen at test
            time. Choose it on validation users.
        betas: Adam betas (the published code uses 0.9, 0.99).
        monitor: early-stopping criterion on the validation users: ``"loss"`` (the
            published choice) or a ranking metric ``"recall@K"`` / ``"ndcg@K"``, computed
            on a fixed seeded 20 % hold-out of each validation user's items.
        init: where ``A`` starts: ``"random"`` (the published choice), ``"ease"``
            (:func:`ease_spectral_init`: top eigenpairs of ``I + init_scale * S``, ``S``
            EASE's symmetrised item-item matrix at ``init_l2``) or ``"ease_padded"``
            (:func:`ease_padded_init`: ``init_rank`` eigenpairs of ``S``, rows filled to
            unit norm in the other columns, scaled by ``init_quantile``). A warm start
            is itself a candidate for the best epoch.
        init_l2, init_scale, init_rank, init_quantile: see ``init``.
        seed: seeds initialisation, batch order, dropout and the monitor's hold-out.
        progress: show a tqdm bar.

    Small data sets (what we found on MovieLens latest-small, 603 users x 6298 items):

    * The defaults are the published large-data recipe. With 482 training users a batch
      of 1024 is one Adam step per epoch, so 25 epochs barely move A from its random
      start (val Recall@20 ~0.06). Use a small batch (64) and lr 1e-3 (``PRESETS``).
    * The validation loss bottoms out several epochs before validation recall peaks:
      the cosine loss also charges score mass on every non-target item, the ranking only
      its order at the top. ``monitor="recall@20"`` follows the ranking instead, but
      with ~60 validation users one epoch's recall has a standard error of ~0.02, so it
      stops on noise about as often as on signal; over 5 seeds it did not beat the loss
      (val 0.267 vs 0.269 at d=512). The loss stays the default.
    * Rare items: 59 % of items have <= 2 training interactions and 8 % none (8.6 % of
      validation targets are such never-seen items, unreachable for any model). Adam
      scales each row's step by its own gradient history, so an item seen by one user
      moves as fast as a popular one and its row is fitted to that user; ELSA then puts
      ~9 % of its top-20 on items seen <= 2 times (EASE, whose ridge term shrinks
      them: 0 %). Excluding such items from the lists recovers only ~0.01 recall, so
      this is not the main gap. From a random start, a narrower bottleneck (d=128
      instead of 512, fewer dimensions than training users) regularises best; the
      padded EASE start below does better still.
    * Unit-norm rows cannot express item popularity through the norm (EASE's columns
      can); ELSA's lists are less popular than EASE's (median training count of
      recommended items 53-63 vs 82), which costs recall on a popularity-heavy split.
    * The gap is one of training, not of capacity. ELSA ranks unseen items by the off-
      diagonal of ``A A^T``: a symmetric matrix with unit diagonal. EASE's ``B``
      symmetrised ranks as well as ``B`` itself (val Recall@20 0.404 vs 0.402 on
      ML-100K, 0.312 vs 0.313 on latest-small, seed 0), and at full rank ``I + c S`` is
      exactly such a matrix. ``init="ease"`` starts ELSA from the top-``factors``
      eigenpairs of ``I + init_scale * S`` (:func:`ease_spectral_init`); the ELSA loss
      then fine-tunes it. On ML-100K this start alone beats EASE on validation (0.430
      vs 0.423 over seeds 0-4 at d=1024, scale 10) and training from it at lr 1e-4
      keeps it; the validation loss keeps falling while recall drifts down, so the
      preset stops on ``monitor="recall@20"`` with the start as a candidate.
    * On latest-small that start loses (val 0.18-0.26 for d=1024-4096, scale 1-1000),
      but not because of the rank cut: the top eigenpairs of ``S`` alone, unnormalised,
      rank as well as EASE (val 0.306 at rank 128, 0.316 at rank 512, seed 0). What
      hurts is the unit norm. ELSA's diagonal is fixed, not informative, and a rare
      item's row of the factor is short (median squared length 0.009 of the longest
      at rank 1024); renormalising it multiplies its every score. ``init="ease_padded"``
      (:func:`ease_padded_init`) keeps the factor's lengths and fills each row up to
      unit norm along a random direction in spare columns, which costs a little noise
      in the off-diagonal instead. At d=512 with a rank-64 factor the start alone
      reaches val 0.30-0.32; fine-tuned, 0.313 over seeds 0-4 (EASE 0.313).

    Measured (5 seeds of the protocol, test users, mean over seeds;
    ``benchmarks/accuracy.py``; EASE's l2 picked per seed on validation from 50..1000):

    ===============  ==============================  ====================
    data set         ELSA preset: R@20 / nDCG@20     EASE: R@20 / nDCG@20
    ===============  ==============================  ====================
    ml-100k          0.391 / 0.346 (EASE start)      0.387 / 0.344
    ml-100k          0.348 / 0.308 (random start)
    ml-latest-small  0.312 / 0.272 (padded start)    0.313 / 0.291
    ml-latest-small  0.269 / 0.236 (random start)
    ===============  ==============================  ====================
    """

    kind = "ELSA"

    def __init__(
        self,
        factors: int = 256,
        lr: float = 3e-4,
        batch_size: int = 1024,
        epochs: int = 25,
        patience: int = 3,
        input_dropout: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.99),
        monitor: str = "loss",
        init: str = "random",
        init_l2: float = 300.0,
        init_scale: float = 3.0,
        init_rank: int = 128,
        init_quantile: float = 0.95,
        seed: int = 0,
        device: str = "cpu",
        progress: bool = True,
    ) -> None:
        self.factors = factors
        self.lr = lr
        self.batch_size = batch_size
        self.epochs = epochs
        self.patience = patience
        self.input_dropout = input_dropout
        self.betas = tuple(betas)  # a saved config holds a list
        self.monitor = monitor
        self.init = init
        self.init_l2 = init_l2
        self.init_scale = init_scale
        self.init_rank = init_rank
        self.init_quantile = init_quantile
        self.seed = seed
        self.device = device
        self.progress = progress

    def _check_params(self) -> None:
        if self.factors < 1 or self.batch_size < 1 or self.epochs < 1:
            raise InputError(
                f"factors, batch_size and epochs must be >= 1, got {self.factors}, "
                f"{self.batch_size}, {self.epochs}"
            )
        if self.patience < 1:
            raise InputError(f"patience must be >= 1, got {self.patience}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise InputError(f"lr must be a positive finite number, got {self.lr}")
        if len(self.betas) != 2 or not all(0.0 <= beta < 1.0 for beta in self.betas):
            raise InputError(f"betas must be two numbers in [0, 1), got {self.betas}")
        if not 0.0 <= self.input_dropout < 1.0:
            raise InputError(f"input_dropout must be in [0, 1), got {self.input_dropout}")
        parse_monitor(self.monitor)
        if self.init not in INITS:
            raise InputError(f"init must be one of {INITS}, got {self.init!r}")
        if not (self.init_l2 > 0 and self.init_scale > 0):
            raise InputError(
                f"init_l2 and init_scale must be > 0, got {self.init_l2}, {self.init_scale}"
            )
        if self.init == "ease_padded":
            _check_init_rank(self.init_rank, self.factors)
        if not 0.0 < self.init_quantile <= 1.0:
            raise InputError(f"init_quantile must be in (0, 1], got {self.init_quantile}")

    def fit(
        self,
        user_items: sp.csr_matrix,
        val_user_items: sp.csr_matrix | None = None,
        group: Collective | None = None,
    ) -> ELSA:
        """Train on (n_users, n_items) interactions; with ``val_user_items`` (validation
        users' full rows) stop early on ``monitor`` and keep the best epoch.

        ``group`` (:class:`steercf.distributed.Collective`) trains data-parallel: every
        process passes the same arguments, computes on its share of each batch's users
        and the gradients are averaged, which equals single-process training up to float
        rounding (:mod:`steercf.distributed`).

        Sets ``items_`` (n_items, factors), ``history_`` (per-epoch records) and
        ``best_epoch_``."""
        self._check_params()
        group = group if group is not None else Collective()
        rows = _nonempty_rows(user_items)
        generator = torch.Generator().manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        validator = self._validator(val_user_items, rows.shape[1])
        device = torch.device(self.device)
        items = self._initial_items(rows, generator, device)
        # The fused kernel does Adam's whole update in one pass over the parameters; the
        # default per-tensor CPU path makes ~10 passes and costs about as much as a batch's
        # matrix products at 20k x 512.
        optimizer = torch.optim.Adam(
            [items], lr=self.lr, betas=self.betas, fused=device.type in ("cpu", "cuda")
        )
        workspace = Workspace()
        self.history_: list[dict[str, float]] = []
        stopper = self._early_stopping(items, validator, workspace, group)
        bar = tqdm(range(self.epochs), desc="ELSA", disable=not self.progress or not group.is_main)
        if validator is not None:  # early stopping: count to the first possible stop
            stopper.bound_progress(bar, self.epochs)
        thin = (lambda b: thin_rows(b, self.input_dropout, rng)) if self.input_dropout else None
        for epoch in bar:
            loss = self._train_epoch(rows, items, optimizer, workspace, generator, group, thin)
            record = {"epoch": epoch, "train_loss": loss}
            if validator is not None:
                # rank 0's numbers decide early stopping for every process
                record.update(group.agree(validator(items.detach(), workspace)))
                stopper.update(validator.score(record), epoch, lambda: items.detach().clone())
                stopper.bound_progress(bar, self.epochs)
            self.history_.append(record)
            bar.set_postfix({k: round(v, 5) for k, v in record.items() if k != "epoch"})
            if validator is not None and stopper.should_stop:
                break
        items.grad = None
        self.items_ = stopper.best_state if validator is not None else items.detach().clone()
        self.best_epoch_ = stopper.best_epoch if validator is not None else len(self.history_) - 1
        self.n_items_, self.d_ = rows.shape[1], self.factors
        return self

    def _validator(self, val_user_items: sp.csr_matrix | None, n_items: int) -> _Validator | None:
        """The per-epoch judge on the validation users with an interaction, if any."""
        if val_user_items is None:
            return None
        val = as_user_rows(val_user_items, n_items, allow_empty=True, name="val_user_items")
        val = _canonical(val[np.diff(val.indptr) > 0])
        return _Validator(val, self.monitor, self.batch_size, self.seed) if val.shape[0] else None

    def _initial_items(
        self, rows: sp.csr_matrix, generator: torch.Generator, device: torch.device
    ) -> torch.Tensor:
        """(n_items, factors) unit-norm starting rows of ``A`` on ``device``: a leaf
        tensor that requires grad, random or warm-started per ``init``."""
        # Drawn for every start: ease_spectral_init falls back to these rows, and skipping
        # the draw for a warm start would shift every later draw (filler, batch order).
        items = torch.randn(rows.shape[1], self.factors, generator=generator)
        if self.init == "ease":
            items = ease_spectral_init(rows, self.factors, self.init_l2, self.init_scale, items)
        elif self.init == "ease_padded":
            items = ease_padded_init(
                rows, self.factors, self.init_l2, self.init_rank, self.init_quantile, generator
            )
        items = torch.nn.functional.normalize(items, dim=1).to(device).contiguous()
        return items.requires_grad_(True)

    def _early_stopping(
        self,
        items: torch.Tensor,
        validator: _Validator | None,
        workspace: Workspace,
        group: Collective,
    ) -> EarlyStopping[torch.Tensor]:
        """Early stopping on the validator's score, keeping a copy of the best ``items``
        (n_items, factors). A warm start is judged first, as epoch -1 (recorded in
        ``history_``): training must beat it on validation to replace it."""
        # Improvements must exceed 1e-6 (scores are means of per-user floats), and the
        # stale epochs are counted from the start, so epoch 0 can already be stale.
        stopper: EarlyStopping[torch.Tensor] = EarlyStopping(
            self.patience, min_delta=1e-6, mode="max", counts_from=-1, state=items.detach().clone()
        )
        if validator is not None and self.init != "random":
            record = {"epoch": -1, **group.agree(validator(items.detach(), workspace))}
            stopper.set_best(validator.score(record), -1)
            self.history_.append(record)
        return stopper

    def _train_epoch(
        self,
        rows: sp.csr_matrix,
        items: torch.Tensor,
        optimizer: torch.optim.Optimizer,
        workspace: Workspace,
        generator: torch.Generator,
        group: Collective,
        thin: Callable[[sp.csr_matrix], sp.csr_matrix] | None,
    ) -> float:
        """One pass over the (n_users, n_items) training ``rows`` in shuffled batches,
        updating ``items`` (n_items, factors) in place on the unit sphere; ``thin``
        hides part of each batch from the encoder. Returns the mean training loss per
        user (over all processes)."""
        order = torch.randperm(rows.shape[0], generator=generator).numpy()
        total = 0.0
        for start in range(0, len(order), self.batch_size):
            users = np.sort(order[start : start + self.batch_size])
            batch, thinned = group.shard_rows(rows, users, thin)  # this process's share
            if batch.shape[0]:
                loss, grad = elsa_loss_and_grad(
                    batch, items.detach(), input_rows=thinned, workspace=workspace
                )
            else:  # a last batch with fewer users than processes
                loss, grad = torch.zeros((), device=items.device), torch.zeros_like(items.detach())
            loss, grad = group.mean_over_batch(loss, grad, batch.shape[0], len(users))
            items.grad = _remove_parallel_(grad, items.detach())
            optimizer.step()
            with torch.no_grad():
                _normalize_rows_(items)
            total += loss.item() * len(users)
        return total / rows.shape[0]

    def encode(self, user_items: UserRows) -> torch.Tensor:
        self._check_fitted()
        rows = as_user_rows(user_items, self.n_items_, allow_empty=True)
        return torch.sparse.mm(csr_to_torch(rows, self.items_.device), self.items_)

    def decode(self, embeddings: torch.Tensor) -> torch.Tensor:
        self._check_embeddings(embeddings)
        return embeddings @ self.items_.T

    def item_vectors(self) -> torch.Tensor:
        """(n_items, factors) the unit-norm item rows of ``A`` (each item's embedding)."""
        self._check_fitted()
        return self.items_.float()

    def _state(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        return {**self.saved_params(), "n_items": self.n_items_}, {"items": self.items_}

    @classmethod
    def _from_state(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor], path) -> ELSA:
        require_tensors(tensors, {"items": (config["n_items"], config["factors"])}, path)
        model = cls.from_saved_params(config)
        model.items_ = tensors["items"].float()
        model.n_items_, model.d_ = config["n_items"], config["factors"]
        return model


def _nonempty_rows(user_items: sp.csr_matrix) -> sp.csr_matrix:
    """The (n_users', n_items) canonical CSR rows of the users with an interaction: an
    empty history carries no signal. Raises :class:`InputError` if none is left."""
    rows = _canonical(as_user_rows(user_items, user_items.shape[1], allow_empty=True))
    rows = rows[np.diff(rows.indptr) > 0]
    if rows.shape[0] == 0:
        raise InputError("no user with an interaction to train on")
    return rows
