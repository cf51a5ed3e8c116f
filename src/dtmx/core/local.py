"""Local branches: `local://name` URLs, functions living inside an application process.

Only a process that has a function registered can call it, so a transaction naming local
functions must be run by such a process. The rule is stated here, pure; the engine asks it
before every run and hands a transaction it cannot run back to the store, untouched but
for its due time, instead of calling (and failing) a branch it does not have.
"""

from __future__ import annotations

from collections.abc import Container, Iterable

from dtmx.core.models import Branch, Transaction

LOCAL_SCHEME = "local"
LOCAL_PREFIX = "local://"


def is_local(url: str) -> bool:
    """Whether `url` names a local function."""
    return url.startswith(LOCAL_PREFIX)


def local_name(url: str) -> str:
    """The function name of a `local://name` URL."""
    return url[len(LOCAL_PREFIX):]


def local_names(trans: Transaction, branches: Iterable[Branch]) -> set[str]:
    """Every local function a transaction may call (its branches and query_prepared)."""
    urls = [trans.query_prepared, *(b.url for b in branches)]
    return {local_name(u) for u in urls if is_local(u)}


def missing_local(trans: Transaction, branches: Iterable[Branch],
                  have: Container[str]) -> list[str]:
    """The local functions of `trans` this process lacks (sorted); empty when it may run."""
    return sorted(n for n in local_names(trans, branches) if n not in have)
