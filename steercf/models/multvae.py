"""Mult-VAE (Liang et al., "Variational Autoencoders for Collaborative Filtering",
WWW 2018): a variational autoencoder with a multinomial likelihood over items.

A user's row ``x`` (n_items,) is L2-normalised and, in training, thinned by dropout;
tanh layers encode it to a mean ``mu`` and a log-variance ``logvar`` (each ``latent_dim``
wide); training decodes a sample ``z = mu + exp(logvar / 2) * eps``, inference the mean;
tanh layers decode ``z`` to item logits. Per user the loss is the negative multinomial
log-likelihood ``-sum_i x_i log softmax(logits)_i`` plus ``beta`` times the KL divergence
of ``N(mu, exp(logvar))`` from ``N(0, I)``, with ``beta`` raised linearly from 0 to
``anneal_cap`` over ``total_anneal_steps`` optimiser steps (:func:`kl_weight`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn
from tqdm.auto import tqdm

from steercf.errors import InputError
from steercf.evaluation import parse_monitor
from steercf.io import require_tensors
from steercf.models.base import CFAE, UserRows, as_user_rows
from steercf.models.multvae_parts import (
    MultVAENetwork,
    MultVAEValidator,
    kl_weight,
    multinomial_nll,
    network_input,
)
from steercf.training import EarlyStopping

__all__ = ["PRESETS", "MultVAE", "kl_weight"]

# Recommended settings per data set, chosen on validation users of the protocol
# (``split_users`` seeds 0-2, early stopping on ``split.val_full`` by validation
# Recall@20); pass as ``MultVAE(**PRESETS[name])`` and ``fit(split.train, split.val_full)``.
# Grid: hidden_dims (600,) / (200,), latent_dim 200 / 64, total_anneal_steps 500 / 2000,
# with dropout 0.5, anneal_cap 0.2, lr 1e-3, batch 64, up to 100 epochs, patience 10.
# With ~12 steps per epoch the published 200,000 annealing steps would keep beta below
# 0.01 (val Recall@20 0.402 on ML-100K seed 0, against 0.408 at 2,000 steps).
PRESETS: dict[str, dict[str, Any]] = {
    # 943 users x 1682 items: the paper's [1682 -> 600 -> 200] shape; val Recall@20
    # 0.416 over seeds 0-2 (latent 64: 0.416; anneal 500 steps: 0.408; hidden 200:
    # 0.388-0.401; EASE 0.423 over seeds 0-4). Early stopping picked epochs 19-31.
    "ml-100k": {
        "hidden_dims": (600,),
        "latent_dim": 200,
        "dropout": 0.5,
        "anneal_cap": 0.2,
        "total_anneal_steps": 2000,
        "lr": 1e-3,
        "batch_size": 64,
        "epochs": 100,
        "patience": 10,
        "monitor": "recall@20",
    },
    # 603 users x 6298 items: a narrower code (64) under the wide hidden layer, annealed
    # faster (beta reaches 0.2 after 100 steps, ~13 epochs); val Recall@20 0.294 over
    # seeds 0-2 (anneal 2,000 steps: 0.285; latent 200: 0.271-0.278; hidden 200:
    # 0.236-0.253; EASE 0.313 and ELSA from a random start 0.276 over seeds 0-4).
    # Early stopping picked epochs 31-65.
    "ml-latest-small": {
        "hidden_dims": (600,),
        "latent_dim": 64,
        "dropout": 0.5,
        "anneal_cap": 0.2,
        "total_anneal_steps": 500,
        "lr": 1e-3,
        "batch_size": 64,
        "epochs": 100,
        "patience": 10,
        "monitor": "recall@20",
    },
}


class MultVAE(CFAE):
    """Mult-VAE (Liang et al., WWW 2018) in the shared CFAE interface.

    ``encode(x)`` is the posterior mean ``mu`` (n, latent_dim) of the L2-normalised rows
    (no dropout, no sampling); ``decode(z)`` the (n, n_items) item logits (a softmax of
    them is the multinomial over items; the ranking is the same).

    Args:
        hidden_dims: widths of the encoder's hidden tanh layers (the decoder mirrors
            them); the paper's ``[n_items, 600, 200]`` is ``(600,)``, ``latent_dim=200``.
        latent_dim: embedding width d (``d_``).
        dropout: share of each training row's entries dropped (after normalisation,
            survivors scaled by ``1 / (1 - dropout)``); the paper uses 0.5.
        anneal_cap: the largest KL weight ``beta`` (paper: 0.2).
        total_anneal_steps: optimiser steps over which ``beta`` rises linearly from 0 to
            1 (so it reaches ``anneal_cap`` after ``anneal_cap * total_anneal_steps``
            steps); 0 holds it at ``anneal_cap``. The published code uses 200,000 steps;
            on small data sets (a dozen steps per epoch) that keeps ``beta`` near 0, so
            the presets use fewer. See :func:`kl_weight`.
        lr: Adam learning rate (paper: 1e-3).
        weight_decay: Adam's L2 penalty (the published PyTorch code: 0).
        batch_size: users per step (the published code: 500).
        epochs: maximum epochs (the published code: 200, keeping the best one).
        patience: epochs without a validation improvement before stopping (needs
            validation rows in ``fit``).
        monitor: early-stopping criterion on the validation users: a ranking metric
            ``"recall@K"`` / ``"ndcg@K"`` on a fixed seeded 20 % hold-out of each
            validation user's items (the default; the paper selects on nDCG@100), or
            ``"loss"``: the multinomial negative log-likelihood of the validation users'
            full rows decoded from their means.
        seed: seeds initialisation, batch order, dropout, the sampled codes and the
            monitor's hold-out.
        device: where the network lives and computes.
        progress: show a tqdm bar.

    Attributes (after ``fit``):
        network_: the trained encoder and decoder (a ``torch.nn.Module``; parameters
            frozen: ``requires_grad`` False).
        history_: per-epoch records (train loss, KL weight, validation numbers).
        best_epoch_: the epoch kept (the last one without validation rows).
        n_items_, d_: item count and embedding width.

    Splicing an SAE in (:class:`~steercf.models.spliced.SplicedRecommender`): the SAE
    reads and reconstructs ``mu``, and ``decode`` is differentiable with respect to its
    input when called under autograd (the network's own parameters are frozen), so a
    splice-aware fine-tune can back-propagate through it. Unlike ELSA's and EASE's, this
    decoder is **nonlinear** (tanh layers, with biases), so what the spliced model's
    explanations assume does not hold: ``SplicedRecommender.latent_item_effects`` is
    ``decode`` of a latent's direction alone, and ``latent_contributions`` (one additive
    term per active latent) is only an approximation of how the latents make up a
    Mult-VAE score, not an exact split; steering itself (editing codes, decoding) is
    exact. The steerable-CF paper ("From Knots to Knobs") also found Mult-VAE's
    embeddings harder to reconstruct through an SAE, and steering through them less
    stable, than ELSA's.

    Measured (``benchmarks/accuracy.py``: 5 seeds of the protocol, test users, mean ±
    sd over seeds; presets in :data:`PRESETS`):

    ===============  ==========================  ====================  ====================
    data set         Mult-VAE: R@20 / nDCG@20    EASE: R@20 / nDCG@20  ELSA preset
    ===============  ==========================  ====================  ====================
    ml-100k          0.376±0.024 / 0.322±0.020   0.387 / 0.344         0.391 / 0.346
    ml-latest-small  0.280±0.025 / 0.238±0.023   0.313 / 0.291         0.312 / 0.272
    ===============  ==========================  ====================  ====================

    Mult-VAE trails EASE on every seed (Recall@20 by 0.004-0.019 on ML-100K and
    0.009-0.068 on latest-small); the presets have 2.4 M (ML-100K) and 7.7 M
    (latest-small) parameters to fit from 754 and 482 training users.
    """

    kind = "MultVAE"

    def __init__(
        self,
        hidden_dims: Sequence[int] = (600,),
        latent_dim: int = 200,
        dropout: float = 0.5,
        anneal_cap: float = 0.2,
        total_anneal_steps: int = 200_000,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        batch_size: int = 500,
        epochs: int = 200,
        patience: int = 10,
        monitor: str = "recall@20",
        seed: int = 0,
        device: str = "cpu",
        progress: bool = True,
    ) -> None:
        # a saved config holds a list; anything else is left for fit() to refuse
        self.hidden_dims = (
            tuple(hidden_dims) if isinstance(hidden_dims, (list, tuple)) else hidden_dims
        )
        self.latent_dim = latent_dim
        self.dropout = dropout
        self.anneal_cap = anneal_cap
        self.total_anneal_steps = total_anneal_steps
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.epochs = epochs
        self.patience = patience
        self.monitor = monitor
        self.seed = seed
        self.device = device
        self.progress = progress

    # ---- training ----------------------------------------------------------------------
    def _check_params(self) -> None:
        dims = self.hidden_dims
        if not isinstance(dims, tuple) or not all(_is_int(w) and w >= 1 for w in dims):
            raise InputError(f"hidden_dims must be a sequence of ints >= 1, got {dims!r}")
        for name in ("latent_dim", "batch_size", "epochs", "patience"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise InputError(f"{name} must be an int >= 1, got {value!r}")
        if not _is_int(self.total_anneal_steps) or self.total_anneal_steps < 0:
            raise InputError(
                f"total_anneal_steps must be an int >= 0, got {self.total_anneal_steps!r}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise InputError(f"dropout must be in [0, 1), got {self.dropout}")
        if not (self.anneal_cap >= 0 and math.isfinite(self.anneal_cap)):
            raise InputError(f"anneal_cap must be a finite number >= 0, got {self.anneal_cap}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise InputError(f"lr must be a positive finite number, got {self.lr}")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise InputError(f"weight_decay must be a finite number >= 0, got {self.weight_decay}")
        parse_monitor(self.monitor)

    def fit(
        self, user_items: sp.csr_matrix, val_user_items: sp.csr_matrix | None = None
    ) -> MultVAE:
        """Train on (n_users, n_items) interactions (users without any are skipped); with
        ``val_user_items`` (validation users' full rows) stop early on ``monitor`` and
        keep the best epoch.

        Sets ``network_``, ``history_``, ``best_epoch_``, ``n_items_`` and ``d_``."""
        self._check_params()
        rows = as_user_rows(user_items, user_items.shape[1], allow_empty=True)
        rows = rows[np.diff(rows.indptr) > 0]
        if rows.shape[0] == 0:
            raise InputError("no user with an interaction to train on")
        n_items = rows.shape[1]
        device = torch.device(self.device)
        generator = torch.Generator().manual_seed(self.seed)
        network = MultVAENetwork(n_items, self.hidden_dims, self.latent_dim)
        network.reset(generator)
        network.to(device)
        validator = self._validator(val_user_items, n_items)
        optimizer = torch.optim.Adam(
            network.parameters(), lr=self.lr, weight_decay=self.weight_decay
        )
        stopper: EarlyStopping[dict[str, torch.Tensor]] = EarlyStopping(
            self.patience, min_delta=1e-6, mode="max", counts_from=-1, state=_copy(network)
        )
        self.history_: list[dict[str, float]] = []
        step = 0
        bar = tqdm(range(self.epochs), desc="MultVAE", disable=not self.progress)
        if validator is not None:  # early stopping: count to the first possible stop
            stopper.bound_progress(bar, self.epochs)
        for epoch in bar:
            network.train()
            order = torch.randperm(rows.shape[0], generator=generator).numpy()
            total = 0.0
            for start in range(0, len(order), self.batch_size):
                batch = rows[order[start : start + self.batch_size]]
                beta = kl_weight(step, self.anneal_cap, self.total_anneal_steps)
                loss = self._batch_loss(network, batch, beta, generator, device)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                total += loss.item() * batch.shape[0]
            record = {"epoch": epoch, "train_loss": total / rows.shape[0], "kl_weight": beta}
            if validator is not None:
                network.eval()
                record.update(validator(network))
                stopper.update(validator.score(record), epoch, lambda: _copy(network))
                stopper.bound_progress(bar, self.epochs)
            self.history_.append(record)
            bar.set_postfix({k: round(v, 5) for k, v in record.items() if k != "epoch"})
            if validator is not None and stopper.should_stop:
                break
        if validator is not None:
            assert stopper.best_state is not None
            network.load_state_dict(stopper.best_state)
            self.best_epoch_ = stopper.best_epoch
        else:
            self.best_epoch_ = len(self.history_) - 1
        self.network_ = _frozen(network)
        self.n_items_, self.d_ = n_items, self.latent_dim
        return self

    def _batch_loss(
        self,
        network: MultVAENetwork,
        batch: sp.csr_matrix,
        beta: float,
        generator: torch.Generator,
        device: torch.device,
    ) -> torch.Tensor:
        """Mean over the (b, n_items) ``batch`` of the negative multinomial log-likelihood
        plus ``beta`` times the KL term, for one sampled code per user."""
        keep = None
        if self.dropout > 0:
            keep = torch.rand(batch.nnz, generator=generator).numpy() >= self.dropout
        x = network_input(batch, device, keep, 1.0 / (1.0 - self.dropout))
        mu, logvar = network.encode(x)
        eps = torch.randn(mu.shape, generator=generator).to(device)
        z = mu + torch.exp(0.5 * logvar) * eps
        nll = multinomial_nll(network.decode(z), batch, device)
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1).mean()
        return nll + beta * kl

    def _validator(
        self, val_user_items: sp.csr_matrix | None, n_items: int
    ) -> MultVAEValidator | None:
        """The per-epoch judge on the validation users with an interaction, if any."""
        if val_user_items is None:
            return None
        val = as_user_rows(val_user_items, n_items, allow_empty=True, name="val_user_items")
        val = val[np.diff(val.indptr) > 0]
        if not val.shape[0]:
            return None
        return MultVAEValidator(
            val, self.monitor, self.batch_size, self.seed, torch.device(self.device)
        )

    # ---- the CFAE interface --------------------------------------------------------------
    def encode(self, user_items: UserRows) -> torch.Tensor:
        """(n, n_items) rows -> (n, latent_dim) float32 posterior means (no gradient);
        an empty row gets the code of an all-zero input."""
        self._check_fitted()
        rows = as_user_rows(user_items, self.n_items_, allow_empty=True)
        device = self.network_.encoder[0].weight.device
        with torch.no_grad():
            return self.network_.encode(network_input(rows, device))[0]

    def decode(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(n, latent_dim) codes -> (n, n_items) float32 item logits. Differentiable with
        respect to ``embeddings`` under autograd (callers that only score wrap it in
        ``torch.no_grad``)."""
        self._check_embeddings(embeddings)
        return self.network_.decode(embeddings)

    # ---- persistence -------------------------------------------------------------------
    def _state(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        tensors = {k: v.detach().contiguous() for k, v in self.network_.state_dict().items()}
        return {**self.saved_params(), "n_items": self.n_items_}, tensors

    @classmethod
    def _from_state(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor], path) -> MultVAE:
        model = cls.from_saved_params(config)
        model._check_params()
        network = MultVAENetwork(config["n_items"], model.hidden_dims, model.latent_dim)
        expected = {k: tuple(v.shape) for k, v in network.state_dict().items()}
        require_tensors(tensors, expected, path)
        network.load_state_dict({k: tensors[k].float() for k in expected})
        model.network_ = _frozen(network.to(torch.device(model.device)))
        model.n_items_, model.d_ = config["n_items"], model.latent_dim
        return model


def _copy(network: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in network.state_dict().items()}


def _frozen(network: MultVAENetwork) -> MultVAENetwork:
    """``network`` in eval mode with its parameters frozen and their gradients cleared."""
    network.eval()
    for parameter in network.parameters():
        parameter.grad = None
    network.requires_grad_(False)
    return network


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)
