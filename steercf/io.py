"""Model files: one directory holding ``tensors.safetensors`` and ``config.json``.

Never pickle: loading an untrusted file must not be able to run code. Writes go to a
temporary directory that is renamed into place, so an interrupted save never leaves a
half-written model where a good one was.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from steercf.errors import ModelFileError

FORMAT_VERSION = 1
TENSORS_FILE = "tensors.safetensors"
CONFIG_FILE = "config.json"


def save_model_dir(
    path: str | os.PathLike,
    kind: str,
    config: dict[str, Any],
    tensors: dict[str, torch.Tensor],
    children: dict[str, tuple[str, dict[str, Any], dict[str, torch.Tensor]]] | None = None,
) -> Path:
    """Atomically write a model directory.

    Args:
        path: target directory; replaced as a whole if it exists.
        kind: model class name, checked again on load.
        config: JSON-serialisable hyperparameters and metadata.
        tensors: learned state, each tensor saved contiguous on the CPU.
        children: sub-models saved in sub-directories, ``name -> (kind, config, tensors)``
            (a spliced model stores its CFAE and its SAE this way).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        _write_one(tmp, kind, config, tensors)
        for name, (child_kind, child_config, child_tensors) in (children or {}).items():
            (tmp / name).mkdir()
            _write_one(tmp / name, child_kind, child_config, child_tensors)
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _write_one(directory: Path, kind: str, config: dict, tensors: dict[str, torch.Tensor]) -> None:
    state = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    save_file(state, str(directory / TENSORS_FILE))
    meta = {"kind": kind, "format_version": FORMAT_VERSION, "config": config}
    (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))


def load_model_dir(
    path: str | os.PathLike, expected_kind: str | tuple[str, ...] | None = None
) -> tuple[str, dict[str, Any], dict[str, torch.Tensor]]:
    """Read a model directory written by :func:`save_model_dir`.

    Returns:
        ``(kind, config, tensors)``.

    Raises:
        ModelFileError: missing files, unreadable JSON or tensors, another format
            version, or a kind other than ``expected_kind``.
    """
    path = Path(path)
    if not path.is_dir():
        raise ModelFileError(f"no model directory at {path}")
    config_path, tensor_path = path / CONFIG_FILE, path / TENSORS_FILE
    if not config_path.is_file() or not tensor_path.is_file():
        raise ModelFileError(
            f"{path} is not a steercf model directory (needs {CONFIG_FILE} and {TENSORS_FILE})"
        )
    try:
        meta = json.loads(config_path.read_text())
        kind, version, config = meta["kind"], meta["format_version"], meta["config"]
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as err:
        raise ModelFileError(f"corrupt model config {config_path}: {err}") from err
    if version != FORMAT_VERSION:
        raise ModelFileError(
            f"{path} has model format version {version}; this steercf reads version {FORMAT_VERSION}"
        )
    if expected_kind is not None:
        allowed = (expected_kind,) if isinstance(expected_kind, str) else expected_kind
        if kind not in allowed:
            raise ModelFileError(f"{path} holds a {kind} model, expected {' or '.join(allowed)}")
    try:
        tensors = load_file(str(tensor_path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ModelFileError(f"corrupt tensor file {tensor_path}: {err}") from err
    return kind, config, tensors


def require_tensors(
    tensors: dict[str, torch.Tensor], shapes: dict[str, tuple[int, ...]], path
) -> None:
    """Check that every named tensor is present with the expected shape."""
    for name, shape in shapes.items():
        if name not in tensors:
            raise ModelFileError(f"{path}: tensor {name!r} is missing")
        if tuple(tensors[name].shape) != tuple(shape):
            raise ModelFileError(
                f"{path}: tensor {name!r} has shape {tuple(tensors[name].shape)}, expected {shape}"
            )
        if not torch.isfinite(tensors[name]).all():
            raise ModelFileError(f"{path}: tensor {name!r} holds NaN or infinite values")


def tensor_fingerprint(tensors: dict[str, torch.Tensor]) -> str:
    """Content hash (16 hex digits) of named tensors: ties an SAE to the exact CFAE it
    was trained on, and a scoring run to the model weights."""
    digest = hashlib.sha1()
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def ids_fingerprint(ids: Any) -> str:
    """Content hash (16 hex digits) of an id sequence in order: a model fits only data
    whose item columns come in the same order."""
    text = "\x1f".join(map(str, np.asarray(ids).tolist()))
    return hashlib.sha1(text.encode()).hexdigest()[:16]
