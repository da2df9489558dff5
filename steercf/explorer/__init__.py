"""The explorer: a local web app over a saved model (``steercf serve MODEL_DIR``).

For a spliced recommender: pick a user or build a profile, see recommendations with
titles, the user's concepts and per-item explanations, steer with concept and latent
sliders, and browse latents. For a text SAE: steerable search with latent sliders and a
latent browser.

* :mod:`steercf.explorer.recommender`, :mod:`steercf.explorer.text`: the logic, as
  JSON-ready dicts (usable without a web server).
* :mod:`steercf.explorer.app`: :func:`create_app`, the FastAPI app (needs the
  ``explorer`` extra), and its static page.
* :mod:`steercf.explorer.server`: run it in the foreground or in a background thread.
"""

from steercf.explorer.recommender import KnobSpec, RecommenderExplorer
from steercf.explorer.text import TextExplorer
from steercf.runs import resolve_data


def create_app(*args, **kwargs):  # noqa: ANN002, ANN003 - re-exported lazily
    """See :func:`steercf.explorer.app.create_app` (imported on use: FastAPI is optional)."""
    from steercf.explorer.app import create_app as factory

    return factory(*args, **kwargs)


__all__ = ["KnobSpec", "RecommenderExplorer", "TextExplorer", "create_app", "resolve_data"]
