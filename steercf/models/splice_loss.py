"""Splice-aware SAE training: the loss that teaches an SAE what its splice is for.

Reconstruction training asks the SAE to rebuild the base CFAE's embedding; the splice
needs only the base's *ranking* back. :func:`splice_ranking_loss` compares, per user,
the base's item-score distribution with the spliced model's (a softmax over the unseen
items of the user's standardised scores; cross-entropy, i.e. KL up to a constant), the
KL fine-tuning of language-model SAEs (Braun et al. 2024, "end-to-end" SAEs; Karvonen
2025: a short KL fine-tune after reconstruction training removes 20-50 % of the
downstream gap). The SAE trainer receives it as an opaque ``task_loss`` callable.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
import torch

from steercf.models.base import CFAE


def splice_ranking_loss(
    base: CFAE, embeddings: torch.Tensor, rows: sp.csr_matrix, sharpness: float = 5.0
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``task_loss(x_hat, index)`` for :func:`steercf.sae.train_sae`.

    For the users ``index`` (B,) of ``rows``: target ``p = softmax(sharpness * std_u(
    dec(z)))`` and prediction ``q = softmax(sharpness * std_u(dec(x_hat)))`` over the
    items each user has not seen, both standardised by the target row's mean and
    standard deviation over those items; returns the mean over users of the
    cross-entropy ``-sum p log q``.

    Args:
        base: the frozen CFAE; its ``decode`` must be differentiable in its input.
        embeddings: (n, d) the base's embeddings of ``rows`` (the SAE's training input).
        rows: (n, n_items) CSR histories behind ``embeddings`` (their items are masked).
        sharpness: inverse temperature; larger weights the top of the ranking more.

    Returns:
        the loss callable: ``x_hat`` (B, d) the SAE's reconstruction of
        ``embeddings[index]``, differentiable; a scalar tensor.
    """
    rows = sp.csr_matrix(rows)

    def loss(x_hat: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        users = index.cpu().numpy()
        seen = torch.from_numpy(np.asarray(rows[users].toarray() > 0)).to(x_hat.device)
        with torch.no_grad():
            target = base.decode(embeddings[index])
            unseen = (~seen).float()
            count = unseen.sum(1, keepdim=True).clamp_min(1.0)
            mean = (target * unseen).sum(1, keepdim=True) / count
            var = ((target - mean).square() * unseen).sum(1, keepdim=True) / count
            scale = sharpness / var.sqrt().clamp_min(1e-8)
            p = torch.softmax(((target - mean) * scale).masked_fill(seen, -torch.inf), dim=1)
        logits = ((base.decode(x_hat) - mean) * scale).masked_fill(seen, -torch.inf)
        log_q = torch.log_softmax(logits, dim=1).masked_fill(seen, 0.0)
        return -(p * log_q).sum(1).mean()

    return loss


def splice_holdout_loss(
    base: CFAE, inputs: sp.csr_matrix, full: sp.csr_matrix, weight: float = 0.1
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``task_loss(x_hat, index)`` for :func:`steercf.sae.train_sae` on the ground truth.

    The spliced model is asked what the recommender is asked: rank the items a user
    holds but did not show. Row ``i`` of ``inputs`` (a sub-history of ``full[i]``) is
    scored through the frozen decoder, ``dec(x_hat)``; the loss is the multinomial
    log-likelihood (Liang et al. 2018, Mult-VAE) of ``full[i]``'s hidden items under a
    softmax over the items not in ``inputs[i]``, divided by their number. A row with
    nothing hidden (a full history) must predict its own items, as the base's own
    training does. Returns ``weight`` times the mean over users.

    Args:
        base: the frozen CFAE; its ``decode`` must be differentiable in its input.
        inputs: (n, n_items) CSR histories the SAE's training embeddings come from.
        full: (n, n_items) CSR, each row a superset of the same row of ``inputs``.
        weight: the task term's weight against the reconstruction loss.

    Raises:
        ValueError: ``inputs`` and ``full`` differ in shape.
    """
    if inputs.shape != full.shape:
        raise ValueError(f"inputs {inputs.shape} and full {full.shape} differ in shape")
    inputs, full = sp.csr_matrix(inputs), sp.csr_matrix(full)

    def loss(x_hat: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        users = index.cpu().numpy()
        shown = torch.from_numpy(inputs[users].toarray() > 0).to(x_hat.device)
        held = torch.from_numpy(full[users].toarray() > 0).to(x_hat.device)
        nothing_hidden = ~(held & ~shown).any(1, keepdim=True)
        target = torch.where(nothing_hidden, held, held & ~shown).float()
        masked = shown & ~nothing_hidden
        log_q = torch.log_softmax(base.decode(x_hat).masked_fill(masked, -torch.inf), dim=1)
        nll = -(log_q.masked_fill(masked, 0.0) * target).sum(1) / target.sum(1).clamp_min(1.0)
        return weight * nll.mean()

    return loss
