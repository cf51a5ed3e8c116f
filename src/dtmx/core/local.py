"""Local branches: `local://name` URLs, functions living inside an application process.

Only a process that has a function registered can call it, so a transaction naming local
functions must be run by such a process. The rule is stated here, pure; the engine asks it
before every run and hands a transaction it cannot run back to the store instead of calling
(and failing) a branch it does not have: owner cleared, due one retry interval later, and
a *waiting* row in the key-value table (category `WAITING`, key = gid, value = the names
it needs). Processes that have functions scan those rows and adopt what they can run, so
routing does not depend on which process the store's claims happen to favour (on Redis,
which process holds the transaction's partition).
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
    names = {b.url[len(LOCAL_PREFIX):] for b in branches if b.url.startswith(LOCAL_PREFIX)}
    if trans.query_prepared.startswith(LOCAL_PREFIX):
        names.add(local_name(trans.query_prepared))
    return names


def missing_local(trans: Transaction, branches: Iterable[Branch],
                  have: Container[str]) -> list[str]:
    """The local functions of `trans` this process lacks (sorted); empty when it may run."""
    names = local_names(trans, branches)
    if not names:  # no local:// URL at all (asked before every run)
        return []
    return sorted(n for n in names if n not in have)


#: key-value category of transactions handed back for want of local functions
WAITING = "dtmx_local_waiting"


def waiting_value(names: Iterable[str]) -> str:
    """The value of a waiting row: the names, space separated (names hold no spaces)."""
    return " ".join(sorted(names))


def can_adopt(value: str, have: Container[str]) -> bool:
    """Whether a process with `have` can run a transaction waiting for `value`'s names."""
    return all(n in have for n in value.split())
