"""Issue 18, writing files: ``--out`` never wipes unrelated files, a save is atomic at
every step (versioned layout, steercf.io), model files carry checksums, and a malformed
file is a ModelFileError naming the problem. Sections: writing, integrity, fault
injection (each save killed at every step, in-process and with a real SIGKILL)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from safetensors.torch import save_file

import steercf.io as io
from steercf.cli import main
from steercf.concepts import LatentLabel, LatentLabels, has_labels, labels_json, load_labels
from steercf.concepts import save_labels as store_labels
from steercf.errors import ModelFileError
from steercf.io import (
    CURRENT_FILE,
    LOCK_FILE,
    load_model_dir,
    resolve_model_dir,
    save_model_dir,
    update_model_dir,
)
from steercf.models import ELSA, Popularity, SplicedRecommender, load_model
from steercf.sae import SAEConfig, SparseAutoencoder

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------------------
# Tiny models (milliseconds to fit)
# ----------------------------------------------------------------------------------------
def _rows(seed: int, n_users: int = 40, n_items: int = 25) -> sp.csr_matrix:
    x = sp.random(n_users, n_items, density=0.2, format="csr", random_state=seed)
    x.data[:] = 1.0
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def popularity() -> tuple[Popularity, Popularity, Popularity]:
    """Three popularity models with different counts (distinct fingerprints)."""
    models = tuple(Popularity().fit(_rows(seed)) for seed in (1, 2, 3))
    assert len({m.fingerprint() for m in models}) == 3
    return models


@pytest.fixture(scope="module")
def elsa() -> ELSA:
    return ELSA(factors=8, epochs=1, batch_size=16, progress=False, seed=0).fit(_rows(0))


def _spliced(elsa: ELSA, seed: int) -> SplicedRecommender:
    sae = SparseAutoencoder(SAEConfig(d_in=8, k=2, expansion=2))
    with torch.no_grad():
        sae.b_dec.fill_(0.1 * seed)  # distinct weights, hence distinct fingerprints
    return SplicedRecommender.from_parts(elsa, sae)


def _labels(model: SplicedRecommender, tag: str) -> LatentLabels:
    return LatentLabels(
        labels=[
            LatentLabel(latent=i, live=False, text=f"{tag} {i}") for i in range(model.n_latents)
        ],
        sae_fingerprint=model.sae_fingerprint(),
    )


@pytest.fixture(scope="module")
def spliced(elsa) -> tuple[SplicedRecommender, SplicedRecommender]:
    a, b = _spliced(elsa, 1), _spliced(elsa, 2)
    assert a.sae_fingerprint() != b.sae_fingerprint()
    return a, b


def _versions(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.name.startswith("v-"))


def _legacy_dir(path: Path, model: Popularity) -> None:
    """A model directory as steercf wrote it before the versioned layout (format 1)."""
    path.mkdir(parents=True)
    config, tensors = model._state()
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path / "tensors.safetensors"))
    meta = {"kind": "Popularity", "format_version": 1, "config": {**config, "metadata": {}}}
    (path / "config.json").write_text(json.dumps(meta))


# ========================================================================================
# Writing
# ========================================================================================
def test_out_refuses_a_directory_of_unrelated_files_unless_forced(tmp_path, capsys):
    d = tmp_path / "d"
    d.mkdir()
    (d / "important.txt").write_text("x")
    args = ["train", "--model", "popularity", "--out", str(d), "--quiet"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("steercf: error: refusing to save a model")
    assert "not a steercf model" in err and "--force" in err
    assert sorted(p.name for p in d.iterdir()) == ["important.txt"]  # nothing touched

    assert main([*args, "--force"]) == 0
    assert (d / "important.txt").read_text() == "x"  # kept beside the model
    assert isinstance(load_model(d), Popularity)
    capsys.readouterr()
    assert main(args) == 0  # now a steercf model: replacing it needs no --force
    assert (d / "important.txt").read_text() == "x"


def test_force_never_deletes_or_replaces_the_users_layout_like_files(tmp_path, capsys):
    """`--force` deleted a user's `v-1-2/` (it matched the version pattern) and replaced
    a user's own `CURRENT`; a directory already a model keeps such files too."""
    for name in ("v-1-2", "CURRENT", ".lock", ".CURRENT.x.tmp"):
        d = tmp_path / name.strip(".")
        d.mkdir()
        if name.startswith("v-"):
            (d / name).mkdir()
            (d / name / "data.txt").write_text("precious")
        else:
            (d / name).write_text("precious")
        before = sorted(p.name for p in d.iterdir())
        args = ["train", "--model", "popularity", "--out", str(d), "--quiet", "--force"]
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith("steercf: error: refusing") and "even with --force" in err, err
        assert name in err and sorted(p.name for p in d.iterdir()) == before
    # a user's v-1-2 inside a real model (not steercf's) is never cleaned up by a save
    model = tmp_path / "model"
    assert main(["train", "--model", "popularity", "--out", str(model), "--quiet"]) == 0
    (model / "v-1-2").mkdir()
    (model / "v-1-2" / "data.txt").write_text("precious")
    (model / "v-0000000000000001-deadbeef").mkdir()  # right name, a user's content
    (model / "v-0000000000000001-deadbeef" / "notes.txt").write_text("precious")
    for _ in range(2):
        assert main(["train", "--model", "popularity", "--out", str(model), "--quiet"]) == 0
    assert (model / "v-1-2" / "data.txt").read_text() == "precious"
    assert (model / "v-0000000000000001-deadbeef" / "notes.txt").read_text() == "precious"
    assert isinstance(load_model(model), Popularity)


def test_out_dot_is_a_clear_error_not_a_traceback(tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.md").write_text("mine")
    monkeypatch.chdir(work)
    assert main(["train", "--model", "popularity", "--out", ".", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "refusing to save a model into" in err
    assert sorted(os.listdir(work)) == ["notes.md"]

    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    assert main(["train", "--model", "popularity", "--out", ".", "--quiet"]) == 0
    assert isinstance(load_model(empty), Popularity)


def test_out_that_is_a_file_is_refused(tmp_path, popularity):
    target = tmp_path / "model"
    target.write_text("not a directory")
    with pytest.raises(ModelFileError, match="it is a file, not a directory"):
        popularity[0].save(target)
    assert target.read_text() == "not a directory"


def test_save_over_a_model_replaces_it_and_keeps_one_previous_version(tmp_path, popularity):
    target = tmp_path / "m"
    for model in popularity:
        model.save(target)
        assert load_model(target).fingerprint() == model.fingerprint()
    # the live version and the one before it (for readers that resolved CURRENT just
    # before the last swap); nothing else
    names = sorted(p.name for p in target.iterdir())
    assert names[:2] == [LOCK_FILE, CURRENT_FILE] and len(_versions(target)) == 2
    assert (target / CURRENT_FILE).read_text().strip() == _versions(target)[-1]


def test_old_format_model_dirs_still_load_and_are_converted_by_a_save(tmp_path, popularity):
    old = tmp_path / "old"
    _legacy_dir(old, popularity[0])
    assert load_model(old).fingerprint() == popularity[0].fingerprint()
    popularity[1].save(old)  # a steercf model already: no force needed
    assert load_model(old).fingerprint() == popularity[1].fingerprint()
    assert sorted(p.name for p in old.iterdir()) == [LOCK_FILE, CURRENT_FILE, *_versions(old)]
    assert len(_versions(old)) == 1  # the format-1 files were removed after the swap


def test_an_old_format_spliced_model_with_labels_loads_and_relabelling_converts_it(
    tmp_path, spliced
):
    model = spliced[0]
    model.save(tmp_path / "new", extra_json=labels_json(_labels(model, "old"), model))
    old = tmp_path / "old"
    shutil.copytree(resolve_model_dir(tmp_path / "new"), old)  # flat, as format 1 was
    for config in old.rglob("config.json"):
        meta = json.loads(config.read_text())
        meta["format_version"] = 1
        del meta["checksums"]
        config.write_text(json.dumps(meta))
    assert load_model(old).fingerprint() == model.fingerprint()
    assert load_labels(old).labels[0].text == "old 0"
    store_labels(old, _labels(model, "relabelled"))
    assert load_labels(old).labels[0].text == "relabelled 0"
    assert load_model(old).fingerprint() == model.fingerprint()
    assert sorted(p.name for p in old.iterdir()) == [LOCK_FILE, CURRENT_FILE, *_versions(old)]


def test_stale_leftovers_are_cleaned_by_the_next_save(tmp_path, popularity):
    target = tmp_path / "m"
    popularity[0].save(target)
    # what interrupted saves leave: a half-written version, a pointer temporary, and
    # the temporaries of a steercf before the versioned layout beside the path
    dead = "v-0000000000000001-deadbeef"  # the exact id format a save writes
    (target / dead).mkdir()
    (target / dead / "tensors.safetensors").write_bytes(b"half")
    (target / f".CURRENT.{dead}.tmp").write_text(dead)
    for name in (".m.old-4242", ".m.ab12cd34"):
        _legacy_dir(tmp_path / name, popularity[2])
    (tmp_path / ".m.notes").write_text("not ours")  # similar name, not a model: kept
    popularity[1].save(target)
    assert not (target / dead).exists() and not (target / f".CURRENT.{dead}.tmp").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".m.notes", "m"]
    assert load_model(target).fingerprint() == popularity[1].fingerprint()


def test_old_interrupted_save_left_only_a_backup_the_error_says_how_to_recover(
    tmp_path, popularity
):
    _legacy_dir(tmp_path / ".m.old-99", popularity[0])
    with pytest.raises(ModelFileError, match=r"no model directory.*\.m\.old-99: rename it"):
        load_model(tmp_path / "m")


def test_labels_are_written_in_the_same_swap_as_the_model(tmp_path, spliced):
    a, b = spliced
    target = tmp_path / "s"
    a.save(target, extra_json=labels_json(_labels(a, "a"), a))
    assert has_labels(target) and load_labels(target).labels[0].text == "a 0"
    b.save(target, extra_json=labels_json(_labels(b, "b"), b))
    assert load_model(target).sae_fingerprint() == b.sae_fingerprint()
    assert load_labels(target).labels[0].text == "b 0"
    with pytest.raises(ModelFileError, match="another SAE"):
        labels_json(_labels(a, "a"), b)  # labels of another model are refused up front
    # relabelling a saved model is a new version too (hard links to the unchanged files)
    store_labels(target, _labels(b, "relabelled"))
    assert load_labels(target).labels[0].text == "relabelled 0"
    assert load_model(target).sae_fingerprint() == b.sae_fingerprint()
    with pytest.raises(ModelFileError, match="another SAE"):
        store_labels(target, _labels(a, "a"))
    assert load_labels(target).labels[0].text == "relabelled 0"


def test_update_of_a_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelFileError, match="no model directory"):
        update_model_dir(tmp_path / "missing", lambda _dir: {"x.json": 1})
    assert not (tmp_path / "missing").exists()


def _fork(body: Callable[[], int]) -> int:
    """Run ``body`` in a forked child; returns its pid (the child exits with body's code)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 70
        try:
            code = body()
        finally:
            os._exit(code)
    return pid


def test_two_processes_saving_to_one_path_100_times_each(tmp_path, popularity):
    target = tmp_path / "m"
    popularity[2].save(target)
    log = tmp_path / "errors.txt"

    def writer(model: Popularity) -> Callable[[], int]:
        def body() -> int:
            for _ in range(100):
                try:
                    model.save(target)
                except Exception as err:  # noqa: BLE001 - report any raw exception
                    with open(log, "a") as f:
                        f.write(f"{type(err).__name__}: {err}\n")
                    return 1
            return 0

        return body

    running = {_fork(writer(popularity[0])), _fork(writer(popularity[1]))}
    allowed = {m.fingerprint() for m in popularity}
    reads = failures = 0
    codes = []
    while running:  # read the model while the two writers run
        for pid in list(running):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                running.discard(pid)
                codes.append(os.waitstatus_to_exitcode(status))
        try:
            assert load_model(target).fingerprint() in allowed
        except ModelFileError as err:
            failures += 1
            print("read failed:", err)
        reads += 1
    assert codes == [0, 0]
    assert not log.exists(), log.read_text()
    print(f"concurrent: 2 x 100 saves, {reads} reads meanwhile, {failures} failed")
    assert failures == 0
    assert load_model(target).fingerprint() in {
        popularity[0].fingerprint(),
        popularity[1].fingerprint(),
    }
    assert len(_versions(target)) <= 2


def test_a_writer_that_holds_the_lock_too_long_is_a_clear_error(tmp_path, popularity, monkeypatch):
    fcntl = pytest.importorskip("fcntl")
    target = tmp_path / "m"
    popularity[0].save(target)
    monkeypatch.setattr(io, "LOCK_TIMEOUT_S", 0.2)
    with open(target / LOCK_FILE, "a+b") as held:  # as another saving process would
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        with pytest.raises(ModelFileError, match="another process has been saving to"):
            popularity[1].save(target)
    assert load_model(target).fingerprint() == popularity[0].fingerprint()
    popularity[1].save(target)  # released: the save goes through
    assert load_model(target).fingerprint() == popularity[1].fingerprint()


# ========================================================================================
# Integrity
# ========================================================================================
def _safetensors_header(path: Path) -> tuple[int, dict]:
    raw = path.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    return size, json.loads(raw[8 : 8 + size])


def test_a_dtype_changed_in_the_safetensors_header_is_refused(tmp_path, elsa):
    elsa.save(tmp_path / "e")
    file = resolve_model_dir(tmp_path / "e") / "tensors.safetensors"
    raw = file.read_bytes()
    assert raw.count(b'"F32"') == 1
    file.write_bytes(raw.replace(b'"F32"', b'"I32"'))  # same length: offsets still valid
    with pytest.raises(
        ModelFileError,
        match="tensor 'items' has dtype int32 in the file but was saved with float32",
    ):
        load_model(tmp_path / "e")
    # a format-1 file (no checksums) is refused too: model tensors are floating point
    old = tmp_path / "old"
    old.mkdir()
    config, tensors = elsa._state()
    save_file(
        {"items": tensors["items"].contiguous().view(torch.int32)}, str(old / "tensors.safetensors")
    )
    (old / "config.json").write_text(
        json.dumps({"kind": "ELSA", "format_version": 1, "config": config})
    )
    with pytest.raises(ModelFileError, match="dtype torch.int32, expected floating point"):
        load_model(old)


def test_a_flipped_exponent_byte_in_a_plain_elsa_model_is_refused(tmp_path, elsa):
    elsa.save(tmp_path / "e")
    file = resolve_model_dir(tmp_path / "e") / "tensors.safetensors"
    size, _ = _safetensors_header(file)
    raw = bytearray(file.read_bytes())
    raw[8 + size + 3] ^= 0x01  # lowest exponent bit of the first float32 (little endian)
    file.write_bytes(bytes(raw))
    with pytest.raises(ModelFileError, match="bytes of tensor 'items' do not match their checksum"):
        load_model(tmp_path / "e")


@pytest.mark.parametrize(
    "edit",
    [
        lambda c: c.update(k=3),
        lambda c: c.update(activation="relu"),
        lambda c: c.update(refit=True),
        lambda c: c.update(standardize=False),
        lambda c: c.pop("k"),
    ],
    ids=["k", "activation", "refit", "standardize", "delete-k"],
)
def test_an_edited_sae_config_is_refused(tmp_path, spliced, edit):
    spliced[0].save(tmp_path / "s")
    path = resolve_model_dir(tmp_path / "s") / "sae" / "config.json"
    meta = json.loads(path.read_text())
    edit(meta["config"])
    path.write_text(json.dumps(meta))
    with pytest.raises(
        ModelFileError, match=r"sae/config.json: the config does not match its checksum"
    ):
        load_model(tmp_path / "s")


def _edit_raw_config(directory: Path, child: str | None, edit: Callable[[dict], object]) -> None:
    path = resolve_model_dir(directory) / (child or "") / "config.json"
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


def _deep(n: int) -> str:
    return '{"kind": "ELSA", "format_version": 2, "config": ' + "[" * n + "]" * n + "}"


@pytest.mark.parametrize(
    ("child", "edit", "message"),
    [
        (None, lambda m: m["config"].pop("augment"), "does not match its checksum"),
        ("base", lambda m: m["config"].pop("lr"), "does not match its checksum"),
        (None, lambda m: m.update(config=None), "'config' must be a JSON object, got NoneType"),
        ("base", lambda m: m["config"].update(betas=5), "does not match its checksum"),
        (None, lambda m: m.pop("checksums"), "lacks its checksums"),
        (None, lambda m: m.update(format_version=True), "format version True"),
        (None, lambda m: m.update(kind=["x"]), "'kind' must be a string"),
    ],
    ids=[
        "no-augment",
        "no-lr",
        "config-null",
        "betas-5",
        "no-checksums",
        "version-true",
        "kind-list",
    ],
)
def test_an_edited_config_json_is_a_model_file_error(tmp_path, spliced, child, edit, message):
    spliced[0].save(tmp_path / "s")
    _edit_raw_config(tmp_path / "s", child, edit)
    with pytest.raises(ModelFileError, match=message):
        load_model(tmp_path / "s")


def test_a_config_nested_100000_deep_is_a_model_file_error(tmp_path, elsa):
    elsa.save(tmp_path / "e")
    (resolve_model_dir(tmp_path / "e") / "config.json").write_text(_deep(100_000))
    with pytest.raises(ModelFileError, match="nested too deeply"):
        load_model(tmp_path / "e")


@pytest.mark.parametrize(
    ("kind", "edit", "message"),
    [
        ("Spliced", lambda c: c.pop("augment"), "the config lacks 'augment'"),
        (
            "Spliced",
            lambda c: c.update(train_config={"patience": -1}),
            "invalid SAE training config: TrainConfig.patience",
        ),
        ("ELSA", lambda c: c.pop("n_items"), "the config lacks 'n_items'"),
        ("ELSA", lambda c: c.update(betas=5), r"malformed model config \(TypeError"),
        (
            "ELSA",
            lambda c: c.update(factors="eight"),
            r"has shape \(25, 8\), expected \(25, 'eight'\)",
        ),
        ("ELSA", lambda c: c.update(n_items=None), r"has shape \(25, 8\), expected \(None, 8\)"),
    ],
    ids=[
        "spliced-no-augment",
        "spliced-bad-train-config",
        "elsa-no-n_items",
        "elsa-betas-5",
        "elsa-factors-str",
        "n_items-null",
    ],
)
def test_configs_saved_malformed_with_valid_checksums_are_model_file_errors(
    tmp_path, spliced, elsa, kind, edit, message
):
    """Past the checksum (as if written so): whatever building the model from the config
    raises is turned into a ModelFileError in one place (steercf.io.read_model)."""
    target = tmp_path / "m"
    if kind == "ELSA":
        config, tensors = elsa._state()
        edit(config)
        save_model_dir(target, "ELSA", config, tensors)
        loaders = [load_model, ELSA.load]
    else:
        model = spliced[0]
        model.save(target)
        version = resolve_model_dir(target)
        _, config, _ = load_model_dir(version)
        config = dict(config)
        edit(config)
        base = load_model_dir(version / "base")
        sae = load_model_dir(version / "sae")
        save_model_dir(
            target,
            kind,
            config,
            {},
            children={"base": base, "sae": sae},
        )
        loaders = [load_model, SplicedRecommender.load]
    for load in loaders:
        with pytest.raises(ModelFileError, match=message):
            load(target)


def test_every_model_kind_stores_checksums(tmp_path, popularity, elsa, spliced):
    for name, model in {"pop": popularity[0], "elsa": elsa, "spliced": spliced[0]}.items():
        model.save(tmp_path / name)
        version = resolve_model_dir(tmp_path / name)
        for config in version.rglob("config.json"):
            meta = json.loads(config.read_text())
            assert meta["format_version"] == 2 and set(meta["checksums"]) == {"config", "tensors"}
    spliced[0].sae_.save(tmp_path / "sae")
    meta = json.loads((resolve_model_dir(tmp_path / "sae") / "config.json").read_text())
    assert set(meta["checksums"]["tensors"]) == {"W_enc", "b_enc", "W_dec", "b_dec", "threshold"}


def test_a_damaged_pointer_is_a_clear_error(tmp_path, popularity):
    popularity[0].save(tmp_path / "m")
    (tmp_path / "m" / CURRENT_FILE).write_text("../../etc")
    with pytest.raises(ModelFileError, match="does not name a saved version"):
        load_model(tmp_path / "m")
    popularity[1].save(tmp_path / "m")  # a save repairs it
    assert load_model(tmp_path / "m").fingerprint() == popularity[1].fingerprint()


# ========================================================================================
# Fault injection: kill every save at every step
# ========================================================================================
class Crash(Exception):
    """The simulated crash (in-process mode)."""


# every primitive a save uses to change the disk; a fault fires on the k-th call of any
_TARGETS = [
    (io, "_write_file"),
    (io, "_fsync"),
    (os, "replace"),
    (os, "mkdir"),
    (os, "link"),
    (os, "unlink"),
    (shutil, "rmtree"),
]


@contextmanager
def _faults(at: int, kill: bool):
    """Make the ``at``-th disk step (1-based) fail: raise Crash, or SIGKILL this process.
    A faulted file write leaves half its bytes, as a crash mid-write would. Yields a
    one-element list holding the number of steps seen."""
    seen = [0]
    originals = {(mod, name): getattr(mod, name) for mod, name in _TARGETS}

    def wrap(mod, name):
        original = originals[(mod, name)]

        def step(*args, **kwargs):
            seen[0] += 1
            if seen[0] == at:
                if name == "_write_file":
                    path, data = args
                    with open(path, "xb") as f:
                        f.write(data[: len(data) // 2])
                if kill:
                    os.kill(os.getpid(), signal.SIGKILL)
                raise Crash(f"step {at}: {name}")
            return original(*args, **kwargs)

        return step

    for mod, name in _TARGETS:
        setattr(mod, name, wrap(mod, name))
    try:
        yield seen
    finally:
        for (mod, name), original in originals.items():
            setattr(mod, name, original)


def _killed_save(at: int, save: Callable[[Path], None], target: Path) -> int:
    """In a forked child: the save, SIGKILLed at step ``at``; 0 if it completed."""
    with _faults(at, kill=True):
        save(target)
    return 0


def _state(target: Path) -> tuple[str | None, str | None]:
    """(model fingerprint, first label text) of what loads at ``target`` now."""
    try:
        model = load_model(target)
    except ModelFileError:
        return None, None
    label = None
    if isinstance(model, SplicedRecommender) and has_labels(target):
        label = load_labels(target).labels[0].text  # also checks they fit the model
    return model.fingerprint(), label


def _scenarios(
    popularity, spliced
) -> dict[str, tuple[Callable[[Path], None], Callable[[Path], None]]]:
    """name -> (prepare the target, the save to kill)."""
    pa, pb = popularity[0], popularity[1]
    sa, sb = spliced

    def save_spliced(model, tag):
        return lambda t: model.save(t, extra_json=labels_json(_labels(model, tag), model))

    return {
        "first save": (lambda t: None, lambda t: pa.save(t)),
        # two versions before: the save also removes the older one (a clean-up step)
        "replace": (lambda t: (popularity[2].save(t), pa.save(t)), lambda t: pb.save(t)),
        "convert a format-1 dir": (lambda t: _legacy_dir(t, pa), lambda t: pb.save(t)),
        "spliced + labels": (save_spliced(sa, "a"), save_spliced(sb, "b")),
        "relabel": (save_spliced(sa, "a"), lambda t: store_labels(t, _labels(sa, "new"))),
    }


def _expected(scenario: str, popularity, spliced) -> tuple[set, set]:
    """(states before the save, states after it) a faulted save may leave."""
    pa, pb = (m.fingerprint() for m in popularity[:2])
    sa, sb = (m.fingerprint() for m in spliced)
    return {
        "first save": ({(None, None)}, {(pa, None)}),
        "replace": ({(pa, None)}, {(pb, None)}),
        "convert a format-1 dir": ({(pa, None)}, {(pb, None)}),
        "spliced + labels": ({(sa, "a 0")}, {(sb, "b 0")}),
        "relabel": ({(sa, "a 0")}, {(sa, "new 0")}),
    }[scenario]


def _run_faults(tmp_path, popularity, spliced, kill: bool) -> tuple[int, int]:
    """Kill each scenario's save at step 1, 2, ... until it completes; after each kill the
    old or the new model must load (with its labels), and a later save must succeed and
    leave no leftovers. Returns (fault points tried, data lost)."""
    tried = lost = 0
    per_scenario: dict[str, int] = {}
    for name, (prepare, save) in _scenarios(popularity, spliced).items():
        before, after = _expected(name, popularity, spliced)
        for at in range(1, 200):
            target = tmp_path / f"{'kill' if kill else 'raise'}-{name.replace(' ', '_')}-{at}"
            prepare(target)
            assert _state(target) in before
            if kill:
                pid = _fork(lambda: _killed_save(at, save, target))  # noqa: B023
                _, status = os.waitpid(pid, 0)
                completed = os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
                assert completed or os.WTERMSIG(status) == signal.SIGKILL, (name, at, status)
            else:
                with _faults(at, False):
                    try:
                        save(target)
                        completed = True
                    except Exception:  # noqa: BLE001 - the crash, or an error it caused
                        completed = False
            state = _state(target)
            if completed:
                assert state in after, (name, at)
                break
            tried += 1
            per_scenario[name] = per_scenario.get(name, 0) + 1
            if state not in before | after:
                lost += 1
                print(f"LOST: {name} step {at}: {state}")
            # the next save cleans up whatever the crash left
            popularity[2].save(target)
            assert _state(target) == (popularity[2].fingerprint(), None)
            leftovers = [
                p.name for p in target.iterdir() if p.name not in (CURRENT_FILE, LOCK_FILE)
            ]
            assert len(leftovers) <= 2 and all(n.startswith("v-") for n in leftovers), leftovers
            assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
        else:
            pytest.fail(f"{name}: save never completed")
    print(f"fault points per scenario ({'SIGKILL' if kill else 'raise'}): {per_scenario}")
    return tried, lost


def test_fault_injection_every_save_step_raising(tmp_path, popularity, spliced):
    tried, lost = _run_faults(tmp_path, popularity, spliced, kill=False)
    print(f"fault injection (raise): {tried} fault points tried, {lost} lost")
    assert lost == 0 and tried >= 50


def test_fault_injection_every_save_step_with_sigkill(tmp_path, popularity, spliced):
    start = time.monotonic()
    tried, lost = _run_faults(tmp_path, popularity, spliced, kill=True)
    print(
        f"fault injection (SIGKILL): {tried} fault points tried, {lost} lost, {time.monotonic() - start:.1f} s"
    )
    assert lost == 0 and tried >= 50


@pytest.mark.parametrize("command", ["embed", "train"])
def test_text_commands_without_a_table_refuse_csv(tmp_path, capsys, command):
    """`steercf text embed --csv out.csv` was accepted and wrote nothing: only the
    commands that show a result table take --csv."""
    docs = tmp_path / "docs.csv"
    docs.write_text("id,text\n1,hello world\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["text", command, str(docs), "--out", str(tmp_path / "o"), "--csv", "x.csv"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --csv x.csv" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() and not Path("x.csv").exists()
