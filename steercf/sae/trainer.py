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

import dataclasses
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
from steercf.training import EarlyStopping

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
    task_loss: Callable[[Tensor, Tensor], Tensor] | None = None,
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
        task_loss: ``task_loss(x_hat, rows)``, a scalar added to each batch's loss:
            what the caller does with the reconstruction ``x_hat`` (B, d_in, raw space,
            differentiable) of its training rows ``rows`` (B,) (indices into
            ``x_train``). Splice-aware ("end-to-end") training passes the downstream
            model's loss here (Braun et al. 2024; Karvonen 2025); the SAE stays
            ignorant of what it measures.

    Returns:
        :class:`TrainResult` with the best-validation-loss state restored.

    Deterministic for a given ``train_config.seed`` on a given device and thread count.
    """
    tc = train_config if train_config is not None else TrainConfig()
    tc.validate()
    sae_config.validate()
    group = group if group is not None else Collective()
    _check_data_parallel(tc, sae_config, group)
    run = _prepare_run(x_train, x_val, sae_config, tc, sae, group)
    run.task_loss = task_loss
    sae = run.sae
    history: list[dict[str, float]] = []
    # Patience counts the epochs after the best one (epoch 0 before any improvement).
    stopper: EarlyStopping[dict[str, Tensor]] = EarlyStopping(
        tc.patience, tc.min_delta, mode="min", counts_from=0
    )
    bar = tqdm(
        range(tc.max_epochs), desc="SAE", unit="epoch", disable=not tc.progress or not group.is_main
    )
    stopper.bound_progress(bar, tc.max_epochs)  # counts to the first possible stop
    for epoch in bar:
        start = time.perf_counter()
        record, l1_sum = _train_epoch(run, epoch)
        criterion = _validate(run, record, l1_sum, val_score)
        record["seconds"] = time.perf_counter() - start
        history.append(record)
        bar.set_postfix(
            train=f"{record['train_loss']:.4g}",
            val=f"{record['val_loss']:.4g}",
            dead=f"{record['dead_fraction']:.1%}",
        )
        if not math.isfinite(record["train_loss"]):
            warnings.warn(
                f"SAE training loss became {record['train_loss']} at epoch {epoch}; "
                "stopping and restoring the best state",
                stacklevel=2,
            )
            break
        stopper.update(criterion, epoch, lambda: _copy_state(sae))
        stopper.bound_progress(bar, tc.max_epochs)
        if stopper.should_stop:
            break
    bar.close()
    if stopper.best_state is not None:
        sae.load_state_dict(stopper.best_state)
        best_epoch = stopper.best_epoch
    else:  # nothing improved (or the first epoch diverged): keep the last state
        best_epoch = len(history) - 1
    return TrainResult(sae.eval(), history, best_epoch)


def epoch_seconds_estimate(
    sae_config: SAEConfig, train_config: TrainConfig, n_rows: int, steps: int = 3
) -> float:
    """Seconds one training epoch of :func:`train_sae` over ``n_rows`` rows takes on
    ``train_config.device``, measured: a fresh SAE of ``sae_config`` runs one warm-up and
    ``steps`` timed training steps (the real step, AuxK included) on a batch of random
    rows. Validation is not counted. For telling a user up front what a run costs.

    Raises:
        InputError: ``n_rows`` or ``steps`` below 1, or an invalid config.
    """
    if n_rows < 1 or steps < 1:
        raise InputError(f"n_rows and steps must be >= 1, got {n_rows} and {steps}")
    batch = min(train_config.batch_size, n_rows)
    x = torch.randn(batch, sae_config.d_in, generator=torch.Generator().manual_seed(0))
    tc = dataclasses.replace(train_config, val_fraction=0.0, progress=False)
    tc.validate()
    sae_config.validate()
    run = _prepare_run(x, None, sae_config, tc, None, Collective())
    rows = torch.arange(batch, device=run.x_train.device)
    elapsed = 0.0
    for step in range(steps + 1):
        started = time.perf_counter()
        _train_batch(run, rows)  # returns floats: the step has finished on any device
        if step:  # the first step pays one-off allocation costs
            elapsed += time.perf_counter() - started
    return elapsed / steps * math.ceil(n_rows / batch)


@dataclass
class _Run:
    """What one training run carries from epoch to epoch."""

    sae: SparseAutoencoder
    model: torch.nn.Module  # ``sae``, or its DistributedDataParallel wrapper
    optimizer: torch.optim.Optimizer
    x_train: Tensor  # (n, d_in) on the training device
    x_val: Tensor | None  # (m, d_in), or None to judge by the training loss
    tc: TrainConfig
    group: Collective
    generator: torch.Generator  # the validation split, the bias sample, the shuffles
    aux_k: int
    dead_window: int
    n_batches: int
    since_fired: Tensor  # (n_latents,) int64: training inputs since each latent fired
    train_index: Tensor  # (n,) each training row's index in the caller's x_train
    task_loss: Callable[[Tensor, Tensor], Tensor] | None = None


def _check_data_parallel(tc: TrainConfig, sae_config: SAEConfig, group: Collective) -> None:
    """Refuse data-parallel training of a model whose loss or activation couples rows."""
    if group.world_size > 1 and (
        "nmse" in (tc.loss, tc.aux_loss) or sae_config.activation == "batchtopk"
    ):
        # both couple the rows of a batch (batch variance, batch-wide top-k), so a
        # batch split over processes would train another model
        raise InputError(
            "data-parallel SAE training needs per-row losses and activations: "
            "use loss/aux_loss 'cosine' or 'mse' and activation 'topk' or 'relu'"
        )


def _prepare_run(
    x_train: Any,
    x_val: Any,
    sae_config: SAEConfig,
    tc: TrainConfig,
    sae: SparseAutoencoder | None,
    group: Collective,
) -> _Run:
    """Build (or check) the SAE, place the rows, hold out validation rows, initialise
    the decoder bias of a fresh model and set up the optimiser.

    The generator draws the validation split before the bias sample and both before
    the first shuffle: the order that makes a run reproducible from ``tc.seed``."""
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
    train_index = torch.arange(x_train.shape[0], device=device)
    if x_val is not None:
        x_val = as_rows(x_val, d, "x_val", dtype, device)
    elif tc.val_fraction > 0 and x_train.shape[0] >= 2:
        perm = torch.randperm(x_train.shape[0], generator=generator).to(device)
        n_val = min(max(1, round(tc.val_fraction * x_train.shape[0])), x_train.shape[0] - 1)
        x_val, x_train = x_train[perm[:n_val]], x_train[perm[n_val:]]
        train_index = perm[n_val:]
    n = x_train.shape[0]
    if fresh:
        sample = torch.randperm(n, generator=generator)[:BIAS_INIT_MAX_ROWS].to(device)
        sae.init_decoder_bias(x_train[sample])

    # fused: one pass over each parameter per step instead of one per Adam operation;
    # the fused kernel pairs parameter and gradient by memory position, so only for
    # contiguous parameters (a transposed view would silently get wrong updates)
    params = list(sae.parameters())
    fused = all(p.is_contiguous() for p in params)
    optimizer = torch.optim.Adam(params, lr=tc.learning_rate(sae_config.n_latents), fused=fused)
    # Nearly equal batches (no tiny last batch, whose nmse would be ill-defined).
    n_batches = math.ceil(n / tc.batch_size)
    if n // n_batches < group.world_size:
        raise InputError(
            f"batches of {n // n_batches} rows cannot be split over {group.world_size} processes"
        )
    return _Run(
        sae=sae,
        model=group.wrap(sae),  # DistributedDataParallel when data-parallel
        optimizer=optimizer,
        x_train=x_train,
        x_val=x_val,
        tc=tc,
        group=group,
        generator=generator,
        aux_k=tc.resolved_aux_k(sae_config),
        dead_window=tc.dead_window if tc.dead_window is not None else n,
        n_batches=n_batches,
        since_fired=torch.zeros(sae_config.n_latents, dtype=torch.int64, device=device),
        train_index=train_index,
    )


def _train_epoch(run: _Run, epoch: int) -> tuple[dict[str, float], float]:
    """One pass over the shuffled training rows.

    Returns the epoch's record so far (``epoch``, ``train_loss``, ``train_aux_loss``,
    ``dead_fraction``; means over all processes' rows) and the L1 term summed over
    those rows, which judges the epoch when there are no validation rows."""
    run.sae.train()
    n = run.x_train.shape[0]
    loss_sum = aux_sum = l1_sum = 0.0
    shuffled = torch.randperm(n, generator=run.generator).to(torch.device(run.tc.device))
    for rows in shuffled.tensor_split(run.n_batches):
        recon, aux, l1 = _train_batch(run, rows)
        loss_sum += recon
        aux_sum += aux
        l1_sum += l1
    loss_sum, aux_sum, l1_sum = run.group.sum_floats(loss_sum, aux_sum, l1_sum)
    return {
        "epoch": epoch,
        "train_loss": loss_sum / n,
        "train_aux_loss": aux_sum / n,
        "dead_fraction": float((run.since_fired >= run.dead_window).float().mean()),
    }, l1_sum


def _train_batch(run: _Run, rows: Tensor) -> tuple[float, float, float]:
    """One optimiser step on the batch ``rows`` (B,) (this process takes its share).

    Returns this process's sums over its rows of the reconstruction, AuxK and L1 losses
    (0.0 for a term that is off)."""
    tc, sae, group = run.tc, run.sae, run.group
    mine = group.shard(rows)  # this process's share of the batch
    x = run.x_train[mine]
    out = run.model(x)
    recon = reconstruction_loss(out.x_hat, x, tc.loss)
    loss = recon
    if run.task_loss is not None:
        loss = loss + run.task_loss(out.x_hat, run.train_index[mine])
    l1_part = aux_part = 0.0
    if tc.l1_coef > 0:
        l1 = out.codes.sum(1).mean()  # codes are >= 0
        loss = loss + tc.l1_coef * l1
        l1_part = float(l1.detach()) * len(mine)
    dead = run.since_fired >= run.dead_window
    if tc.aux_coef > 0 and bool(dead.any()):
        aux = auxk_loss(sae, out, x, dead, run.aux_k, tc.aux_loss)
        loss = loss + tc.aux_coef * aux
        aux_part = float(aux.detach()) * len(mine)
    run.optimizer.zero_grad(set_to_none=True)
    group.scale_loss(loss, len(mine), len(rows)).backward()
    sae.remove_parallel_grad()
    if tc.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(sae.parameters(), tc.grad_clip)
    run.optimizer.step()
    sae.normalize_decoder()
    with torch.no_grad():
        run.since_fired += len(rows)
        run.since_fired.masked_fill_(group.any_((out.codes > 0).any(0)), 0)
    return float(recon.detach()) * len(mine), aux_part, l1_part


def _validate(
    run: _Run,
    record: dict[str, float],
    l1_sum: float,
    val_score: Callable[[SparseAutoencoder], float] | None,
) -> float:
    """Add the validation numbers to ``record`` (rank 0's on every process) and return
    the early-stopping criterion, lower is better: ``val_loss``, or ``-val_score``.

    Without validation rows ``val_loss`` is the epoch's training objective: its mean
    reconstruction loss plus ``l1_coef`` times ``l1_sum`` (summed over the training rows)
    per row."""
    tc, sae, group = run.tc, run.sae, run.group
    if run.x_val is not None:
        m = sae_metrics(sae, run.x_val, batch_size=VAL_BATCH_SIZE)
        val_loss = {"cosine": 1.0 - m["cosine"], "mse": m["mse"], "nmse": m["nmse"]}[tc.loss]
        # Stop on the objective being minimised (without the AuxK training aid):
        # on reconstruction alone a ReLU + L1 model would keep its densest epoch.
        val_loss += tc.l1_coef * m["l1"]
        record.update(val_cosine=m["cosine"], val_nmse=m["nmse"], val_l0=m["l0"])
    else:
        val_loss = record["train_loss"] + tc.l1_coef * l1_sum / run.x_train.shape[0]
    record["val_loss"] = val_loss = group.agree(val_loss)  # one verdict for all ranks
    if val_score is None:
        return val_loss
    sae.eval()  # the next epoch starts with sae.train()
    with torch.no_grad():
        record["val_score"] = group.agree(float(val_score(sae)))
    return -record["val_score"]


def _copy_state(sae: SparseAutoencoder) -> dict[str, Tensor]:
    """A detached copy of the SAE's parameters and buffers (the best state so far)."""
    return {k: v.detach().clone() for k, v in sae.state_dict().items()}
