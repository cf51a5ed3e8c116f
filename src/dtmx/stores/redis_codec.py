"""How the Redis store encodes rows: transactions and branches as hash fields, key-value
records as text, script arguments. Pure: no I/O.

Times are float seconds written with `repr` (Redis scores and Python both read them back
exactly); empty and None values are left out of the hashes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields as dc_fields
from typing import Any

import orjson

from dtmx.core.models import (
    KV,
    Branch,
    CallRecord,
    Change,
    Op,
    Outcome,
    Protocol,
    Status,
    Transaction,
    TransOptions,
    TransType,
)
from dtmx.core.request import clamp_stored
from dtmx.errors import DuplicateBranch
from dtmx.stores.op_writes import op_writes

_OPTION_FIELDS = tuple(f.name for f in dc_fields(TransOptions) if f.name != "retry_count")
_TEXT_FIELDS = ("query_prepared", "custom_data", "owner", "rollback_reason", "result", "ext_data")
_OPTIONAL_TIMES = ("finish_time", "rollback_time", "next_cron_time")


def num(x: float) -> str:
    """A float as text that Redis scores and Python both read back exactly."""
    return repr(float(x))


def opt_num(x: float | None) -> str:
    """`num`, or '' for None (a script argument meaning "not set")."""
    return "" if x is None else num(x)


# The enums here are StrEnums: a member is its wire string (hiredis and orjson write it as
# such), so the codec passes members as they are; `.value` is a property in Python 3.11 and
# was ~15 property calls per created saga.


def encode_trans(t: Transaction) -> dict[str, str | bytes]:
    """Hash fields of a global transaction; empty and None values are left out."""
    opts = {name: getattr(t.options, name) for name in _OPTION_FIELDS}
    out: dict[str, str | bytes] = {
        "gid": t.gid,
        "trans_type": t.trans_type,
        "status": t.status,
        "protocol": t.protocol,
        "options": orjson.dumps(opts),
        "retry_count": str(t.options.retry_count),
        "create_time": num(t.create_time),
        "update_time": num(t.update_time),
        "next_cron_interval": num(t.next_cron_interval),
    }
    for name in _TEXT_FIELDS:
        value: str = getattr(t, name)
        if value:
            out[name] = value
    for name in _OPTIONAL_TIMES:
        tv: float | None = getattr(t, name)
        if tv is not None:
            out[name] = num(tv)
    return out


def decode_trans(raw: dict[bytes, bytes]) -> Transaction:
    """Inverse of `encode_trans` (fields and values as bytes, as Redis returns them)."""
    h = {k.decode(): v for k, v in raw.items()}
    opts: dict[str, Any] = orjson.loads(h["options"]) if "options" in h else {}
    options = clamp_stored(TransOptions(
        **{k: v for k, v in opts.items() if k in _OPTION_FIELDS},
        retry_count=int(h.get("retry_count", b"0")),
    ))
    extra: dict[str, Any] = {name: h[name].decode() for name in _TEXT_FIELDS if name in h}
    extra.update({name: float(h[name]) for name in _OPTIONAL_TIMES if name in h})
    return Transaction(
        gid=h["gid"].decode(),
        trans_type=TransType(h["trans_type"].decode()),
        status=Status(h["status"].decode()),
        protocol=Protocol(h["protocol"].decode()),
        options=options,
        create_time=float(h["create_time"]),
        update_time=float(h["update_time"]),
        next_cron_interval=float(h.get("next_cron_interval", b"0")),
        **extra,
    )


def branch_key(branch_id: str, op: Op) -> str:
    """Field-name key of a branch op; op never contains a newline, so it is unambiguous."""
    return f"{branch_id}\n{op}"


def encode_branch(b: Branch) -> list[str | bytes]:
    """The six script arguments of one branch (see add_branches in prelude.lua)."""
    # orjson never emits a raw newline, so the blob splits on its first one and the data
    # after it stays arbitrary bytes
    static = orjson.dumps([b.branch_id, b.op, b.url, b.create_time]) + b"\n" + b.data
    return [
        branch_key(b.branch_id, b.op),
        static,
        b.status,
        num(b.update_time),
        opt_num(b.finish_time),
        opt_num(b.rollback_time),
    ]


def create_branch_args(branches: Sequence[Branch]) -> list[str | bytes]:
    """create.lua's branch arguments: none; or 'u', the status, update, finish and
    rollback times all the branches share (a saga's or msg's at submit), then per branch
    its 'i:' field and static blob (add_uniform in prelude.lua); or 'e' and each branch's
    six (`encode_branch`)."""
    if not branches:
        return []
    b0 = branches[0]
    st, ut, ft, rt = b0.status, b0.update_time, b0.finish_time, b0.rollback_time
    out: list[str | bytes] = ["u", st, num(ut), opt_num(ft), opt_num(rt)]
    dumps = orjson.dumps
    for b in branches:
        if b.status != st or b.update_time != ut or b.finish_time != ft or (
                b.rollback_time != rt):
            return ["e", *(a for each in branches for a in encode_branch(each))]
        # the field and blob as in encode_branch, inline: this runs per op of a create
        out += (f"i:{b.branch_id}\n{b.op}",
                dumps([b.branch_id, b.op, b.url, b.create_time]) + b"\n" + b.data)
    return out


def decode_branches(gid: str, raw: dict[bytes, bytes]) -> list[Branch]:
    """Branches of one gid from the HGETALL of its branch hash, in insertion order."""
    out: list[Branch] = []
    for i in range(1, int(raw.get(b"n", b"0")) + 1):
        static = raw.get(b"d:%d" % i)
        if static is None:  # cannot happen unless edited by hand; skip rather than crash
            continue
        head, _, data = static.partition(b"\n")
        branch_id, op, url, create_time = orjson.loads(head)
        fin, rb = raw.get(b"f:%d" % i), raw.get(b"r:%d" % i)
        out.append(
            Branch(
                gid=gid,
                branch_id=branch_id,
                op=Op(op),
                url=url,
                data=data,
                status=Status(raw[b"s:%d" % i].decode()),
                create_time=float(create_time),
                update_time=float(raw[b"u:%d" % i]),
                finish_time=None if fin is None else float(fin),
                rollback_time=None if rb is None else float(rb),
                calls=int(raw.get(b"k:%d" % i, b"0")),
            )
        )
    return out


def decode_first_calls(raw: dict[bytes, bytes]) -> list[CallRecord]:
    """The first calls kept in a branch hash (its HGETALL: c:<i>, update.lua)."""
    out: list[CallRecord] = []
    for field, rec in raw.items():
        if not field.startswith(b"c:"):
            continue
        static = raw.get(b"d:" + field[2:])
        if static is None:
            continue
        branch_id, op = orjson.loads(static.partition(b"\n")[0])[:2]
        out.append(_call(branch_id, op, 1, rec))
    return out


def _call(branch_id: str, op: str, attempt: int, rec: bytes) -> CallRecord:
    start, duration, outcome, reason, server, next_retry = orjson.loads(rec)
    return CallRecord(branch_id, Op(op), float(start), float(duration), Outcome(outcome),
                      reason, server, None if next_retry is None else float(next_retry),
                      attempt)


def encode_call(c: CallRecord) -> bytes:
    """One call as a line of the history (update.lua prefixes its attempt number)."""
    return orjson.dumps([c.start, c.duration, c.outcome.value, c.reason, c.server,
                         c.next_retry])


def decode_calls(raw: dict[bytes, bytes]) -> list[CallRecord]:
    """The calls kept in a call-history hash (its HGETALL), in no particular order."""
    out: list[CallRecord] = []
    for field, lines in raw.items():
        if not field.startswith(b"l:"):
            continue
        branch_id, _, op = field[2:].decode().partition("\n")
        for line in lines.split(b"\n"):
            attempt, _, rec = line.partition(b" ")
            out.append(_call(branch_id, op, int(attempt), rec))
    return out


def op_args(change: Change) -> list[Any]:
    """update.lua's arguments from the number of branch op writes on: per op its status,
    count and first call, then keep and the history calls (see there)."""
    ops, history = op_writes(change)
    args: list[Any] = [len(ops)]
    for w in ops:
        st = w.status
        # a branch op that ends (succeed or failed) gets finish_time, as DTM and the SQL
        # stores do
        stamp = "f" if st in (Status.SUCCEED, Status.FAILED) else ""
        args += [branch_key(w.branch_id, w.op), "" if st is None else st.value, stamp,
                 "" if w.count is None else w.count,
                 b"" if w.first is None else encode_call(w.first)]
    args.append(change.keep_calls)
    for c in history:
        args += [branch_key(c.branch_id, c.op), c.attempt, encode_call(c)]
    return args


def check_unique(branches: Sequence[Branch]) -> None:
    """Raise DuplicateBranch if the batch itself repeats a (branch_id, op)."""
    seen: set[tuple[str, Op]] = set()
    for b in branches:
        key = (b.branch_id, b.op)  # Branch.key, without the property call
        if key in seen:
            raise DuplicateBranch(gid=b.gid, branch_id=b.branch_id, op=b.op.value)
        seen.add(key)


def change_fields(change: Change, now: float) -> dict[str, str]:
    """Global hash fields a `Change` writes at time `now`."""
    out = {"update_time": num(now)}
    if change.status is not None:
        out["status"] = change.status
        if change.status is Status.SUCCEED:
            out["finish_time"] = num(now)
        elif change.status is Status.FAILED:
            out["rollback_time"] = num(now)
    if change.next_cron_time is not None:
        out["next_cron_time"] = num(change.next_cron_time)
    if change.next_cron_interval is not None:
        out["next_cron_interval"] = num(change.next_cron_interval)
    for name in ("owner", "rollback_reason", "result"):
        value: str | None = getattr(change, name)
        if value is not None:
            out[name] = value
    if change.retry_count is not None:
        out["retry_count"] = str(change.retry_count)
    return out


def flat(d: dict[str, str] | dict[str, str | bytes]) -> list[str | bytes]:
    """A dict as HSET's field, value, field, value... arguments."""
    return [x for kv in d.items() for x in kv]


def pairs(flat: list[bytes]) -> dict[bytes, bytes]:
    """HGETALL's field, value... reply as a dict."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def encode_kv(version: int, create_time: str, update_time: str, value: str) -> str:
    """A key-value record as one text: the three header lines, then the value as is."""
    return f"{version}\n{create_time}\n{update_time}\n{value}"


def decode_kv(cat: str, key: str, rec: bytes) -> KV:
    """Inverse of `encode_kv`."""
    version, created, updated, value = rec.decode().split("\n", 3)
    return KV(
        cat=cat,
        k=key,
        v=value,
        version=int(version),
        create_time=float(created),
        update_time=float(updated),
    )
