"""Row sources for batch scoring: an (n_rows, n_items) interaction matrix read a range of
rows at a time, in memory (:class:`MatrixSource`) or from a CSR directory on disk
(:class:`CSRDirSource`, written by :func:`save_csr_dir`), plus the content fingerprint that
ties a scoring run to its input."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
import scipy.sparse as sp

from steercf.errors import InputError

__all__ = ["CSRDirSource", "MatrixSource", "RowSource", "save_csr_dir"]


class RowSource(Protocol):
    """Rows of a (n_rows, n_items) interaction matrix, read a range at a time."""

    shape: tuple[int, int]

    def rows(self, start: int, stop: int) -> sp.csr_matrix:
        """(stop - start, n_items) float32 CSR of rows [start, stop)."""
        ...

    def fingerprint(self) -> str:
        """Content hash of the whole matrix (ties a scoring run to its input)."""
        ...


class MatrixSource:
    """A :class:`RowSource` over an in-memory (n_rows, n_items) CSR matrix."""

    def __init__(self, matrix: sp.spmatrix) -> None:
        self.matrix = sp.csr_matrix(matrix, dtype=np.float32)
        self.shape = self.matrix.shape

    def rows(self, start: int, stop: int) -> sp.csr_matrix:
        return self.matrix[start:stop]

    def fingerprint(self) -> str:
        m = self.matrix
        return _csr_fingerprint(
            self.shape, len(m.indptr), m.nnz, lambda name, a, b: getattr(m, name)[a:b]
        )


_CSR_FILES = ("indptr.npy", "indices.npy", "data.npy")


def save_csr_dir(matrix: sp.spmatrix, path: str | os.PathLike) -> Path:
    """Write (n_rows, n_items) CSR as ``indptr.npy`` (int64), ``indices.npy`` (int32),
    ``data.npy`` (float32) and ``shape.json`` for :class:`CSRDirSource`."""
    matrix = sp.csr_matrix(matrix, dtype=np.float32)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    arrays = (matrix.indptr.astype(np.int64), matrix.indices.astype(np.int32), matrix.data)
    for name, array in zip(_CSR_FILES, arrays, strict=True):
        np.save(path / name, array, allow_pickle=False)
    (path / "shape.json").write_text(json.dumps({"shape": list(matrix.shape)}))
    return path


class CSRDirSource:
    """A :class:`RowSource` over a directory written by :func:`save_csr_dir`.

    Each read seeks to the rows asked for and reads only them (no memory map, whose
    touched pages would stay resident and grow with the rows read).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        try:
            self.shape = tuple(json.loads((self.path / "shape.json").read_text())["shape"])
            self._layout = {name: _npy_layout(self.path / name) for name in _CSR_FILES}
        except (OSError, ValueError, KeyError) as err:
            raise InputError(f"{self.path} is not a CSR directory (save_csr_dir): {err}") from err
        if self._layout["indptr.npy"][1] != self.shape[0] + 1:
            raise InputError(f"{self.path}: indptr length does not match shape {self.shape}")

    def rows(self, start: int, stop: int) -> sp.csr_matrix:
        indptr = _read_npy_range(
            self.path / "indptr.npy", self._layout["indptr.npy"], start, stop + 1
        )
        begin, end = int(indptr[0]), int(indptr[-1])
        indices = _read_npy_range(
            self.path / "indices.npy", self._layout["indices.npy"], begin, end
        )
        data = _read_npy_range(self.path / "data.npy", self._layout["data.npy"], begin, end)
        return sp.csr_matrix(
            (data.astype(np.float32, copy=False), indices, indptr - begin),
            shape=(stop - start, self.shape[1]),
        )

    def fingerprint(self) -> str:
        def read(name: str, start: int, stop: int) -> np.ndarray:
            file = f"{name}.npy"
            return _read_npy_range(self.path / file, self._layout[file], start, stop)

        nnz = self._layout["indices.npy"][1]
        return _csr_fingerprint(self.shape, self.shape[0] + 1, nnz, read)


def _csr_fingerprint(
    shape: tuple[int, ...],
    n_indptr: int,
    nnz: int,
    read: Callable[[str, int, int], np.ndarray],
    block: int = 1 << 20,
) -> str:
    """Hash of a CSR matrix's shape, indptr (int64), indices (int32) and data (float32),
    read ``block`` entries at a time, so any source of the same matrix hashes alike
    within bounded memory."""
    digest = hashlib.sha1(repr(tuple(shape)).encode())
    for name, length, dtype in (
        ("indptr", n_indptr, np.int64),
        ("indices", nnz, np.int32),
        ("data", nnz, np.float32),
    ):
        for start in range(0, length, block):
            part = read(name, start, min(length, start + block))
            digest.update(np.ascontiguousarray(part, dtype=dtype).data)
    return digest.hexdigest()[:16]


def _npy_layout(path: Path) -> tuple[np.dtype, int, int]:
    """``(dtype, length, data offset)`` of a 1-D ``.npy`` file."""
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
        if len(shape) != 1 or dtype.hasobject:
            raise ValueError(f"{path.name} must hold a 1-D numeric array")
        return dtype, shape[0], handle.tell()


def _read_npy_range(path: Path, layout: tuple[np.dtype, int, int], start: int, stop: int):
    dtype, length, offset = layout
    if not 0 <= start <= stop <= length:
        raise InputError(f"{path}: range [{start}, {stop}) outside [0, {length})")
    with open(path, "rb") as handle:
        handle.seek(offset + start * dtype.itemsize)
        out = np.fromfile(handle, dtype=dtype, count=stop - start)
    if len(out) != stop - start:
        raise InputError(f"{path} is truncated")
    return out
