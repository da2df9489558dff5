"""Model files: safetensors + JSON, never pickle (loading an untrusted file must not be
able to run code).

Layout. A model path is a directory of immutable versions and a pointer to the live one::

    model/
      CURRENT           one line: the live version's name, e.g. v-187c5d2e1f3a90b0-3fa19c02
      v-.../            config.json + tensors.safetensors, child directories (a spliced
                        model's base/ and sae/) and extra JSON files (labels.json)
      .lock             writers hold an exclusive lock on it for the whole save

A save writes a new version directory, syncs it to disk, then replaces ``CURRENT`` with
``os.replace`` (atomic): at every instant ``CURRENT`` names a complete version, so a save
killed at any step leaves the previous model loadable and a finished save the new one.
The previous version is kept until the next save (a reader that resolved ``CURRENT`` just
before a swap can finish; loading also retries when the pointer moved under it); other
leftovers (versions of interrupted saves, pointer temporaries) are removed by the next
save. Concurrent writers to one path take turns on the lock. Directories written before
this layout (``config.json`` + ``tensors.safetensors`` directly in the path, format 1)
still load, and the first save into one converts it.

Integrity. Each ``config.json`` stores a SHA-256 of its config and of every tensor's
dtype, shape and bytes; loading verifies them, so an edited or damaged file is a
:class:`~steercf.errors.ModelFileError`, never a silently different model.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as save_tensors_bytes

from steercf.errors import ModelFileError

try:  # POSIX; elsewhere concurrent writers are not serialised
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

FORMAT_VERSION = 2  # 2: checksums in config.json; 1 (no checksums) is still read
READABLE_VERSIONS = (1, 2)
TENSORS_FILE = "tensors.safetensors"
CONFIG_FILE = "config.json"
CURRENT_FILE = "CURRENT"
LOCK_FILE = ".lock"
LOCK_TIMEOUT_S = 600.0  # how long a writer waits for another one to finish
# exactly what `_commit` names a version: v-<time.time_ns() in 16 hex>-<8 random hex>
_VERSION_RE = re.compile(r"v-[0-9a-f]{16}-[0-9a-f]{8}")
# names a user's directory may hold that --force must not mix with steercf's own layout
_LAYOUT_NAME_RE = re.compile(r"CURRENT|\.lock|v-.*|\.CURRENT\..*", re.IGNORECASE)
_POINTER_TMP = ".CURRENT."  # prefix of pointer temporaries
_LEGACY_FILES = (CONFIG_FILE, TENSORS_FILE, "labels.json")  # what a format-1 model held
_READ_ATTEMPTS = 5
_MAX_CONFIG_BYTES = 64 * 2**20
# what loading a model from its config may raise on a malformed config (one place)
_CONFIG_ERRORS = (
    KeyError,
    TypeError,
    ValueError,
    AttributeError,
    IndexError,
    OverflowError,
    RecursionError,
)

T = TypeVar("T")
Children = dict[str, tuple[str, dict[str, Any], dict[str, torch.Tensor]]]


class ModelConfig(dict):
    """A loaded model config: a missing key is a ModelFileError naming it (not a KeyError)."""

    def __init__(self, data: dict[str, Any], source: Path) -> None:
        super().__init__(data)
        self.source = source

    def __missing__(self, key: str) -> Any:
        raise ModelFileError(f"{self.source}: the config lacks {key!r}")


# ----------------------------------------------------------------------------------------
# Saving
# ----------------------------------------------------------------------------------------
def check_model_path(path: str | os.PathLike, force: bool = False) -> Path:
    """Refuse a save target that would mix a model into unrelated files.

    A target may be missing, an empty directory or a steercf model directory (replaced
    by the save); a non-empty directory that is not a steercf model only with ``force``
    (the model is then added beside its files, nothing there is deleted). The CLI calls
    this before training so that a long run does not end in a refused save.

    Returns:
        the absolute path.

    Raises:
        ModelFileError: the path is a file, or a foreign non-empty directory without force.
    """
    path = Path(os.path.abspath(path))
    if path.exists() and not path.is_dir():
        raise ModelFileError(f"cannot save a model to {path}: it is a file, not a directory")
    try:
        foreign = path.is_dir() and not force and _dir_kind(path) == "foreign"
    except OSError as err:
        raise ModelFileError(f"cannot read the directory {path}: {err}") from err
    if foreign:
        raise ModelFileError(
            f"refusing to save a model into {path}: it is a non-empty directory that is not "
            "a steercf model (choose a new or empty directory, or pass --force / force=True "
            "to add the model beside its files)"
        )
    if force and path.is_dir() and _dir_kind(path) == "foreign":
        # the model's CURRENT, .lock and v-* entries would replace or clean up these
        clashes = sorted(e.name for e in path.iterdir() if _LAYOUT_NAME_RE.fullmatch(e.name))
        if clashes:
            shown = ", ".join(clashes[:5]) + (
                f" (and {len(clashes) - 5} more)" * (len(clashes) > 5)
            )
            raise ModelFileError(
                f"refusing to save a model into {path} even with --force: it is not a steercf "
                f"model but holds {shown}, names steercf's model layout uses (CURRENT, .lock, "
                "v-*, .CURRENT.*); move them away or choose another directory"
            )
    return path


def save_model_dir(
    path: str | os.PathLike,
    kind: str,
    config: dict[str, Any],
    tensors: dict[str, torch.Tensor],
    children: Children | None = None,
    extra_json: dict[str, Any] | None = None,
    force: bool = False,
) -> Path:
    """Write a model as a new version of ``path`` and switch to it atomically.

    Args:
        path: model directory (created if missing; an earlier model there is replaced).
        kind: model class name, checked again on load.
        config: JSON-serialisable hyperparameters and metadata.
        tensors: learned state, each tensor saved contiguous on the CPU.
        children: sub-models saved in sub-directories, ``name -> (kind, config, tensors)``
            (a spliced model stores its CFAE and its SAE this way).
        extra_json: more files of the same version, ``file name -> JSON value`` (a
            spliced model's ``labels.json``), so that they appear together with the model.
        force: write into a non-empty directory that is not a steercf model.

    Raises:
        ModelFileError: the target is refused (:func:`check_model_path`), another writer
            held the path too long, or writing failed (the previous model is unchanged).
    """
    files = _render(kind, config, tensors)  # serialise first: a bad config writes nothing
    for name, (child_kind, child_config, child_tensors) in (children or {}).items():
        _check_name(name)
        files.update(
            {f"{name}/{k}": v for k, v in _render(child_kind, child_config, child_tensors).items()}
        )
    for name, value in (extra_json or {}).items():
        _check_name(name)
        files[name] = _json_bytes(value, name)
    return _commit(path, force, lambda version_dir: _write_files(version_dir, files))


def update_model_dir(path: str | os.PathLike, make_files: Callable[[Path], dict[str, Any]]) -> Path:
    """Add or replace JSON files of a saved model, as a new version (atomically).

    Args:
        path: a model directory.
        make_files: called under the writers' lock with the live version's directory;
            returns ``file name -> JSON value`` (or raises to refuse, e.g. labels of
            another model). The other files of the version are carried over unchanged.
    """
    path = Path(os.path.abspath(path))
    resolve_model_dir(path)  # a clear error when there is no model

    def write(version_dir: Path) -> None:
        source = resolve_model_dir(path)
        files = {}
        for name, value in make_files(source).items():
            _check_name(name)
            files[name] = _json_bytes(value, name)
        _link_tree(source, version_dir, skip=set(files))
        _write_files(version_dir, files)

    return _commit(path, False, write)


def _commit(path: str | os.PathLike, force: bool, write: Callable[[Path], None]) -> Path:
    """Write a new version with ``write`` under the lock, then point CURRENT at it."""
    path = check_model_path(path, force)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ModelFileError(f"cannot create the model directory {path}: {err}") from err
    with _locked(path):
        previous = _read_pointer(path)
        version = f"v-{time.time_ns():x}-{secrets.token_hex(4)}"
        version_dir = path / version
        pointer_tmp = path / f"{_POINTER_TMP}{version}.tmp"
        try:
            version_dir.mkdir()
            write(version_dir)
            _fsync(path)  # the version's directory entry is durable before CURRENT names it
            _write_file(pointer_tmp, f"{version}\n".encode())
            os.replace(pointer_tmp, path / CURRENT_FILE)  # the switch: atomic
        except BaseException as err:
            # roll back unless the switch happened (an interrupt can land just after it)
            if _read_pointer(path) != version:
                shutil.rmtree(version_dir, ignore_errors=True)
                _unlink(pointer_tmp)
                if isinstance(err, OSError):
                    raise ModelFileError(
                        f"could not save the model to {path} ({err}); the previous model "
                        "there is unchanged"
                    ) from err
            raise
        _fsync(path)
        _clean(path, keep={version, previous})
    _clean_old_leftovers(path)
    return path


def _render(
    kind: str, config: dict[str, Any], tensors: dict[str, torch.Tensor]
) -> dict[str, bytes]:
    """One model directory's files as bytes: tensors + config.json with checksums."""
    state = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    try:
        config = json.loads(json.dumps(config))  # what loading will see (tuples -> lists)
    except (TypeError, ValueError) as err:
        raise ModelFileError(f"the {kind} config is not JSON-serialisable: {err}") from err
    meta = {
        "kind": kind,
        "format_version": FORMAT_VERSION,
        "config": config,
        "checksums": {
            "config": _config_digest(kind, config),
            "tensors": {name: _tensor_digest(t) for name, t in state.items()},
        },
    }
    return {
        TENSORS_FILE: save_tensors_bytes(state),
        CONFIG_FILE: json.dumps(meta, indent=2, sort_keys=True).encode(),
    }


def _json_bytes(value: Any, name: str) -> bytes:
    try:
        return json.dumps(value, ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError) as err:
        raise ModelFileError(f"{name} is not JSON-serialisable: {err}") from err


def _check_name(name: str) -> None:
    """Child and extra file names are plain names that cannot clash with the layout."""
    if (
        not isinstance(name, str)
        or not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name)
        or name in (CONFIG_FILE, TENSORS_FILE, CURRENT_FILE)
    ):
        raise ModelFileError(f"invalid file name {name!r} inside a model directory")


def _write_files(directory: Path, files: dict[str, bytes]) -> None:
    """Write ``relative path -> bytes`` (one level of sub-directories) and sync them."""
    dirs = {directory}
    for rel, data in files.items():
        target = directory / rel
        if target.parent not in dirs:
            target.parent.mkdir()
            dirs.add(target.parent)
        _write_file(target, data)
    for d in dirs:
        _fsync(d)


def _write_file(path: Path, data: bytes) -> None:
    """Create ``path`` with ``data`` and flush it to disk (before CURRENT may name it)."""
    with open(path, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _link_tree(source: Path, target: Path, skip: set[str]) -> None:
    """Recreate the version ``source`` in the empty ``target`` (hard links, or copies
    where links are impossible); top-level names in ``skip`` are left out."""
    for entry in source.iterdir():
        # not: replaced files, the layout (a format-1 source holds it), temporaries
        if entry.name in skip or _is_layout_entry(entry.name) or entry.name.startswith("."):
            continue
        if entry.is_dir():
            (target / entry.name).mkdir()
            _link_tree(entry, target / entry.name, skip=set())
        elif entry.is_file():
            try:
                os.link(entry, target / entry.name)
            except OSError:
                shutil.copy2(entry, target / entry.name)
    _fsync(target)


def _fsync(directory: Path) -> None:
    """Persist a directory's entries (a rename is durable only after this)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold the writers' lock of a model directory (released by the OS if killed)."""
    try:
        handle = open(path / LOCK_FILE, "a+b")
    except OSError as err:
        raise ModelFileError(f"cannot write to the model directory {path}: {err}") from err
    try:
        if fcntl is not None:
            deadline = time.monotonic() + LOCK_TIMEOUT_S
            while True:
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise ModelFileError(
                            f"another process has been saving to {path} for over "
                            f"{LOCK_TIMEOUT_S:.0f} s; try again when it is done"
                        ) from None
                    time.sleep(0.005)
        yield
    finally:
        handle.close()


def _clean(path: Path, keep: set[str | None]) -> None:
    """Remove what no reader needs: versions other than ``keep``, pointer temporaries,
    and the files of a format-1 model this save superseded (its ``config.json`` last, so
    that an interrupted clean-up is recognised and finished by the next save). Best
    effort, under the lock, after the swap."""
    legacy = _steercf_config(path / CONFIG_FILE)
    for entry in path.iterdir():
        name = entry.name
        if name in keep or name in (CURRENT_FILE, LOCK_FILE):
            continue
        if _is_own_entry(entry):  # only what a save of steercf wrote: never a user's file
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                _unlink(entry)
        elif legacy and name != CONFIG_FILE and not _is_layout_entry(name):
            if _is_legacy_entry(entry):
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    _unlink(entry)
    if legacy:
        _unlink(path / CONFIG_FILE)


def _clean_old_leftovers(path: Path) -> None:
    """Remove what an interrupted save of a steercf before the versioned layout left
    beside ``path``: ``.NAME.old-PID`` and ``.NAME.XXXXXXXX`` temporary model dirs."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(old-\d+|[A-Za-z0-9_]{{8}})")
    try:
        siblings = list(path.parent.iterdir())
    except OSError:
        return
    for entry in siblings:
        if pattern.fullmatch(entry.name) and entry.is_dir() and not entry.is_symlink():
            if all(_is_legacy_entry(e) for e in entry.iterdir()):
                shutil.rmtree(entry, ignore_errors=True)


def _is_layout_entry(name: str) -> bool:
    return (
        name in (CURRENT_FILE, LOCK_FILE)
        or bool(_VERSION_RE.fullmatch(name))
        or _is_pointer_tmp_name(name)
    )


def _is_pointer_tmp_name(name: str) -> bool:
    return (
        name.startswith(_POINTER_TMP)
        and name.endswith(".tmp")
        and bool(_VERSION_RE.fullmatch(name[len(_POINTER_TMP) : -len(".tmp")]))
    )


def _is_own_entry(entry: Path) -> bool:
    """Whether ``entry`` of a model directory is one steercf's saves write, judged by
    name and content, so that a user's ``CURRENT`` file or ``v-1-2`` folder is never
    taken for (and cleaned up as) part of a model:

    - ``CURRENT``: a file of one line naming a version;
    - ``.lock``: an empty file;
    - a version: a directory named exactly as `_commit` names one, holding only
      model files (``*.json``, ``tensors.safetensors``, child directories of these);
    - a pointer temporary: ``.CURRENT.<version>.tmp``, a file.
    """
    name = entry.name
    try:
        if entry.is_symlink():
            return False
        if name == CURRENT_FILE:
            return entry.is_file() and _read_pointer(entry.parent) is not None
        if name == LOCK_FILE:
            return entry.is_file() and entry.stat().st_size == 0
        if _VERSION_RE.fullmatch(name):
            return entry.is_dir() and _holds_model_files(entry)
        return _is_pointer_tmp_name(name) and entry.is_file()
    except OSError:
        return False


def _holds_model_files(directory: Path) -> bool:
    """Only a version's files: JSON, tensors and child directories of these (an
    interrupted save may have written any subset of them)."""
    for entry in directory.iterdir():
        if entry.is_symlink():
            return False
        if entry.is_dir():
            if not _holds_model_files(entry):
                return False
        elif not (entry.name == TENSORS_FILE or entry.name.endswith(".json")):
            return False
    return True


def _is_legacy_entry(entry: Path) -> bool:
    """A file a format-1 model directory holds: its tensors, config, labels, a labels
    temporary, and child model directories made of these."""
    if entry.is_symlink():
        return False
    if entry.is_dir():
        return all(_is_legacy_entry(e) for e in entry.iterdir())
    name = entry.name
    return name in _LEGACY_FILES or (name.startswith(".labels.") and name.endswith(".tmp"))


def _has_legacy_model(path: Path) -> bool:
    """Whether ``path`` holds a format-1 model's files directly (before the versioned
    layout)."""
    return (path / TENSORS_FILE).is_file() and _steercf_config(path / CONFIG_FILE)


def _steercf_config(config_path: Path) -> bool:
    """Whether a file is a steercf model's config.json (not some other JSON file)."""
    try:
        meta = json.loads(config_path.read_text())
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(meta, dict) and "kind" in meta and "format_version" in meta


def _dir_kind(path: Path) -> str:
    """``"empty"``, ``"model"`` (versioned, or leftovers of an interrupted first save),
    ``"legacy"`` (a format-1 model) or ``"foreign"``."""
    names = [entry.name for entry in path.iterdir()]
    if not names:
        return "empty"
    live = _read_pointer(path)
    if live is not None and _is_own_entry(path / live):
        return "model"  # a user's other files beside a model are kept by its saves
    own = [n for n in names if _is_own_entry(path / n)]
    if len(own) == len(names):
        return "model"  # what an interrupted first save left
    if set(names) - set(own) == {CURRENT_FILE} and any(_VERSION_RE.fullmatch(n) for n in own):
        return "model"  # a damaged pointer beside steercf's versions: a save repairs it
    if _has_legacy_model(path):
        return "legacy"
    return "foreign"


# ----------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------
def _read_pointer(path: Path) -> str | None:
    """The version CURRENT names, or None without a (valid) pointer."""
    try:
        name = (path / CURRENT_FILE).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return name if _VERSION_RE.fullmatch(name) else None


def resolve_model_dir(path: str | os.PathLike) -> Path:
    """The directory holding the live files of a model: ``path/<CURRENT>`` in the
    versioned layout, ``path`` itself for a format-1 model or a child directory.

    Raises:
        ModelFileError: no directory, or a pointer naming no version.
    """
    path = Path(path)
    if not path.is_dir():
        hint = ""
        if path.name:
            old = sorted(path.parent.glob(f".{_glob_escape(path.name)}.old-*"))
            if old:
                hint = (
                    f"; an interrupted save by an older steercf left the previous model "
                    f"in {old[0]}: rename it to {path} to recover it"
                )
        raise ModelFileError(f"no model directory at {path}{hint}")
    if not (path / CURRENT_FILE).exists():
        try:
            leftovers_only = not (path / CONFIG_FILE).exists() and _dir_kind(path) == "model"
        except OSError as err:
            raise ModelFileError(f"cannot read the model directory {path}: {err}") from err
        if leftovers_only:
            raise ModelFileError(
                f"no saved model in {path}: it holds only what an interrupted first save "
                "left (saving again cleans it up)"
            )
        return path
    name = _read_pointer(path)
    if name is None or not (path / name).is_dir():
        raise ModelFileError(
            f"{path / CURRENT_FILE} does not name a saved version of the model "
            "(damaged or edited); save the model again"
        )
    return path / name


def _glob_escape(text: str) -> str:
    """``text`` with glob wildcards escaped."""
    return re.sub(r"([*?\[])", r"[\1]", text)


def read_model(
    path: str | os.PathLike,
    expected_kind: str | tuple[str, ...] | None,
    build: Callable[[Path, str, ModelConfig, dict[str, torch.Tensor]], T],
) -> T:
    """Load a model: resolve the live version, read and verify its files, and build the
    model with ``build(version_dir, kind, config, tensors)``.

    This is where every model reads its config: whatever ``build`` raises on a missing
    key or a value of the wrong type is turned into a ModelFileError naming the file.
    When a concurrent save replaced the version while it was being read, the read is
    retried on the new one.

    Raises:
        ModelFileError: missing or damaged files, a failed checksum, another kind, or a
            config the model cannot be built from.
    """
    path = Path(path)
    for _ in range(_READ_ATTEMPTS):
        pointer = _read_pointer(path)
        try:
            root = resolve_model_dir(path)
            kind, config, tensors = _load_one(root, expected_kind)
            try:
                return build(root, kind, config, tensors)
            except ModelFileError:
                raise
            except _CONFIG_ERRORS as err:
                raise ModelFileError(
                    f"{root / CONFIG_FILE}: malformed model config "
                    f"({type(err).__name__}: {str(err)[:200]})"
                ) from err
        except ModelFileError:
            if pointer is None or _read_pointer(path) == pointer:
                raise
            # a save switched versions under us: read the new one
    raise ModelFileError(f"{path} kept changing while it was read (saves in progress?)")


def load_model_dir(
    path: str | os.PathLike, expected_kind: str | tuple[str, ...] | None = None
) -> tuple[str, ModelConfig, dict[str, torch.Tensor]]:
    """Read the live version of a model directory (checksums verified).

    Returns:
        ``(kind, config, tensors)``.

    Raises:
        ModelFileError: missing files, unreadable JSON or tensors, a failed checksum,
            another format version, or a kind other than ``expected_kind``.
    """
    return read_model(
        path, expected_kind, lambda _root, kind, config, tensors: (kind, config, tensors)
    )


def read_model_config(path: str | os.PathLike, child: str | None = None) -> ModelConfig:
    """The config of a model (or of its ``child`` sub-model) from JSON only, without
    reading or verifying tensors (cheap identity checks, e.g. labels against a model)."""
    root = resolve_model_dir(path)
    directory = root / child if child else root
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise ModelFileError(f"{directory} is not a steercf model directory (no {CONFIG_FILE})")
    return _parse_meta(config_path)[2]


def _parse_meta(config_path: Path) -> tuple[str, int, ModelConfig, dict[str, Any]]:
    """(kind, format version, config, checksums) of a config.json, all validated."""
    try:
        raw = config_path.read_bytes()
    except OSError as err:
        raise ModelFileError(f"cannot read {config_path}: {err}") from err
    if len(raw) > _MAX_CONFIG_BYTES:
        raise ModelFileError(f"{config_path} is {len(raw)} bytes, too large for a model config")
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise ModelFileError(f"corrupt model config {config_path}: {err}") from err
    except RecursionError as err:
        raise ModelFileError(f"corrupt model config {config_path}: nested too deeply") from err
    if not isinstance(meta, dict):
        raise ModelFileError(f"{config_path}: expected a JSON object, got {type(meta).__name__}")
    for key in ("kind", "format_version", "config"):
        if key not in meta:
            raise ModelFileError(f"{config_path} lacks {key!r}")
    kind, version, config = meta["kind"], meta["format_version"], meta["config"]
    if not isinstance(kind, str):
        raise ModelFileError(f"{config_path}: 'kind' must be a string, got {kind!r:.80}")
    if type(version) is not int or version not in READABLE_VERSIONS:
        raise ModelFileError(
            f"{config_path.parent} has model format version {version!r:.40}; this steercf "
            f"reads versions {', '.join(map(str, READABLE_VERSIONS))}"
        )
    if not isinstance(config, dict):
        raise ModelFileError(
            f"{config_path}: 'config' must be a JSON object, got {type(config).__name__}"
        )
    checksums = meta.get("checksums")
    if version >= 2 and not (
        isinstance(checksums, dict)
        and isinstance(checksums.get("config"), str)
        and isinstance(checksums.get("tensors"), dict)
    ):
        raise ModelFileError(f"{config_path} lacks its checksums (edited or damaged)")
    return kind, version, ModelConfig(config, config_path), checksums or {}


def _load_one(
    directory: Path, expected_kind: str | tuple[str, ...] | None
) -> tuple[str, ModelConfig, dict[str, torch.Tensor]]:
    """Read and verify one model directory (no pointer resolution)."""
    config_path, tensor_path = directory / CONFIG_FILE, directory / TENSORS_FILE
    if not config_path.is_file() or not tensor_path.is_file():
        raise ModelFileError(
            f"{directory} is not a steercf model directory (needs {CONFIG_FILE} and {TENSORS_FILE})"
        )
    kind, version, config, checksums = _parse_meta(config_path)
    if expected_kind is not None:
        allowed = (expected_kind,) if isinstance(expected_kind, str) else expected_kind
        if kind not in allowed:
            raise ModelFileError(
                f"{directory} holds a {kind} model, expected {' or '.join(allowed)}"
            )
    try:
        tensors = load_file(str(tensor_path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise ModelFileError(f"corrupt tensor file {tensor_path}: {err}") from err
    if version >= 2:
        _verify(directory, kind, config, tensors, checksums)
    return kind, config, tensors


def _verify(
    directory: Path,
    kind: str,
    config: dict[str, Any],
    tensors: dict[str, torch.Tensor],
    checksums: dict[str, Any],
) -> None:
    """Compare a loaded directory with the checksums stored when it was saved."""
    try:
        config_ok = checksums["config"] == _config_digest(kind, config)
    except (TypeError, ValueError) as err:
        raise ModelFileError(f"{directory / CONFIG_FILE}: unreadable config ({err})") from err
    if not config_ok:
        raise ModelFileError(
            f"{directory / CONFIG_FILE}: the config does not match its checksum (edited or "
            "damaged after saving); restore the file or save the model again"
        )
    saved = checksums["tensors"]
    tensor_path = directory / TENSORS_FILE
    if set(saved) != set(tensors):
        missing, extra = sorted(set(saved) - set(tensors)), sorted(set(tensors) - set(saved))
        raise ModelFileError(
            f"{tensor_path}: tensors differ from those saved (missing {missing}, unexpected {extra})"
        )
    for name in sorted(saved):
        want, got = saved[name], _tensor_digest(tensors[name])
        if not isinstance(want, dict):
            raise ModelFileError(f"{directory / CONFIG_FILE}: bad checksum entry for {name!r}")
        for field in ("dtype", "shape"):
            if want.get(field) != got[field]:
                raise ModelFileError(
                    f"{tensor_path}: tensor {name!r} has {field} {got[field]} in the file but "
                    f"was saved with {want.get(field)} (the file was edited or damaged)"
                )
        if want.get("sha256") != got["sha256"]:
            raise ModelFileError(
                f"{tensor_path}: the bytes of tensor {name!r} do not match their checksum "
                "(the file is damaged)"
            )


def _config_digest(kind: str, config: dict[str, Any]) -> str:
    text = json.dumps({"kind": kind, "config": config}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _tensor_digest(tensor: torch.Tensor) -> dict[str, Any]:
    """dtype, shape and SHA-256 of the raw bytes of one tensor."""
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    raw = flat.view(torch.uint8) if flat.numel() and flat.dtype != torch.uint8 else flat
    return {
        "dtype": str(tensor.dtype).removeprefix("torch."),
        "shape": list(tensor.shape),
        "sha256": hashlib.sha256(raw.numpy().tobytes()).hexdigest(),
    }


def require_tensors(
    tensors: dict[str, torch.Tensor], shapes: dict[str, tuple[int, ...]], path
) -> None:
    """Check that every named tensor is present, floating point, of the expected shape
    and finite."""
    for name, shape in shapes.items():
        if name not in tensors:
            raise ModelFileError(f"{path}: tensor {name!r} is missing")
        if not tensors[name].is_floating_point():
            raise ModelFileError(
                f"{path}: tensor {name!r} has dtype {tensors[name].dtype}, expected floating point"
            )
        if tuple(tensors[name].shape) != tuple(shape):
            raise ModelFileError(
                f"{path}: tensor {name!r} has shape {tuple(tensors[name].shape)}, expected {shape}"
            )
        if not torch.isfinite(tensors[name]).all():
            raise ModelFileError(f"{path}: tensor {name!r} holds NaN or infinite values")


def tensor_fingerprint(tensors: dict[str, torch.Tensor]) -> str:
    """Content hash (16 hex digits) of named tensors: ties an SAE to the exact CFAE it
    was trained on, and a scoring run to the model weights. (File integrity is checked
    separately, by the checksums in each config.json.)"""
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
