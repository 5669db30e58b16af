"""A thin helper over :class:`coffea.analysis_tools.Weights` for filling a ``variation`` axis."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from distproc.exceptions import SystematicsError, format_options

__all__ = ("weight_variations",)


def weight_variations(weights: Any, modifiers: Iterable[str] | None = None) -> dict[str, Any]:
    """Event weights for the nominal and every up/down modifier of a coffea ``Weights``.

    Parameters
    ----------
    weights
        A :class:`coffea.analysis_tools.Weights` (eager or dask).
    modifiers
        The modifiers to include (e.g. ``["btag_var_0Up"]``); default all of ``weights.variations``,
        sorted by name so the order is the same in every chunk.

    Returns
    -------
    dict
        ``{"nominal": weights.weight(), "<modifier>": weights.weight("<modifier>"), ...}``, ready to fill a
        ``hist.axis.StrCategory(name="variation")`` axis, one fill per entry.

    Raises
    ------
    SystematicsError
        A requested modifier is not defined on *weights* (the message lists the available ones).

    Examples
    --------
    >>> import numpy as np
    >>> from coffea.analysis_tools import Weights
    >>> weights = Weights(3)
    >>> weights.add("genweight", np.array([1.0, 2.0, 0.5]))
    >>> weights.add(
    ...     "lepton_sf",
    ...     np.array([0.9, 1.0, 1.1]),
    ...     weightUp=np.array([1.0, 1.1, 1.2]),
    ...     weightDown=np.array([0.8, 0.9, 1.0]),
    ... )
    >>> variations = weight_variations(weights)
    >>> list(variations)
    ['nominal', 'lepton_sfDown', 'lepton_sfUp']
    >>> variations["lepton_sfUp"].tolist()
    [1.0, 2.2, 0.6]
    """
    available = sorted(weights.variations)
    if modifiers is None:
        chosen = available
    else:
        chosen = list(modifiers)
        for name in chosen:
            if name not in available:
                msg = (
                    f"weight modifier {name!r} is not defined on this Weights object. "
                    f"{format_options(name, available, 'modifiers')}"
                )
                raise SystematicsError(msg)
    out = {"nominal": weights.weight()}
    for name in chosen:
        out[name] = weights.weight(name)
    return out
