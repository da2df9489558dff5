"""Training loop: Adam on reconstruction + L1 + AuxK, unit-norm decoder, early stopping.

One optimiser step on a batch ``x`` (rows, d_in)::

    out   = sae(x)
    loss  = recon(out.x_hat, x) + l1_coef * L1(codes) + aux_coef * AuxK
    backward; remove the gradient parallel to each decoder row; clip; Adam step;
    renormalise the decoder rows

AuxK (Gao et al. 2024): latents that have not fired for ``dead_window`` inputs are
dead; the top ``aux_k`` dead pre-activations of each row, through the decoder, must
reconstruct the (detached) residual ``x - x_hat``. It gives dead latents a gradient
towards directions the live ones miss. By default it compares by cosine (scale-free),
see ``TrainConfig.aux_loss`` for why.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from steercf.distributed import Collective
from steercf.errors import InputError
from steercf.sae.config import SAEConfig, TrainConfig
from steercf.sae.metrics import sae_metrics
from steercf.sae.model import SAEOutput, SparseAutoencoder, as_rows

BIAS_INIT_MAX_ROWS = 16384  # the decoder-bias mean / median is estimated on a sample
VAL_BATCH_SIZE = 4096


@dataclass
class TrainResult:
    """A trained SAE (best validation state, eval mode) and its training record.

    ``history[e]`` holds epoch ``e``'s ``train_loss`` (reconstruction), ``train_aux_loss``,
    ``val_loss`` (the early-stopping criterion: reconstruction loss + ``l1_coef`` * L1
    on the validation rows, or on the training rows when there are none), ``val_cosine``, ``val_nmse``, ``val_l0``, ``dead_fraction``
    (latents dead by the ``dead_window`` rule at the epoch's end) and ``seconds``.
    """

    sae: SparseAutoencoder
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0


def reconstruction_loss(
    x_hat: Tensor, x: Tensor, kind: str, reference: Tensor | None = None
) -> Tensor:
    """Scalar loss between predictions and targets, both (n, d).

    ``"cosine"``: mean of ``1 - cos`` over rows; ``"mse"``: mean squared error;
    ``"nmse"``: summed squared error over the total variance of ``reference`` (default
    ``x``) around its row mean.
    """
    if kind == "cosine":
        return 1.0 - F.cosine_similarity(x_hat, x, dim=1, eps=1e-8).mean()
    squared = (x_hat - x).square()
    if kind == "mse":
        return squared.mean()
    ref = x if reference is None else reference
    return squared.sum() / (ref - ref.mean(0)).square().sum().clamp_min(1e-12)


def auxk_loss(
    sae: SparseAutoencoder, out: SAEOutput, x: Tensor, dead: Tensor, aux_k: int, kind: str
) -> Tensor:
    """AuxK loss of one batch (unscaled by ``aux_coef``).

    Args:
        out: ``sae(x)`` for the raw rows ``x`` (n, d_in).
        dead: bool (n_latents,), at least one True.
        aux_k: dead latents used per row (capped at the number of dead ones).
        kind: ``TrainConfig.aux_loss``: ``"cosine"`` (1 - cos), ``"mse"``, or ``"nmse"``
            (normalised by the variance of ``x``, as the main loss). The result is
            scaled down by ``n_dead / aux_k`` when fewer latents are dead.
    """
    n_dead = int(dead.sum())
    k = min(aux_k, n_dead)
    residual = (x - out.x_hat).detach()
    values, indices = out.pre_acts.masked_fill(~dead, -math.inf).topk(k, dim=1, sorted=False)
    # The residual lives in the raw space: x - x_hat = (x_std - x_hat_std) * std.
    aux_hat = sae.decode_active(F.relu(values), indices) * out.std
    return reconstruction_loss(aux_hat, residual, kind, reference=x) * min(n_dead / aux_k, 1.0)


def train_sae(
    x_train: Any,
    sae_config: SAEConfig,
    train_config: TrainConfig | None = None,
    x_val: Any = None,
    sae: SparseAutoencoder | None = None,
    group: Collective | None = None,
    val_score: Callable[[SparseAutoencoder], float] | None = None,
) -> TrainResult:
    """Train a sparse autoencoder on rows ``x_train`` (n, d_in).

    Args:
        x_train: torch tensor or numpy array (n, d_in) of raw vectors.
        sae_config: the SAE to build (must equal ``sae.config`` when ``sae`` is given).
        train_config: defaults to ``TrainConfig()``.
        x_val: rows (m, d_in) for early stopping; default: a seeded
            ``val_fraction`` share of ``x_train`` is held out.
        sae: continue training this model (its decoder bias is not re-initialised).
        group: train data-parallel (:mod:`steercf.distributed`): every process passes
            the same arguments and runs its share of each batch through
            DistributedDataParallel; equals single-process training up to float
            rounding. Needs a loss that is a mean over rows (not ``nmse``) and a
            per-row activation (not ``batchtopk``).
        val_score: judge each epoch by ``val_score(sae)`` (higher is better, called in
            eval mode without gradients) instead of the validation loss: how the caller
            uses the reconstruction (e.g. a recommender's validation recall through the
            SAE). The SAE itself never sees what the score measures.

    Returns:
        :class:`TrainResult` with the best-validation-loss state restored.

    Deterministic for a given ``train_config.seed`` on a given device and thread count.
    """
    tc = train_config if train_config is not None else TrainConfig()
    tc.validate()
    sae_config.validate()
    group = group if group is not None else Collective()
    if group.world_size > 1 and (
        "nmse" in (tc.loss, tc.aux_loss) or sae_config.activation == "batchtopk"
    ):
        # both couple the rows of a batch (batch variance, batch-wide top-k), so a
        # batch split over processes would train another model
        raise InputError(
            "data-parallel SAE training needs per-row losses and activations: "
            "use loss/aux_loss 'cosine' or 'mse' and activation 'topk' or 'relu'"
        )
    fresh = sae is None
    if sae is None:
        sae = SparseAutoencoder(sae_config, seed=tc.seed)
    elif sae.config != sae_config:
        raise InputError(f"sae_config {sae_config} differs from the given sae's {sae.config}")
    device = torch.device(tc.device)
    sae.to(device)
    dtype, d = sae.W_dec.dtype, sae_config.d_in
    x_train = as_rows(x_train, d, "x_train", dtype, device)
    generator = torch.Generator().manual_seed(tc.seed)
    if x_val is not None:
        x_val = as_rows(x_val, d, "x_val", dtype, device)
    elif tc.val_fraction > 0 and x_train.shape[0] >= 2:
        perm = torch.randperm(x_train.shape[0], generator=generator).to(device)
        n_val = min(max(1, round(tc.val_fraction * x_train.shape[0])), x_train.shape[0] - 1)
        x_val, x_train = x_train[perm[:n_val]], x_train[perm[n_val:]]
    n = x_train.shape[0]
    if fresh:
        sample = torch.randperm(n, generator=generator)[:BIAS_INIT_MAX_ROWS].to(device)
        sae.init_decoder_bias(x_train[sample])

    optimizer = torch.optim.Adam(sae.parameters(), lr=tc.learning_rate(sae_config.n_latents))
    aux_k = tc.resolved_aux_k(sae_config)
    dead_window = tc.dead_window if tc.dead_window is not None else n
    since_fired = torch.zeros(sae_config.n_latents, dtype=torch.int64, device=device)
    # Nearly equal batches (no tiny last batch, whose nmse would be ill-defined).
    n_batches = math.ceil(n / tc.batch_size)
    if n // n_batches < group.world_size:
        raise InputError(
            f"batches of {n // n_batches} rows cannot be split over {group.world_size} processes"
        )
    model = group.wrap(sae)  # DistributedDataParallel when data-parallel

    history: list[dict[str, float]] = []
    best_loss, best_epoch, best_state = math.inf, 0, None
    bar = tqdm(
        range(tc.max_epochs), desc="SAE", unit="epoch", disable=not tc.progress or not group.is_main
    )
    for epoch in bar:
        start = time.perf_counter()
        sae.train()
        loss_sum = aux_sum = l1_sum = 0.0
        for rows in torch.randperm(n, generator=generator).to(device).tensor_split(n_batches):
            mine = group.shard(rows)  # this process's share of the batch
            x = x_train[mine]
            out = model(x)
            recon = reconstruction_loss(out.x_hat, x, tc.loss)
            loss = recon
            if tc.l1_coef > 0:
                l1 = out.codes.sum(1).mean()  # codes are >= 0
                loss = loss + tc.l1_coef * l1
                l1_sum += float(l1.detach()) * len(mine)
            dead = since_fired >= dead_window
            if tc.aux_coef > 0 and bool(dead.any()):
                aux = auxk_loss(sae, out, x, dead, aux_k, tc.aux_loss)
                loss = loss + tc.aux_coef * aux
                aux_sum += float(aux.detach()) * len(mine)
            optimizer.zero_grad(set_to_none=True)
            group.scale_loss(loss, len(mine), len(rows)).backward()
            sae.remove_parallel_grad()
            if tc.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(sae.parameters(), tc.grad_clip)
            optimizer.step()
            sae.normalize_decoder()
            with torch.no_grad():
                since_fired += len(rows)
                since_fired.masked_fill_(group.any_((out.codes > 0).any(0)), 0)
            loss_sum += float(recon.detach()) * len(mine)
        loss_sum, aux_sum, l1_sum = group.sum_floats(loss_sum, aux_sum, l1_sum)

        record = {
            "epoch": epoch,
            "train_loss": loss_sum / n,
            "train_aux_loss": aux_sum / n,
            "dead_fraction": float((since_fired >= dead_window).float().mean()),
        }
        if x_val is not None:
            m = sae_metrics(sae, x_val, batch_size=VAL_BATCH_SIZE)
            val_loss = {"cosine": 1.0 - m["cosine"], "mse": m["mse"], "nmse": m["nmse"]}[tc.loss]
            # Stop on the objective being minimised (without the AuxK training aid):
            # on reconstruction alone a ReLU + L1 model would keep its densest epoch.
            val_loss += tc.l1_coef * m["l1"]
            record.update(val_cosine=m["cosine"], val_nmse=m["nmse"], val_l0=m["l0"])
        else:
            val_loss = record["train_loss"] + tc.l1_coef * l1_sum / n
        record["val_loss"] = val_loss = group.agree(val_loss)  # one verdict for all ranks
        criterion = val_loss
        if val_score is not None:
            sae.eval()  # the next epoch starts with sae.train()
            with torch.no_grad():
                record["val_score"] = group.agree(float(val_score(sae)))
            criterion = -record["val_score"]
        record["seconds"] = time.perf_counter() - start
        history.append(record)
        bar.set_postfix(
            train=f"{record['train_loss']:.4g}",
            val=f"{val_loss:.4g}",
            dead=f"{record['dead_fraction']:.1%}",
        )
        if not math.isfinite(record["train_loss"]):
            warnings.warn(
                f"SAE training loss became {record['train_loss']} at epoch {epoch}; "
                "stopping and restoring the best state",
                stacklevel=2,
            )
            break
        if criterion < best_loss - tc.min_delta:
            best_loss, best_epoch = criterion, epoch
            best_state = {k: v.detach().clone() for k, v in sae.state_dict().items()}
        elif epoch - best_epoch >= tc.patience:
            break
    bar.close()
    if best_state is not None:
        sae.load_state_dict(best_state)
    else:
        best_epoch = len(history) - 1
    return TrainResult(sae.eval(), history, best_epoch)
