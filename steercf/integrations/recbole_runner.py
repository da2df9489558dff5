"""A runner for RecBole 1.2.1 models that needs neither ``recbole.quick_start`` nor ray.

:func:`train_recbole` / :func:`run_recbole` are RecBole's ``run_recbole`` pipeline (config,
data set, RecBole's split, trainer, evaluation) built from RecBole's lower-level pieces;
they take a model class (e.g. :class:`steercf.integrations.recbole.SteerCFSplicedELSA`) or
the name of a RecBole model. Also importable from :mod:`steercf.integrations.recbole`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.utils import get_trainer, init_seed

from steercf.errors import InputError

__all__ = ["RecBoleRun", "run_recbole", "train_recbole"]


@dataclass
class RecBoleRun:
    """Everything one :func:`train_recbole` call built.

    Attributes:
        result: RecBole's result dict: ``best_valid_score``, ``valid_score_bigger``,
            ``best_valid_result``, ``test_result`` (metric name -> value, e.g.
            ``"ndcg@10"``).
        model: the trained RecBole model (for steercf classes, ``model.steercf_model``).
        config, dataset, train_data, valid_data, test_data, trainer: RecBole's objects.
        seconds: wall time of model construction plus ``trainer.fit``.
    """

    result: dict[str, Any]
    model: Any
    config: Config
    dataset: Any
    train_data: Any
    valid_data: Any
    test_data: Any
    trainer: Any
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


def train_recbole(
    model: type[GeneralRecommender] | str,
    dataset: str | None = None,
    config_file_list: Sequence[str | os.PathLike] | None = None,
    config_dict: dict[str, Any] | None = None,
    saved: bool = True,
    work_dir: str | os.PathLike | None = None,
) -> RecBoleRun:
    """RecBole's ``run_recbole`` pipeline for a model class (or a RecBole model name),
    returning all it built.

    Args:
        model: a :class:`GeneralRecommender` subclass (e.g. :class:`SteerCFELSA`) or the
            name of a model inside ``recbole.model`` (``"EASE"``, ``"BPR"``, ...).
        dataset: data set name; ``"ml-100k"`` uses RecBole's bundled copy, others are
            read from ``data_path`` as in RecBole.
        config_file_list: RecBole YAML files.
        config_dict: RecBole settings (override the files).
        saved: as in RecBole, keep the best-validation checkpoint and evaluate the test
            set with it. torch >= 2.6 cannot reload RecBole checkpoints with its default
            ``torch.load(weights_only=True)``, so this runner reloads the file itself
            with ``weights_only=False``: safe because it is the file this run just
            wrote. ``False`` tests the model as it is after the last epoch (no file).
        work_dir: where RecBole's checkpoints (unless ``checkpoint_dir`` is configured)
            and tensorboard events go; default: a temporary directory removed at the
            end. RecBole's own ``log/`` files are not written (no ``init_logger``).

    The process environment is left as found (RecBole's ``Config`` sets
    ``CUDA_VISIBLE_DEVICES``; it is restored) and, unlike RecBole's runner, the calling
    script's command-line arguments are not read as RecBole settings. RecBole's ``_fill_nan`` is a no-op under
    pandas >= 3 (copy-on-write); ml-100k has no missing values, so nothing changes there.
    """
    if isinstance(model, type) and not issubclass(model, GeneralRecommender):
        raise InputError(f"model must be a RecBole GeneralRecommender class, got {model.__name__}")
    with _work_dir(work_dir) as root, _quiet_recbole(), _tensorboard_under(root):
        settings = dict(config_dict or {})
        settings.setdefault("checkpoint_dir", str(root / "saved"))
        with _environment_kept("CUDA_VISIBLE_DEVICES"), _argv_hidden():
            config = Config(
                model=model,
                dataset=dataset,
                config_file_list=[os.fspath(p) for p in config_file_list]
                if config_file_list
                else None,
                config_dict=settings,
            )
        init_seed(config["seed"], config["reproducibility"])
        data = create_dataset(config)
        train_data, valid_data, test_data = data_preparation(config, data)
        # Same seeding point as RecBole's run_recbole, so built-in models reproduce it.
        init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
        start = time.perf_counter()
        recommender = config.model_class(config, train_data._dataset).to(config["device"])
        trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, recommender)
        best_valid_score, best_valid_result = trainer.fit(
            train_data, valid_data, saved=saved, show_progress=config["show_progress"]
        )
        seconds = time.perf_counter() - start
        if saved and os.path.isfile(trainer.saved_model_file):
            _load_checkpoint(recommender, trainer)
        test_result = trainer.evaluate(
            test_data, load_best_model=False, show_progress=config["show_progress"]
        )
        trainer.tensorboard.close()
    result = {
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": best_valid_result,
        "test_result": test_result,
    }
    return RecBoleRun(
        result, recommender, config, data, train_data, valid_data, test_data, trainer, seconds
    )


def run_recbole(
    model: type[GeneralRecommender] | str,
    dataset: str | None = None,
    config_file_list: Sequence[str | os.PathLike] | None = None,
    config_dict: dict[str, Any] | None = None,
    saved: bool = True,
    work_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """RecBole's result dict (``best_valid_score``, ``valid_score_bigger``,
    ``best_valid_result``, ``test_result``) for a model class; see :func:`train_recbole`
    for the arguments and :attr:`RecBoleRun.model` to keep the trained model."""
    return train_recbole(model, dataset, config_file_list, config_dict, saved, work_dir).result


def _load_checkpoint(recommender: GeneralRecommender, trainer: Any) -> None:
    """Load the best-validation checkpoint the trainer just wrote into ``recommender``
    (``weights_only=False``: RecBole's checkpoints hold more than tensors, and this run
    wrote the file itself)."""
    checkpoint = torch.load(
        trainer.saved_model_file, map_location=trainer.device, weights_only=False
    )
    recommender.load_state_dict(checkpoint["state_dict"])
    recommender.load_other_parameter(checkpoint.get("other_parameter"))


@contextlib.contextmanager
def _work_dir(path: str | os.PathLike | None) -> Iterator[Path]:
    if path is not None:
        Path(path).mkdir(parents=True, exist_ok=True)
        yield Path(path)
        return
    tmp = Path(tempfile.mkdtemp(prefix="steercf-recbole-"))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _environment_kept(name: str) -> Iterator[None]:
    before = os.environ.get(name)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


@contextlib.contextmanager
def _argv_hidden() -> Iterator[None]:
    """RecBole's ``Config`` also reads ``--key=value`` settings from ``sys.argv``: a
    library call must not pick up the calling script's own arguments."""
    saved = sys.argv
    sys.argv = saved[:1]
    try:
        yield
    finally:
        sys.argv = saved


@contextlib.contextmanager
def _tensorboard_under(root: Path) -> Iterator[None]:
    """RecBole's trainer writes tensorboard events to ``./log_tensorboard`` (a path
    hard-coded in ``recbole.utils.get_tensorboard``); send them under ``root``."""
    import recbole.trainer.trainer as trainer_module
    from torch.utils.tensorboard import SummaryWriter

    original = trainer_module.get_tensorboard

    def get_tensorboard(logger: Any) -> SummaryWriter:
        return SummaryWriter(str(root / "log_tensorboard"))

    trainer_module.get_tensorboard = get_tensorboard
    try:
        yield
    finally:
        trainer_module.get_tensorboard = original


@contextlib.contextmanager
def _quiet_recbole() -> Iterator[None]:
    """Hide RecBole 1.2.1's warnings on newer pandas / torch (chained-assignment,
    non-writable array, deprecated GradScaler): they concern RecBole's code, not the
    user's, and repeat on every run."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"recbole(\.|$)")
        warnings.filterwarnings("ignore", message=r".*GradScaler.*", category=FutureWarning)
        yield
