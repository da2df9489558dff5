"""What every ``steercf`` command shares: the help format
(:class:`steercf.reporting.HelpFormatter`, re-exported here), data and device options,
flags built from config dataclasses and model signatures, and loading a saved run."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

from steercf.distributed import PRECISIONS, Collective, configure_precision, init_from_env
from steercf.errors import InputError
from steercf.io import check_model_path
from steercf.reporting import HelpFormatter
from steercf.runs import DEFAULT_MIN_RATING, DEFAULT_MIN_USER_POSITIVES, Run, load_run


def add_command(sub: Any, name: str, help: str) -> argparse.ArgumentParser:
    """A subcommand with the shared help format."""
    return sub.add_parser(name, help=help, description=help, formatter_class=HelpFormatter)


def add_model_out_args(parser: argparse.ArgumentParser, help: str) -> None:
    """``--out`` (a model directory) and ``--force``."""
    parser.add_argument("--out", required=True, help=help)
    parser.add_argument(
        "--force",
        action="store_true",
        help="write the model into --out even if it is a non-empty directory that is not "
        "a steercf model (its files are kept)",
    )


def check_out(args: argparse.Namespace) -> None:
    """Refuse a bad ``--out`` before any training (:func:`steercf.io.check_model_path`)."""
    check_model_path(args.out, force=args.force)


def add_data_args(parser: argparse.ArgumentParser, default: str | None = "ml-100k") -> None:
    """``--data`` and the binarisation settings (recorded with a model, so a saved
    model's commands default to what it was trained on)."""
    recorded = " (default: the one recorded with the model)" if default is None else ""
    parser.add_argument(
        "--data", default=default, help=f"ml-100k | GroupLens name | directory | file{recorded}"
    )
    parser.add_argument(
        "--min-rating",
        type=float,
        default=DEFAULT_MIN_RATING if default else None,
        help=f"ratings >= this are positives{recorded or ''}",
    )
    parser.add_argument(
        "--min-user-positives",
        type=int,
        default=DEFAULT_MIN_USER_POSITIVES if default else None,
        help=f"users need this many positives{recorded or ''}",
    )
    parser.add_argument(
        "--encoding",
        default=None,
        help="text encoding of the data files, e.g. latin-1 (default: "
        + ("the one recorded with the model, else " if default is None else "")
        + "utf-8; latin-1 for GroupLens's ML-100K u.item and ML-1M .dat files)",
    )


def add_saved_model_args(parser: argparse.ArgumentParser) -> None:
    """A saved model directory, its data set and the split seed it was trained under."""
    parser.add_argument("model_dir", help="a model directory written by steercf")
    add_data_args(parser, default=None)
    parser.add_argument("--seed", type=int, default=None, help="split seed (default: recorded)")


def load_saved(args: argparse.Namespace, spliced: bool = False) -> Run:
    """The model of ``args.model_dir`` with its data set and split (:func:`load_run`)."""
    return load_run(
        args.model_dir,
        args.data,
        args.min_rating,
        args.min_user_positives,
        args.seed,
        spliced=spliced,
        encoding=args.encoding,
    )


def add_parallel_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", default="auto", help="auto (CUDA when present) | cpu | cuda | cuda:N"
    )
    parser.add_argument(
        "--nproc",
        type=int,
        default=1,
        help="data-parallel processes on this machine (runs torchrun; gloo on CPU, nccl on CUDA)",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="auto: TF32 matmuls on CUDA, float32 on CPU; bf16: scores in bfloat16 (score)",
    )


def parallel(args: argparse.Namespace) -> tuple[Collective, Any]:
    """``(collective, device)``: the process group torchrun describes (a single process
    otherwise) and this process's device, with the matmul precision set for it."""
    group, device = init_from_env(args.device)
    configure_precision(device, args.precision)
    return group, device


# ---- flags from config dataclasses and model signatures ------------------------------------


def documented_fields(cls: type) -> dict[str, str]:
    """``{name: first sentence}`` from the ``Attributes:`` / ``Args:`` section of a class
    docstring (the text a flag's help shows)."""
    doc = inspect.getdoc(cls) or ""
    found: dict[str, str] = {}
    for match in re.finditer(r"^ {4}(\w+(?:, \w+)*): (.+(?:\n {8}.+)*)", doc, re.MULTILINE):
        text = " ".join(match.group(2).split()).replace("``", "")
        sentence = re.split(r"(?<=[a-z)])\. ", text)[0].rstrip(".")
        for name in match.group(1).split(", "):
            found[name] = sentence
    return found


def _flag_type(annotation: Any) -> Any:
    """The argparse type of a dataclass field annotation (a string under
    ``from __future__ import annotations``)."""
    text = str(annotation)
    if text.startswith("bool"):
        return "bool"
    for name, kind in (("int", int), ("float", float), ("str", str)):
        if text.startswith(name):
            return kind
    return str


def add_config_flags(
    parser: argparse.ArgumentParser,
    cls: type,
    names: Iterable[str],
    defaults: dict[str, Any] | None = None,
    choices: dict[str, Sequence[str]] | None = None,
    notes: dict[str, str] | None = None,
) -> None:
    """One ``--field-name`` flag per listed field of config dataclass ``cls``, with the
    field's default (or ``defaults[name]`` where a caller applies another one), type and
    documented meaning, so the command line and the Python API cannot drift apart;
    ``notes[name]`` is appended to a flag's help (e.g. what a None default resolves to)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    helps = documented_fields(cls)
    for name in names:
        field = fields[name]
        default = (defaults or {}).get(name, field.default)
        flag = "--" + name.replace("_", "-")
        kind = _flag_type(field.type)
        help_text = helps.get(name, name)
        if notes and name in notes:
            help_text = f"{help_text} {notes[name]}"
        if kind == "bool":
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=default, help=help_text
            )
        else:
            parser.add_argument(
                flag,
                type=kind,
                default=default,
                choices=(choices or {}).get(name),
                help=help_text,
            )


def config_values(args: argparse.Namespace, names: Iterable[str]) -> dict[str, Any]:
    """``{field: value}`` of the flags :func:`add_config_flags` added."""
    return {name: getattr(args, name) for name in names}


def parse_params(pairs: Sequence[str], defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """``--param key=value`` pairs as a dict (values read as JSON where they parse).

    Args:
        defaults: ``{parameter: default}`` of the model (``Model.param_defaults()``): keys
            must be among them and values of the default's type (an int where a float is
            expected is fine; ``null`` where the default is None).

    Raises:
        InputError: a pair without ``=``, an unknown key or a value of the wrong type.
    """
    params: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise InputError(f"--param takes key=value, got {pair!r}")
        key, raw = pair.split("=", 1)
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        if defaults is not None:
            value = _checked_param(key, value, defaults)
        params[key] = value
    return params


def _checked_param(key: str, value: Any, defaults: dict[str, Any]) -> Any:
    """``value`` converted to the type of ``defaults[key]``; InputError if it has none."""
    if key not in defaults:
        raise InputError(f"unknown parameter {key!r}; this model takes {', '.join(defaults)}")
    default = defaults[key]
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, (tuple, list)):
        # the length is the model's to check (ELSA's two betas, any number of MultVAE
        # hidden layers)
        ok = isinstance(value, list)
        value = tuple(value) if ok else value
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise InputError(
            f"--param {key}={json.dumps(value)}: expected {type(default).__name__}, "
            f"like the default {json.dumps(default)}"
        )
    return value
