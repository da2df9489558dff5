"""Command-line interface: ``steercf COMMAND``; ``steercf COMMAND --help`` shows each
command's options with their defaults.

Every command reads data through :func:`steercf.data.load_dataset`, so ``--data`` takes
``ml-100k`` (embedded), a GroupLens name (downloaded once, cached) or a directory / file;
commands on a saved model default to the data set, binarisation and split it was trained
under (:mod:`steercf.runs`).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Sequence

from steercf.cli.common import HelpFormatter
from steercf.cli.latents import add_latent_commands
from steercf.cli.models import add_model_commands
from steercf.distributed import shutdown as leave_process_group
from steercf.errors import SteerCFError
from steercf.explorer.cli import add_serve_command
from steercf.text.cli import add_text_commands

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="steercf", description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    commands = add_model_commands(sub) + add_latent_commands(sub)
    add_text_commands(sub)  # their handlers import what they need when they run
    add_serve_command(sub)  # web imports only when it runs
    for command in commands:
        command.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def _run_torchrun(nproc: int, argv: list[str]) -> int:
    """Rerun this command line in ``nproc`` processes under torchrun (standalone: it
    picks a free local port), which sets RANK / WORLD_SIZE for each."""
    # torchrun's parser looks at the script's arguments too: "--nproc" would be an
    # ambiguous abbreviation of its --nproc-per-node, so it is not passed on (WORLD_SIZE
    # tells the processes they run under torchrun).
    forwarded, skip = [], False
    for arg in argv:
        if skip or arg.startswith("--nproc="):
            skip = False
        elif arg == "--nproc":
            skip = True
        else:
            forwarded.append(arg)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += [f"--nproc_per_node={nproc}", "-m", "steercf", *forwarded]
    env = dict(os.environ)
    # one intra-op thread per process unless asked otherwise (torchrun's own default)
    env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.run(command, env=env, check=False).returncode


def _join_negative_knobs(argv: list[str]) -> list[str]:
    """``--concept -Comedy`` would read as an unknown option; glue it to its flag."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] == "--concept" and arg.startswith("-"):
            out[-1] = f"--concept={arg}"
        else:
            out.append(arg)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = _join_negative_knobs(sys.argv[1:] if argv is None else list(argv))
    args = parser.parse_args(argv)
    nproc = getattr(args, "nproc", 1)
    if nproc < 1:
        print(f"steercf: error: --nproc must be >= 1, got {nproc}", file=sys.stderr)
        return 2
    if nproc > 1 and "WORLD_SIZE" not in os.environ:  # not yet under torchrun
        return _run_torchrun(nproc, argv)
    started = time.perf_counter()
    try:
        args.func(args)
    except SteerCFError as err:
        print(f"steercf: error: {err}", file=sys.stderr)
        return 2
    finally:
        leave_process_group()
    if not getattr(args, "quiet", False):
        print(f"({time.perf_counter() - started:.1f}s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
