"""A misspelled field (``events.Muon.ptt``) named with its collection and the near misses.

awkward says ``AttributeError: no field named 'ptt'`` (attribute access) or ``FieldNotFoundError: no
field 'ptt' in record with 54 fields`` (``events.Muon["ptt"]``), without saying which collection or
what exists. :func:`missing_field_message` turns either into ``no field 'ptt' in Muon; did you mean
'pt'?``. Whoever records a partition's failure calls it with the exception and the partition's events.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from typing import Any

from distproc.exceptions import format_options, near_misses

__all__ = ("missing_field_message",)

#: awkward's messages for a missing field: attribute access, then ``array["name"]``.
_PATTERNS = (re.compile(r"^no field named '(?P<name>[^']+)'"), re.compile(r"^no field '(?P<name>[^']+)'"))


def _missing_name(err: BaseException) -> str | None:
    if not isinstance(err, AttributeError | LookupError):
        return None
    for pattern in _PATTERNS:
        match = pattern.match(str(err))
        if match:
            return match.group("name")
    return None


def _record_layout(layout: Any) -> Any:
    """The record layout inside *layout* (through lists, options and indexed layouts), or None."""
    while layout is not None and not getattr(layout, "is_record", False):
        layout = getattr(layout, "content", None)
    return layout


def _record_name(layout: Any) -> str | None:
    parameters = getattr(layout, "parameters", {}) or {}
    return parameters.get("collection_name") or parameters.get("__record__")


def _failing_array(err: BaseException, name: str) -> Any:
    """The array or layout whose field lookup raised (innermost frame that looked *name* up), or None."""
    tb = err.__traceback__
    found = None
    while tb is not None:
        local = tb.tb_frame.f_locals
        if name in (local.get("where"), local.get("field")) and "self" in local:
            holder = local["self"]
            found = getattr(holder, "layout", holder)
        tb = tb.tb_next
    return found


def _collections(events: Any) -> Iterator[tuple[str, Any]]:
    """``(name, record form)`` of every collection of *events* (from the form: nothing is read)."""
    form = getattr(getattr(events, "layout", None), "form", None)
    record = _record_layout(form)
    if record is None:
        return
    for field, content in zip(record.fields, record.contents, strict=True):
        inner = _record_layout(content)
        if inner is not None:
            yield field, inner


def missing_field_message(err: BaseException, events: Any = None) -> str | None:
    """The improved message for a missing-field error, or ``None`` when *err* is not one.

    The collection is found from the traceback (the record whose lookup failed); when that is not
    available, from *events*: the collections that have a field close to the missing name.

    Parameters
    ----------
    err
        The exception ``process`` raised (``AttributeError`` or awkward's ``FieldNotFoundError``).
    events
        The partition's events (NanoEvents or any awkward record array), used when the traceback does
        not name the record.

    Returns
    -------
    str or None
        ``"no field 'ptt' in Muon; did you mean 'pt'? Available fields: ..."``.

    Examples
    --------
    >>> import awkward as ak
    >>> events = ak.Array([{"Muon": [{"pt": 31.0, "eta": 0.4}]}])
    >>> try:
    ...     events.Muon.ptt
    ... except AttributeError as err:
    ...     print(missing_field_message(err, events))
    no field 'ptt' in Muon; did you mean 'pt'? Available fields: 'eta', 'pt'
    """
    name = _missing_name(err)
    if name is None:
        return None
    top = _record_layout(getattr(getattr(events, "layout", None), "form", None))
    failing = _failing_array(err, name)
    record = _record_layout(failing)
    if failing is not None and record is None:
        return None  # not a record at all (``events.Muon.pt.x``): awkward's message says enough
    if record is not None:
        is_events = top is not None and list(record.fields) == list(top.fields)
        same = [n for n, r in _collections(events) if list(r.fields) == list(record.fields)]
        where = "events" if is_events else _record_name(record) or (same[0] if same else "the record")
        return _message(name, where, record.fields)
    candidates = _closest_collections(name, events)
    if len(candidates) == 1:
        collection, inner = candidates[0]
        return _message(name, collection, inner.fields)
    if top is not None and near_misses(name, top.fields, n=1):
        return _message(name, "events", top.fields)
    if candidates:
        places = [f"{n}.{near_misses(name, r.fields, n=1)[0]}" for n, r in candidates]
        more = f" (and {len(places) - 5} more)" if len(places) > 5 else ""
        return f"no field {name!r}; did you mean one of {', '.join(places[:5])}{more}?"
    return None


def _closest_collections(name: str, events: Any) -> list[tuple[str, Any]]:
    """The collections whose closest field is closest to *name* (ties kept, in the events' order)."""
    scored = []
    for collection, record in _collections(events):
        close = near_misses(name, record.fields, n=1)
        if close:
            scored.append((difflib.SequenceMatcher(None, name, close[0]).ratio(), collection, record))
    best = max((score for score, _, _ in scored), default=None)
    return [(collection, record) for score, collection, record in scored if score == best]


def _message(name: str, where: str, fields: Any) -> str:
    options = format_options(name, fields, "fields")
    hint, sep, available = options.partition("? ")
    if sep:
        return f"no field {name!r} in {where}; {hint[0].lower()}{hint[1:]}? {available}"
    return f"no field {name!r} in {where}. {options}"
