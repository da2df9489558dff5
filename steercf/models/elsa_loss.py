"""The ELSA loss and its hand-written gradient, the steps that keep ``A`` on the unit
sphere, and the per-epoch validation judge; :class:`steercf.models.elsa.ELSA` trains
with them.

Training never densifies the interaction matrix and computes the gradient by hand: one
epoch then costs little more than its five matrix products (x A, z A^T, G A, G^T z,
x^T gz), where autograd would add a dozen full passes over the (batch x items) scores.
The remaining overhead is kept small by touching the batch's non-zeros only through 1-D
``index_add_``/``index_select`` on flat positions, reusing the (batch x items) score
buffer and the gradient buffer across batches (:class:`Workspace`), an MKL ``addmm_`` for
x^T gz, and the fused Adam kernel (``benchmarks/speed.py`` measures epoch vs floor).
``tests/test_elsa.py`` checks the hand gradient against autograd.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
import torch

from steercf.evaluation import ValidationMonitor
from steercf.models.base import csr_to_torch


def elsa_loss_and_grad(
    rows: sp.csr_matrix,
    items: torch.Tensor,
    need_grad: bool = True,
    input_rows: sp.csr_matrix | None = None,
    workspace: Workspace | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """ELSA loss (mean over users) and its gradient with respect to ``items``.

    Args:
        rows: (b, n_items) CSR interactions of one batch (no empty rows): the targets.
        items: (n_items, d) item matrix A.
        input_rows: (b, n_items) what the encoder sees, a subset of ``rows`` (denoising);
            defaults to ``rows`` (the published loss).
        workspace: scratch buffers reused between calls (the training loop passes one);
            the returned gradient then lives in it and is overwritten by the next call.

    Returns:
        ``(loss, grad)``: a scalar and (n_items, d), or None without ``need_grad``.
    """
    b, n_items = rows.shape
    device = items.device
    workspace = Workspace() if workspace is None else workspace
    rows = _canonical(rows)
    seen = rows if input_rows is None else _canonical(input_rows)
    # Non-zeros are addressed by their flat position row * n_items + col in the (b, n_items)
    # score buffer and touched with 1-D index_add_ / index_select: 2-D advanced indexing
    # (``index_put_(accumulate=True)``, ``residual[row, col]``, even ``norm[row]``) goes
    # through a generic kernel that is 10-500x slower on CPU for these sizes.
    seen_pos, seen_val, _ = _flat_nonzeros(seen, device)
    pos, val, row_of = _flat_nonzeros(rows, device)

    z = torch.sparse.mm(csr_to_torch(seen, device), items)  # (b, d)
    residual = workspace.get("scores", (b, n_items), device)
    torch.mm(z, items.T, out=residual)  # becomes r = relu(x A A^T - x) in place
    flat = residual.view(-1)
    flat.index_add_(0, seen_pos, seen_val, alpha=-1.0)
    residual.relu_()
    r_norm = torch.linalg.vector_norm(residual, dim=1)  # (b,)
    x_norm = torch.zeros(b, device=device).index_add_(0, row_of, val * val).sqrt_()
    x_unit = val / x_norm.index_select(0, row_of)  # non-zeros of normalize(x)
    r_at_x = flat.index_select(0, pos)
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
    sparse_term = -2 * x_unit / safe_norm.index_select(0, row_of) / b * (r_at_x > 0)
    flat.index_add_(0, pos, sparse_term)
    grad_z = grad_scores @ items  # (b, d)
    grad_items = workspace.get("grad", tuple(items.shape), device)
    torch.mm(grad_scores.T, z, out=grad_items)  # decoder side, (n_items, d)
    # Encoder side X^T grad_z: torch's sparse.mm on a tall CSR is slow on CPU (~10x), the
    # MKL-backed addmm_ accumulating straight into the gradient is not.
    grad_items.addmm_(csr_to_torch(seen.T.tocsr(), device), grad_z)
    return loss, grad_items


class Workspace:
    """Scratch buffers reused across batches.

    A fresh (b, n_items) score matrix per batch costs an allocation that the OS backs
    page by page (tens of milliseconds at 1024 x 20k); reusing one buffer avoids it."""

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        """A contiguous float32 tensor of ``shape`` (contents undefined)."""
        numel = math.prod(shape)
        buffer = self._buffers.get(name)
        if buffer is None or buffer.numel() < numel or buffer.device != device:
            buffer = torch.empty(numel, device=device)
            self._buffers[name] = buffer
        return buffer[:numel].view(shape)


def _canonical(rows: sp.csr_matrix) -> sp.csr_matrix:
    """CSR with sorted, unique column indices per row (duplicates summed)."""
    rows = rows.tocsr()
    if not rows.has_canonical_format:
        rows = rows.copy()
        rows.sum_duplicates()
    return rows


def _flat_nonzeros(
    rows: sp.csr_matrix, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(flat positions, values, row of each non-zero)``, each (nnz,), of a (b, n) CSR."""
    row_of = np.repeat(np.arange(rows.shape[0], dtype=np.int64), np.diff(rows.indptr))
    positions = row_of * rows.shape[1] + rows.indices
    return (
        torch.from_numpy(positions).to(device),
        torch.from_numpy(rows.data.astype(np.float32, copy=False)).to(device),
        torch.from_numpy(row_of).to(device),
    )


def _remove_parallel_(grad: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Drop, in place, each gradient row's component along its (unit-norm) parameter row,
    so a step moves along the sphere instead of changing the norm the renormalisation
    undoes. Returns ``grad``."""
    # einsum runs the row-wise dots as a batched matmul, without the (n_items, d)
    # temporary of (grad * rows).sum(1) (3x faster at 20k x 512).
    parallel = torch.einsum("ij,ij->i", grad, rows).unsqueeze(1)  # (n_items, 1)
    return grad.addcmul_(parallel, rows, value=-1.0)


def _normalize_rows_(items: torch.Tensor) -> None:
    """Rescale each row of (n_items, d) ``items`` to unit L2 norm, in place."""
    items.div_(torch.linalg.vector_norm(items, dim=1, keepdim=True).clamp_min_(1e-12))


class _Validator(ValidationMonitor):
    """Per-epoch validation of ELSA's item matrix: the ELSA loss on the validation
    users' full rows and, when monitoring a ranking metric, that metric on a fixed
    hold-out of their items (:class:`~steercf.evaluation.ValidationMonitor`)."""

    def __call__(self, items: torch.Tensor, workspace: Workspace) -> dict[str, float]:
        """``{"val_loss": ..., ["val_recall@K": ...]}`` for (n_items, d) ``items``."""

        def batch_loss(batch: sp.csr_matrix) -> float:
            loss, _ = elsa_loss_and_grad(batch, items, need_grad=False, workspace=workspace)
            return loss.item()

        def batch_scores(given: sp.csr_matrix) -> torch.Tensor:
            return torch.sparse.mm(csr_to_torch(given, items.device), items) @ items.T

        with torch.no_grad():
            return self.record(batch_loss, batch_scores)
