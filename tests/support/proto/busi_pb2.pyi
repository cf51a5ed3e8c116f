# ruff: noqa
# mypy: ignore-errors
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class BusiReq(_message.Message):
    __slots__ = ("Amount", "UserID", "TransInResult", "TransOutResult")
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    USERID_FIELD_NUMBER: _ClassVar[int]
    TRANSINRESULT_FIELD_NUMBER: _ClassVar[int]
    TRANSOUTRESULT_FIELD_NUMBER: _ClassVar[int]
    Amount: int
    UserID: int
    TransInResult: str
    TransOutResult: str
    def __init__(self, Amount: _Optional[int] = ..., UserID: _Optional[int] = ..., TransInResult: _Optional[str] = ..., TransOutResult: _Optional[str] = ...) -> None: ...

class BusiReply(_message.Message):
    __slots__ = ("Message",)
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    Message: str
    def __init__(self, Message: _Optional[str] = ...) -> None: ...
