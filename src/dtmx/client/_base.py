"""What every transaction type shares: options, payload encoding, branch ids, the body."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Self

import orjson

from dtmx.client._consts import TransType
from dtmx.client._errors import DtmError, wait_outcome

if TYPE_CHECKING:
    from dtmx.client._client import DtmClient

#: Anything a step or branch accepts as payload: JSON-able data, or JSON text already encoded.
Payload = Any

_MAX_SUB_BRANCHES = 99
_MAX_PARENT_ID = 20


def _default(obj: Any) -> Any:
    # pydantic models and similar: serialise through their own dict form.
    dump = getattr(obj, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    raise TypeError(f"cannot serialise {type(obj).__name__} as JSON")


def encode_payload(payload: Payload) -> str | bytes:
    """What a step carries: `bytes` stay bytes (a serialized protobuf for a gRPC branch may
    not be UTF-8), everything else is the JSON text of `payload_text`."""
    if isinstance(payload, bytes | bytearray | memoryview):
        return bytes(payload)
    return payload_text(payload)


def payload_text(payload: Payload) -> str:
    """The JSON text sent for `payload`.

    `str` and `bytes` are taken as JSON text already encoded (sent as they are); `None` is
    the empty payload (the server then calls the branch with GET); anything else (dict,
    list, dataclass, pydantic model, number...) is encoded as JSON.
    """
    if payload is None:
        return ""
    if isinstance(payload, str):
        return payload
    if isinstance(payload, bytes | bytearray | memoryview):
        return bytes(payload).decode("utf-8")
    return orjson.dumps(payload, default=_default).decode("utf-8")


@dataclass(slots=True)
class BranchIdGen:
    """Sub-branch ids under `parent_id`: parent + "01", "02", ... up to "99".

    This is DTM's rule, so a nested TCC's branches sort under their parent's branch and
    servers and barriers agree on ids.
    """

    parent_id: str = ""
    count: int = 0

    def new_id(self) -> str:
        """The next sub-branch id."""
        if self.count >= _MAX_SUB_BRANCHES:
            raise DtmError(f"at most {_MAX_SUB_BRANCHES} sub-branches per branch")
        if len(self.parent_id) >= _MAX_PARENT_ID:
            raise DtmError(f"branch id {self.parent_id!r} is nested too deep")
        self.count += 1
        return self.current()

    def current(self) -> str:
        """The id last returned by `new_id` (parent + "00" before the first)."""
        return f"{self.parent_id}{self.count:02d}"


class TransBase:
    """Options and body building shared by `Saga`, `Tcc` and `Msg`.

    Options are plain attributes (set them directly or through `set_options`); durations
    are whole seconds and 0 means "the server's default".
    """

    trans_type: ClassVar[TransType]

    def __init__(self, client: DtmClient, gid: str) -> None:
        if not gid:
            raise ValueError("gid must not be empty (use `await client.new_gid()`)")
        self.client = client
        self.gid = gid
        #: Submit answers only when the transaction has finished: raises `TransactionFailed`
        #: if it failed, `StillRunning` if the server stopped waiting first.
        self.wait_result = False
        #: Seconds after which an unfinished transaction is aborted.
        self.timeout_to_fail = 0
        #: Seconds the server waits for one branch call.
        self.request_timeout = 0
        #: Seconds before the first retry of a failing branch call (then doubled).
        self.retry_interval = 0
        #: Retries before the transaction is given up on.
        self.retry_limit = 0
        #: Extra headers the server sends with every branch call.
        self.branch_headers: dict[str, str] = {}
        #: Headers of the incoming request to pass on to the branches.
        self.passthrough_headers: list[str] = []
        #: Why the transaction was rolled back (sent with abort).
        self.rollback_reason = ""
        self.protocol = "http"

    def set_options(
        self,
        *,
        wait_result: bool | None = None,
        timeout_to_fail: int | None = None,
        request_timeout: int | None = None,
        retry_interval: int | None = None,
        retry_limit: int | None = None,
        branch_headers: dict[str, str] | None = None,
    ) -> Self:
        """Set any of the options in one chainable call."""
        given = {
            "wait_result": wait_result,
            "timeout_to_fail": timeout_to_fail,
            "request_timeout": request_timeout,
            "retry_interval": retry_interval,
            "retry_limit": retry_limit,
            "branch_headers": branch_headers,
        }
        for name, value in given.items():
            if value is not None:
                setattr(self, name, value)
        return self

    async def _submit(self) -> None:
        """Submit `to_body()`; with `wait_result`, raise `TransactionFailed` if the transaction
        ended failed and `StillRunning` if it has not finished when the server answers."""
        try:
            await self.client.transport.submit(self.to_body())
        except DtmError as e:
            outcome = wait_outcome(e, self.gid) if self.wait_result else e
            if outcome is e:
                raise
            raise outcome from None

    def custom_data(self) -> str:
        """The `custom_data` JSON text of this transaction type ("" for none)."""
        return ""

    def to_body(self) -> dict[str, Any]:
        """The transaction as the JSON object prepare/submit/abort take.

        Unset options are left out, as DTM's own clients do, so the server applies its
        defaults.
        """
        body: dict[str, Any] = {
            "gid": self.gid,
            "trans_type": self.trans_type.value,
            "protocol": self.protocol,
            "concurrent": False,
        }
        optional: dict[str, Any] = {
            "custom_data": self.custom_data(),
            "wait_result": self.wait_result,
            "timeout_to_fail": self.timeout_to_fail,
            "request_timeout": self.request_timeout,
            "retry_interval": self.retry_interval,
            "retry_limit": self.retry_limit,
            "branch_headers": dict(self.branch_headers),
            "passthrough_headers": list(self.passthrough_headers),
            "rollback_reason": self.rollback_reason,
        }
        body.update({k: v for k, v in optional.items() if v})
        return body
