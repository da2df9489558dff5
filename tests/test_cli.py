"""The command line, end to end on real data."""

from __future__ import annotations

import re

import numpy as np
import pytest

from steercf.cli import main
from steercf.concepts import has_labels
from steercf.runs import load_run
from steercf.steering import DEFAULT_STRENGTH, explain_items


@pytest.fixture(scope="module")
def ease_dir(
    tmp_path_factory,
):
    out = tmp_path_factory.mktemp("cli") / "ease"
    assert (
        main(["train", "--model", "ease", "--param", "l2=300", "--out", str(out), "--quiet"]) == 0
    )
    return out


def explorer_shares_match(model_dir, out: str) -> bool:
    """The shares `explain` prints for user 196 are those of ``explain_items(...,
    shares=True)``, which the explorer shows."""
    run = load_run(model_dir)
    history = run.data.matrix[run.data.user_index(["196"])]
    ids, _ = run.model.recommend(history, N=1)
    (reasons,) = explain_items(run.model, history, ids[0], shares=True)
    printed = re.findall(r"\(\s*(\d+)% of what they add\)", out)
    expected = [100 * share for _, _, share in reasons]
    shown = [int(p) for p in printed[: len(reasons)]]
    return len(shown) == len(expected) and all(
        abs(a - b) <= 0.51 for a, b in zip(expected, shown, strict=True)
    )


def test_train_evaluate_recommend_round_trip(ease_dir, capsys):
    assert main(["evaluate", str(ease_dir), "-k", "10", "-k", "20", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "recall@20" in out and "ndcg@10" in out
    recall = float(
        next(line for line in out.splitlines() if line.startswith("recall@20")).split()[1]
    )
    assert 0.2 < recall < 0.7
    assert main(["recommend", str(ease_dir), "--user", "196", "-n", "3", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 4 and "user 196" in out and "(19" in out  # titles carry years


def test_cli_errors_are_clear_and_exit_2(ease_dir, capsys, shared_data):
    assert main(["recommend", str(ease_dir), "--user", "no-such-user", "--quiet"]) == 2
    assert "no-such-user" in capsys.readouterr().err
    other = str(shared_data / "ml-latest-small")
    assert main(["evaluate", str(ease_dir), "--data", other, "--quiet"]) == 2
    assert "fitted on other items" in capsys.readouterr().err
    assert main(["evaluate", str(ease_dir.parent / "missing"), "--quiet"]) == 2
    assert "no model directory" in capsys.readouterr().err
    assert main(["train", "--model", "ease", "--param", "oops", "--out", "x", "--quiet"]) == 2
    assert "key=value" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_quick_prints_a_results_table(capsys):
    assert main(["demo", "--quick", "--quiet"]) == 0
    out = capsys.readouterr().out
    for name in ("popularity", "ease", "elsa", "recall@20"):
        assert name in out
    # the tax is the best plain model's figure minus the spliced model's, as printed
    rows = {}
    for line in out.splitlines():
        cells = line.split()
        if len(cells) > 3 and cells[0] in ("ease", "elsa", "elsa+sae"):
            rows[cells[0]] = {"recall@20": float(cells[1]), "ndcg@20": float(cells[3])}
    taxes = [line for line in out.splitlines() if line.startswith("interpretability tax")]
    assert len(taxes) == 2
    for line in taxes:
        metric = line.split()[2].rstrip(":")
        best = line.split("users: ")[1].split(",")[0]
        tax = float(line.split()[3])
        assert tax == pytest.approx(rows[best][metric] - rows["elsa+sae"][metric], abs=2e-4)


@pytest.mark.slow
def test_spliced_workflow_end_to_end(tmp_path, capsys):
    base, spliced = tmp_path / "elsa", tmp_path / "spliced"
    params = ["--param", "factors=32", "--param", "epochs=3", "--param", "batch_size=64"]
    assert main(["train", "--model", "elsa", *params, "--out", str(base), "--quiet"]) == 0
    assert (
        main(
            [
                "train-sae",
                str(base),
                "--out",
                str(spliced),
                "--k",
                "4",
                "--expansion",
                "4",
                "--max-epochs",
                "8",
                "--augment",
                "1",
                "--quiet",
            ]
        )
        == 0
    )
    assert has_labels(spliced)  # labels travel with the model
    capsys.readouterr()

    assert main(["evaluate", str(spliced), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "base ELSA" in out and "spliced" in out and "sem of difference" in out
    # the error shown is the paired difference's, computed on the same users
    from steercf.evaluation import evaluate
    from steercf.runs import load_run

    run = load_run(str(spliced))
    model = run.model
    after = evaluate(model, run.split.test_input, run.split.test_target).per_user["recall@20"]
    before = evaluate(model.base, run.split.test_input, run.split.test_target)
    diff = after - before.per_user["recall@20"]
    row = next(line for line in out.splitlines() if line.startswith("recall@20"))
    assert float(row.split()[-1]) == pytest.approx(diff.std(ddof=1) / np.sqrt(len(diff)), abs=1e-4)

    assert main(["latents", str(spliced), "--top", "5", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "live of 128 latents" in out and len(out.strip().splitlines()) == 6

    assert main(["concepts", str(spliced), "--source", "genres", "--quiet"]) == 0
    assert "entropy" in capsys.readouterr().out.lower()

    assert (
        main(
            [
                "steer",
                str(spliced),
                "--user",
                "196",
                "--concept",
                "+Horror",
                "--concept",
                "-Comedy:0.5",
                "--mapping",
                "decoder_effect",
                "--quiet",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert f"Horror +{DEFAULT_STRENGTH:.2f}" in out and "Comedy -0.50" in out
    assert "left the list" in out

    assert main(["explain", str(spliced), "--user", "196", "-n", "3", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "active latents" in out and len(re.findall(r" score [-0-9.]+ = ", out)) == 3
    # each score is split into parts that add up to it (the latents' part into what they
    # add and take away); each reason is a labelled latent with what it adds and its share
    # of all that the latents add, the explorer's share
    assert explorer_shares_match(spliced, out)
    for line in out.splitlines():
        split = re.search(
            r"score ([-0-9.]+) = latents ([-+0-9.]+) \(([-+0-9.]+) added, ([-+0-9.]+) taken "
            r"away\), rest ([-+0-9.]+)",
            line,
        )
        if split:
            score, latents, added, taken, rest = map(float, split.groups())
            assert latents + rest == pytest.approx(score, abs=2e-3)
            assert added + taken == pytest.approx(latents, abs=2e-3) and taken <= 0 <= added
            current = added
        reason = re.match(r"\s+([-+0-9.]+) \(\s*(\d+)% of what they add\): #", line)
        if reason:
            value, share = float(reason.group(1)), int(reason.group(2))
            assert value > 0 and abs(share - 100 * value / current) <= 1
    assert "% of what they add): #" in out and "latent " not in out.split("recommendations")[1]

    # explain resolves mappings like steer does, the steering-side one included
    assert (
        main(
            [
                "explain",
                str(spliced),
                "--user",
                "196",
                "-n",
                "2",
                "--mapping",
                "decoder_effect",
                "--quiet",
            ]
        )
        == 0
    )
    assert len(re.findall(r" score [-0-9.]+ = ", capsys.readouterr().out)) == 2

    assert main(["steer", str(spliced), "--user", "196", "--concept", "+Horrorr", "--quiet"]) == 2
    assert "Horror" in capsys.readouterr().err  # unknown concept: close matches named
    assert main(["steer", str(base), "--user", "196", "--concept", "+Horror", "--quiet"]) == 2
    assert "needs a spliced model" in capsys.readouterr().err


def test_recommend_with_n_beyond_the_unseen_items_lists_only_unseen_items(ease_dir, capsys):
    """Issue 14: ``recommend -n 5000`` used to print the user's own history at -inf."""
    from steercf.data import load_ml100k

    data = load_ml100k()
    assert main(["recommend", str(ease_dir), "--user", "196", "-n", "5000", "--quiet"]) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    row = int(data.user_index(["196"])[0])
    assert len(lines) == data.n_items - data.matrix[row].nnz
    assert not any("-inf" in line for line in lines)
    seen = {str(data.item_ids[i]) for i in data.matrix[row].indices}
    listed = {line.rsplit("[", 1)[1].split("]")[0] for line in lines}
    assert not listed & seen


def test_train_starts_from_the_data_sets_preset_and_checks_params(shared_data):
    from steercf.cli import build_parser
    from steercf.cli.models import train_params
    from steercf.errors import InputError
    from steercf.experiment import PRESETS

    parser = build_parser()
    args = parser.parse_args(["train", "--data", "x", "--model", "elsa", "--out", "o"])
    params = train_params(args, "ml-latest-small", "cpu")
    for key, value in PRESETS["ml-latest-small"]["elsa"].items():
        assert params[key] == value
    assert params["seed"] == 0 and params["device"] == "cpu"
    args = parser.parse_args(["train", "--model", "elsa", "--out", "o", "--param", "factors=64"])
    assert train_params(args, "ml-100k", "cpu")["factors"] == 64  # --param over the preset
    assert train_params(args, "ml-100k", "cpu")["init"] == PRESETS["ml-100k"]["elsa"]["init"]
    args = parser.parse_args(["train", "--model", "elsa", "--out", "o", "--param", "factorz=64"])
    with pytest.raises(InputError, match="unknown parameter 'factorz'"):
        train_params(args, "ml-100k", "cpu")
    for bad, message in [
        ("factors=abc", "expected int"),
        ("epochs=2.5", "expected int"),
        ("lr=abc", "expected float"),
        ("device=gpu9", "unknown parameter 'device'"),  # --device sets it
    ]:
        args = parser.parse_args(["train", "--model", "elsa", "--out", "o", "--param", bad])
        with pytest.raises(InputError, match=message):
            train_params(args, "ml-100k", "cpu")
    # a narrower ELSA keeps the padded warm start valid: its EASE factor shrinks with it
    args = parser.parse_args(["train", "--model", "elsa", "--out", "o", "--param", "factors=64"])
    params = train_params(args, "ml-latest-small", "cpu")
    assert params["factors"] == 64 and params["init_rank"] == 32


def test_cli_defaults_come_from_the_configs_and_help_shows_them(capsys):
    from steercf.cli import build_parser
    from steercf.models.spliced import SAE_DEFAULTS
    from steercf.sae import TrainConfig
    from steercf.steering import DEFAULT_MAPPING, DEFAULT_TOP_LATENTS, ConceptKnobs

    parser = build_parser()
    args = parser.parse_args(["train-sae", "m", "--out", "o"])
    assert (args.k, args.expansion, args.refit) == (
        SAE_DEFAULTS["k"],
        SAE_DEFAULTS["expansion"],
        SAE_DEFAULTS["refit"],
    )
    train = TrainConfig()
    assert (args.max_epochs, args.aux_coef, args.loss) == (
        train.max_epochs,
        train.aux_coef,
        train.loss,
    )
    assert args.patience is None  # the data set's: steercf.experiment.splice_train_config
    steer = parser.parse_args(["steer", "m", "--user", "1", "--concept", "+Horror"])
    assert (steer.mapping, steer.top_latents) == (DEFAULT_MAPPING, DEFAULT_TOP_LATENTS)
    knobs = ConceptKnobs(mapping=None)
    assert knobs.top_latents == DEFAULT_TOP_LATENTS  # the Python API's default too
    with pytest.raises(SystemExit):
        parser.parse_args(["train-sae", "--help"])
    assert f"(default: {SAE_DEFAULTS['k']})" in capsys.readouterr().out


@pytest.mark.slow
def test_multvae_trains_from_the_command_line_and_takes_an_sae(tmp_path, capsys):
    base, spliced = tmp_path / "vae", tmp_path / "vae-sae"
    params = ["--param", "hidden_dims=[64, 32]", "--param", "latent_dim=16"]
    params += ["--param", "epochs=3", "--param", "batch_size=128"]
    assert main(["train", "--model", "multvae", *params, "--out", str(base), "--quiet"]) == 0
    assert "multvae preset for ml-100k" in capsys.readouterr().out
    sae = ["--k", "4", "--expansion", "2", "--max-epochs", "3", "--augment", "1"]
    assert main(["train-sae", str(base), "--out", str(spliced), *sae, "--quiet"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(spliced), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "base MultVAE" in out and "recall@20" in out


def test_cli_explorer_and_api_share_the_steering_defaults():
    import inspect

    from steercf.cli import build_parser
    from steercf.explorer.app import RecommendIn
    from steercf.explorer.recommender import RecommenderExplorer
    from steercf.steering import (
        DEFAULT_MAPPING,
        DEFAULT_RULE,
        DEFAULT_TOP_LATENTS,
        compare,
        steer,
    )

    parser = build_parser()
    for command in (
        ["steer", "m", "--user", "1", "--concept", "+A"],
        ["explain", "m", "--user", "1"],
    ):
        args = parser.parse_args(command)
        assert (args.mapping, args.top_latents, args.rule) == (
            DEFAULT_MAPPING,
            DEFAULT_TOP_LATENTS,
            DEFAULT_RULE,
        )
    explorer = inspect.signature(RecommenderExplorer.__init__).parameters
    assert explorer["mapping"].default == DEFAULT_MAPPING
    assert explorer["top_latents"].default == DEFAULT_TOP_LATENTS
    assert RecommendIn.model_fields["rule"].default == DEFAULT_RULE
    for function in (steer, compare):
        assert inspect.signature(function).parameters["rule"].default == DEFAULT_RULE
