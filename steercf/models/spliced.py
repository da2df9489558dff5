"""A collaborative autoencoder with a sparse autoencoder spliced between its encoder and
decoder: ``scores(x) = decode(SAE(encode(x)))``.

The CFAE is trained first and frozen; the SAE is trained on the CFAE's embeddings of
training users. Each user then *is* a sparse code: a few active latents ("latents")
out of thousands, which later modules label with concepts and steer.
"""

from __future__ import annotations

import copy
import os
from dataclasses import replace
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from steercf.data.rows import one_hot_items, thin_rows
from steercf.distributed import Collective
from steercf.errors import InputError, ModelFileError
from steercf.evaluation import monitor_hold_out, ndcg_at_k, parse_monitor, recall_at_k
from steercf.io import load_model_dir, read_model, save_model_dir, tensor_fingerprint
from steercf.models.base import CFAE, UserRows, as_user_rows
from steercf.models.sparse_code import SparseCode, SparseEncoding
from steercf.models.splice_loss import splice_holdout_loss, splice_ranking_loss
from steercf.ranking import top_n, whole_number
from steercf.sae import SAEConfig, SparseAutoencoder, TrainConfig, activation_counts, train_sae

# The spliced model's SAE and its training unless told otherwise (over SAEConfig's and
# TrainConfig's own defaults), chosen on validation users (benchmarks/sae.py, issue 15):
# k=32 (the most the steerable-CF protocol allows) rebuilds the base's ranking far
# better than k=16; the refit (least-squares activations on the encoder's support at
# inference) removes most of what is left. Batches of 1024 at lr 2e-3 reach the
# validation recall of batches of 256 at the default lr in a third of the time; patience
# 5 stops at the same best epoch as 10 on ML-100K seeds 0-2, sooner (ml-latest-small
# takes 10: steercf.experiment.SPLICE_TRAINING); lr 3e-3 was faster but lower on
# validation users.
SAE_DEFAULTS: dict[str, Any] = {"k": 32, "expansion": 8, "refit": True}
TRAIN_DEFAULTS: dict[str, Any] = {"batch_size": 1024, "lr": 2e-3, "patience": 5}
# Random sub-histories per training user (augmented_rows). More copies generalise to
# test users' partial histories: 16 scores highest on validation users pooled over both
# MovieLens sets and 5 seeds (Recall@20 + nDCG@20: 1.350 vs 1.339 for 8 and 1.343 for
# 32; benchmarks/sae.py --augment N), at about 1.3x the training time of 8 (fewer epochs
# of twice the rows).
AUGMENT_COPIES = 16


def default_train_config(**overrides: Any) -> TrainConfig:
    """The spliced model's SAE training settings: :data:`TRAIN_DEFAULTS` over
    :class:`TrainConfig`'s defaults, then ``overrides`` (e.g. ``seed``, ``progress``)."""
    return TrainConfig.from_dict({**TRAIN_DEFAULTS, **overrides})


def augmented_rows(
    user_items: sp.csr_matrix, copies: int, rng: np.random.Generator
) -> sp.csr_matrix:
    """The rows plus ``copies`` random sub-histories of each.

    Each copy keeps a share of the user's items drawn uniformly from (0, 1) (at least one
    item), so the SAE also sees short, partial histories like those of test users and
    single-item probes, not only the few hundred full histories of a small data set.

    Args:
        user_items: (n, n_items) CSR without empty rows.

    Returns:
        ((1 + copies) * n, n_items) CSR.
    """
    parts = [user_items]
    for _ in range(copies):
        parts.append(thin_rows(user_items, rng.random(user_items.shape[0]), rng))
    return sp.vstack(parts, format="csr")


class SplicedRecommender(CFAE):
    """A trained CFAE with an SAE between encoder and decoder.

    A CFAE itself: :meth:`encode` gives a :class:`SparseEncoding` (the users' sparse
    codes), :meth:`decode` takes it back to item scores, ``d_`` is the number of latents.

    Args:
        base: a CFAE (ELSA, or EASE with ``rank`` set); fitted in :meth:`fit` if it is not.
        sae_config: the SAE (``d_in`` is filled in from the base); default
            :data:`SAE_DEFAULTS` (TopK, 8x width, k=32, refit).
        train_config: SAE training settings (default :func:`default_train_config`).
        augment: random sub-histories per training user added to the SAE's training
            rows (default :data:`AUGMENT_COPIES`; 0 = full histories only, the
            published recipe).
        seed: seeds the augmentation and the SAE.
        progress: show tqdm bars.
        monitor: what stops the SAE's training early: ``"loss"`` (its reconstruction
            loss on the validation users' embeddings) or ``"recall@K"`` / ``"ndcg@K"``
            of the spliced model on a fixed 20 % hold-out of the validation users' items
            (what the splice is for: the ranking through the SAE).
        finetune_epochs: after reconstruction training, up to this many epochs of
            splice-aware training (a task loss added to the reconstruction loss),
            stopped on and kept only if it raises the spliced model's validation
            Recall@20 (0: reconstruction only, the published recipe).
        finetune_loss: the task loss: ``"holdout"`` (the spliced model ranks the
            hidden items of sub-sampled training histories,
            :func:`~steercf.models.splice_loss.splice_holdout_loss`) or ``"distill"``
            (it matches the base's item-score distribution,
            :func:`~steercf.models.splice_loss.splice_ranking_loss`).
        finetune_weight: the holdout loss's weight against the reconstruction loss.
        finetune_sharpness: the distill loss's inverse temperature.
        error_term: recommend through ``decode(SAE(z) + (z - SAE(z)))``: the SAE's
            error term is kept in each encoding (:attr:`SparseEncoding.residual`), so
            unsteered scores are the base's exactly while steering still edits the
            sparse code; explanations report the error term's share
            (:meth:`residual_contributions`). Off: the pure splice, the published
            recipe (issue 15 reports the two apart).
    """

    kind = "Spliced"

    def __init__(
        self,
        base: CFAE,
        sae_config: SAEConfig | dict[str, Any] | None = None,
        train_config: TrainConfig | None = None,
        augment: int = AUGMENT_COPIES,
        seed: int = 0,
        progress: bool = True,
        monitor: str = "loss",
        finetune_epochs: int = 0,
        finetune_loss: str = "holdout",
        finetune_weight: float = 0.1,
        finetune_sharpness: float = 5.0,
        error_term: bool = False,
    ) -> None:
        if not isinstance(base, CFAE) or isinstance(base, SplicedRecommender):
            raise InputError(
                f"base must be a dense CFAE (ELSA, Mult-VAE or low-rank EASE), got {type(base).__name__}"
            )
        self.base = base
        self.sae_config = sae_config
        self.train_config = train_config
        self.augment = augment
        self.seed = seed
        self.progress = progress
        self.monitor = monitor
        self.finetune_epochs = finetune_epochs
        self.finetune_loss = finetune_loss
        self.finetune_weight = finetune_weight
        self.finetune_sharpness = finetune_sharpness
        if not isinstance(error_term, bool):
            raise InputError(f"error_term must be a bool, got {error_term!r}")
        self.error_term = error_term

    # ---- training ------------------------------------------------------------------
    def fit(
        self,
        user_items: sp.csr_matrix,
        val_user_items: sp.csr_matrix | None = None,
        group: Collective | None = None,
    ) -> SplicedRecommender:
        """Fit the base if needed, then train the SAE on its embeddings of ``user_items``
        (plus augmented sub-histories); ``val_user_items`` rows drive early stopping.
        ``group`` trains data-parallel (:mod:`steercf.distributed`; every process passes
        the same arguments and embeds all rows, then trains on its share of each batch).

        Sets ``sae_``, ``history_``, ``n_items_``."""
        if not hasattr(self.base, "n_items_"):
            # only ELSA trains data-parallel; EASE's closed form takes no group
            parallel = {"group": group} if group is not None and group.world_size > 1 else {}
            self.base.fit(user_items, val_user_items, **parallel)
        rows = as_user_rows(user_items, self.base.n_items_, allow_empty=True)
        rows = rows[np.diff(rows.indptr) > 0]
        if self.augment < 0:
            raise InputError(f"augment must be >= 0, got {self.augment}")
        parse_monitor(self.monitor)
        if self.finetune_loss not in ("holdout", "distill"):
            raise InputError(
                f"finetune_loss must be 'holdout' or 'distill', got {self.finetune_loss!r}"
            )
        rng = np.random.default_rng(self.seed)
        train_rows = augmented_rows(rows, self.augment, rng)
        z_train = self._embed(train_rows)
        z_val = None
        if val_user_items is not None:
            val = as_user_rows(val_user_items, self.base.n_items_, allow_empty=True)
            val = val[np.diff(val.indptr) > 0]
            # validate on the kind of input the SAE meets at test time: partial histories
            z_val = self._embed(sp.vstack([val, thin_rows(val, 0.2, rng)], format="csr"))
        config = self._resolved_sae_config()
        train_config = self.train_config or default_train_config(
            seed=self.seed, progress=self.progress
        )
        val_score = None
        if self.monitor != "loss" and val_user_items is not None:
            val_score = self._ranking_score(val)
        result = train_sae(
            z_train, config, train_config, x_val=z_val, group=group, val_score=val_score
        )
        self.train_config_ = train_config  # what trained it, saved with the model
        self.sae_ = result.sae.eval()
        self.history_ = result.history
        self.best_epoch_ = result.best_epoch
        if self.finetune_epochs > 0:
            if val_user_items is None:
                raise InputError("splice-aware fine-tuning needs validation rows to stop on")
            self._finetune(z_train, train_rows, rows, z_val, val, config, train_config, group)
        self.n_items_ = self.base.n_items_
        self.d_ = self.sae_.config.n_latents
        return self

    def _finetune(
        self,
        z_train: torch.Tensor,
        train_rows: sp.csr_matrix,
        rows: sp.csr_matrix,
        z_val: torch.Tensor,
        val: sp.csr_matrix,
        config: SAEConfig,
        train_config: TrainConfig,
        group: Collective | None,
    ) -> None:
        """Splice-aware epochs on a copy of the trained SAE; the copy replaces it only
        if its best epoch beats the reconstruction-trained SAE's validation recall."""
        score = self._ranking_score(val, "recall@20")
        before = score(self.sae_)
        # a short fine-tune peaks within a few epochs (ML-100K, seeds 0-1)
        tune = replace(
            train_config,
            max_epochs=self.finetune_epochs,
            patience=min(self.finetune_epochs, 2),
        )
        if self.finetune_loss == "holdout":
            # train_rows stacks the full rows and their thinned copies (augmented_rows)
            full_rows = sp.vstack([rows] * (1 + self.augment), format="csr")
            task = splice_holdout_loss(self.base, train_rows, full_rows, self.finetune_weight)
        else:
            task = splice_ranking_loss(self.base, z_train, train_rows, self.finetune_sharpness)
        tuned = train_sae(
            z_train,
            config,
            tune,
            x_val=z_val,
            sae=copy.deepcopy(self.sae_),
            group=group,
            val_score=score,
            task_loss=task,
        )
        best = tuned.history[tuned.best_epoch].get("val_score", -np.inf)
        for record in tuned.history:
            record["phase"] = "splice"
        self.history_ = [*self.history_, *tuned.history]
        self.finetune_gain_ = best - before
        if best > before:
            self.sae_ = tuned.sae.eval()
            self.best_epoch_ = len(self.history_) - len(tuned.history) + tuned.best_epoch

    def _ranking_score(self, val: sp.csr_matrix, monitor: str | None = None):
        """``score(sae)``: the spliced model's ``monitor`` metric (``recall@K`` or
        ``ndcg@K``; default ``self.monitor``) on a fixed 20 % hold-out of the
        (n, n_items) validation rows."""
        monitor = monitor or self.monitor
        metric, k = parse_monitor(monitor)
        given, target = monitor_hold_out(val, monitor, self.seed)
        z_given = self._embed(given)
        measure = recall_at_k if metric == "recall" else ndcg_at_k

        @torch.no_grad()
        def score(sae: SparseAutoencoder) -> float:
            ranked, _ = top_n(
                self._decode_with(sae, SparseEncoding(*sae.encode(z_given))), given, k
            )
            return float(measure(ranked, target, k).mean())

        return score

    def _resolved_sae_config(self) -> SAEConfig:
        given = self.sae_config
        if isinstance(given, SAEConfig):
            given = given.to_dict()
        settings = {**SAE_DEFAULTS, **(given or {})}
        if settings.get("d_in", self.base.d_) != self.base.d_:
            raise InputError(
                f"SAE d_in {settings['d_in']} does not match the base embedding width {self.base.d_}"
            )
        settings["d_in"] = self.base.d_
        return SAEConfig.from_dict(settings)

    def _embed(self, rows: sp.csr_matrix) -> torch.Tensor:
        """(n, d) the base CFAE's embeddings of (n, n_items) rows: the SAE's input."""
        return self.base.user_vectors(rows)

    # ---- inference -----------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "sae_"):
            raise InputError("SplicedRecommender is not fitted yet; call fit() first")

    def encode(self, user_items: UserRows) -> SparseEncoding:
        """SAE codes of user rows.

        Args:
            user_items: (n_users, n_items).

        Returns:
            a :class:`SparseEncoding` ((n, n_latents) codes plus the per-user
            standardisation); :meth:`decode` takes it back to item scores.
        """
        self._check_fitted()
        rows = as_user_rows(user_items, self.n_items_, allow_empty=True)
        with torch.no_grad():
            z = self.base.encode(rows)
            encoding = SparseEncoding(*self.sae_.encode(z))
            if self.error_term:  # z - SAE(z): decode then gives the base's exact scores
                reconstruction = self.sae_.decode(encoding.codes, encoding.mean, encoding.std)
                encoding = replace(encoding, residual=z - reconstruction)
            return encoding

    def decode(self, encoding: SparseEncoding) -> torch.Tensor:
        """A :class:`SparseEncoding` (possibly with edited codes) -> (n, n_items) item
        scores through the SAE decoder and the CFAE decoder."""
        self._check_fitted()
        if not isinstance(encoding, SparseEncoding):
            raise InputError(
                "decode takes the SparseEncoding that encode returned, got "
                f"{type(encoding).__name__}"
            )
        with torch.no_grad():
            return self._decode_with(self.sae_, encoding)

    def _decode_with(self, sae: SparseAutoencoder, encoding: SparseEncoding) -> torch.Tensor:
        z_hat = sae.decode(encoding.codes, encoding.mean, encoding.std)
        if encoding.residual is not None:
            z_hat = z_hat + encoding.residual
        return self.base.decode(z_hat)

    def sparse_code(self, user_items: UserRows, top: int | None = None) -> SparseCode:
        """The active latents of each user, strongest first (``top`` per row; default k)."""
        return self.sparse_code_of(self.encode(user_items), top)

    @staticmethod
    def sparse_code_of(encoding: SparseEncoding, top: int | None = None) -> SparseCode:
        """:class:`SparseCode` of an encoding: ``top`` strongest latents per row (default:
        the most active in any row)."""
        codes = encoding.codes
        if top is None:
            top = max(int((codes > 0).sum(1).max()), 1)
        values, indices = codes.topk(min(top, codes.shape[1]), dim=1)
        return SparseCode(values.numpy(), indices.numpy())

    # ---- what steering, explanations and the explorer read ----------------------------
    def latent_directions(self) -> torch.Tensor:
        """(n_latents, d) the SAE decoder rows: each latent's direction in the base
        CFAE's (standardised) embedding space, unit norm."""
        self._check_fitted()
        return self.sae_.W_dec.detach()

    def latent_item_effects(self, latents: np.ndarray | None = None) -> torch.Tensor:
        """What one unit of each latent adds to every item's score (both decoders are
        linear): ``dec(W_dec[n])``, before the per-user scale.

        Args:
            latents: (m,) latent ids; default all.

        Returns:
            (m, n_items) float32, or (n_latents, n_items).
        """
        self._check_fitted()
        directions = self.sae_.W_dec if latents is None else self.sae_.W_dec[latents]
        with torch.no_grad():
            return self.base.decode(directions)

    def latent_contributions(self, encoding: SparseEncoding, items: np.ndarray) -> torch.Tensor:
        """How much each latent adds to each listed item's score, for one user.

        An item's score splits exactly into one term per active latent,
        ``e_n * std * dec(W_dec[n])_i``, plus a bias term from the SAE's decoder bias and
        the user's embedding mean (not included).

        Args:
            encoding: one user's (possibly steered) encoding (1 row).
            items: (m,) item indices.

        Returns:
            (n_latents, m) contributions; zero rows for inactive latents.
        """
        codes, std = encoding.codes[0], encoding.std[0]
        active = torch.nonzero(codes).flatten()
        out = torch.zeros(codes.shape[0], len(items))
        if len(active):
            effects = self.latent_item_effects(active.numpy())  # (n_active, n_items)
            scaled = effects[:, torch.as_tensor(np.asarray(items, dtype=np.int64))]
            out[active] = scaled * (codes[active, None] * std.reshape(1, 1))
        return out

    def residual_contributions(self, encoding: SparseEncoding, items: np.ndarray) -> torch.Tensor:
        """What the error term adds to each listed item's score, per user: the scores
        with it minus without it; zeros when the encoding has none (pure splice).

        Args:
            encoding: (n users) an encoding from :meth:`encode`.
            items: (m,) item indices.

        Returns:
            (n, m) float32.
        """
        index = torch.as_tensor(np.asarray(items, dtype=np.int64))
        if encoding.residual is None:
            return torch.zeros(len(encoding), len(index))
        with torch.no_grad():
            with_it = self._decode_with(self.sae_, encoding)[:, index]
            without = self._decode_with(self.sae_, replace(encoding, residual=None))[:, index]
        return with_it - without

    def item_codes(self, batch_size: int = 2048) -> torch.Tensor:
        """(n_items, n_latents) float32 codes of every single-item history (what the
        concept mappings read)."""
        batch_size = whole_number(batch_size, "batch_size", minimum=1)
        eye = one_hot_items(self.n_items_)
        parts = [
            self.encode(eye[s : s + batch_size]).codes for s in range(0, eye.shape[0], batch_size)
        ]
        return torch.cat(parts).float()

    def item_vectors(self) -> torch.Tensor:
        """(n_items, d) the base CFAE's item vectors (see :meth:`CFAE.item_vectors`)."""
        self._check_fitted()
        return self.base.item_vectors()

    def user_vectors(self, user_items: UserRows) -> torch.Tensor:
        """(n, d) the base CFAE's dense embeddings of user rows (empty rows: zeros)."""
        self._check_fitted()
        return self.base.user_vectors(user_items)

    def dead_latents(self, user_items: sp.csr_matrix) -> np.ndarray:
        """(n_latents,) bool: latents active on no row of ``user_items`` (e.g. the training
        users) and on no single-item input: latents no user or item can ever express."""
        fired = self.activation_counts(user_items)
        fired += self.activation_counts(one_hot_items(self.n_items_))
        return fired == 0

    def activation_counts(self, user_items: UserRows) -> np.ndarray:
        """(n_latents,) int64: how many rows of the (n, n_items) ``user_items`` each
        latent is active for (what users meet, when the rows are users)."""
        self._check_fitted()
        rows = as_user_rows(user_items, self.n_items_, allow_empty=True)
        return activation_counts(self.sae_, self._embed(rows))

    def sae_fingerprint(self) -> str:
        """Content hash of the SAE's weights (labels saved beside a model carry it)."""
        self._check_fitted()
        return tensor_fingerprint(self.sae_.state_dict())

    def _tensors(self) -> dict[str, torch.Tensor]:
        tensors = {f"base.{k}": v for k, v in self.base._tensors().items()}
        tensors.update({f"sae.{k}": v for k, v in self.sae_.state_dict().items()})
        return tensors

    @property
    def n_latents(self) -> int:
        self._check_fitted()
        return self.sae_.config.n_latents

    # ---- persistence ----------------------------------------------------------------
    def save(
        self,
        path: str | os.PathLike,
        metadata: dict[str, Any] | None = None,
        *,
        extra_json: dict[str, Any] | None = None,
        force: bool = False,
    ) -> None:
        """One directory: the spliced config, ``base/`` (the CFAE) and ``sae/``, plus
        ``extra_json`` files (``labels.json``: :func:`steercf.concepts.labels_json`)
        written in the same atomic step."""
        self._check_fitted()
        base_config, base_tensors = self.base._state()
        sae_kind, sae_config, sae_tensors = self.sae_.model_parts()
        config = {
            "augment": self.augment,
            "seed": self.seed,
            "monitor": self.monitor,
            "finetune_epochs": self.finetune_epochs,
            "finetune_loss": self.finetune_loss,
            "finetune_weight": self.finetune_weight,
            "finetune_sharpness": self.finetune_sharpness,
            "error_term": self.error_term,
            # how the SAE was trained (patience, lr, ...); None for a model joined from parts
            "train_config": (
                self.train_config_.to_dict() if getattr(self, "train_config_", None) else None
            ),
            "base_kind": self.base.kind,
            "base_fingerprint": tensor_fingerprint(base_tensors),
            "sae_fingerprint": tensor_fingerprint(sae_tensors),
            "metadata": metadata if metadata is not None else getattr(self, "metadata_", {}),
        }
        children = {
            "base": (self.base.kind, base_config, base_tensors),
            "sae": (sae_kind, sae_config, sae_tensors),
        }
        save_model_dir(
            path, self.kind, config, {}, children=children, extra_json=extra_json, force=force
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> SplicedRecommender:
        """Read a spliced model; refuses an SAE or base swapped in from another model."""
        return read_model(
            path, cls.kind, lambda root, _kind, config, _tensors: cls._from_parts(config, root)
        )

    @classmethod
    def _from_state(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor], path):
        """The spliced directory holds no tensors of its own: read ``base/`` and ``sae/``."""
        return cls._from_parts(config, path)

    @classmethod
    def _from_parts(cls, config: dict[str, Any], path) -> SplicedRecommender:
        """``path``: the resolved version directory (:func:`steercf.io.read_model`)."""
        from steercf.models import MODEL_KINDS  # the registry imports this module

        path = os.fspath(path)
        base_kind, base_config, base_tensors = load_model_dir(
            os.path.join(path, "base"),
            tuple(k for k in MODEL_KINDS if k not in ("Popularity", cls.kind)),
        )
        if base_kind != config["base_kind"]:
            raise ModelFileError(
                f"{path}: base is a {base_kind}, config says {config['base_kind']}"
            )
        if tensor_fingerprint(base_tensors) != config["base_fingerprint"]:
            raise ModelFileError(f"{path}: the base CFAE is not the one this model was built on")
        base = MODEL_KINDS[base_kind]._from_state(base_config, base_tensors, path)
        sae = SparseAutoencoder.load(os.path.join(path, "sae"))
        if tensor_fingerprint(sae.state_dict()) != config["sae_fingerprint"]:
            raise ModelFileError(
                f"{path}: the SAE was not trained on this model's CFAE (it comes from another model)"
            )
        train_config = None
        if config.get("train_config"):  # absent in files written before it was saved
            try:
                train_config = TrainConfig.from_dict(dict(config["train_config"]))
            except (InputError, TypeError) as err:
                raise ModelFileError(f"{path}: invalid SAE training config: {err}") from err
        return cls.from_parts(
            base,
            sae,
            train_config=train_config,
            augment=config["augment"],
            seed=config["seed"],
            monitor=config.get("monitor", "loss"),
            finetune_epochs=config.get("finetune_epochs", 0),
            finetune_loss=config.get("finetune_loss", "distill"),
            finetune_weight=config.get("finetune_weight", 0.1),
            finetune_sharpness=config.get("finetune_sharpness", 5.0),
            error_term=config.get("error_term", False),
            metadata=config.get("metadata", {}),
        )

    @classmethod
    def from_parts(
        cls,
        base: CFAE,
        sae: SparseAutoencoder,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> SplicedRecommender:
        """Join a fitted CFAE and a trained SAE, checking that their widths agree."""
        if not hasattr(base, "n_items_"):
            raise InputError("the base CFAE is not fitted")
        if sae.config.d_in != base.d_:
            raise InputError(
                f"SAE input width {sae.config.d_in} does not match the CFAE embedding width {base.d_}"
            )
        model = cls(base, sae.config, **kwargs)
        model.sae_ = sae.eval()
        model.n_items_ = base.n_items_
        model.d_ = sae.config.n_latents
        model.metadata_ = metadata or {}
        if model.train_config is not None:  # a loaded model: the settings that trained it
            model.train_config_ = model.train_config
        return model
