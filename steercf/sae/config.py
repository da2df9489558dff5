"""Hyperparameters of a sparse autoencoder (:class:`SAEConfig`) and of its training
(:class:`TrainConfig`). Both are plain dataclasses that round-trip through JSON."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from steercf.errors import InputError

ACTIVATIONS = ("topk", "batchtopk", "relu")
DECODER_BIAS_INITS = ("mean", "median", "zero")
WEIGHT_INITS = ("tied", "independent")
LOSSES = ("cosine", "mse", "nmse")


def _from_dict(cls, data: dict[str, Any]):
    """Build a config dataclass from a dict, naming unknown keys instead of a TypeError."""
    if not isinstance(data, dict):
        raise InputError(f"{cls.__name__} needs a dict, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InputError(f"unknown {cls.__name__} field(s): {', '.join(unknown)}")
    config = cls(**data)
    config.validate()
    return config


@dataclass
class SAEConfig:
    """Shape and activation of a sparse autoencoder.

    Attributes:
        d_in: width of the input vectors.
        expansion: latents per input dimension; ignored when ``width`` is given.
        width: number of latents (overrides ``expansion``).
        activation: ``"topk"`` (keep the k largest per row), ``"batchtopk"`` (keep the
            k * batch largest over a training batch, a learned threshold at inference)
            or ``"relu"`` (plain ReLU; sparsity comes from ``TrainConfig.l1_coef``).
        k: active latents per input for topk / batchtopk (on average for batchtopk).
        standardize: standardise each input vector to mean 0 and standard deviation 1
            before encoding and undo it after decoding (a copy: the input is never edited).
        decoder_bias_init: ``"mean"``, ``"median"`` (geometric median, robust to
            outliers) or ``"zero"``; computed on the (standardised) training data.
        refit: at inference (eval mode), keep the latents the encoder picked but re-fit
            their activations by non-negative least squares against the input
            (inference-time optimisation on the encoder's support). The code stays as
            sparse; only the amounts change, so the reconstruction can only get closer.
            Training is unchanged (off: the published recipe).
        init: how the weights start: ``"tied"`` (encoder = the decoder's transpose, Gao
            et al. 2024) or ``"independent"`` (encoder and decoder drawn apart, Kaiming-
            uniform as torch's ``nn.Linear``; decoder rows then set to unit norm, as the
            steerable-CF paper's code does).
    """

    d_in: int
    expansion: int = 8
    width: int | None = None
    activation: str = "topk"
    k: int = 16
    standardize: bool = True
    decoder_bias_init: str = "mean"
    refit: bool = False
    init: str = "tied"

    @property
    def n_latents(self) -> int:
        """Number of latents: ``width`` if set, else ``expansion * d_in``."""
        return self.width if self.width is not None else self.expansion * self.d_in

    def validate(self) -> None:
        """Raise :class:`InputError` naming the first invalid field."""
        for name in ("d_in", "expansion", "k"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(f"SAEConfig.{name} must be an integer >= 1, got {value!r}")
        if self.width is not None and (
            not isinstance(self.width, int) or isinstance(self.width, bool) or self.width < 1
        ):
            raise InputError(f"SAEConfig.width must be an integer >= 1 or None, got {self.width!r}")
        if self.activation not in ACTIVATIONS:
            raise InputError(
                f"unknown SAE activation {self.activation!r}; choose one of {', '.join(ACTIVATIONS)}"
            )
        if self.activation != "relu" and self.k > self.n_latents:
            raise InputError(
                f"SAEConfig.k = {self.k} is larger than the number of latents ({self.n_latents})"
            )
        if self.decoder_bias_init not in DECODER_BIAS_INITS:
            raise InputError(
                f"unknown decoder_bias_init {self.decoder_bias_init!r}; "
                f"choose one of {', '.join(DECODER_BIAS_INITS)}"
            )
        if self.init not in WEIGHT_INITS:
            raise InputError(
                f"unknown SAE init {self.init!r}; choose one of {', '.join(WEIGHT_INITS)}"
            )
        if not isinstance(self.standardize, bool):
            raise InputError(f"SAEConfig.standardize must be a bool, got {self.standardize!r}")
        if not isinstance(self.refit, bool):
            raise InputError(f"SAEConfig.refit must be a bool, got {self.refit!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SAEConfig:
        """Inverse of :meth:`to_dict`; validates. Raises :class:`InputError`."""
        return _from_dict(cls, data)


@dataclass
class TrainConfig:
    """How :func:`steercf.sae.train_sae` trains.

    Defaults follow the published TopK recipes (Gao et al. 2024; O'Neill et al. 2024;
    the steerable-CF paper): Adam, batch 1024, gradient clipping 1.0, AuxK 1/32,
    up to 1000 epochs with early stopping on the validation loss.

    Attributes:
        loss: reconstruction loss, always computed in the raw input space (after undoing
            the standardisation, as the published recipe does): ``"cosine"`` (1 - cos),
            ``"mse"``, or ``"nmse"`` (squared error over the batch's total variance).
            Cosine leaves the reconstruction's length free (fine when only directions
            or rankings matter downstream); use mse / nmse when magnitudes matter.
        lr: Adam learning rate. ``None`` (default) scales it with the number of latents
            like Gao et al. / sparsify: ``2e-4 / sqrt(n_latents / 2**14)`` (1.1e-3 for
            512 latents, 2.8e-4 for 8192), because smaller dictionaries tolerate larger
            steps and our data sets give few steps per epoch.
        batch_size: rows per optimiser step.
        max_epochs: upper bound on passes over the training rows.
        patience: stop after this many epochs without a validation improvement of more
            than ``min_delta`` (absolute); the best state is restored. The criterion is
            the reconstruction loss plus ``l1_coef`` times the mean L1 (AuxK left out).
        l1_coef: L1 penalty on the codes (sum over latents, mean over rows, in the
            standardised space). Needed by ``"relu"`` (try 0.01-0.1); the published
            TopK recipe adds 3e-4.
        aux_coef: weight of the AuxK loss against dead latents (0 turns it off).
        aux_loss: how AuxK compares the residual with its reconstruction by the dead
            latents: ``"cosine"`` (default, 1 - cos), ``"mse"`` or ``"nmse"`` (Gao et
            al.'s form). Cosine is scale-free; the squared-error forms mostly teach the
            dead latents to shrink their (ReLU'd) activations to zero, which kills them
            for good. On our synthetic tests a squared-error AuxK left *more* latents
            dead than no AuxK (24% -> 28% under an nmse main loss) while the cosine form
            revived them (24% -> 15%; 22% -> 4% under mse).
        aux_k: dead latents used by AuxK per row. ``None``: ``max(k, d_in // 2)``
            capped at ``n_latents`` (sparsify's ``d_in // 2``, at least ``k``).
        dead_window: a latent is dead once it has not fired for this many consecutive
            training inputs. ``None``: the number of training rows, i.e. it fired on
            no row during the last epoch (a 10M-token window as in Gao et al. would
            be thousands of epochs on recommender data).
        grad_clip: maximum global gradient norm (0 turns clipping off).
        val_fraction: share of the training rows held out for early stopping when no
            validation data is passed (0: monitor the training loss instead).
        seed: seeds the initialisation, the validation split and the shuffling.
        device: torch device to train on.
        progress: show a tqdm bar over epochs.
    """

    loss: str = "cosine"
    lr: float | None = None
    batch_size: int = 1024
    max_epochs: int = 1000
    patience: int = 20
    min_delta: float = 1e-5
    l1_coef: float = 0.0
    aux_coef: float = 1 / 32
    aux_loss: str = "cosine"
    aux_k: int | None = None
    dead_window: int | None = None
    grad_clip: float = 1.0
    val_fraction: float = 0.1
    seed: int = 0
    device: str = "cpu"
    progress: bool = True

    def learning_rate(self, n_latents: int) -> float:
        """``lr``, or the default scaled to ``n_latents`` when ``lr`` is None."""
        if self.lr is not None:
            return float(self.lr)
        return 2e-4 / math.sqrt(n_latents / 2**14)

    def resolved_aux_k(self, sae_config: SAEConfig) -> int:
        """``aux_k``, or its default for this SAE, capped at the number of latents."""
        default = max(sae_config.k, sae_config.d_in // 2)
        return min(self.aux_k if self.aux_k is not None else default, sae_config.n_latents)

    def validate(self) -> None:
        """Raise :class:`InputError` naming the first invalid field."""
        if self.loss not in LOSSES:
            raise InputError(f"unknown SAE loss {self.loss!r}; choose one of {', '.join(LOSSES)}")
        if self.aux_loss not in LOSSES:
            raise InputError(
                f"unknown AuxK loss {self.aux_loss!r}; choose one of {', '.join(LOSSES)}"
            )
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            raise InputError(f"TrainConfig.lr must be a positive number or None, got {self.lr!r}")
        for name in ("batch_size", "max_epochs", "patience"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(f"TrainConfig.{name} must be an integer >= 1, got {value!r}")
        for name in ("aux_k", "dead_window"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise InputError(
                    f"TrainConfig.{name} must be an integer >= 1 or None, got {value!r}"
                )
        for name in ("min_delta", "l1_coef", "aux_coef", "grad_clip"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise InputError(f"TrainConfig.{name} must be a finite number >= 0, got {value!r}")
        if not 0 <= self.val_fraction < 1:
            raise InputError(
                f"TrainConfig.val_fraction must be in [0, 1), got {self.val_fraction!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; validates. Raises :class:`InputError`."""
        return _from_dict(cls, data)
