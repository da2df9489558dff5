"""Mult-VAE's network, loss terms and validation (the pieces behind
:class:`steercf.models.multvae.MultVAE`; Liang et al., WWW 2018)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from steercf.evaluation import ValidationMonitor
from steercf.models.base import csr_to_torch


def kl_weight(step: int, anneal_cap: float, total_anneal_steps: int) -> float:
    """The KL weight ``beta`` of optimiser step ``step`` (0-based).

    ``beta = min(anneal_cap, step / total_anneal_steps)``: 0 at the first step, rising by
    ``1 / total_anneal_steps`` per step until it reaches the cap (Liang et al.'s
    schedule; ``total_anneal_steps=0`` holds ``beta`` at ``anneal_cap`` from the start).
    """
    if total_anneal_steps <= 0:
        return float(anneal_cap)
    return float(min(anneal_cap, step / total_anneal_steps))


class MultVAENetwork(nn.Module):
    """The encoder and decoder layers of a Mult-VAE.

    Encoder: ``n_items -> hidden_dims... -> 2 * latent_dim`` (tanh between layers, none
    on the last, whose output splits into ``mu`` and ``logvar``). Decoder: ``latent_dim
    -> reversed(hidden_dims)... -> n_items`` (tanh between layers, none on the logits).
    """

    def __init__(self, n_items: int, hidden_dims: Sequence[int], latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        encoder_dims = [n_items, *hidden_dims, 2 * latent_dim]
        decoder_dims = [latent_dim, *reversed(hidden_dims), n_items]
        self.encoder = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(encoder_dims[:-1], encoder_dims[1:], strict=True)
        )
        self.decoder = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(decoder_dims[:-1], decoder_dims[1:], strict=True)
        )

    def reset(self, generator: torch.Generator) -> None:
        """Glorot-normal weights and N(0, 0.001^2) biases, as the published code, drawn
        from ``generator`` (on the CPU) so a seed fixes them."""
        with torch.no_grad():
            for layer in [*self.encoder, *self.decoder]:
                fan_out, fan_in = layer.weight.shape
                std = math.sqrt(2.0 / (fan_in + fan_out))
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * std)
                layer.bias.copy_(torch.randn(layer.bias.shape, generator=generator) * 1e-3)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(b, n_items) sparse CSR input (already normalised, thinned) -> ``(mu, logvar)``,
        each (b, latent_dim)."""
        first = self.encoder[0]
        h = torch.sparse.mm(x, first.weight.T) + first.bias
        for layer in self.encoder[1:]:
            h = layer(torch.tanh(h))
        return h[:, : self.latent_dim], h[:, self.latent_dim :]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(b, latent_dim) codes -> (b, n_items) item logits."""
        h = z
        for i, layer in enumerate(self.decoder):
            h = layer(torch.tanh(h) if i else h)
        return h


class MultVAEValidator(ValidationMonitor):
    """Per-epoch validation: the multinomial NLL of the validation users' full rows
    decoded from their means and, when monitoring a ranking metric, that metric on a
    fixed hold-out of their items (the protocol's 20 %, drawn once from ``seed``)."""

    def __init__(
        self, rows: sp.csr_matrix, monitor: str, batch_size: int, seed: int, device: torch.device
    ) -> None:
        super().__init__(rows, monitor, batch_size, seed)
        self.device = device

    def __call__(self, network: MultVAENetwork) -> dict[str, float]:
        """``{"val_loss": ..., ["val_recall@K": ...]}`` of the network in eval mode."""

        def batch_loss(batch: sp.csr_matrix) -> float:
            logits = network.decode(network.encode(network_input(batch, self.device))[0])
            return multinomial_nll(logits, batch, self.device).item()

        def batch_scores(given: sp.csr_matrix) -> torch.Tensor:
            return network.decode(network.encode(network_input(given, self.device))[0])

        with torch.no_grad():
            return self.record(batch_loss, batch_scores)


def network_input(
    rows: sp.csr_matrix,
    device: torch.device,
    keep: np.ndarray | None = None,
    scale: float = 1.0,
) -> torch.Tensor:
    """(b, n_items) rows, each L2-normalised, as a torch CSR tensor on ``device``;
    ``keep`` (nnz,) drops the other entries after normalising and scales the survivors
    by ``scale`` (inverted dropout). Empty rows stay zero."""
    rows = rows.tocsr()
    row_of = np.repeat(np.arange(rows.shape[0]), np.diff(rows.indptr))
    data = rows.data.astype(np.float32)
    norms = np.sqrt(np.bincount(row_of, weights=data**2, minlength=rows.shape[0]))
    data = data / norms[row_of].astype(np.float32)  # an empty row has no entry to divide
    if keep is not None:
        data = data * keep.astype(np.float32) * np.float32(scale)
    normalised = sp.csr_matrix((data, rows.indices, rows.indptr), shape=rows.shape)
    return csr_to_torch(normalised, device)


def multinomial_nll(
    logits: torch.Tensor, rows: sp.csr_matrix, device: torch.device
) -> torch.Tensor:
    """Mean over users of ``-sum_i x_i log softmax(logits)_i`` for (b, n_items) logits
    and (b, n_items) CSR rows ``x``, touching only the non-zeros of ``x``."""
    rows = rows.tocsr()
    row_of = np.repeat(np.arange(rows.shape[0], dtype=np.int64), np.diff(rows.indptr))
    positions = torch.from_numpy(row_of * rows.shape[1] + rows.indices).to(device)
    values = torch.from_numpy(rows.data.astype(np.float32, copy=False)).to(device)
    log_probs = torch.log_softmax(logits, dim=1).reshape(-1)
    return -(log_probs.index_select(0, positions) * values).sum() / rows.shape[0]
