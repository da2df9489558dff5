"""Interaction data sets: binarised user x item matrices with item metadata and tags."""

from steercf.data.download import (
    GROUPLENS_NAMES,
    GROUPLENS_URL,
    DownloadError,
    default_cache_dir,
    download_movielens,
)
from steercf.data.interactions import InteractionData, from_dataframe
from steercf.data.movielens import load_dataset, load_ml1m, load_ml100k, load_movielens_csv
from steercf.data.tags import ItemTags

__all__ = [
    "GROUPLENS_NAMES",
    "GROUPLENS_URL",
    "DownloadError",
    "InteractionData",
    "ItemTags",
    "default_cache_dir",
    "download_movielens",
    "from_dataframe",
    "load_dataset",
    "load_ml100k",
    "load_ml1m",
    "load_movielens_csv",
]
