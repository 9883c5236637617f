"""The one error type of the experiments package: a message naming the offending field, record or arm."""

from __future__ import annotations


class ExperimentError(ValueError):
    """Bad experiment input: an unknown arm, an empty arm list, a malformed or orphan event, a duplicate query id.

    Raised before anything is written: a call that raises wrote nothing.
    """
