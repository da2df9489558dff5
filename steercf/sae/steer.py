"""Editing sparse codes: the one code-editing step behind recommender steering and
steerable text search. It knows nothing about where the codes come from.

A *knob* is a set of latents with weights (a concept spread over its top-m latents, or
a single latent) and a strength. With ``e`` a row's code and ``s = sum(e)`` its total
activation, the rules are (``w`` sums to 1 over the knob's latents ``N``):

``convex`` (Spišák et al. 2026, "From Knots to Knobs"): for positive strengths ``a_c``
    (sum <= 1) ``e' = (1 - sum_c a_c) e + s sum_c a_c w_c``
    and for a negative strength ``-a`` on knob ``N``: ``e'_N = (1 - a) e_N - a s w_N``.
    At ``-1`` the knob's latents carry minus the row's whole activation: their decoder
    directions are subtracted, not merely switched off.
``additive``
    ``e'_N = e_N + a s w_N`` for any finite ``a`` (negative pushes below zero); the rest
    of the code is untouched.

:func:`edit_codes` is the elementwise form (scale some latents, set others), used by
steerable search (O'Neill et al. 2024).
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from steercf.errors import InputError
from steercf.ranking import whole_number

RULES = ("convex", "additive")
MAX_ADDITIVE = 5.0  # "full strength": five times the user's total activation
# Largest factor or value `edit_codes` takes. Activations of a trained SAE are O(1) to
# O(100); 1e6 leaves every meaningful edit possible while the edited codes, their
# products with the factors and their decoding stay finite in float32 (max ~3.4e38).
MAX_EDIT = 1e6


@dataclass(frozen=True)
class Knob:
    """Latents to turn together and how hard.

    Attributes:
        latents: (m,) latent ids.
        weights: (m,) non-negative shares, normalised to sum to 1.
        strength: > 0 toward, < 0 away from; ``convex`` takes [-1, 1].
        name: what the knob stands for (a concept name or ``latent:N``).
    """

    latents: tuple[int, ...]
    weights: tuple[float, ...]
    strength: float
    name: str = ""

    @classmethod
    def of(
        cls,
        latents: Sequence[int] | int,
        strength: float,
        weights: Sequence[float] | None = None,
        name: str = "",
    ) -> Knob:
        """A knob over ``latents`` (one id or a sequence of ids) at ``strength``.

        Raises:
            InputError: a latent id that is not a whole number >= 0 (``3.7`` or ``True``
                is not latent 3 or 1), a latent listed twice, bad weights or a strength
                that is not a finite number.
        """
        what = f"knob {name!r}: latent id" if name else "latent id"
        if np.isscalar(latents) or getattr(latents, "ndim", None) == 0:
            latents = [latents]
        elif not isinstance(latents, Iterable):
            raise InputError(
                f"{what}s must be a whole number or a sequence of them, got {latents!r}"
            )
        latents = [whole_number(n, what, minimum=0) for n in latents]
        if not latents:
            raise InputError(f"knob {name!r} has no latents")
        if len(set(latents)) != len(latents):
            raise InputError(f"knob {name!r} lists a latent twice: {latents}")
        w = np.ones(len(latents)) if weights is None else np.asarray(weights, dtype=float)
        if w.shape != (len(latents),) or (w < 0).any() or w.sum() <= 0 or not np.isfinite(w).all():
            raise InputError(f"knob {name!r}: weights must be {len(latents)} non-negative numbers")
        if isinstance(strength, bool | np.bool_) or not isinstance(strength, numbers.Real):
            raise InputError(f"knob {name!r}: strength must be a number, got {strength!r}")
        if not np.isfinite(strength):
            raise InputError(f"knob {name!r}: strength must be finite, got {strength}")
        return cls(
            tuple(latents),
            tuple((w / w.sum()).tolist()),
            float(strength),
            name or f"latent:{latents[0]}",
        )


def check_knobs(knobs: Sequence[Knob], n_latents: int, rule: str) -> None:
    """Raise InputError for an unknown rule, a latent out of range or a strength outside
    the rule's range."""
    if rule not in RULES:
        raise InputError(f"unknown steering rule {rule!r}; choose one of {', '.join(RULES)}")
    if isinstance(knobs, str | Knob):
        raise InputError(f"knobs must be a list of Knob objects, got {knobs!r}")
    for knob in knobs:
        if not isinstance(knob, Knob):
            # e.g. a "+latent:12" spec: steercf.steering.parse_knobs turns specs into knobs
            raise InputError(
                f"knobs must be Knob objects (Knob.of(...) or steercf.steering.parse_knobs "
                f"for specs such as '+latent:12'), got {knob!r}"
            )
        bad = [n for n in knob.latents if not 0 <= n < n_latents]
        if bad:
            raise InputError(f"knob {knob.name!r}: latent(s) {bad} out of range [0, {n_latents})")
        if rule == "convex" and not -1.0 <= knob.strength <= 1.0:
            raise InputError(
                f"knob {knob.name!r}: convex strength must be in [-1, 1], got {knob.strength}"
            )
        if rule == "additive" and abs(knob.strength) > MAX_ADDITIVE:
            raise InputError(
                f"knob {knob.name!r}: additive strength must be in "
                f"[-{MAX_ADDITIVE}, {MAX_ADDITIVE}], got {knob.strength}"
            )
    if rule == "convex":
        total = sum(k.strength for k in knobs if k.strength > 0)
        if total > 1.0 + 1e-9:
            raise InputError(f"convex strengths toward concepts must sum to <= 1, got {total:.3f}")


def steer_codes(codes: torch.Tensor, knobs: Sequence[Knob], rule: str = "convex") -> torch.Tensor:
    """Apply knobs to a batch of codes (a new tensor; ``codes`` is not modified).

    Args:
        codes: (n_users, n_latents) SAE activations.
        knobs: what to turn; see the module docstring for the rules.
        rule: ``"convex"`` or ``"additive"``.

    Returns:
        (n_users, n_latents) steered codes.
    """
    check_knobs(knobs, codes.shape[1], rule)
    total = codes.sum(dim=1, keepdim=True)  # s, per user
    out = codes.clone()
    if rule == "convex":
        toward = [k for k in knobs if k.strength > 0]
        out.mul_(1.0 - sum(k.strength for k in toward))
        for knob in toward:
            _add(out, knob, knob.strength * total)
        for knob in (k for k in knobs if k.strength < 0):
            a = -knob.strength
            idx = torch.tensor(knob.latents)
            out[:, idx] *= 1.0 - a
            _add(out, knob, -a * total)
    else:
        for knob in knobs:
            _add(out, knob, knob.strength * total)
    return out


def _add(codes: torch.Tensor, knob: Knob, amount: torch.Tensor) -> None:
    """codes[:, N] += amount * w  (amount: (n, 1))."""
    idx = torch.tensor(knob.latents)
    w = torch.tensor(knob.weights, dtype=codes.dtype)
    codes[:, idx] += amount * w


def edit_codes(
    codes: torch.Tensor,
    scale: Mapping[int, float] | None = None,
    assign: Mapping[int, float] | None = None,
) -> torch.Tensor:
    """Elementwise edits of (n, n_latents) codes (a new tensor; ``codes`` is kept).

    Args:
        scale: ``{latent: factor}``: multiply the latent's activation (factors in
            ``[0, MAX_EDIT]``).
        assign: ``{latent: value}``: set the latent's activation (values in
            ``[0, MAX_EDIT]``).

    Returns:
        (n, n_latents) edited codes, finite.

    Raises:
        InputError: a latent out of range, or a factor or value that is negative, not
            finite or above ``MAX_EDIT`` (1e6), naming the latent and the value.
    """
    out = codes.clone()
    for name, edits in (("scale", scale or {}), ("assign", assign or {})):
        what = "factor" if name == "scale" else "value"
        for latent, value in edits.items():
            if not 0 <= int(latent) < codes.shape[1]:
                raise InputError(f"{name}: latent {latent} out of range [0, {codes.shape[1]})")
            try:
                number = float(value)
            except (TypeError, ValueError):
                number = float("nan")
            if not (np.isfinite(number) and 0 <= number <= MAX_EDIT):
                raise InputError(
                    f"latent {latent}: {what} {value!r} is out of range; a {what} must be a "
                    f"finite number in [0, {MAX_EDIT:g}]"
                )
            if name == "scale":
                out[:, int(latent)] *= number
            else:
                out[:, int(latent)] = number
    if not torch.isfinite(out).all():  # a huge activation times a large factor
        raise InputError("the edited codes overflow; use smaller factors")
    return out
