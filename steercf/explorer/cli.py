"""``steercf serve MODEL_DIR``: the explorer web app over a saved model.

Wire into the main parser with ``add_serve_command(subparsers)``. Nothing web-related
is imported until the command runs, so the rest of the CLI works without the
``explorer`` extra.
"""

from __future__ import annotations

import argparse
from typing import Any

from steercf.errors import InputError


def add_serve_command(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``serve`` on ``subparsers`` (from ``parser.add_subparsers``)."""
    from steercf.explorer.server import DEFAULT_HOST, DEFAULT_PORT
    from steercf.reporting import HelpFormatter
    from steercf.steering.defaults import DEFAULT_MAPPING, DEFAULT_TOP_LATENTS

    summary = "explorer web app: steer, explain and browse latents (or text latents)"
    p = subparsers.add_parser(
        "serve",
        help=summary,
        description=summary,
        formatter_class=HelpFormatter,  # the other commands' help format
    )
    p.add_argument("model_dir", help="a spliced model (train-sae) or a text model (text train)")
    p.add_argument(
        "--data",
        default=None,
        help="recommender: data set (default: the one recorded with the model); "
        "text model: the corpus file to search (CSV / Parquet)",
    )
    p.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help="bind address; anything but a loopback one exposes the unauthenticated "
        "explorer to other machines (a warning says so)",
    )
    p.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a host name (or address) clients use to reach the explorer, answered besides "
        "localhost, 127.0.0.1, [::1] and --host; repeat for more (others get 403, "
        "against DNS rebinding)",
    )
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to listen on")
    p.add_argument("--source", default=None, help="concept source of the sliders (default: first)")
    p.add_argument(
        "--mapping",
        default=None,
        help=f"concept -> latent mapping of the sliders (default: {DEFAULT_MAPPING}, as steer)",
    )
    p.add_argument(
        "--top-latents",
        type=int,
        default=None,
        help=f"latents per concept slider (default: {DEFAULT_TOP_LATENTS}, as steer)",
    )
    p.add_argument("--text-column", default="text", help="text model: column of the documents")
    p.add_argument("--title-column", default="title", help="text model: column of the titles")
    from steercf.text.cli import add_cache_dir_argument

    add_cache_dir_argument(p)  # the text commands' flag: text models embed their corpus
    p.add_argument(
        "--quiet", action="store_true", help="no request log (nor a text corpus's embedding bar)"
    )
    p.set_defaults(func=cmd_serve)
    return p


def cmd_serve(args: argparse.Namespace) -> None:
    try:
        import fastapi  # noqa: F401
        import fastapi_offline  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as err:
        raise InputError(
            f"steercf serve needs the explorer extra ({err.name} is missing): "
            "pip install 'steercf[explorer]'"
        ) from err
    from steercf.explorer.app import allowed_host_names, create_app
    from steercf.explorer.server import serve

    if not 0 <= args.port <= 65535:
        raise InputError(f"--port must be in [0, 65535], got {args.port}")
    allowed = allowed_host_names([args.host, *args.allow_host])  # before the slow load
    options: dict[str, Any] = {}
    for name in ("source", "mapping", "top_latents"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    from steercf.io import load_model_dir

    kind, _, _ = load_model_dir(args.model_dir)
    if kind == "TextSAE":
        if options:
            raise InputError("--source, --mapping and --top-latents apply to recommenders only")
        options = {
            "text_column": args.text_column,
            "title_column": args.title_column,
            "cache_dir": args.cache_dir,
            "progress": not args.quiet,
        }
    elif args.cache_dir is not None:
        raise InputError("--cache-dir applies to text models only (their embedding cache)")
    print(f"loading {args.model_dir} ...", flush=True)
    app = create_app(args.model_dir, data=args.data, allowed_hosts=allowed, **options)
    explorer = app.state.explorer
    print(
        f"steercf explorer: {explorer.info()['model']} on {explorer.info()['dataset']} at "
        f"http://{args.host}:{args.port}/  (Ctrl-C stops)",
        flush=True,
    )
    serve(app, args.host, args.port, quiet=args.quiet)
