"""Recommenders sharing one interface (see :mod:`steercf.models.base`)."""

from steercf.models.base import CFAE, Recommender, load_model
from steercf.models.ease import EASE
from steercf.models.elsa import ELSA
from steercf.models.multvae import MultVAE
from steercf.models.popularity import Popularity
from steercf.models.spliced import SparseCode, SparseEncoding, SplicedRecommender
from steercf.models.subspace import PrincipalSubspace
from steercf.models.tagspace import TagSpaceAutoencoder

MODEL_KINDS: dict[str, type[Recommender]] = {
    m.kind: m
    for m in (
        ELSA,
        EASE,
        MultVAE,
        Popularity,
        PrincipalSubspace,
        SplicedRecommender,
        TagSpaceAutoencoder,
    )
}

__all__ = [
    "CFAE",
    "EASE",
    "ELSA",
    "MODEL_KINDS",
    "MultVAE",
    "Popularity",
    "PrincipalSubspace",
    "Recommender",
    "SparseCode",
    "SparseEncoding",
    "SplicedRecommender",
    "TagSpaceAutoencoder",
    "load_model",
]
