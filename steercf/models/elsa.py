"""ELSA (Vančura et al., RecSys 2022): a scalable linear shallow autoencoder.

One item matrix ``A`` (n_items x d) with unit-norm rows; ``encode(x) = x A`` and
``decode(z) = z A^T``. Per user the loss is the squared distance between
``normalize(relu(x A A^T - x))`` and ``normalize(x)``, i.e. ``2 - 2 cos``.

Training never densifies the interaction matrix and computes the gradient by hand: one
epoch then costs little more than its five matrix products (x A, z A^T, G A, G^T z,
x^T gz), where autograd would add a dozen full passes over the (batch x items) scores.
``tests/test_models.py`` checks the hand gradient against autograd.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from steercf.errors import InputError
from steercf.io import require_tensors
from steercf.models.base import CFAE, UserRows, as_user_rows, csr_to_torch


def elsa_loss_and_grad(
    rows: sp.csr_matrix,
    items: torch.Tensor,
    need_grad: bool = True,
    input_rows: sp.csr_matrix | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """ELSA loss (mean over users) and its gradient with respect to ``items``.

    Args:
        rows: (b, n_items) CSR interactions of one batch (no empty rows): the targets.
        items: (n_items, d) item matrix A.
        input_rows: (b, n_items) what the encoder sees, a subset of ``rows`` (denoising);
            defaults to ``rows`` (the published loss).

    Returns:
        ``(loss, grad)``: a scalar and (n_items, d), or None without ``need_grad``.
    """
    b = rows.shape[0]
    device = items.device
    seen = rows if input_rows is None else input_rows
    x_in = csr_to_torch(seen, device)
    seen_row = torch.from_numpy(np.repeat(np.arange(b), np.diff(seen.indptr))).to(device)
    seen_col = torch.from_numpy(seen.indices.astype(np.int64)).to(device)
    seen_val = torch.from_numpy(seen.data.astype(np.float32)).to(device)
    row_of = torch.from_numpy(np.repeat(np.arange(b), np.diff(rows.indptr))).to(device)
    col = torch.from_numpy(rows.indices.astype(np.int64)).to(device)
    val = torch.from_numpy(rows.data.astype(np.float32)).to(device)

    z = torch.sparse.mm(x_in, items)  # (b, d)
    residual = z @ items.T  # (b, n_items): becomes r = relu(x A A^T - x) in place
    residual.index_put_((seen_row, seen_col), -seen_val, accumulate=True)
    residual.relu_()
    r_norm = torch.linalg.vector_norm(residual, dim=1)  # (b,)
    x_norm = torch.zeros(b, device=device).index_add_(0, row_of, val * val).sqrt_()
    x_unit = val / x_norm[row_of]  # non-zeros of normalize(x)
    r_at_x = residual[row_of, col]
    dot = torch.zeros(b, device=device).index_add_(0, row_of, r_at_x * x_unit)
    safe_norm = r_norm.clamp_min(1e-12)
    # |normalize(r) - normalize(x)|^2 = 2 - 2 cos, or 1 when r == 0 (normalize(0) = 0).
    per_user = torch.where(r_norm > 0, 2 - 2 * dot / safe_norm, torch.ones_like(r_norm))
    loss = per_user.mean()
    if not need_grad:
        return loss, None

    # d loss_u / d r = -2 (x_unit / |r| - (r . x_unit) r / |r|^3), masked by relu' (r > 0);
    # the dense term vanishes where r == 0 by itself, the sparse term needs the mask.
    grad_scores = residual.mul_((2 * dot / safe_norm**3 / b)[:, None])  # reuses the buffer
    sparse_term = -2 * x_unit / safe_norm[row_of] / b * (r_at_x > 0)
    grad_scores.index_put_((row_of, col), sparse_term, accumulate=True)
    grad_z = grad_scores @ items  # (b, d)
    grad_items = grad_scores.T @ z  # decoder side, (n_items, d)
    x_t = csr_to_torch(seen.T.tocsr(), device)
    grad_items += torch.sparse.mm(x_t, grad_z)  # encoder side
    return loss, grad_items


class ELSA(CFAE):
    """Linear shallow autoencoder trained with the ELSA loss.

    Args:
        factors: embedding width d.
        lr: Adam learning rate.
        batch_size: users per step.
        epochs: maximum epochs.
        patience: epochs without a validation-loss improvement before stopping (needs
            validation rows in ``fit``).
        input_dropout: share of each training user's items hidden from the encoder (but
            kept as targets) at every step. 0 is the published loss; on small data sets
            a denoising share regularises and mimics the partial histories seen at test
            time. Choose it on validation users.
        betas: Adam betas (the published code uses 0.9, 0.99).
        seed: seeds initialisation and batch order.
        progress: show a tqdm bar.
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
        self.betas = betas
        self.seed = seed
        self.device = device
        self.progress = progress

    def fit(self, user_items: sp.csr_matrix, val_user_items: sp.csr_matrix | None = None) -> ELSA:
        """Train on (n_users, n_items) interactions; with ``val_user_items`` (validation
        users' full rows) stop early on their loss and keep the best epoch.

        Sets ``items_`` (n_items, factors) and ``history_`` (per-epoch losses)."""
        if self.factors < 1 or self.batch_size < 1 or self.epochs < 1:
            raise InputError("factors, batch_size and epochs must be >= 1")
        if not 0.0 <= self.input_dropout < 1.0:
            raise InputError(f"input_dropout must be in [0, 1), got {self.input_dropout}")
        rows = as_user_rows(user_items, user_items.shape[1], allow_empty=True)
        rows = rows[np.diff(rows.indptr) > 0]  # an empty history carries no signal
        if rows.shape[0] == 0:
            raise InputError("no user with an interaction to train on")
        n_items = rows.shape[1]
        val = None
        if val_user_items is not None:
            val = as_user_rows(val_user_items, n_items, allow_empty=True, name="val_user_items")
            val = val[np.diff(val.indptr) > 0]
        generator = torch.Generator().manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        items = torch.randn(n_items, self.factors, generator=generator)
        items = torch.nn.functional.normalize(items, dim=1).to(self.device).requires_grad_(True)
        optimizer = torch.optim.Adam([items], lr=self.lr, betas=self.betas)

        self.history_: list[dict[str, float]] = []
        best_loss, best_items, stale = float("inf"), items.detach().clone(), 0
        bar = tqdm(range(self.epochs), desc="ELSA", disable=not self.progress)
        for epoch in bar:
            order = torch.randperm(rows.shape[0], generator=generator).numpy()
            total = 0.0
            for start in range(0, len(order), self.batch_size):
                batch = rows[np.sort(order[start : start + self.batch_size])]
                thinned = thin_rows(batch, self.input_dropout, rng) if self.input_dropout else None
                loss, grad = elsa_loss_and_grad(batch, items.detach(), input_rows=thinned)
                items.grad = _remove_parallel(grad, items.detach())
                optimizer.step()
                with torch.no_grad():
                    items.copy_(torch.nn.functional.normalize(items, dim=1))
                total += loss.item() * batch.shape[0]
            record = {"epoch": epoch, "train_loss": total / rows.shape[0]}
            if val is not None and val.shape[0]:
                record["val_loss"] = self._mean_loss(val, items.detach())
                if record["val_loss"] < best_loss - 1e-6:
                    best_loss, best_items, stale = record["val_loss"], items.detach().clone(), 0
                else:
                    stale += 1
            self.history_.append(record)
            bar.set_postfix({k: round(v, 5) for k, v in record.items() if k != "epoch"})
            if val is not None and stale >= self.patience:
                break
        self.items_ = best_items if val is not None else items.detach().clone()
        self.best_epoch_ = (
            min(self.history_, key=lambda r: r["val_loss"])["epoch"]
            if val is not None
            else len(self.history_) - 1
        )
        self.n_items_, self.d_ = n_items, self.factors
        return self

    def _mean_loss(self, rows: sp.csr_matrix, items: torch.Tensor) -> float:
        total = 0.0
        with torch.no_grad():
            for start in range(0, rows.shape[0], self.batch_size):
                batch = rows[start : start + self.batch_size]
                total += (
                    elsa_loss_and_grad(batch, items, need_grad=False)[0].item() * batch.shape[0]
                )
        return total / rows.shape[0]

    def encode(self, user_items: UserRows) -> torch.Tensor:
        self._check_fitted()
        rows = as_user_rows(user_items, self.n_items_, allow_empty=True)
        return torch.sparse.mm(csr_to_torch(rows, self.items_.device), self.items_)

    def decode(self, embeddings: torch.Tensor) -> torch.Tensor:
        self._check_fitted()
        if embeddings.ndim != 2 or embeddings.shape[1] != self.d_:
            raise InputError(f"embeddings must be (n, {self.d_}), got {tuple(embeddings.shape)}")
        return embeddings @ self.items_.T

    def _state(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        config = {
            "factors": self.factors,
            "lr": self.lr,
            "batch_size": self.batch_size,
            "epochs": self.epochs,
            "patience": self.patience,
            "input_dropout": self.input_dropout,
            "betas": list(self.betas),
            "seed": self.seed,
            "n_items": self.n_items_,
        }
        return config, {"items": self.items_}

    @classmethod
    def _from_state(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor], path) -> ELSA:
        require_tensors(tensors, {"items": (config["n_items"], config["factors"])}, path)
        model = cls(
            factors=config["factors"],
            lr=config["lr"],
            batch_size=config["batch_size"],
            epochs=config["epochs"],
            patience=config["patience"],
            input_dropout=config["input_dropout"],
            betas=tuple(config["betas"]),
            seed=config["seed"],
        )
        model.items_ = tensors["items"].float()
        model.n_items_, model.d_ = config["n_items"], config["factors"]
        return model


def _remove_parallel(grad: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Drop each gradient row's component along its (unit-norm) parameter row, so a step
    moves along the sphere instead of changing the norm the renormalisation undoes."""
    return grad - (grad * rows).sum(dim=1, keepdim=True) * rows


def thin_rows(rows: sp.csr_matrix, drop: float, rng: np.random.Generator) -> sp.csr_matrix:
    """Hide a random ``drop`` share of each row's entries, never emptying a row.

    Args:
        rows: (n, n_items) CSR interactions without empty rows.

    Returns:
        (n, n_items) CSR with a subset of the entries of ``rows``.
    """
    keep = rng.random(rows.nnz) >= drop
    keep[rows.indptr[:-1]] = keep[rows.indptr[:-1]] | (
        np.add.reduceat(keep, rows.indptr[:-1]) == 0
    )  # a row that lost everything keeps its first entry
    thinned = rows.copy()
    thinned.data = np.where(keep, rows.data, 0).astype(np.float32)
    thinned.eliminate_zeros()
    return thinned
