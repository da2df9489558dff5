"""``steercf text embed|train|diff|correlate|cluster|search|families``.

Wire into the main parser with ``add_text_commands(subparsers)``; every handler is
stored as ``args.func`` and raises :class:`steercf.errors.SteerCFError` subclasses for
bad input, which the main CLI prints as ``steercf: error: ...``.

Inputs are CSV (also ``.csv.gz``) or Parquet files with a text column (``--text-column``,
default ``text``). Analysis commands take a model directory written by ``train``; they
embed the given files with the model's embedder (cached, so repeated runs are cheap).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from steercf.errors import InputError
from steercf.io import check_model_path
from steercf.reporting import LIST_SEPARATOR, HelpFormatter, format_table
from steercf.sae import SAEConfig, TrainConfig
from steercf.text.clustering import (
    ANCHOR_DOCS,
    MAX_AUTO_CLUSTERS,
    REPRESENTATIONS,
)
from steercf.text.diffing import (
    DEFAULT_FDR,
    DEFAULT_MIN_DIFF,
    DEFAULT_N_STRONGEST,
    DEFAULT_TEST,
    TESTS,
)
from steercf.text.documents import DEFAULT_ID_COLUMN, with_doc_ids
from steercf.text.embed import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CHUNK_WORDS,
    DEFAULT_LEVEL,
    DEFAULT_MODEL,
    DEFAULT_OVERLAP,
    LEVELS,
)
from steercf.text.model import (
    DEFAULT_MAX_TRAIN_ROWS,
    DEFAULT_SAE,
    DEFAULT_TRAIN,
    FIRING_SHARE,
    SPARSE_K,
)
from steercf.text.queries import QUERY_METHODS

# characters shown per table cell, a document's snippet included (the CSV keeps all)
CELL_WIDTH = 60
# what a query latent's weight is, per --method (steercf.text.queries.query_latents)
WEIGHT_MEANINGS = {
    "semantic": "how close the latent is to the query, the closest ~1",
    "code": "the latent's activation on the query, the largest 1",
    "labels": "how high the query's words rank in the latent's terms, the best 1",
    "both": "label match plus the query's own activation, each up to 1",
}
QUERY_LATENTS_SHOWN = 8  # of a property search's query latents, the strongest printed
SCORE_MEANINGS = {
    "share": "the query latents' weighted share of the document's code, 0-1",
    "sum": "the query latents' weighted sum of p90-scaled activations",
}
HELP_FORMATTER = HelpFormatter  # every default shown, None ones explained in the help


def config_default(config: type, overrides: dict[str, Any], name: str) -> Any:
    """The value of field ``name`` that the Python API uses: ``overrides[name]``
    (:data:`DEFAULT_SAE` / :data:`DEFAULT_TRAIN`, which ``TextSAE.fit`` applies), else the
    dataclass default of ``config`` (:class:`SAEConfig` / :class:`TrainConfig`)."""
    if name in overrides:
        return overrides[name]
    return {f.name: f for f in dataclasses.fields(config)}[name].default


def add_cache_dir_argument(parser: argparse.ArgumentParser) -> None:
    """``--cache-dir``, shared by the text commands and ``serve``: the steercf cache root,
    resolved by :func:`steercf.text.embed.embedding_cache_dir` like ``$STEERCF_CACHE``."""
    parser.add_argument(
        "--cache-dir",
        default=None,
        help="steercf cache root; embeddings are cached in DIR/embeddings, as with "
        "$STEERCF_CACHE=DIR (default: $STEERCF_CACHE, else ~/.cache/steercf)",
    )


def _subcommand(sub: Any, name: str, help: str) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=help, description=help, formatter_class=HELP_FORMATTER)


def _common(
    parser: argparse.ArgumentParser,
    model: bool = True,
    inputs: int = 1,
    table: bool = True,
    ids: bool = False,
) -> None:
    """The options every text command shares; ``--csv`` only where the command shows a
    result table (``embed`` and ``train`` write files of their own: ``--out``);
    ``--id-column`` only where results name documents (``ids``)."""
    if model:
        parser.add_argument("model_dir", help="model directory written by 'steercf text train'")
    for i in range(inputs):
        name = "input" if inputs == 1 else ("input_a", "input_b")[i]
        parser.add_argument(name, help="CSV / CSV.GZ / Parquet file with a text column")
    parser.add_argument("--text-column", default="text", help="column holding the documents")
    if ids:
        parser.add_argument(
            "--id-column",
            default=None,
            help="column identifying the documents in results, beside their positions "
            f"(default: {DEFAULT_ID_COLUMN!r} when the input has it)",
        )
    parser.add_argument(
        "--encoding", default="utf-8", help="text encoding of CSV / TSV inputs (e.g. latin-1)"
    )
    add_cache_dir_argument(parser)
    if table:
        parser.add_argument(
            "--csv",
            default=None,
            help="also write the result table to this CSV, list cells joined by "
            f"{LIST_SEPARATOR!r} (default: no)",
        )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _embed_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default=None,
        help=f"local sentence-transformers model (default: the offline {DEFAULT_MODEL})",
    )
    p.add_argument(
        "--chunk-words", type=int, default=DEFAULT_CHUNK_WORDS, help="words per chunk window"
    )
    p.add_argument(
        "--overlap", type=int, default=DEFAULT_OVERLAP, help="words shared by adjacent chunks"
    )
    p.add_argument(
        "--max-chunks", type=int, default=None, help="chunks kept per document (default: all)"
    )
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="chunks per call")
    p.add_argument(
        "--level",
        choices=LEVELS,
        default=DEFAULT_LEVEL,
        help="one embedding row per chunk, or per token of each chunk (special tokens "
        "dropped; a document's SAE code is then the max over its tokens)",
    )


def _add_embed(sub: Any) -> None:
    p = _subcommand(sub, "embed", "embed documents (chunked, cached) into an .npz file")
    _common(p, model=False, table=False)
    p.add_argument("--out", required=True, help="output .npz (vectors, doc_index)")
    _embed_args(p)
    p.set_defaults(func=cmd_embed)


def _add_train(sub: Any) -> None:
    """``text train``: its SAE and training defaults are the API's (``TextSAE.fit``)."""
    p = _subcommand(sub, "train", "train an SAE on a corpus's chunk embeddings and label it")
    _common(p, model=False, table=False)
    p.add_argument("--out", required=True, help="model directory to write")
    p.add_argument(
        "--force",
        action="store_true",
        help="write the model into --out even if it is a non-empty directory that is not "
        "a steercf model (its files are kept)",
    )
    p.add_argument(
        "--embeddings",
        default=None,
        help="precomputed .npz from 'text embed' (default: embed the input)",
    )
    expansion = config_default(SAEConfig, DEFAULT_SAE, "expansion")
    p.add_argument(
        "--width",
        type=int,
        default=config_default(SAEConfig, DEFAULT_SAE, "width"),
        help=f"number of latents (default: {expansion} x the embedding's dimension)",
    )
    p.add_argument(
        "--k",
        type=int,
        default=config_default(SAEConfig, DEFAULT_SAE, "k"),
        help="active latents per chunk",
    )
    p.add_argument(
        "--max-epochs",
        type=int,
        default=config_default(TrainConfig, DEFAULT_TRAIN, "max_epochs"),
        help="upper bound on training epochs (early stopping may end sooner)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=config_default(TrainConfig, DEFAULT_TRAIN, "seed"),
        help="seeds initialisation, validation split, shuffling and the row sample",
    )
    p.add_argument(
        "--max-train-rows",
        type=int,
        default=DEFAULT_MAX_TRAIN_ROWS,
        help="train the SAE on a seeded sample of at most this many embedding rows "
        "(token level has ~250 per document); every row is encoded afterwards",
    )
    _embed_args(p)
    p.set_defaults(func=cmd_train)


def _add_diff(sub: Any) -> None:
    p = _subcommand(
        sub,
        "diff",
        "latents that tell corpus A from corpus B, ranked by a one-sided test (p_value, "
        "Benjamini-Hochberg q_value over every latent tested, both sides with --direction "
        "both): by default whether a latent's strongest documents come from A "
        "(strongest_a: their share from A; A's share of all documents means no "
        "difference), or --test frequency whether it fires on more of A's documents "
        "(effect sizes either way: diff = freq_a - freq_b, rel_diff = diff / "
        "max(freq_a, freq_b), Cohen's h)",
    )
    _common(p, inputs=2)
    p.add_argument(
        "--test",
        choices=TESTS,
        default=DEFAULT_TEST,
        help="strongest: are the latent's --n-strongest strongest documents of "
        "A and B mostly A's? Finds a property that is a small share of A, but its p-values "
        "rank rather than prove (10 documents are little evidence); frequency: does it "
        "fire on more of A's documents? (the toolkit's test; use it for a significance "
        "call on a common difference)",
    )
    p.add_argument(
        "--n-strongest",
        type=int,
        default=DEFAULT_N_STRONGEST,
        help="documents per latent the strongest test counts (fewer when the latent "
        "fires on fewer)",
    )
    p.add_argument(
        "--fdr",
        type=float,
        default=DEFAULT_FDR,
        help="keep only latents whose Benjamini-Hochberg q-value is at most this, e.g. "
        "0.05; leave it out to keep every latent, ranked by p-value",
    )
    p.add_argument(
        "--min-diff", type=float, default=DEFAULT_MIN_DIFF, help="minimum frequency difference"
    )
    p.add_argument(
        "--direction",
        choices=("a", "b", "both"),
        default="both",
        help="a: A's side, b: B's side, both: either (the correction then counts both "
        "sides' tests, so q-values are larger than with a or b)",
    )
    p.add_argument("--top", type=int, default=20, help="rows shown (and written by --csv)")
    p.set_defaults(func=cmd_diff)


def _add_correlate(sub: Any) -> None:
    p = _subcommand(
        sub,
        "correlate",
        "co-occurring latents (NPMI) whose labels are unrelated: they share no (stemmed) "
        "word and their centroids' cosine is below 0.5",
    )
    _common(p)
    p.add_argument(
        "--min-count", type=int, default=5, help="minimum documents per latent and per pair"
    )
    p.add_argument("--top", type=int, default=20, help="pairs shown")
    p.add_argument("--all-pairs", action="store_true", help="keep pairs with related labels")
    p.add_argument(
        "--firing-share",
        type=float,
        default=FIRING_SHARE,
        help="a latent is on in a document from this share of its 90th-percentile non-zero "
        "document activation on the training corpus (TextSAE.p90; 0: any activation, the "
        "toolkit's rule)",
    )
    p.set_defaults(func=cmd_correlate)


def _add_cluster(sub: Any) -> None:
    p = _subcommand(
        sub,
        "cluster",
        "cluster documents on latents along an axis; each cluster is described by the "
        "latents whose firing frequency inside it most exceeds that outside (column "
        "in_minus_out: the difference of the two frequencies)",
    )
    _common(p, ids=True)
    p.add_argument(
        "--n-clusters",
        type=int,
        default=None,
        help=f"number of clusters (default: the count in 2..{MAX_AUTO_CLUSTERS} with the best "
        "silhouette, printed with the others' scores)",
    )
    p.add_argument(
        "--query",
        action="append",
        default=[],
        help="axis query (repeatable): cluster on the latents closest to it only",
    )
    p.add_argument(
        "--anchor",
        action="append",
        default=[],
        help="anchor query (repeatable, at least 2): one cluster per anchor, k-means on "
        f"the documents' embeddings started from its top {ANCHOR_DOCS} documents by "
        "property retrieval; every "
        "document goes to some anchor's cluster, so name every group you expect (with "
        "--query too, the clusters read the axis latents only: on BBC News that lowered "
        "the agreement with the categories)",
    )
    p.add_argument(
        "--method", choices=QUERY_METHODS, default="semantic", help="how queries pick latents"
    )
    p.add_argument("--axis-latents", type=int, default=64, help="latents per axis query")
    p.add_argument(
        "--representation",
        choices=REPRESENTATIONS,
        default=None,
        help="what k-means reads: embedding (default without --query): the documents' "
        "embeddings; decoded (default with --query): the axis latents' decoded vectors; "
        "tfidf: TF-IDF-weighted activations; jaccard: spectral clustering on active "
        "latent sets",
    )
    p.add_argument("--seed", type=int, default=0, help="clustering random state")
    p.add_argument("--assignments", default=None, help="write document -> cluster CSV here")
    p.set_defaults(func=cmd_cluster)


def _add_search(sub: Any) -> None:
    p = _subcommand(sub, "search", "property retrieval, dense retrieval or steered search")
    _common(p, ids=True)
    p.add_argument("--query", required=True, help="what to search for")
    p.add_argument(
        "--mode", choices=("property", "dense", "steer"), default="property", help="search kind"
    )
    p.add_argument(
        "--method", choices=QUERY_METHODS, default="semantic", help="how the query picks latents"
    )
    p.add_argument(
        "--strengthen",
        action="append",
        default=[],
        help="LATENT[=FACTOR], steer mode (factor <= 1e6)",
    )
    p.add_argument("--weaken", action="append", default=[], help="LATENT[=FACTOR], steer mode")
    p.add_argument(
        "--add", action="append", default=[], help="LATENT[=VALUE], steer mode (0 <= value <= 1e6)"
    )
    p.add_argument(
        "--score",
        choices=("share", "sum"),
        default=None,
        help="property mode only (default share): the query latents' share of each "
        "document's code (0-1) or their weighted sum",
    )
    p.add_argument("--top", type=int, default=10, help="documents shown")
    p.set_defaults(func=cmd_search)


def _add_families(sub: Any) -> None:
    p = _subcommand(sub, "families", "parent -> children feature families")
    _common(p)
    p.add_argument("--min-count", type=int, default=5, help="minimum documents per latent")
    p.add_argument(
        "--min-cooccurrence",
        type=float,
        default=0.2,
        help="normalised co-occurrence below this is no edge",
    )
    p.add_argument("--top", type=int, default=20, help="families shown")
    p.set_defaults(func=cmd_families)


def add_text_commands(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``text`` with its sub-commands on ``subparsers`` (from
    ``parser.add_subparsers``). Returns the ``text`` parser."""
    text = _subcommand(subparsers, "text", "SAE embeddings of documents: analysis and search")
    sub = text.add_subparsers(dest="text_command", required=True)
    for add in (
        _add_embed,
        _add_train,
        _add_diff,
        _add_correlate,
        _add_cluster,
        _add_search,
        _add_families,
    ):
        add(sub)
    return text


# ------------------------------------------------------------------- helpers
def _texts(path: str, column: str, encoding: str) -> tuple[pd.DataFrame, list[str]]:
    from steercf.text.embed import read_table, texts_from_frame

    frame = read_table(path, encoding=encoding, text_columns=(column,))
    return frame, texts_from_frame(frame, column, source=str(path))


def _new_embedder(args: argparse.Namespace) -> Any:
    from steercf.text.embed import Embedder

    kwargs: dict[str, Any] = {
        "batch_size": args.batch_size,
        "progress": not args.quiet,
        "level": args.level,
    }
    for name in ("chunk_words", "overlap", "max_chunks"):
        if getattr(args, name) is not None:
            kwargs[name] = getattr(args, name)
    if args.cache_dir:
        kwargs["cache_dir"] = args.cache_dir  # the root, as $STEERCF_CACHE
    return Embedder(args.model, **kwargs)


class _Corpus(NamedTuple):
    """An input embedded and encoded by a saved model; ``ids`` (n_docs,): the input's id
    column (``--id-column``), None when it has none (documents are then positions)."""

    model: Any
    embedder: Any
    embeddings: Any
    texts: list[str]
    codes: Any
    ids: np.ndarray | None


def _model_and_codes(args: argparse.Namespace, path: str) -> _Corpus:
    from steercf.text.documents import doc_ids
    from steercf.text.model import TextSAE

    model = TextSAE.load(args.model_dir)
    kwargs: dict[str, Any] = {"progress": not args.quiet}
    if args.cache_dir:
        kwargs["cache_dir"] = args.cache_dir
    embedder = model.embedder(**kwargs)
    frame, texts = _texts(path, args.text_column, args.encoding)
    # only commands whose results name documents read ids (and check them)
    ids = doc_ids(frame, args.id_column, source=str(path)) if "id_column" in args else None
    embeddings = embedder.embed(texts)
    return _Corpus(model, embedder, embeddings, texts, model.doc_codes(embeddings), ids)


def _show(frame: pd.DataFrame, args: argparse.Namespace, scientific: tuple[str, ...] = ()) -> None:
    """Print ``frame`` as a table (one line per row, long cells cut; see
    :func:`steercf.reporting.format_table`; ``scientific`` columns as ``1.2e-07``, since
    p-values round to 0 at four decimals) and write it whole to ``--csv``."""
    if args.csv:
        Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
        written = frame.copy()
        for column in written.columns:
            if written[column].map(lambda v: isinstance(v, (list, tuple))).any():
                # readable lists: "a, b | c" rather than Python's "['a, b', 'c']"
                written[column] = written[column].map(
                    lambda v: (
                        LIST_SEPARATOR.join(map(str, v)) if isinstance(v, (list, tuple)) else v
                    )
                )
        written.to_csv(args.csv, index=False)
    shown = frame.copy()
    for column in scientific:
        if column in shown.columns:
            shown[column] = shown[column].map(lambda v: f"{v:.1e}")
    print(format_table(shown.to_dict("records"), max_width=CELL_WIDTH))


def _pairs(specs: list[str], default: float | None) -> dict[int, float] | list[int]:
    """``["12=1.5", "40"]`` -> ``{12: 1.5, 40: default}``. Without a default (``--add``,
    whose bare latents take each latent's own p90) the specs are all bare (-> a list) or
    all valued (-> a dict); a mix is refused, as is a latent given twice."""
    out: dict[int, float] = {}
    bare: list[int] = []
    for spec in specs:
        key, _, value = spec.partition("=")
        try:
            latent = int(key)
            number = float(value) if value else None
        except ValueError as err:
            raise InputError(f"expected LATENT or LATENT=NUMBER, got {spec!r}") from err
        if latent in out or latent in bare:
            raise InputError(f"latent {latent} is given twice")
        if number is None:
            bare.append(latent)
        else:
            out[latent] = number
    if default is None:
        if out and bare:
            raise InputError("give every latent a value (LATENT=VALUE) or none of them")
        return out or bare
    out.update({latent: default for latent in bare})
    return out


# ------------------------------------------------------------------ commands
def cmd_embed(args: argparse.Namespace) -> None:
    _, texts = _texts(args.input, args.text_column, args.encoding)
    embedder = _new_embedder(args)
    embeddings = embedder.embed(texts)
    embeddings.save(args.out)
    print(
        f"embedded {embeddings.n_docs} documents as {embeddings.vectors.shape[0]} "
        f"{embeddings.level}s ({embedder.model_calls} chunks new, the rest cached) -> {args.out}"
    )


def cmd_train(args: argparse.Namespace) -> None:
    check_model_path(args.out, force=args.force)  # before embedding and training
    from steercf.sae import sae_metrics
    from steercf.text.embed import Embeddings
    from steercf.text.labels import label_latents
    from steercf.text.model import TextSAE

    _, texts = _texts(args.input, args.text_column, args.encoding)
    embedder = _new_embedder(args)
    if args.embeddings:
        embeddings = Embeddings.load(args.embeddings)
        if embeddings.n_docs != len(texts):
            raise InputError(
                f"{args.embeddings} holds {embeddings.n_docs} documents, {args.input} has {len(texts)}"
            )
    else:
        embeddings = embedder.embed(texts)
    sae = {**DEFAULT_SAE, "k": args.k}
    if args.width is not None:
        sae["width"] = args.width
    train = {"max_epochs": args.max_epochs, "seed": args.seed, "progress": not args.quiet}
    model = TextSAE.fit(
        embeddings, sae, train, embedder=embedder, max_train_rows=args.max_train_rows
    )
    codes = model.doc_codes(embeddings)
    labels = label_latents(texts, codes)
    model.set_labels(labels["label"].tolist(), labels["terms"].tolist())
    # token rows run to hundreds of thousands: measure on an even sample of them
    step = max(1, len(embeddings.vectors) // max(args.max_train_rows or 0, 65_536))
    metrics = sae_metrics(model.sae, embeddings.vectors[::step])
    model.metadata["metrics"] = metrics  # every row (or an even sample), training ones too
    model.save(args.out, force=args.force)
    print(
        f"trained {model.n_latents} latents (k={model.sae.config.k}) on {embeddings.n_docs} "
        f"documents / {embeddings.vectors.shape[0]} {embeddings.level}s -> {args.out}"
    )
    print(train_quality(model.metadata.get("validation"), metrics, model.metadata))
    if embeddings.n_docs < model.n_latents:
        # few documents per latent: diffs and correlations count too few to test
        print(
            f"note: fewer documents ({embeddings.n_docs}) than latents ({model.n_latents}): "
            "each latent fires on few documents, so diff and correlate have little "
            "evidence; consider a --width well below the number of documents, or more "
            "documents",
            file=sys.stderr,
        )


def train_quality(
    validation: dict[str, float] | None, metrics: dict[str, float], metadata: dict[str, Any]
) -> str:
    """The quality line of ``text train``: reconstruction on the rows held out of
    training (what a new corpus would see), or, when none were held out, on the training
    rows, said so; dead latents over every row (or an even sample of them)."""
    dead = f"dead latents {metrics['dead_fraction']:.1%} (over every chunk)"
    if validation is None:
        return (
            f"training-set quality (no chunks held out): cosine {metrics['cosine']:.3f}, "
            f"nmse {metrics['nmse']:.3f}; {dead}"
        )
    share = metadata.get("train_config", {}).get("val_fraction")
    held = f"{share:.0%} of the chunks, " if share else ""
    return (
        f"held-out quality ({held}not trained on): cosine {validation['cosine']:.3f}, "
        f"nmse {validation['nmse']:.3f}, active latents per chunk {validation['l0']:.1f}; "
        f"{dead}"
    )


def cmd_diff(args: argparse.Namespace) -> None:
    from steercf.text.analysis import diff_datasets

    first = _model_and_codes(args, args.input_a)
    model, codes_a = first.model, first.codes
    codes_b = _model_and_codes(args, args.input_b).codes
    frame = diff_datasets(
        codes_a,
        codes_b,
        model.labels,
        fdr=args.fdr,
        min_diff=args.min_diff,
        direction=args.direction,
        top=args.top,
        test=args.test,
        n_strongest=args.n_strongest,
    )
    if frame.empty:
        print("no latent differs" + (f" at q <= {args.fdr}" if args.fdr is not None else ""))
    elif (frame["q_value"] > 0.05).all():
        print(
            "no latent below differs significantly (every q-value > 0.05)"
            + (
                f": {args.n_strongest} documents per latent are little evidence; "
                "read the ranking; --test frequency can reach significance when a "
                "latent fires on many more of A's documents"
                if args.test == "strongest"
                else ""
            )
        )
    _show(frame, args, scientific=("p_value", "q_value"))
    _sparse_model_advice(
        model,
        "finds a difference that is a small share of A more often on corpora of ~2,000 "
        "documents (on a 400-document sample it did not)",
    )


def _sparse_model_advice(model: Any, gain: str) -> None:
    """On stderr (advice, not progress: ``--quiet`` keeps it), when ``model`` is denser
    than the sparse model (:data:`SPARSE_K`) that diffing and property search prefer;
    ``gain`` completes "a model trained with --k 4 ..." with what it measured."""
    if model.sae.config.k > SPARSE_K:
        print(
            f"note: this model has k={model.sae.config.k} active latents per chunk; a model "
            f"trained with --k {SPARSE_K} {gain} (README, 'Text')",
            file=sys.stderr,
        )


def cmd_correlate(args: argparse.Namespace) -> None:
    from steercf.text.analysis import latent_correlations

    corpus = _model_and_codes(args, args.input)
    model, codes = corpus.model, corpus.codes
    frame = latent_correlations(
        codes,
        min_count=args.min_count,
        top=args.top,
        unrelated=not args.all_pairs,
        floor=model.firing_floor(args.firing_share),
        model=model,
    )
    _show(frame, args)


def cmd_cluster(args: argparse.Namespace) -> None:
    from steercf.text.analysis import query_anchors, query_latents, targeted_clustering

    # flag checks before the corpus is embedded (the library repeats them in its terms)
    if args.axis_latents < 1:
        raise InputError(f"--axis-latents must be at least 1, got {args.axis_latents}")
    if args.query and args.representation == "embedding":
        raise InputError(
            "--representation embedding cannot be combined with --query: an axis selects "
            "latents, so it clusters their decoded codes (--representation decoded)"
        )
    if args.anchor and args.n_clusters is not None and args.n_clusters != len(args.anchor):
        raise InputError(
            f"--n-clusters {args.n_clusters} but {len(args.anchor)} --anchor queries: "
            "anchored clustering makes one cluster per anchor"
        )
    corpus = _model_and_codes(args, args.input)
    model, embedder, codes = corpus.model, corpus.embedder, corpus.codes
    latents = None
    if args.query:
        latents = query_latents(model, args.query, embedder, args.method, top=args.axis_latents)
    anchors = None
    if args.anchor:
        anchors = query_anchors(model, codes, args.anchor, embedder, method=args.method)
    result = targeted_clustering(
        codes,
        args.n_clusters,
        latents,
        model.labels,
        seed=args.seed,
        representation=args.representation,
        directions=model.directions,
        anchors=anchors,
        vectors=corpus.embeddings.doc_vectors(),
    )
    if args.anchor:  # cluster c is anchor c's
        result.summary.insert(1, "anchor", [args.anchor[c] for c in result.summary["cluster"]])
        lost = result.summary.loc[result.summary["anchor_kept"] < 0.5, "anchor"].tolist()
        if lost:  # advice, not progress: --quiet keeps it
            print(
                f"note: the clusters of {', '.join(map(repr, lost))} kept under half of "
                "their anchor's documents: either the anchor query found documents of "
                "another group (one-word queries often do: describe the group, e.g. "
                "'entertainment: films, music and celebrities', and check what it finds "
                "with text search --mode property), or the cluster is no longer what "
                "the anchor names (every document goes to some anchor's cluster: name "
                "every group you expect, and anchor without --query)",
                file=sys.stderr,
            )
    if args.assignments:
        members = pd.DataFrame({"doc": np.arange(len(codes)), "cluster": result.assignments})
        if args.anchor:
            members["anchor"] = [args.anchor[c] for c in result.assignments]
        with_doc_ids(members, corpus.ids).to_csv(args.assignments, index=False)
    if result.silhouettes:
        scores = ", ".join(f"{k}: {v:.3f}" for k, v in result.silhouettes.items())
        print(
            f"{len(result.summary)} clusters, the best silhouette of 2..{MAX_AUTO_CLUSTERS} ({scores})"
        )
        scores_by_count = result.silhouettes
        if max(scores_by_count, key=scores_by_count.get) == max(scores_by_count):  # advice
            print(
                "note: the best silhouette is at the largest count tried: these documents "
                "show no clear number of clusters; give --n-clusters",
                file=sys.stderr,
            )
    if len(result.latents):
        print(f"clustered on {len(result.latents)} latents")
    else:
        print("clustered on the documents' embeddings; the latents describe the clusters")
    _show(result.summary, args)


def _steer_edits(args: argparse.Namespace) -> dict[str, Any] | None:
    """The query edits of ``--strengthen`` / ``--weaken`` / ``--add`` (None outside steer
    mode). Checked before anything is loaded: steer mode without an edit would print the
    same list twice, and edits in another mode would be ignored.

    Raises:
        InputError: steer mode without an edit, or edits in another mode.
    """
    given = [flag for flag in ("strengthen", "weaken", "add") if getattr(args, flag)]
    if args.mode != "steer":
        if given:
            flags = ", ".join(f"--{flag}" for flag in given)
            raise InputError(f"{flags} edit the query in --mode steer only (not {args.mode})")
        return None
    if not given:
        raise InputError(
            "--mode steer needs an edit of the query: --strengthen LATENT[=FACTOR], "
            "--weaken LATENT[=FACTOR] or --add LATENT[=VALUE] (--mode property's latents "
            "column names latents the query uses); without one the lists before and after "
            "steering are the same"
        )
    return {
        "strengthen": _pairs(args.strengthen, 2.0) or None,
        "weaken": _pairs(args.weaken, 0.0) or None,
        "add": _pairs(args.add, None) or None,
    }


def _before_after(before: pd.DataFrame, after: pd.DataFrame, texts: list[str]) -> pd.DataFrame:
    """Print the unsteered ranking ``before`` and the heading of the steered one, as the
    recommender's ``steer`` shows its lists: the returned ``after`` gains a column ``was``
    (a document's rank before steering, "+" when it entered the top), and the documents
    that left the top are named."""
    was = {doc: str(rank) for doc, rank in zip(before["doc"], before["rank"], strict=True)}
    new = set(after["doc"].tolist())
    name = "id" if "id" in before.columns else "doc"  # what the tables identify them by
    left = [str(n) for d, n in zip(before["doc"], before[name], strict=True) if d not in new]
    print("before steering:")
    shown = before.assign(text=[texts[i] for i in before["doc"]])
    print(format_table(shown.to_dict("records"), max_width=CELL_WIDTH))
    print()
    print(
        f"after steering (was: the rank before, + entered the top {len(after)}; left it: "
        f"{', '.join(map(str, left)) or 'nothing'}):"
    )
    return after.assign(was=[was.get(d, "+") for d in after["doc"]])


def cmd_search(args: argparse.Namespace) -> None:
    from steercf.text.analysis import dense_retrieval, property_retrieval, query_latents
    from steercf.text.search import SteerableSearch

    edits = _steer_edits(args)  # before the model loads: a missing edit fails at once
    if args.score is not None and args.mode != "property":
        raise InputError(f"--score ranks --mode property only (not {args.mode})")
    model, embedder, embeddings, texts, codes, ids = _model_and_codes(args, args.input)
    if args.mode == "property":
        weights = query_latents(model, args.query, embedder, args.method)
        strongest = sorted(weights.items(), key=lambda kv: -kv[1])[:QUERY_LATENTS_SHOWN]
        shown = min(len(weights), QUERY_LATENTS_SHOWN)
        print(
            f"query latents: the {shown} strongest of {len(weights)} (weight: "
            f"{WEIGHT_MEANINGS[args.method]})"
        )
        rows = [{"latent": j, "weight": w, "label": model.labels[j]} for j, w in strongest]
        print(format_table(rows))
        score = args.score or "share"
        print(f"\nscore: {SCORE_MEANINGS[score]}")
        frame = property_retrieval(
            codes, weights, model.p90, args.top, model.labels, share=score == "share"
        )
        _sparse_model_advice(
            model,
            "found narrow properties better (arXiv categories: precision@50 0.330 "
            "against 0.299 at k 32; broad ones alike)",
        )
    elif args.mode == "dense":
        frame = dense_retrieval(embedder.embed_query(args.query), embeddings, args.top)
    else:
        search = SteerableSearch(model, embeddings, embedder)
        print("query latents:")
        print(format_table(search.query_latents(args.query).head(16).to_dict("records")))
        print()
        before = search.search(args.query, top=args.top)
        after = search.search(args.query, **edits, top=args.top)
        frame = _before_after(with_doc_ids(before, ids), with_doc_ids(after, ids), texts)
    frame = with_doc_ids(frame, ids)  # an input's own ids beside the positions
    frame["text"] = [texts[i] for i in frame["doc"]]  # whole in the CSV, cut in the table
    _show(frame, args)


def cmd_families(args: argparse.Namespace) -> None:
    from steercf.text.families import feature_families

    corpus = _model_and_codes(args, args.input)
    model, codes = corpus.model, corpus.codes
    frame = feature_families(codes, model.labels, args.min_count, args.min_cooccurrence)
    _show(frame.head(args.top), args)
