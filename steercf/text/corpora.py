"""Loaders of the two offline evaluation corpora (BBC News, an arXiv sample)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from steercf.data.files import read_table
from steercf.errors import InputError


def load_bbc(data_dir: str | os.PathLike) -> pd.DataFrame:
    """BBC News (2,225 articles, 5 classes): columns ``id, category, title, text, doc``;
    ``doc`` = title + ". " + body, the string that is embedded."""
    path = Path(data_dir) / "bbc-news" / "bbc-news.csv.gz"
    if not path.is_file():
        raise InputError(f"BBC News not found at {path}")
    frame = read_table(path, text_columns=("category", "title", "text"))
    frame["doc"] = frame["title"].str.strip() + ". " + frame["text"].str.strip()
    return frame


def load_arxiv(data_dir: str | os.PathLike) -> pd.DataFrame:
    """arXiv April 2007 sample (2,000 papers): columns ``id, title, categories, archive,
    abstract, update_date, doc``; ``doc`` = title + ". " + abstract."""
    path = Path(data_dir) / "arxiv-sample" / "arxiv-2007-04.csv.gz"
    if not path.is_file():
        raise InputError(f"arXiv sample not found at {path}")
    frame = read_table(path, text_columns=("title", "categories", "archive", "abstract"))
    frame["doc"] = (
        frame["title"].str.split().str.join(" ")
        + ". "
        + frame["abstract"].str.split().str.join(" ")
    )
    return frame


def bbc_sample(
    data_dir: str | os.PathLike, per_class: int = 60, words: int = 120, seed: int = 0
) -> pd.DataFrame:
    """A small stratified BBC sample with documents cut to ``words`` words (the tests'
    corpus: one chunk per document keeps the embedding cheap)."""
    frame = load_bbc(data_dir)
    rng = np.random.default_rng(seed)
    parts = [
        group.iloc[np.sort(rng.choice(len(group), min(per_class, len(group)), replace=False))]
        for _, group in frame.groupby("category", sort=True)
    ]
    sample = pd.concat(parts, ignore_index=True)
    sample["doc"] = sample["doc"].str.split().str[:words].str.join(" ")
    return sample
