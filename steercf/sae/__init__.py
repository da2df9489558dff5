"""Sparse core: sparse autoencoders over any ``(n, d)`` float data.

Modelled on EleutherAI's ``sparsify``: a config (:mod:`.config`), a model
(:mod:`.model`), a trainer (:mod:`.trainer`) and quality measures (:mod:`.metrics`).
Nothing here knows about recommenders or text.

Example::

    from steercf.sae import SAEConfig, TrainConfig, train_sae, sae_metrics

    result = train_sae(z, SAEConfig(d_in=z.shape[1], k=16), TrainConfig(progress=False))
    codes, mean, std = result.sae.encode(z)
    z_hat = result.sae.decode(codes, mean, std)
"""

from steercf.sae.config import SAEConfig, TrainConfig
from steercf.sae.metrics import (
    activation_counts,
    latent_density,
    plot_latent_density,
    sae_metrics,
)
from steercf.sae.model import SAEOutput, SparseAutoencoder, as_rows, geometric_median
from steercf.sae.steer import RULES, Knob, check_knobs, edit_codes, steer_codes
from steercf.sae.trainer import TrainResult, auxk_loss, reconstruction_loss, train_sae

__all__ = [
    "RULES",
    "Knob",
    "SAEConfig",
    "SAEOutput",
    "SparseAutoencoder",
    "TrainConfig",
    "TrainResult",
    "activation_counts",
    "as_rows",
    "auxk_loss",
    "check_knobs",
    "edit_codes",
    "geometric_median",
    "latent_density",
    "plot_latent_density",
    "reconstruction_loss",
    "sae_metrics",
    "steer_codes",
    "train_sae",
]
