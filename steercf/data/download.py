"""Download and cache the public MovieLens archives from GroupLens.

Each archive is streamed to a temporary file, checked against the Content-Length and the
MD5 checksum that GroupLens publishes next to it, extracted without letting any member escape
the target folder, and renamed into the cache in one step, so the cache never holds a
half-written data set. Later calls find the folder and touch no network.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import IO

from steercf.errors import InputError, SteerCFError

GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens/{name}.zip"
GROUPLENS_NAMES = ("ml-100k", "ml-1m", "ml-latest-small", "ml-20m", "ml-25m")

_CHUNK = 1 << 20
_TIMEOUT_S = 60


class DownloadError(SteerCFError, OSError):
    """A download that failed, was truncated, or does not match its published checksum."""


def default_cache_dir() -> Path:
    """Where downloaded data sets live: $STEERCF_CACHE, else ~/.cache/steercf."""
    configured = os.environ.get("STEERCF_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "steercf"


def _fetch(url: str) -> tuple[IO[bytes], int | None]:
    """Open `url` for streaming: (readable binary stream, Content-Length or None).

    The only function here that touches the network; tests replace it with local bytes.
    """
    response = urllib.request.urlopen(url, timeout=_TIMEOUT_S)  # noqa: S310 (fixed https host)
    length = response.headers.get("Content-Length")
    return response, int(length) if length is not None else None


def download_movielens(
    name: str, cache_dir: str | Path | None = None, progress: bool = True
) -> Path:
    """Download (once) and extract a GroupLens MovieLens archive.

    Args:
        name: archive name, one of GROUPLENS_NAMES (e.g. "ml-latest-small").
        cache_dir: where to keep it; default `default_cache_dir()`.
        progress: show a tqdm progress bar while downloading.

    Returns:
        The extracted folder, `cache_dir / name` (it holds ratings.csv, u.data, ... directly).

    Raises:
        InputError: unknown name.
        DownloadError: network failure, size or checksum mismatch, unsafe archive.
    """
    if name not in GROUPLENS_NAMES:
        raise InputError(
            f"unknown MovieLens archive {name!r}; available: {', '.join(GROUPLENS_NAMES)}"
        )
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = cache / name
    if target.is_dir():
        return target
    cache.mkdir(parents=True, exist_ok=True)

    url = GROUPLENS_URL.format(name=name)
    expected_md5 = _published_md5(url + ".md5")
    with tempfile.TemporaryDirectory(dir=cache, prefix=f".{name}-") as work:
        archive = Path(work) / f"{name}.zip"
        actual_md5 = _stream_to_file(url, archive, progress=progress, label=name)
        if actual_md5 != expected_md5:
            raise DownloadError(
                f"checksum mismatch for {url}: got MD5 {actual_md5}, GroupLens publishes "
                f"{expected_md5}; the download is corrupt, try again"
            )
        extracted = Path(work) / "extracted"
        safe_extract(archive, extracted)
        # GroupLens zips hold one top folder (ml-latest-small/...); cache its content directly.
        entries = list(extracted.iterdir())
        source = entries[0] if len(entries) == 1 and entries[0].is_dir() else extracted
        try:
            os.replace(source, target)
        except OSError:
            if not target.is_dir():  # a concurrent download that won the race is fine
                raise
    return target


def _published_md5(url: str) -> str:
    """The MD5 hex digest in a GroupLens .md5 file ("MD5 (x.zip) = <hex>" or "<hex>  x.zip")."""
    try:
        stream, _ = _fetch(url)
        with stream:
            text = stream.read().decode("utf-8", errors="replace")
    except OSError as error:
        raise DownloadError(
            f"could not fetch the checksum file {url}: {error}; offline, pass the folder "
            "of an unpacked copy instead of the name (--data path/to/ml-latest-small)"
        ) from error
    match = re.search(r"\b[0-9a-fA-F]{32}\b", text)
    if match is None:
        raise DownloadError(f"no MD5 checksum found in {url}")
    return match.group(0).lower()


def _stream_to_file(url: str, path: Path, progress: bool, label: str) -> str:
    """Copy `url` into `path` chunk by chunk; check the size; return the MD5 hex digest."""
    digest = hashlib.md5()
    written = 0
    try:
        stream, expected_size = _fetch(url)
        with stream, open(path, "wb") as out, _progress_bar(expected_size, progress, label) as bar:
            while chunk := stream.read(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                written += len(chunk)
                bar(len(chunk))
    except OSError as error:
        raise DownloadError(f"download of {url} failed: {error}") from error
    if expected_size is not None and written != expected_size:
        raise DownloadError(
            f"download of {url} is truncated or oversized: got {written} bytes, "
            f"the server announced {expected_size}"
        )
    return digest.hexdigest()


@contextlib.contextmanager
def _progress_bar(total: int | None, enabled: bool, label: str) -> Iterator[Callable[[int], None]]:
    """Yield a function that advances a tqdm bar (a no-op when disabled or tqdm is missing)."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        enabled = False
    if not enabled:
        yield lambda n: None
        return
    bar = tqdm(total=total, unit="B", unit_scale=True, desc=label)
    try:
        yield bar.update
    finally:
        bar.close()


def safe_extract(archive: Path, destination: Path) -> None:
    """Extract a zip into `destination`, refusing any member that would land outside it.

    Raises DownloadError (before writing anything) for absolute paths, drive letters or `..`.
    """
    destination.mkdir(parents=True, exist_ok=True)
    root = destination.resolve()
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            for member in members:
                _check_member(member.filename, root)
            for member in members:
                zf.extract(member, root)
    except zipfile.BadZipFile as error:
        raise DownloadError(f"{archive} is not a valid zip archive: {error}") from error


def _check_member(filename: str, root: Path) -> None:
    normalised = filename.replace("\\", "/")
    pure = PurePosixPath(normalised)
    if (
        pure.is_absolute()
        or re.match(r"^[A-Za-z]:", normalised)
        or ".." in pure.parts
        or not (root / pure).resolve().is_relative_to(root)
    ):
        raise DownloadError(f"refusing to extract unsafe archive member {filename!r}")
