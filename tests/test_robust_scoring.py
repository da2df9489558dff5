"""Batch scoring with missing, extra, swapped and damaged part files, and crashes at every
step of a run (issue 18: "Batch scoring" and the scoring half of "Must show").

Every read either returns exactly the rows of an uninterrupted run or raises an
InputError naming the problem; a rerun verifies the recorded parts and scores again the
ones that fail."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from steercf.errors import InputError
from steercf.models.popularity import Popularity
from steercf.scoring import CSRDirSource, files, read_scores, save_csr_dir, score_users

pytestmark = pytest.mark.usefixtures("one_thread")

SETTINGS = {"N": 5, "chunk_users": 50, "batch_users": 32, "progress": False}
N_USERS, N_ITEMS, N_CHUNKS = 300, 60, 6


def _matrix() -> sp.csr_matrix:
    """(300, 60) binary interactions, every row non-empty."""
    rng = np.random.default_rng(18)
    dense = (rng.random((N_USERS, N_ITEMS)) < 0.1).astype(np.float32)
    dense[np.arange(N_USERS), rng.integers(0, N_ITEMS, N_USERS)] = 1.0
    return sp.csr_matrix(dense)


@pytest.fixture(scope="module")
def matrix() -> sp.csr_matrix:
    return _matrix()


@pytest.fixture(scope="module")
def model(matrix) -> Popularity:
    return Popularity().fit(matrix)


@pytest.fixture(scope="module")
def reference(model, matrix, tmp_path_factory) -> pd.DataFrame:
    """The rows of an uninterrupted run."""
    out = tmp_path_factory.mktemp("reference")
    score_users(model, matrix, out, **SETTINGS)
    frame = read_scores(out)
    assert len(frame) == N_USERS * SETTINGS["N"]
    return frame


@pytest.fixture()
def scored(model, matrix, tmp_path) -> Path:
    """A complete run in ``tmp_path / "run"``."""
    out = tmp_path / "run"
    score_users(model, matrix, out, **SETTINGS)
    return out


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def _edit_manifest(out: Path, edit) -> None:
    manifest = _manifest(out)
    edit(manifest)
    (out / "manifest.json").write_text(json.dumps(manifest))


def _part(out: Path, chunk: int) -> Path:
    return out / f"part-{chunk:05d}.parquet"


# ---- the manifest -------------------------------------------------------------------------


def test_manifest_lists_every_part_with_rows_and_checksum(scored, reference):
    manifest = _manifest(scored)
    assert manifest["complete"] and manifest["rows"] == len(reference)
    assert [p["file"] for p in manifest["parts"]] == [_part(scored, c).name for c in range(6)]
    for chunk, record in enumerate(manifest["parts"]):
        data = _part(scored, chunk).read_bytes()
        assert record["sha256"] == hashlib.sha256(data).hexdigest()
        assert record["bytes"] == len(data) and record["users"] == 50
        assert record["rows"] == (reference["user"] // 50 == chunk).sum() == 250
    assert not [p.name for p in scored.iterdir() if ".tmp-" in p.name]  # no leftovers


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m["parts"][1].update(file="../part-00001.parquet"), "names '../part"),
        (lambda m: m["parts"][1].update(sha256="0" * 10), "not a SHA-256"),
        (lambda m: m["parts"][1].update(rows=-1), "'rows' is -1"),
        (lambda m: m["parts"][1].update(rows=True), "'rows' is True"),
        (lambda m: m["parts"][1].pop("bytes"), "needs exactly the keys"),
        (lambda m: m["parts"].pop(), "not a list of 6 entries"),
        (lambda m: m.update(parts=None), "not a list of 6 entries"),
        (lambda m: m.update(config=[]), "'config' is not an object"),
        (lambda m: m.update(complete="yes"), "'complete' is not true or false"),
        (lambda m: m.update(version=3), "version 3, not steercf-scores version 2"),
    ],
)
def test_a_malformed_manifest_is_an_error_naming_the_field(scored, edit, message):
    _edit_manifest(scored, edit)
    with pytest.raises(InputError, match=message):
        read_scores(scored)


def test_an_unreadable_or_absent_manifest_is_an_error(scored, tmp_path):
    (scored / "manifest.json").write_text('{"format": "steercf-sc')  # cut short
    with pytest.raises(InputError, match="manifest.json is unreadable"):
        read_scores(scored)
    with pytest.raises(InputError, match="not a scoring output"):
        read_scores(tmp_path / "nothing")


def test_an_old_manifest_without_checksums_is_refused_then_rescored(
    model, matrix, scored, reference
):
    """A version-1 run (no part records) cannot be verified: reading it is refused, and a
    rerun scores every chunk again instead of trusting its files."""
    _edit_manifest(scored, lambda m: (m.update(version=1), m.pop("parts")))
    with pytest.raises(InputError, match="older steercf without part checksums"):
        read_scores(scored)
    report = score_users(model, matrix, scored, **SETTINGS)
    assert report.scored_chunks == list(range(N_CHUNKS))
    pd.testing.assert_frame_equal(read_scores(scored), reference)


# ---- the cases: missing, extra, swapped and damaged parts --------------------------


def test_a_deleted_part_is_an_error_naming_it_and_a_rerun_restores_it(
    model, matrix, scored, reference
):
    """Issue: deleting a part made read_scores return 100 rows fewer without a word."""
    _part(scored, 3).unlink()
    for complete in (True, False):  # a partial read is never silently short either
        with pytest.raises(InputError, match=r"part-00003\.parquet is missing"):
            read_scores(scored, require_complete=complete)
    report = score_users(model, matrix, scored, **SETTINGS)
    assert report.scored_chunks == [3] and report.rescored_chunks == {
        3: "part-00003.parquet is missing"
    }
    pd.testing.assert_frame_equal(read_scores(scored), reference)


def test_a_stray_part_file_is_never_read(scored, reference):
    """Issue: a stray ``part-00999`` added its 100 rows to the result."""
    shutil.copy(_part(scored, 1), scored / "part-00999.parquet")
    shutil.copy(_part(scored, 2), scored / "part-00001.parquet.bak")
    with pytest.warns(UserWarning, match=r"ignoring part-00001\.parquet\.bak, part-00999"):
        frame = read_scores(scored)
    pd.testing.assert_frame_equal(frame, reference)


def test_a_part_overwritten_with_another_is_detected_and_rescored(model, matrix, scored, reference):
    """Issue: copying part 1 over part 2 went unnoticed (100 users' rows duplicated,
    another 100 users' lost). Also a part cut or padded to the recorded size."""
    shutil.copy(_part(scored, 1), _part(scored, 2))
    with pytest.raises(InputError, match=r"part-00002\.parquet .*altered or damaged"):
        read_scores(scored)
    report = score_users(model, matrix, scored, **SETTINGS)
    assert report.scored_chunks == [2] and list(report.rescored_chunks) == [2]
    pd.testing.assert_frame_equal(read_scores(scored), reference)

    size = _manifest(scored)["parts"][4]["bytes"]
    _part(scored, 4).write_bytes(_part(scored, 0).read_bytes()[:size].ljust(size, b"\0"))
    with pytest.raises(InputError, match=r"part-00004\.parquet does not match its recorded"):
        read_scores(scored)
    assert score_users(model, matrix, scored, **SETTINGS).scored_chunks == [4]
    pd.testing.assert_frame_equal(read_scores(scored), reference)


def test_flipped_bytes_are_an_input_error_and_a_rerun_rescores_the_part(
    model, matrix, scored, reference
):
    """Issue: 60 flipped bytes made read_scores raise a raw OSError while a rerun said
    every part was complete and rescored nothing."""
    path = _part(scored, 5)
    data = bytearray(path.read_bytes())
    data[100:160] = bytes(b ^ 0xFF for b in data[100:160])
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"part-00005\.parquet does not match its recorded"):
        read_scores(scored)
    assert _manifest(scored)["parts"][5] is not None  # reading never edits the manifest
    report = score_users(model, matrix, scored, **SETTINGS)
    assert report.scored_chunks == [5] and report.skipped_chunks == [0, 1, 2, 3, 4]
    assert "part-00005.parquet does not match" in report.rescored_chunks[5]
    pd.testing.assert_frame_equal(read_scores(scored), reference)
    assert score_users(model, matrix, scored, **SETTINGS).scored_chunks == []  # now whole


def test_a_rerun_verifies_parts_as_the_reader_does(model, matrix, scored, reference):
    """Issue: after one part's "rows" was edited in manifest.json (50 -> 40 here), the
    reader raised but a rerun said every part was complete and rescored nothing."""
    _edit_manifest(scored, lambda m: m["parts"][2].update(rows=m["parts"][2]["rows"] - 10))
    with pytest.raises(InputError, match=r"part-00002\.parquet does not hold the rows"):
        read_scores(scored)
    report = score_users(model, matrix, scored, **SETTINGS)
    assert report.scored_chunks == [2] and report.skipped_chunks == [0, 1, 3, 4, 5]
    assert "does not hold the rows and users" in report.rescored_chunks[2]
    pd.testing.assert_frame_equal(read_scores(scored), reference)


def test_a_directory_where_a_part_goes_is_a_clear_error_and_kept(model, matrix, scored):
    """Issue: a directory at a part's path made the rerun crash with a raw
    IsADirectoryError; it is now an InputError naming the path, and nothing is deleted."""
    _part(scored, 1).unlink()
    _part(scored, 1).mkdir()
    (_part(scored, 1) / "mine.txt").write_text("precious")
    for call in (
        lambda: score_users(model, matrix, scored, **SETTINGS),
        lambda: score_users(model, matrix, scored, overwrite=True, **SETTINGS),
        lambda: read_scores(scored),
    ):
        with pytest.raises(InputError, match=r"part-00001\.parquet is a directory, not a part"):
            call()
    assert (_part(scored, 1) / "mine.txt").read_text() == "precious"


@pytest.mark.slow
def test_cli_rerun_says_which_part_failed_and_scores_it_again(tmp_path, capsys):
    """The issue's CLI session: ML-100K, 10 users a part, 60 bytes flipped in one."""
    from steercf.cli import main

    model = tmp_path / "pop"
    assert main(["train", "--model", "popularity", "--out", str(model), "--quiet"]) == 0
    out = tmp_path / "scores"
    command = ["score", str(model), "--out", str(out), "-n", "10", "--quiet"]
    assert main([*command, "--chunk-users", "100"]) == 0
    expected = read_scores(out)
    path = _part(out, 2)
    data = bytearray(path.read_bytes())
    data[200:260] = bytes(b ^ 0xFF for b in data[200:260])
    path.write_bytes(bytes(data))
    capsys.readouterr()
    assert main([*command, "--chunk-users", "100"]) == 0
    said = capsys.readouterr().out
    assert "(1 scored now, 9 found complete)" in said
    assert "scored again: part-00002.parquet does not match its recorded SHA-256" in said
    pd.testing.assert_frame_equal(read_scores(out), expected)


# ---- fault injection: a crash at every step of a run ---------------------------------------


class Crash(Exception):
    """A simulated crash."""


class Faults:
    """Counts the steps of a scoring run that change the disk and fails at step ``at``.

    Every change goes through ``files._write_durably`` (one step: a crash there leaves
    half the bytes written) and ``files._replace`` (two steps: before and after the
    rename). ``fail`` raises (in-process) or SIGKILLs the process (a real kill).
    """

    def __init__(self, at: int, fail) -> None:
        self.at, self.fail, self.steps = at, fail, 0
        self.write, self.replace = files._write_durably, files._replace

    def _step(self) -> bool:
        self.steps += 1
        return self.steps == self.at

    def write_durably(self, path, data) -> None:
        if self._step():
            with open(path, "wb") as handle:  # the first half reached the disk
                handle.write(memoryview(data)[: len(data) // 2])
            self.fail()
        self.write(path, data)

    def replace_(self, source, target) -> None:
        if self._step():
            self.fail()
        self.replace(source, target)
        if self._step():
            self.fail()

    def install(self, setattr_) -> Faults:
        setattr_(files, "_write_durably", self.write_durably)
        setattr_(files, "_replace", self.replace_)
        return self


def _raise() -> None:
    raise Crash


def _rows_of_recorded_chunks(out: Path, reference: pd.DataFrame) -> pd.DataFrame:
    chunks = [c for c, record in enumerate(_manifest(out)["parts"]) if record is not None]
    rows = reference[(reference["user"] // SETTINGS["chunk_users"]).isin(chunks)]
    return rows.reset_index(drop=True)


def _check_after_crash(out: Path, reference: pd.DataFrame) -> bool:
    """After a crash, every read gives the reference rows (of the recorded chunks, for
    a partial read) or a clear InputError. True when no wrong rows came back."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a renamed part not yet recorded is a stray
        for complete in (True, False):
            try:
                frame = read_scores(out, require_complete=complete)
            except InputError:
                continue
            expected = reference if complete else _rows_of_recorded_chunks(out, reference)
            if len(expected) == 0:  # no part recorded yet: no rows (dtypes unknown)
                same = frame.empty and list(frame.columns) == list(reference.columns)
            else:
                same = frame.equals(expected)
            if not same:
                return False
    return True


def _resume_and_compare(model, matrix, out: Path, reference: pd.DataFrame) -> bool:
    """Rerun without faults: True when the result is exactly the reference."""
    score_users(model, matrix, out, **SETTINGS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_scores(out).equals(reference)


def _sweep(model, matrix, reference, setup) -> tuple[int, int]:
    """Crash a run at step 1, 2, ... until one finishes; after each crash, read, resume
    and compare. ``setup(out)`` prepares the directory first.

    Returns:
        ``(fault points tried, runs with data lost or wrong)``.
    """
    tried = lost = 0
    with pytest.MonkeyPatch.context() as quick:
        # a simulated crash loses no unflushed data: skip the (slow) flushes to disk
        quick.setattr(os, "fsync", lambda fd: None)
        for at in range(1, 1000):
            out = setup(at)
            with pytest.MonkeyPatch.context() as patch:
                faults = Faults(at, _raise).install(patch.setattr)
                try:
                    score_users(model, matrix, out, **SETTINGS)
                except Crash:
                    pass
                else:
                    assert faults.steps < at  # the run finished before reaching step ``at``
                    return tried, lost
            tried += 1
            intact = _check_after_crash(out, reference)
            lost += not (intact and _resume_and_compare(model, matrix, out, reference))
    raise AssertionError("the run never finished")


def test_a_crash_at_every_step_of_a_run_loses_nothing(model, matrix, reference, tmp_path):
    """Crash a fresh run at every disk change (prepare, each part's write and rename, each
    manifest update, the final mark); the resumed run equals the uninterrupted one."""
    tried, lost = _sweep(model, matrix, reference, lambda at: tmp_path / f"crash-{at}")
    print(f"fresh run: {tried} fault points tried, {lost} with data lost")
    # per part: write (1), rename (2), manifest write (1) and rename (2)
    assert tried >= 6 * N_CHUNKS and lost == 0


def test_a_crash_while_a_rerun_repairs_parts_loses_nothing(
    model, matrix, reference, scored, tmp_path
):
    """Crash at every step of the rerun that scores a damaged and a deleted part again."""
    _part(scored, 2).write_bytes(b"damaged")
    _part(scored, 4).unlink()

    def damaged_copy(at: int) -> Path:
        return Path(shutil.copytree(scored, tmp_path / f"repair-{at}"))

    tried, lost = _sweep(model, matrix, reference, damaged_copy)
    print(f"repairing rerun: {tried} fault points tried, {lost} with data lost")
    # forget the two records (3), two parts (6 each), mark complete (3)
    assert tried >= 2 * 6 and lost == 0


def _kill_driver(csr_dir: str, *points_and_outs: str) -> None:
    """Run in a fresh interpreter: fork one child per ``point:out`` that scores into
    ``out`` and SIGKILLs itself at step ``point``; print each child's wait status."""
    source = CSRDirSource(csr_dir)
    statuses = {}
    for spec in points_and_outs:
        point, out = spec.split(":", 1)
        pid = os.fork()
        if pid == 0:  # the child: dies at the step, or exits 3 if it never got there
            try:
                model = Popularity().fit(source.rows(0, source.shape[0]))
                Faults(int(point), lambda: os.kill(os.getpid(), signal.SIGKILL)).install(setattr)
                score_users(model, source, out, **SETTINGS)
            finally:
                os._exit(3)
        statuses[spec] = os.waitpid(pid, 0)[1]
    print(json.dumps(statuses))


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork and SIGKILL")
def test_a_real_sigkill_at_several_steps_loses_nothing(model, matrix, reference, tmp_path):
    """A real SIGKILL (no cleanup runs: half-written temporaries stay) at: a part's
    write, after its rename before it is recorded, a half-written manifest, after a
    manifest rename, and just before the run is marked complete."""
    csr = save_csr_dir(matrix, tmp_path / "csr")
    # steps: prepare 1-3, then 6 per chunk (part write, 2 renames, manifest write, 2)
    points = [4, 3 + 6 + 3, 3 + 12 + 4, 3 + 18 + 6, 3 + 6 * N_CHUNKS + 2]
    specs = [f"{p}:{tmp_path / f'kill-{p}'}" for p in points]
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('robust', {str(__file__)!r})\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        "module._kill_driver(*sys.argv[1:])\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", code, str(csr), *specs],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    statuses = json.loads(done.stdout.strip().splitlines()[-1])
    killed = [s for s in specs if os.WIFSIGNALED(statuses[s])]
    assert len(killed) == len(points)  # each child really died of SIGKILL at its step
    assert all(os.WTERMSIG(statuses[s]) == signal.SIGKILL for s in killed)
    assert any(".tmp-" in p.name for p in (tmp_path / f"kill-{points[0]}").iterdir())
    lost = 0
    for point in points:
        out = tmp_path / f"kill-{point}"
        lost += not (
            _check_after_crash(out, reference)
            and _resume_and_compare(model, matrix, out, reference)
        )
        assert not [p.name for p in out.iterdir() if ".tmp-" in p.name]  # leftovers gone
    print(f"SIGKILL: {len(points)} fault points tried, {lost} with data lost")
    assert lost == 0
