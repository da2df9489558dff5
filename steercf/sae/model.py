"""The sparse autoencoder: standardise -> encode -> sparse activation -> decode -> undo.

For a raw row ``x`` (length ``d_in``)::

    x_std  = (x - mean(x)) / std(x)                  # per vector; skipped if standardize=False
    pre    = (x_std - b_dec) @ W_enc + b_enc          # (n_latents,)
    codes  = activation(pre)                          # non-negative, mostly zero
    x_hat  = (codes @ W_dec + b_dec) * std(x) + mean(x)

``W_dec`` has unit-norm rows, so a latent's activation is the length of its
contribution. The module knows nothing about where the vectors come from.
"""

from __future__ import annotations

import math
import os
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from steercf.errors import InputError, ModelFileError
from steercf.io import read_model, require_tensors, save_model_dir
from steercf.sae.config import SAEConfig

KIND = "SparseAutoencoder"
STD_EPS = 1e-8  # a constant vector standardises to zeros instead of NaN
THRESHOLD_MOMENTUM = 0.99  # running estimate of the BatchTopK inference threshold
# Decode through F.embedding_bag (cost ~ active entries) unless the codes are denser
# than this; past it a dense matmul is faster (ReLU SAEs early in training).
SPARSE_DECODE_MAX_DENSITY = 0.05
REFIT_RIDGE = 1e-4  # keeps the refit's small Gram systems well-posed (rows are unit norm)
REFIT_CHUNK_FLOATS = 2**24  # rows per refit chunk: (rows x active x d_in) <= this


def as_rows(
    x: Any,
    d_in: int,
    name: str = "x",
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """Check and convert ``x`` to a float tensor of shape ``(n, d_in)``, ``n >= 1``.

    Accepts torch tensors, numpy arrays and nested lists; never copies when ``x``
    already has the right dtype and device (and is never modified).

    Raises:
        InputError: not numeric, not 2-D, empty, wrong width, NaN or infinite values.
    """
    if isinstance(x, np.ndarray) and x.dtype.kind not in "biuf":
        raise InputError(f"{name} must hold real numbers, got numpy dtype {x.dtype}")
    if isinstance(x, Tensor) and (x.is_complex() or x.dtype == torch.bool):
        raise InputError(f"{name} must hold real numbers, got torch dtype {x.dtype}")
    try:
        t = torch.as_tensor(x, dtype=dtype, device=device)
    except (TypeError, ValueError, RuntimeError) as err:
        raise InputError(f"{name} cannot be read as a numeric (n, d) array: {err}") from err
    if t.ndim != 2:
        raise InputError(f"{name} must be 2-D with shape (n, {d_in}), got shape {tuple(t.shape)}")
    if t.shape[0] == 0:
        raise InputError(f"{name} is empty (0 rows)")
    if t.shape[1] != d_in:
        raise InputError(f"{name} has width {t.shape[1]} but the SAE expects d_in = {d_in}")
    finite = torch.isfinite(t)
    if not bool(finite.all()):
        n_nan = int(torch.isnan(t).sum())
        n_inf = int((~finite).sum()) - n_nan
        what = " and ".join(part for part, n in (("NaN", n_nan), ("infinite", n_inf)) if n)
        raise InputError(f"{name} holds {what} values ({n_nan + n_inf} entries)")
    return t


def geometric_median(x: Tensor, max_iter: int = 32, tol: float = 1e-6) -> Tensor:
    """Geometric median of the rows of ``x`` (n, d) by Weiszfeld iterations, shape (d,).

    Starts at the mean; each step is the mean weighted by inverse distances, so one
    far outlier pulls it much less than it pulls the mean. Computed in float64.
    """
    rows = x.detach().to(torch.float64)
    median = rows.mean(0)
    for _ in range(max_iter):
        weights = 1.0 / (rows - median).norm(dim=1).clamp_min(1e-12)
        new = weights @ rows / weights.sum()
        shift = (new - median).norm()
        median = new
        if shift <= tol * (median.norm() + tol):
            break
    return median.to(x.dtype)


class SAEOutput(NamedTuple):
    """Everything :meth:`SparseAutoencoder.forward` computes, for losses and inspection."""

    x_hat: Tensor  # (n, d_in) reconstruction in the raw input space
    codes: Tensor  # (n, n_latents) non-negative activations, zeros where inactive
    pre_acts: Tensor  # (n, n_latents) encoder outputs before the sparse activation
    x_std: Tensor  # (n, d_in) standardised input
    x_hat_std: Tensor  # (n, d_in) reconstruction in the standardised space
    mean: Tensor  # (n, 1) per-row mean removed by the standardisation (zeros if off)
    std: Tensor  # (n, 1) per-row standard deviation divided out (ones if off)


class SparseAutoencoder(nn.Module):
    """TopK / BatchTopK / ReLU sparse autoencoder over ``d_in``-dimensional vectors.

    Parameters: ``W_enc`` (d_in, n_latents), ``b_enc`` (n_latents,), ``W_dec``
    (n_latents, d_in) with unit-norm rows, ``b_dec`` (d_in,). Buffer ``threshold``
    (scalar): the BatchTopK inference threshold, a running estimate updated by
    training-mode forward passes (0 and unused for the other activations).

    BatchTopK behaves differently in ``train()`` and ``eval()`` mode; call ``eval()``
    before inference (``load`` and ``train_sae`` return models in eval mode).
    """

    def __init__(self, config: SAEConfig, seed: int = 0) -> None:
        """Random unit-norm decoder rows; the encoder starts as their transpose
        (``init="tied"``) or drawn on its own (``init="independent"``)."""
        super().__init__()
        config.validate()
        self.config = config
        generator = torch.Generator().manual_seed(seed)
        if config.init == "tied":
            w_dec = torch.randn(config.n_latents, config.d_in, generator=generator)
            w_dec /= w_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)
            w_enc = w_dec.t().contiguous()  # clone() would keep the transposed strides
        else:  # Kaiming-uniform, as nn.Linear(d_in, n) and nn.Linear(n, d_in) start
            bound_enc, bound_dec = 1 / math.sqrt(config.d_in), 1 / math.sqrt(config.n_latents)
            w_enc = torch.rand(config.d_in, config.n_latents, generator=generator)
            w_enc = w_enc.mul_(2 * bound_enc).sub_(bound_enc)
            w_dec = torch.rand(config.n_latents, config.d_in, generator=generator)
            w_dec = w_dec.mul_(2 * bound_dec).sub_(bound_dec)
            w_dec /= w_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)
        self.W_dec = nn.Parameter(w_dec)
        self.W_enc = nn.Parameter(w_enc)
        self.b_enc = nn.Parameter(torch.zeros(config.n_latents))
        self.b_dec = nn.Parameter(torch.zeros(config.d_in))
        self.register_buffer("threshold", torch.tensor(0.0))

    def extra_repr(self) -> str:
        c = self.config
        k = "" if c.activation == "relu" else f", k={c.k}"
        return f"d_in={c.d_in}, n_latents={c.n_latents}, activation={c.activation}{k}"

    # ----------------------------------------------------------------- input side
    def _rows(self, x: Any, name: str = "x") -> Tensor:
        return as_rows(x, self.config.d_in, name, self.W_dec.dtype, self.W_dec.device)

    def standardize(self, x: Any) -> tuple[Tensor, Tensor, Tensor]:
        """Per-vector standardisation of raw rows ``x`` (n, d_in).

        Returns:
            ``(x_std (n, d_in), mean (n, 1), std (n, 1))`` with population std
            (so each standardised row has unit RMS). New tensors: ``x`` is never
            modified. With ``standardize=False``: ``(x, zeros, ones)``.
        """
        x = self._rows(x)
        if not self.config.standardize:
            return x, x.new_zeros(x.shape[0], 1), x.new_ones(x.shape[0], 1)
        std, mean = torch.std_mean(x, dim=1, correction=0, keepdim=True)
        std = std.clamp_min(STD_EPS)
        return (x - mean) / std, mean, std

    def init_decoder_bias(self, x: Any) -> None:
        """Set ``b_dec`` to the mean / geometric median of the standardised raw rows
        ``x`` (n, d_in), per ``config.decoder_bias_init``. For large ``n`` pass a sample."""
        x_std, _, _ = self.standardize(x)
        mode = self.config.decoder_bias_init
        if mode == "mean":
            bias = x_std.mean(0)
        elif mode == "median":
            bias = geometric_median(x_std)
        else:
            bias = torch.zeros_like(self.b_dec)
        with torch.no_grad():
            self.b_dec.copy_(bias)

    # -------------------------------------------------------------------- encoder
    def encode_pre(self, x_std: Tensor) -> Tensor:
        """Pre-activations (n, n_latents) of standardised rows ``x_std`` (n, d_in):
        ``(x_std - b_dec) @ W_enc + b_enc``."""
        # b_dec is folded into the bias so that the input of the big matmul needs no
        # gradient: backward then skips an (n, n_latents) x (n_latents, d_in) product.
        return torch.addmm(self.b_enc - self.b_dec @ self.W_enc, x_std, self.W_enc)

    def activate(self, pre_acts: Tensor) -> Tensor:
        """Sparse non-negative codes (n, n_latents) from pre-activations (n, n_latents)."""
        config = self.config
        if config.activation == "relu":
            return F.relu(pre_acts)
        if config.activation == "topk":
            values, indices = pre_acts.topk(config.k, dim=1, sorted=False)
            return torch.zeros_like(pre_acts).scatter(1, indices, F.relu(values))
        if not self.training:  # batchtopk inference: the learned threshold, per entry
            return torch.where(pre_acts > self.threshold, pre_acts, 0.0)
        # batchtopk training: the k * n largest entries of the whole batch
        flat = F.relu(pre_acts).flatten()
        values, indices = flat.topk(min(config.k * pre_acts.shape[0], flat.numel()), sorted=False)
        self._update_threshold(values)
        return torch.zeros_like(flat).scatter(0, indices, values).view_as(pre_acts)

    @torch.no_grad()
    def _update_threshold(self, kept: Tensor) -> None:
        # The smallest kept positive activation is the batch's cut-off; average it.
        positive = kept[kept > 0]
        if positive.numel() == 0:
            return
        cut = positive.min()
        if self.threshold <= 0:  # first estimate
            self.threshold.copy_(cut)
        else:
            self.threshold.mul_(THRESHOLD_MOMENTUM).add_(cut, alpha=1 - THRESHOLD_MOMENTUM)

    def encode(self, x: Any) -> tuple[Tensor, Tensor, Tensor]:
        """Codes of raw rows ``x`` (n, d_in).

        Returns:
            ``(codes (n, n_latents), mean (n, 1), std (n, 1))``; pass ``mean`` and
            ``std`` to :meth:`decode` to get back to the raw space.
        """
        x_std, mean, std = self.standardize(x)
        return self._inference_codes(x_std, self.activate(self.encode_pre(x_std))), mean, std

    def _inference_codes(self, x_std: Tensor, codes: Tensor) -> Tensor:
        """``codes``, re-fitted on their support when ``config.refit`` and in eval mode."""
        if self.config.refit and not self.training:
            return self.refit_active(x_std, codes)
        return codes

    @torch.no_grad()
    def refit_active(self, x_std: Tensor, codes: Tensor) -> Tensor:
        """Non-negative least-squares activations on each row's active latents.

        For row ``i`` with active set ``S`` the new activations minimise
        ``|x_std_i - b_dec - sum_{j in S} a_j W_dec[j]|`` with ``a >= 0``: a ridge-
        regularised solve of the (|S| x |S|) Gram system, then a second solve without
        the latents the first pushed below zero (then clamped), which is exact in the
        common case of no sign change. Inactive latents stay 0.

        Args:
            x_std: (n, d_in) standardised inputs; codes: (n, n_latents) their codes.

        Returns:
            (n, n_latents) codes with the same (or a smaller) support.
        """
        width = int((codes > 0).sum(dim=1).max()) if codes.numel() else 0
        if width == 0:
            return codes
        out = torch.zeros_like(codes)
        rows_per_chunk = max(1, REFIT_CHUNK_FLOATS // (width * self.config.d_in))
        eye = torch.eye(width, dtype=codes.dtype, device=codes.device)
        for start in range(0, codes.shape[0], rows_per_chunk):
            chunk = slice(start, start + rows_per_chunk)
            values, index = codes[chunk].topk(width, dim=1)
            active = values > 0
            target = (x_std[chunk] - self.b_dec).unsqueeze(-1)  # (b, d_in, 1)
            for _ in range(2):
                basis = self.W_dec[index] * active.unsqueeze(-1)  # (b, width, d_in)
                gram = basis @ basis.transpose(1, 2) + REFIT_RIDGE * eye
                # an inactive slot gets a unit diagonal and a zero right-hand side -> 0
                gram = gram + torch.diag_embed((~active).to(gram.dtype))
                values = torch.linalg.solve(gram, (basis @ target).squeeze(-1))
                active = active & (values > 0)
            out[chunk] = out[chunk].scatter(1, index, values.clamp_min(0) * active)
        return out

    def sparse_codes(self, x: Any, top: int | None = None) -> tuple[Tensor, Tensor]:
        """Active latents of raw rows ``x`` (n, d_in), largest first.

        Args:
            top: how many per row; default ``k`` for topk, else the largest number
                active in any row. Rows with fewer active latents are padded with
                value 0 (at arbitrary inactive indices).

        Returns:
            ``(values (n, top), indices (n, top))``, values sorted descending.
        """
        codes, _, _ = self.encode(x)
        if top is None:
            if self.config.activation == "topk":
                top = self.config.k
            else:
                top = max(int((codes > 0).sum(1).max()), 1)
        if top < 1:
            raise InputError(f"top must be >= 1, got {top}")
        return codes.topk(min(top, self.config.n_latents), dim=1)

    # -------------------------------------------------------------------- decoder
    def decode_active(self, values: Tensor, indices: Tensor) -> Tensor:
        """``sum_j values[:, j] * W_dec[indices[:, j]]``, shape (n, d_in), without
        ``b_dec``, in the standardised space. ``values``, ``indices``: (n, m)."""
        return F.embedding_bag(indices, self.W_dec, per_sample_weights=values, mode="sum")

    def _decode_std(self, codes: Tensor) -> Tensor:
        rows, cols = codes.nonzero(as_tuple=True)
        if rows.numel() > SPARSE_DECODE_MAX_DENSITY * codes.numel():
            return torch.addmm(self.b_dec, codes, self.W_dec)
        # Only the active entries are multiplied: k * n * d_in work instead of
        # n_latents * n * d_in. ``nonzero`` lists entries row by row, as bags need.
        counts = torch.bincount(rows, minlength=codes.shape[0])
        offsets = counts.cumsum(0) - counts
        out = F.embedding_bag(
            cols, self.W_dec, offsets, per_sample_weights=codes[rows, cols], mode="sum"
        )
        return out + self.b_dec

    def decode(
        self, codes: Tensor, mean: Tensor | None = None, std: Tensor | None = None
    ) -> Tensor:
        """Reconstruction (n, d_in) of codes (n, n_latents).

        In the raw space when ``mean`` and ``std`` (n, 1) from :meth:`encode` are given,
        else in the standardised space.
        """
        if not isinstance(codes, Tensor):
            codes = torch.as_tensor(codes, dtype=self.W_dec.dtype, device=self.W_dec.device)
        if codes.ndim != 2 or codes.shape[1] != self.config.n_latents:
            raise InputError(
                f"codes must have shape (n, {self.config.n_latents}), got {tuple(codes.shape)}"
            )
        if not bool(torch.isfinite(codes).all()):
            raise InputError("codes hold NaN or infinite values")
        if (mean is None) != (std is None):
            raise InputError("pass both mean and std to decode into the raw space, or neither")
        x_hat_std = self._decode_std(codes.to(self.W_dec.dtype))
        if mean is None:
            return x_hat_std
        return x_hat_std * std + mean

    def forward(self, x: Any) -> SAEOutput:
        """Encode and decode raw rows ``x`` (n, d_in); see :class:`SAEOutput`."""
        x_std, mean, std = self.standardize(x)
        pre_acts = self.encode_pre(x_std)
        if self.config.activation == "topk" and (self.training or not self.config.refit):
            # decode straight from the top-k pairs: no search for the non-zeros of the
            # dense codes (a third of a training step's forward pass at 2,048 latents)
            values, indices = pre_acts.topk(self.config.k, dim=1, sorted=False)
            values = F.relu(values)
            codes = torch.zeros_like(pre_acts).scatter(1, indices, values)
            x_hat_std = self.decode_active(values, indices) + self.b_dec
        else:
            codes = self._inference_codes(x_std, self.activate(pre_acts))
            x_hat_std = self._decode_std(codes)
        x_hat = x_hat_std * std + mean if self.config.standardize else x_hat_std
        return SAEOutput(x_hat, codes, pre_acts, x_std, x_hat_std, mean, std)

    # -------------------------------------------------------- decoder constraints
    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Rescale every decoder row to unit L2 norm (after each optimiser step)."""
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12))

    @torch.no_grad()
    def remove_parallel_grad(self) -> None:
        """Project each decoder row's gradient onto the row's orthogonal complement.

        The row is renormalised after the step anyway, so the parallel part would only
        fight the constraint (and distort Adam's statistics)."""
        grad = self.W_dec.grad
        if grad is None:
            return
        w = self.W_dec
        along = (grad * w).sum(1, keepdim=True) / (w * w).sum(1, keepdim=True).clamp_min(1e-12)
        grad.sub_(along * w)

    # ------------------------------------------------------------------- storage
    def model_parts(self) -> tuple[str, dict[str, Any], dict[str, Tensor]]:
        """``(kind, config, tensors)`` as :func:`steercf.io.save_model_dir` takes them
        (also usable as a ``children`` entry of a composite model)."""
        tensors = {name: t.detach() for name, t in self.state_dict().items()}
        return KIND, self.config.to_dict(), tensors

    def save(self, path: str | os.PathLike, *, force: bool = False) -> None:
        """Write the model atomically to the directory ``path`` (safetensors + JSON);
        ``force``: write into a non-empty directory that is not a steercf model."""
        kind, config, tensors = self.model_parts()
        save_model_dir(path, kind, config, tensors, force=force)

    @classmethod
    def load(cls, path: str | os.PathLike) -> SparseAutoencoder:
        """Read a model written by :meth:`save`, in eval mode, on the CPU.

        Raises:
            ModelFileError: missing or corrupt files, another kind, an invalid
                config, missing tensors, wrong shapes, NaN or infinite values.
        """
        return read_model(
            path, KIND, lambda root, _kind, config, tensors: cls._build(config, tensors, root)
        )

    @classmethod
    def _build(
        cls, config_dict: dict[str, Any], tensors: dict[str, Tensor], path
    ) -> SparseAutoencoder:
        try:
            config = SAEConfig.from_dict(dict(config_dict))
        except (InputError, TypeError) as err:
            raise ModelFileError(f"{path}: invalid SAE config: {err}") from err
        d, n = config.d_in, config.n_latents
        shapes = {"W_enc": (d, n), "b_enc": (n,), "W_dec": (n, d), "b_dec": (d,), "threshold": ()}
        require_tensors(tensors, shapes, path)
        model = cls(config)
        model.load_state_dict({name: tensors[name] for name in shapes})
        return model.eval()
