"""The server's resource limits: the `Limits:` block of the settings, one place.

Each field is a key of the YAML `Limits:` block and an environment variable
(`Limits.MaxBodyBytes` -> LIMITS_MAX_BODY_BYTES). `RANGES` holds the values each may take;
settings outside them stop the server at start (exit 2). The HTTP server, the branch client
and request validation read their bounds from here, so a limit is changed in one place.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what one client or one branch may make the server hold or do."""

    #: request body bytes; larger is 413
    MaxBodyBytes: int = 16 * MIB
    #: request line plus headers, bytes; larger is 431
    MaxHeaderBytes: int = 64 * KIB
    #: steps of a saga or msg, TCC/XA branches registered, a workflow's recorded steps (two
    #: ops a step); more is 400
    MaxBranches: int = 1000
    #: branch rows one msg submit/prepare may create by fanning topics out; more is 400
    MaxTopicFanout: int = 10000
    #: prerequisite edges in a concurrent saga's `orders`; more is 400
    MaxOrderEdges: int = 10000
    #: bytes of one branch answer read (after decompression); more is a failed call
    MaxBranchResponseBytes: int = 1 * MIB
    #: requests parsed ahead of the one being answered, per connection
    MaxPipelinedRequests: int = 16
    #: answer bytes waiting for a slow reader before the connection stops being read
    MaxBufferedAnswerBytes: int = 4 * MIB
    #: calls kept in the history of one branch op (the first and the newest ones)
    MaxCallsPerBranch: int = 20
    #: bytes of a call's reason (a non-success's explanation) kept in the history
    MaxCallReasonBytes: int = 512


#: Inclusive range of each limit.
RANGES: dict[str, tuple[int, int]] = {
    "MaxBodyBytes": (1 * KIB, 1 * GIB),
    "MaxHeaderBytes": (1 * KIB, 16 * MIB),
    "MaxBranches": (1, 100_000),
    "MaxTopicFanout": (1, 1_000_000),
    "MaxOrderEdges": (0, 1_000_000),
    "MaxBranchResponseBytes": (1 * KIB, 1 * GIB),
    "MaxPipelinedRequests": (1, 1024),
    "MaxBufferedAnswerBytes": (64 * KIB, 1 * GIB),
    "MaxCallsPerBranch": (2, 1000),
    "MaxCallReasonBytes": (16, 64 * KIB),
}

assert set(RANGES) == {f.name for f in dataclasses.fields(Limits)}


def out_of_range(limits: Limits) -> list[str]:
    """Messages naming each field outside its range (empty when all are valid)."""
    bad = []
    for name, (lo, hi) in RANGES.items():
        v = getattr(limits, name)
        if not lo <= v <= hi:
            bad.append(f"Limits.{name} must be in {lo}..{hi}, not {v}")
    return bad
