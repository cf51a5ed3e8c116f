# ruff: noqa
# mypy: ignore-errors
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class UserScoreRequest(_message.Message):
    __slots__ = ("userId", "score")
    USERID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    userId: int
    score: int
    def __init__(self, userId: _Optional[int] = ..., score: _Optional[int] = ...) -> None: ...

class UserScoreResponse(_message.Message):
    __slots__ = ("userId", "score")
    USERID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    userId: int
    score: int
    def __init__(self, userId: _Optional[int] = ..., score: _Optional[int] = ...) -> None: ...
