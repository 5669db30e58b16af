"""Specific :class:`~distproc.exceptions.SystematicsError` subclasses raised by :mod:`distproc.systematics`.

Each is still a ``SystematicsError`` (and so a ``ValueError``); catch the base class unless you need to
tell the cases apart.
"""

from __future__ import annotations

from distproc.exceptions import SystematicsError

__all__ = (
    "BinningError",
    "CorrectionNotFoundError",
    "DuplicateVariationError",
    "InputsError",
)


class BinningError(SystematicsError):
    """Bin edges are not strictly increasing, or the values' shape does not match the edges.

    Examples
    --------
    >>> from distproc.systematics import BinnedLookup, BinningError
    >>> try:
    ...     BinnedLookup(edges=[0.0, 2.0, 1.0], values=[1.0, 1.0])
    ... except BinningError as err:
    ...     print(str(err).splitlines()[0])  # doctest: +ELLIPSIS
    BinnedLookup 'lookup': edges of axis 0 ('x0') must be strictly increasing, but edges[2]=1.0 <= ...
    """


class CorrectionNotFoundError(SystematicsError):
    """A correction name is not in the CorrectionSet JSON file (the message lists the names that are).

    Examples
    --------
    >>> from distproc.systematics import CorrectionNotFoundError
    >>> issubclass(CorrectionNotFoundError, ValueError)
    True
    """


class InputsError(SystematicsError):
    """A lookup or correction got the wrong number, names or kinds of inputs.

    Examples
    --------
    >>> from distproc.systematics import BinnedLookup, InputsError
    >>> sf = BinnedLookup(edges=[0.0, 1.0], values=[2.0], inputs=("pt",))
    >>> try:
    ...     sf(1.0, 2.0)
    ... except InputsError as err:
    ...     print(err)
    BinnedLookup 'lookup' takes 1 input ('pt'), got 2 positional
    """


class DuplicateVariationError(SystematicsError):
    """Two shape variations produce the same name (or one is called ``"nominal"``).

    Examples
    --------
    >>> from distproc.systematics import DuplicateVariationError, Scale, ShapeVariations
    >>> try:
    ...     ShapeVariations(Scale("jes", 0.02), Scale("jes", 0.03))
    ... except DuplicateVariationError as err:
    ...     print(str(err).splitlines()[0])
    shape variation name 'jes_up' is used twice: by Scale('jes', ...) and by Scale('jes', ...)
    """
