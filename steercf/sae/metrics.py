"""Quality measures of a trained SAE on a set of rows, computed in one batched pass.

Definitions (over all rows of ``x``, ``r = x - x_hat`` in the raw space):

- ``mse``: mean of ``r**2`` over all entries.
- ``nmse``: ``sum ||r||^2 / sum ||x - mean_rows(x)||^2`` (fraction of variance unexplained).
- ``explained_variance``: ``1 - sum ||r - mean_rows(r)||^2 / sum ||x - mean_rows(x)||^2``;
  it ignores a constant offset of the reconstruction, so it is ``>= 1 - nmse``, with
  equality when the residuals average to zero.
- ``cosine``: mean cosine similarity between each row and its reconstruction.
- ``l0``: mean number of active latents per row; ``l1``: mean sum of activations per row.
- ``dead_fraction``: share of latents active on no row; ``dense_fraction``: share active
  on more than ``dense_threshold`` of the rows.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from steercf.ranking import whole_number
from steercf.sae.model import SparseAutoencoder, as_rows


@dataclass
class _Scan:
    n: int
    counts: torch.Tensor  # (n_latents,) int64: rows each latent fired on
    sse: float  # sum of squared residuals
    cosine_sum: float
    x_sum: torch.Tensor  # (d_in,) float64
    x_sq: float  # sum of x**2
    r_sum: torch.Tensor  # (d_in,) float64
    active: int  # total active entries
    l1: float  # sum of all activations


@torch.no_grad()
def _scan(sae: SparseAutoencoder, x: Any, batch_size: int) -> _Scan:
    batch_size = whole_number(batch_size, "batch_size", minimum=1)
    x = as_rows(x, sae.config.d_in, "x", sae.W_dec.dtype, sae.W_dec.device)
    was_training = sae.training
    sae.eval()  # BatchTopK must use its inference threshold here
    try:
        d = sae.config.d_in
        scan = _Scan(
            n=x.shape[0],
            counts=torch.zeros(sae.config.n_latents, dtype=torch.int64, device=x.device),
            sse=0.0,
            cosine_sum=0.0,
            x_sum=torch.zeros(d, dtype=torch.float64, device=x.device),
            x_sq=0.0,
            r_sum=torch.zeros(d, dtype=torch.float64, device=x.device),
            active=0,
            l1=0.0,
        )
        for batch in x.split(batch_size):
            out = sae(batch)
            fired = out.codes > 0
            scan.counts += fired.sum(0)
            scan.active += int(fired.sum())
            scan.l1 += float(out.codes.double().sum())
            resid = (batch - out.x_hat).double()
            scan.sse += float(resid.square().sum())
            scan.r_sum += resid.sum(0)
            scan.x_sum += batch.double().sum(0)
            scan.x_sq += float(batch.double().square().sum())
            scan.cosine_sum += float(F.cosine_similarity(out.x_hat, batch, dim=1, eps=1e-8).sum())
    finally:
        sae.train(was_training)
    return scan


def activation_counts(sae: SparseAutoencoder, x: Any, batch_size: int = 4096) -> np.ndarray:
    """How many rows of ``x`` (n, d_in) each latent fires on: int64 array (n_latents,)."""
    return _scan(sae, x, batch_size).counts.cpu().numpy()


def latent_density(sae: SparseAutoencoder, x: Any, batch_size: int = 4096) -> np.ndarray:
    """Fraction of rows of ``x`` (n, d_in) each latent fires on: array (n_latents,)."""
    scan = _scan(sae, x, batch_size)
    return scan.counts.cpu().numpy() / scan.n


def sae_metrics(
    sae: SparseAutoencoder, x: Any, batch_size: int = 4096, dense_threshold: float = 0.1
) -> dict[str, float]:
    """Reconstruction and sparsity measures of ``sae`` on raw rows ``x`` (n, d_in).

    Returns:
        ``mse, nmse, explained_variance, cosine, l0, l1, dead_fraction, dense_fraction``
        (see the module docstring); evaluated in eval mode.
    """
    s = _scan(sae, x, batch_size)
    n, d = s.n, sae.config.d_in
    total_var = s.x_sq - float(s.x_sum.square().sum()) / n
    resid_var = s.sse - float(s.r_sum.square().sum()) / n

    def ratio(num: float) -> float:
        if total_var > 0:
            return num / total_var
        return 0.0 if num <= 0 else float("inf")

    density = s.counts.double() / n
    return {
        "mse": s.sse / (n * d),
        "nmse": ratio(s.sse),
        "explained_variance": 1.0 - ratio(resid_var),
        "cosine": s.cosine_sum / n,
        "l0": s.active / n,
        "l1": s.l1 / n,
        "dead_fraction": float((s.counts == 0).double().mean()),
        "dense_fraction": float((density > dense_threshold).double().mean()),
    }


def plot_latent_density(
    density: np.ndarray, path: str | os.PathLike, title: str | None = None, bins: int = 50
) -> Path:
    """Histogram of log10 latent densities (n_latents,) saved as a PNG at ``path``.

    Dead latents (density 0) have no logarithm; their count is written on the plot.
    Uses matplotlib's Agg canvas directly, so no display and no global pyplot state.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    density = np.asarray(density, dtype=np.float64).ravel()
    alive = density[density > 0]
    n_dead = int(density.size - alive.size)
    fig = Figure(figsize=(6, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if alive.size:
        ax.hist(np.log10(alive), bins=bins, color="tab:blue")
    ax.set_xlabel("log10 fraction of inputs a latent fires on")
    ax.set_ylabel("latents")
    ax.set_title(title or "Latent density")
    share = n_dead / density.size if density.size else 0.0
    ax.text(
        0.02,
        0.95,
        f"dead: {n_dead} of {density.size} ({share:.1%})",
        transform=ax.transAxes,
        va="top",
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100, bbox_inches="tight")
    return path
