"""Direction is never wrong (issue 16): with the shared steering defaults, steering a
user toward a concept never lowers, and away from it never raises, the concept's share
of the top 20 on average over validation users, for every concept of every source and
every strength on the scale."""

from __future__ import annotations

from pathlib import Path

import pytest

from steercf.concepts import concept_tags
from steercf.data import load_dataset
from steercf.evaluation import split_users
from steercf.experiment import splice_base
from steercf.models.spliced import SplicedRecommender, default_train_config
from steercf.ranking import top_n
from steercf.steering import (
    DEFAULT_MAPPING,
    DEFAULT_RULE,
    DEFAULT_TOP_LATENTS,
    STRENGTH_SCALE,
    ConceptKnobs,
    steer_encoding,
)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("dataset", "sources"), [("ml-100k", ["genres"]), ("ml-latest-small", ["genres", "tags"])]
)
def test_steering_direction_is_never_wrong(shared_data: Path, dataset: str, sources: list[str]):
    data = load_dataset(dataset, data_dir=shared_data)
    split = split_users(data.matrix, seed=0)
    model = SplicedRecommender(
        splice_base(dataset), train_config=default_train_config(progress=False), progress=False
    ).fit(split.train, split.val_full)
    rows = split.val_input
    encoding = model.encode(rows)
    before, _ = top_n(model.decode(encoding), rows, 20)
    wrong = []
    for source in sources:
        tags = concept_tags(data, source, split.train_users)
        knobs = ConceptKnobs.from_tags(model, tags, DEFAULT_MAPPING, DEFAULT_TOP_LATENTS)
        carries = (tags.matrix > 0).T.tocsr()
        for concept, name in enumerate(tags.names):
            marks = carries[concept].toarray().ravel()
            share = marks[before].mean()
            for strength in STRENGTH_SCALE[DEFAULT_RULE]:
                for sign in (1, -1):
                    knob = knobs.knob(concept, sign * strength)
                    steered = steer_encoding(encoding, [knob], DEFAULT_RULE)
                    after, _ = top_n(model.decode(steered), rows, 20)
                    moved = marks[after].mean() - share
                    if sign * moved < 0:
                        wrong.append((source, str(name), sign * strength, share, share + moved))
    assert not wrong, f"{len(wrong)} steps went the wrong way, e.g. {wrong[:5]}"
