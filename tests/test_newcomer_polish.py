"""Newcomer-review fixes (issues 16, 17, 19): what a person trying steercf from the README
and ``--help`` alone ran into. One section per case; tiny synthetic data throughout."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from steercf.data import InteractionData, ItemTags
from steercf.errors import InputError, UnknownIdError

# ---- shared synthetic data -----------------------------------------------------------------


def kg_data(n_items: int = 40, n_users: int = 60) -> InteractionData:
    """Items 0-11 directed by m.aaa, 12-23 by m.bbb, 24-35 star actor m.ccc; item ``i``
    is more popular than item ``i + 1``, so readable names are fixed."""
    # user u holds items 0..u % n_items: popularity falls with the item index
    dense = (np.arange(n_items)[None, :] <= np.arange(n_users)[:, None] % n_items).astype(
        np.float32
    )
    names = ["directed_by:m.aaa", "directed_by:m.bbb", "actor:m.ccc"]
    tags = np.zeros((n_items, 3), dtype=np.float32)
    tags[0:12, 0] = tags[12:24, 1] = tags[24:36, 2] = 1
    return InteractionData(
        matrix=sp.csr_matrix(dense),
        user_ids=np.arange(n_users),
        item_ids=np.arange(100, 100 + n_items),
        items=pd.DataFrame({"title": [f"Film {i}" for i in range(n_items)]}),
        tags={"kg": ItemTags(sp.csr_matrix(tags), np.array(names))},
        name="toy-kg",
    )


class FakeSpliced:
    """Just enough of a spliced model for the input-side mappings: item codes where
    latent ``j`` fires on the items of concept ``j``."""

    def __init__(self, data: InteractionData) -> None:
        tags = data.tags["kg"].matrix.toarray()
        self.n_items_ = data.n_items
        self._codes = torch.tensor(
            np.hstack([tags, np.ones((data.n_items, 1))]), dtype=torch.float32
        )

    def item_codes(self) -> torch.Tensor:
        return self._codes


# ---- 1. steering by a concept's readable name ----------------------------------------------


class TestReadableConceptNames:
    def knobs(self, specs: list[str]):
        from steercf.steering import parse_knobs

        # 200 items: each entity on 6 % of them, below the share named with its breadth
        data = kg_data(n_items=200)
        return parse_knobs(
            FakeSpliced(data), data, specs, source="kg", mapping="best_characterizes", top_latents=1
        )

    def test_the_readable_name_steers_like_the_id(self):
        (by_id,) = self.knobs(["+directed_by:m.bbb"])
        (by_name,) = self.knobs(["+director of Film 12, Film 13"])
        (by_start,) = self.knobs(["+Director of Film 12"])  # a unique beginning, any case
        # the knob says what the bare id means
        assert by_id.name == by_name.name == by_start.name
        assert by_id.name == "directed_by:m.bbb (director of Film 12, Film 13)"
        assert by_name.latents == by_id.latents == by_start.latents == (1,)

    def test_a_beginning_needs_a_few_letters(self):
        with pytest.raises(UnknownIdError):
            self.knobs(["+act"])  # the only "act..." concept, but 3 letters name nothing
        (by_start,) = self.knobs(["+acto"])
        assert by_start.name.startswith("actor:m.ccc (")

    def test_an_ambiguous_name_lists_the_concepts_it_fits(self):
        with pytest.raises(UnknownIdError, match="ambiguous") as err:
            self.knobs(["+director of"])
        assert "directed_by:m.aaa" in str(err.value) and "directed_by:m.bbb" in str(err.value)
        assert "actor:m.ccc" not in str(err.value)

    def test_an_unknown_name_lists_close_matches(self):
        with pytest.raises(UnknownIdError, match="close matches") as err:
            self.knobs(["+director of Flim 12, Film 13"])
        assert "director of Film 12, Film 13" in str(err.value)


# ---- 2. text search --mode steer without an edit -------------------------------------------


class TestSteerModeNeedsAnEdit:
    def run(self, tmp_path, capsys, *extra: str) -> tuple[int, str]:
        from steercf.cli import main

        corpus = tmp_path / "docs.csv"
        pd.DataFrame({"text": ["a b c", "d e f"]}).to_csv(corpus, index=False)
        # the model directory does not exist: the edits are checked before it is read
        code = main(["text", "search", str(tmp_path / "none"), str(corpus), "--query", "q", *extra])
        return code, capsys.readouterr().err

    def test_steer_mode_without_an_edit_is_refused_naming_the_flags(self, tmp_path, capsys):
        code, err = self.run(tmp_path, capsys, "--mode", "steer")
        assert code == 2 and err.count("\n") == 1 and err.startswith("steercf: error:")
        assert all(flag in err for flag in ("--strengthen", "--weaken", "--add"))

    def test_edits_outside_steer_mode_are_refused_not_ignored(self, tmp_path, capsys):
        code, err = self.run(tmp_path, capsys, "--mode", "dense", "--add", "3")
        assert code == 2 and "--add" in err and "--mode steer" in err


# ---- 3. shortened labels end in an ellipsis ------------------------------------------------


class TestShortenedLabelsEndInAnEllipsis:
    LONG = "Horror [7/10 top items, lift 6.2] | " + "; ".join(f"Title {i} (1990)" for i in range(9))

    def test_cli_label_text_is_cut_with_an_ellipsis(self):
        from steercf.cli.latents import _latent_text
        from steercf.concepts.labels import LatentLabel, LatentLabels

        labels = LatentLabels([LatentLabel(0, live=True, text=self.LONG)])
        shown = _latent_text(labels, 0, 40)
        assert len(shown) <= 40 and shown.endswith("…") and self.LONG.startswith(shown[:-1])
        assert _latent_text(labels, 0, 500) == self.LONG  # short enough: whole, no ellipsis

    def test_report_top_items_are_cut_with_an_ellipsis(self):
        from steercf.concepts import format_report, monosemanticity_report

        data = kg_data()
        acts = FakeSpliced(data).item_codes().numpy()
        report = monosemanticity_report(acts, data.tags["kg"], source="kg")
        titles = [f"A Very Long Title That Goes On And On, Part {i} (1999)" for i in range(40)]
        text = format_report(report, top=3, titles=titles)
        assert "A Very Long Title That Goes On…" in text and "(1999)" not in text


# ---- 4. train-sae says what it builds; train --for-splice ---------------------------------


class TestSpliceSize:
    @pytest.fixture(autouse=True)
    def measured(self, monkeypatch):
        """The plan's estimate, fixed: 12 s per epoch (measuring it is tested below)."""
        import steercf.cli.latents as latents

        seen = {}

        def estimate(config, train_config, n_rows):
            seen.update(latents=config.n_latents, rows=n_rows)
            return 12.0

        monkeypatch.setattr(latents, "epoch_seconds_estimate", estimate)
        return seen

    def plan(self, factors: int, dataset: str = "ml-100k", **flags):
        from types import SimpleNamespace

        from steercf.cli.latents import SAE_FLAGS, sae_plan
        from steercf.models.spliced import SAE_DEFAULTS
        from steercf.sae import TrainConfig

        given = {name: None for name in SAE_FLAGS} | SAE_DEFAULTS | flags
        run = SimpleNamespace(
            split=SimpleNamespace(train_users=np.arange(50)), data=SimpleNamespace(name=dataset)
        )
        tc = TrainConfig(batch_size=16, max_epochs=10)
        return sae_plan(SimpleNamespace(d_=factors), given, tc, run, augment=1)

    def test_train_sae_announces_latents_k_base_width_and_an_estimate(self, measured):
        text = self.plan(1024)
        assert "8,192 latents" in text and "k=32" in text and "1024 factors" in text
        assert measured == {"latents": 8192, "rows": 100}  # the SAE it will build
        assert "100 training rows" in text and "about 12.0 s per epoch" in text
        assert "at most 10 epochs (2.0 min" in text
        assert "steercf train --for-splice" in text  # the way to the demo's size

    def test_the_estimate_is_a_measured_epoch(self):
        from steercf.sae import SAEConfig, TrainConfig
        from steercf.sae.trainer import epoch_seconds_estimate

        config = SAEConfig(d_in=8, expansion=2, k=2)
        seconds = epoch_seconds_estimate(config, TrainConfig(batch_size=4), n_rows=10)
        assert 0 < seconds < 5
        with pytest.raises(InputError):
            epoch_seconds_estimate(config, TrainConfig(), n_rows=0)

    def test_a_splice_sized_base_or_a_width_needs_no_hint(self):
        assert "1,024 latents" in self.plan(128) and "--for-splice" not in self.plan(128)
        text = self.plan(1024, width=512)
        assert "512 latents (width 512)" in text and "--for-splice" not in text
        # ml-latest-small's splice base keeps 256 directions: no hint at 256, one above
        assert "--for-splice" not in self.plan(256, dataset="ml-latest-small")
        assert "kept to its 256 principal" in self.plan(512, dataset="ml-latest-small")

    def test_train_for_splice_trains_the_demos_base(self, capsys, tmp_path):
        from steercf.cli import build_parser, main
        from steercf.cli.models import train_params
        from steercf.experiment import SPLICE_RANK, splice_base
        from steercf.models import PrincipalSubspace, load_model

        parser = build_parser()
        args = parser.parse_args(["train", "--out", "o", "--for-splice"])
        params = train_params(args, "ml-100k", "cpu")
        demo_base = splice_base("ml-100k")
        assert params["factors"] == demo_base.base.factors == 1024  # the preset itself
        assert demo_base.rank == SPLICE_RANK
        plain = train_params(parser.parse_args(["train", "--out", "o"]), "ml-100k", "cpu")
        assert plain["factors"] == 1024  # the validated default is unchanged
        for command in ("train", "train-sae"):
            with pytest.raises(SystemExit):
                parser.parse_args([command, "--help"])
            assert "--for-splice" in capsys.readouterr().out
        # the saved base is the preset kept to its principal score directions
        out = tmp_path / "base"
        main(["train", "--for-splice", "--out", str(out), "--param", "epochs=1", "--quiet"])
        saved = load_model(out)
        assert isinstance(saved, PrincipalSubspace) and saved.d_ == SPLICE_RANK
        assert saved.base_kind == "ELSA" and saved.base_params["factors"] == 1024
        assert "principal score directions" in capsys.readouterr().out
        # ml-latest-small's splice base is its best plain model, EASE: --for-splice
        # trains it without --model, and refuses another kind
        small = parser.parse_args(["train", "--out", "o", "--for-splice"])
        assert train_params(small, "ml-latest-small", "cpu")["l2"] == 100.0
        assert small.model == "ease"
        with pytest.raises(InputError, match="splice base, ease: drop --model"):
            train_params(
                parser.parse_args(["train", "--out", "o", "--for-splice", "--model", "elsa"]),
                "ml-latest-small",
                "cpu",
            )


# ---- 5. text train reports held-out quality ------------------------------------------------


class TestTextTrainQuality:
    def fit(self, **train):
        from steercf.text.model import TextSAE

        vectors = np.random.default_rng(0).normal(size=(300, 16)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        model = TextSAE.fit(vectors, {"k": 4}, {"max_epochs": 3, "seed": 1, **train})
        return model, vectors

    def test_the_quality_is_measured_on_chunks_held_out_of_training(self):
        from steercf.sae import sae_metrics
        from steercf.text.cli import train_quality

        model, vectors = self.fit()
        # the held-out rows: train_sae's seeded split (val_fraction of the chunks)
        perm = torch.randperm(300, generator=torch.Generator().manual_seed(1))
        held_out = sae_metrics(model.sae, vectors[perm[:30].numpy()])
        validation = model.metadata["validation"]
        assert validation["cosine"] == pytest.approx(held_out["cosine"], abs=1e-5)
        everything = sae_metrics(model.sae, vectors)
        line = train_quality(validation, everything, model.metadata)
        assert line.startswith("held-out quality (10% of the chunks")
        assert f"cosine {held_out['cosine']:.3f}" in line

    def test_without_held_out_chunks_it_says_training_set(self):
        from steercf.sae import sae_metrics
        from steercf.text.cli import train_quality

        model, vectors = self.fit(val_fraction=0.0)
        assert model.metadata["validation"] is None
        line = train_quality(None, sae_metrics(model.sae, vectors), model.metadata)
        assert line.startswith("training-set quality (no chunks held out)")


# ---- 6. help: no "default: None" on required options, no flag that does not exist -----------


def _parsers():
    """``(command words, parser)`` of every steercf command, nested ones included."""
    import argparse

    from steercf.cli import build_parser

    def walk(parser, words):
        yield words, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(sub, (*words, name))

    return dict(walk(build_parser(), ()))


FLAG = r"(?<![\w-])--[a-z][a-z0-9-]*"


class TestHelpTexts:
    def test_no_required_argument_shows_default_none(self):
        for words, parser in _parsers().items():
            formatter = parser._get_formatter()
            for action in parser._actions:
                if action.required or not action.option_strings:
                    shown = formatter._format_action(action)
                    assert "None" not in shown, (words, shown)

    def test_every_flag_a_help_names_exists(self):
        import re

        parsers = _parsers()
        for words, parser in parsers.items():
            texts = [parser.description or ""] + [a.help or "" for a in parser._actions]
            for text in texts:
                # "'steercf train --for-splice'": a flag of another command
                for command, flag in re.findall(rf"steercf ((?:text )?[a-z-]+) ({FLAG})", text):
                    other = parsers[tuple(command.split())]
                    assert flag in other._option_string_actions, (words, command, flag)
                own = re.sub(rf"steercf (?:text )?[a-z-]+ {FLAG}", "", text)
                for flag in re.findall(FLAG, own):
                    assert flag in parser._option_string_actions, (words, flag, text)

    def test_every_option_has_help_and_text_width_names_no_missing_flag(self, capsys):
        for words, parser in _parsers().items():
            for action in parser._actions:
                if action.option_strings:
                    assert action.help, (words, action.dest)
        width = _parsers()[("text", "train")]._option_string_actions["--width"]
        assert "expansion x" not in width.help and "dimension" in width.help


# ---- 7. text results name documents by the input's id column --------------------------------


class FakeEmbedder:
    """Embeds a document by a fixed random vector per text (no model download)."""

    def embed(self, texts):
        from steercf.text.embed import Embeddings

        return Embeddings.from_array(np.stack([self.embed_query(t) for t in texts]))

    def embed_query(self, text):
        rng = np.random.default_rng(sum(map(ord, text)))
        vector = rng.normal(size=16).astype(np.float32)
        return vector / np.linalg.norm(vector)


class TestDocumentIds:
    @pytest.fixture
    def corpus(self, tmp_path, monkeypatch):
        from steercf.text.model import TextSAE

        texts = [f"document number {i} about {'sport' if i % 2 else 'music'}" for i in range(40)]
        model = TextSAE.fit(FakeEmbedder().embed(texts), {"k": 4}, {"max_epochs": 2})
        model.embedder = lambda **_: FakeEmbedder()
        monkeypatch.setattr(TextSAE, "load", classmethod(lambda cls, path: model))
        path = tmp_path / "docs.csv"
        ids = [f"doc-{i:03d}" for i in range(40)]
        pd.DataFrame({"id": ids, "text": texts}).to_csv(path, index=False)
        return path, texts

    def run(self, capsys, *argv):
        from steercf.cli import main

        code = main(["text", *argv])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        return captured.out

    def test_search_tables_and_csv_carry_the_input_ids(self, corpus, capsys, tmp_path):
        path, texts = corpus
        out_csv = tmp_path / "hits.csv"
        query = texts[7]
        self.run(capsys, "search", "m", str(path), "--query", query, "--mode", "dense",
                 "--csv", str(out_csv), "--quiet")  # fmt: skip
        hits = pd.read_csv(out_csv)
        assert list(hits.columns[:4]) == ["rank", "doc", "id", "score"]
        assert (hits["id"] == [f"doc-{d:03d}" for d in hits["doc"]]).all()
        assert hits["id"].iloc[0] == "doc-007"  # the query is document 7's own text

    def test_steer_mode_names_left_documents_by_id(self, corpus, capsys):
        path, texts = corpus
        out = self.run(capsys, "search", "m", str(path), "--query", texts[3], "--mode",
                       "steer", "--weaken", "0", "--weaken", "1", "--weaken", "2",
                       "--weaken", "3", "--top", "3", "--quiet")  # fmt: skip
        before = out.split("before steering:")[1].split("after steering")[0]
        assert "doc-003" in before
        left = out.split("left it: ")[1].split(")")[0]
        assert left == "nothing" or all(name.startswith("doc-") for name in left.split(", "))

    def test_cluster_members_carry_the_ids(self, corpus, capsys, tmp_path):
        path, _ = corpus
        members = tmp_path / "members.csv"
        self.run(capsys, "cluster", "m", str(path), "--n-clusters", "2", "--assignments",
                 str(members), "--quiet")  # fmt: skip
        frame = pd.read_csv(members)
        assert list(frame.columns) == ["doc", "id", "cluster"]
        assert (frame["id"] == [f"doc-{d:03d}" for d in frame["doc"]]).all()

    def test_without_an_id_column_positions_remain_and_bad_ids_are_refused(self, tmp_path):
        from steercf.errors import InputError
        from steercf.text.documents import doc_ids, with_doc_ids

        hits = pd.DataFrame({"rank": [1, 2], "doc": [4, 0]})
        assert doc_ids(pd.DataFrame({"text": ["a"]})) is None
        assert with_doc_ids(hits, None) is hits
        named = doc_ids(pd.DataFrame({"key": list("abcde")}), "key")
        assert with_doc_ids(hits, named)["id"].tolist() == ["e", "a"]
        with pytest.raises(InputError, match="repeats 1 id"):
            doc_ids(pd.DataFrame({"id": [1, 2, 1]}))
        with pytest.raises(InputError, match="no id column 'key'"):
            doc_ids(pd.DataFrame({"id": [1]}), "key")


# ---- 8. issue 17's cap: no concept takes more than 10 % of the labels ------------------------


def planted(n_latents: int = 100, n_items: int = 200):
    """A rare concept R (8 items, 4 %) is every latent's strongest evidence (6 of its 10
    top items); latent j's next best is C{j % 10} (4 of 10; 10 items each, 5 %); Drama
    covers half of the items."""
    names = ["R", *(f"C{c}" for c in range(10)), "Drama"]
    tags = np.zeros((n_items, len(names)), dtype=np.float32)
    tags[0:8, 0] = 1
    for c in range(10):
        tags[10 + 10 * c : 20 + 10 * c, 1 + c] = 1
    tags[100:200, 11] = 1
    acts = np.zeros((n_items, n_latents), dtype=np.float32)
    for j in range(n_latents):
        c = j % 10
        acts[0:6, j] = 10  # most of R's items
        acts[10 + 10 * c : 14 + 10 * c, j] = 5  # some of C_c's items
        acts[199 - j % 50, j] = 1  # a filler
    return acts, ItemTags(sp.csr_matrix(tags), np.array(names))


class TestConceptCap:
    def labels(self, acts, tags, threshold):
        from steercf.concepts.labels import label_latents

        titles = [f"Film {i}" for i in range(acts.shape[0])]
        return label_latents(acts, titles, {"genres": tags}, thresholds={"genres": threshold})

    def test_without_the_cap_the_rare_concept_would_take_every_label(self):
        from steercf.concepts.evidence import pair_evidence

        acts, tags = planted()
        assert (pair_evidence(acts, tags).best() == 0).all()  # R is everyone's best

    def test_past_its_share_a_latent_takes_its_next_best_concept(self):
        acts, tags = planted()
        labels = self.labels(acts, tags, threshold=0.1)  # R (0.47) and C (0.32) clear it
        named = [label.evidence["concept"] for label in labels.labels if label.labelled]
        assert len(named) == 100  # every latent keeps a label
        assert named.count("R") == 10  # 10 % of the labels, the strongest (lowest ids)
        assert all(labels[j].evidence["concept"] == "R" for j in range(10))
        assert all(labels[j].evidence["concept"] == f"C{j % 10}" for j in range(10, 100))
        assert max(named.count(f"C{c}") for c in range(10)) <= 10

    def test_without_a_next_best_that_clears_the_latent_stays_unlabelled(self):
        from steercf.concepts.labels import format_latent

        acts, tags = planted()
        labels = self.labels(acts, tags, threshold=0.4)  # only R's evidence clears it
        labelled = [label for label in labels.labels if label.labelled]
        assert len(labelled) == 1 and labelled[0].evidence["concept"] == "R"
        assert labels[50].text.startswith("unlabelled") and labels[50].evidence["capped"]
        assert "R already labels 10%" in format_latent(labels, 50)

    def test_a_concept_on_more_than_a_tenth_of_the_items_is_not_capped(self):
        acts, tags = planted()
        acts[:] = 0
        acts[150:160, :] = np.arange(10, 0, -1)[:, None]  # every latent: 10 Drama-only items
        labels = self.labels(acts, tags, threshold=0.5)
        assert all(
            label.labelled and label.evidence["concept"] == "Drama" for label in labels.labels
        )

    def test_the_best_guess_path_is_capped_too(self):
        from steercf.concepts.evidence import pair_evidence

        acts, tags = planted()
        guess = pair_evidence(acts, tags).capped(None)  # labelled or not, as the benchmark
        assert (guess >= 0).all() and (guess == 0).sum() == 10

    def test_no_concept_source_leaves_every_latent_unlabelled(self):
        from steercf.concepts.labels import label_latents

        acts, _ = planted()
        labels = label_latents(acts, [f"Film {i}" for i in range(acts.shape[0])], {})
        assert not any(label.labelled for label in labels.labels)
        assert labels[0].text.startswith("unlabelled (top items: Film")
