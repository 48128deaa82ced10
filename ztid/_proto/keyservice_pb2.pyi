from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Lease(_message.Message):
    __slots__ = ("seconds", "not_after_unix", "decision_id")
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    NOT_AFTER_UNIX_FIELD_NUMBER: _ClassVar[int]
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    seconds: float
    not_after_unix: float
    decision_id: str
    def __init__(self, seconds: _Optional[float] = ..., not_after_unix: _Optional[float] = ..., decision_id: _Optional[str] = ...) -> None: ...

class NewKeyRequest(_message.Message):
    __slots__ = ("dataset", "target", "tenant")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    target: str
    tenant: str
    def __init__(self, dataset: _Optional[str] = ..., target: _Optional[str] = ..., tenant: _Optional[str] = ...) -> None: ...

class NewKeyResponse(_message.Message):
    __slots__ = ("key_id", "version", "wrapped_key", "data_key", "lease", "decision_id")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    WRAPPED_KEY_FIELD_NUMBER: _ClassVar[int]
    DATA_KEY_FIELD_NUMBER: _ClassVar[int]
    LEASE_FIELD_NUMBER: _ClassVar[int]
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    version: int
    wrapped_key: bytes
    data_key: bytes
    lease: Lease
    decision_id: str
    def __init__(self, key_id: _Optional[str] = ..., version: _Optional[int] = ..., wrapped_key: _Optional[bytes] = ..., data_key: _Optional[bytes] = ..., lease: _Optional[_Union[Lease, _Mapping]] = ..., decision_id: _Optional[str] = ...) -> None: ...

class WrapKeyRequest(_message.Message):
    __slots__ = ("dataset", "data_key")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    DATA_KEY_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    data_key: bytes
    def __init__(self, dataset: _Optional[str] = ..., data_key: _Optional[bytes] = ...) -> None: ...

class WrapKeyResponse(_message.Message):
    __slots__ = ("key_id", "version", "wrapped_key", "decision_id")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    WRAPPED_KEY_FIELD_NUMBER: _ClassVar[int]
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    version: int
    wrapped_key: bytes
    decision_id: str
    def __init__(self, key_id: _Optional[str] = ..., version: _Optional[int] = ..., wrapped_key: _Optional[bytes] = ..., decision_id: _Optional[str] = ...) -> None: ...

class UnwrapKeyRequest(_message.Message):
    __slots__ = ("dataset", "key_id", "version", "wrapped_key")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    WRAPPED_KEY_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    key_id: str
    version: int
    wrapped_key: bytes
    def __init__(self, dataset: _Optional[str] = ..., key_id: _Optional[str] = ..., version: _Optional[int] = ..., wrapped_key: _Optional[bytes] = ...) -> None: ...

class UnwrapKeyResponse(_message.Message):
    __slots__ = ("data_key", "lease", "decision_id")
    DATA_KEY_FIELD_NUMBER: _ClassVar[int]
    LEASE_FIELD_NUMBER: _ClassVar[int]
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    data_key: bytes
    lease: Lease
    decision_id: str
    def __init__(self, data_key: _Optional[bytes] = ..., lease: _Optional[_Union[Lease, _Mapping]] = ..., decision_id: _Optional[str] = ...) -> None: ...

class RewrapKeyRequest(_message.Message):
    __slots__ = ("dataset", "key_id", "version", "wrapped_key")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    WRAPPED_KEY_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    key_id: str
    version: int
    wrapped_key: bytes
    def __init__(self, dataset: _Optional[str] = ..., key_id: _Optional[str] = ..., version: _Optional[int] = ..., wrapped_key: _Optional[bytes] = ...) -> None: ...

class RewrapKeyResponse(_message.Message):
    __slots__ = ("key_id", "version", "wrapped_key", "decision_id")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    WRAPPED_KEY_FIELD_NUMBER: _ClassVar[int]
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    version: int
    wrapped_key: bytes
    decision_id: str
    def __init__(self, key_id: _Optional[str] = ..., version: _Optional[int] = ..., wrapped_key: _Optional[bytes] = ..., decision_id: _Optional[str] = ...) -> None: ...
