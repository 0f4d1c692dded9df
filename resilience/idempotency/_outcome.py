"""Stored outcomes: the one payload format of every idempotency record, built and read here.

What a duplicate replays is stored in the record as one small versioned JSON object, whichever
adapter wrote it (keys in this order, compact separators)::

    {"v":1,"kind":"result","json":<value>}        Idempotent with JSONCodec: the value itself
    {"v":1,"kind":"result","text":"<str>"}        Idempotent, a codec whose encode returns str
    {"v":1,"kind":"result","b64":"<base64>"}      Idempotent, a codec whose encode returns bytes
    {"v":1,"kind":"error","type":"pkg.Err","args":[...],"raised":"pkg.SubErr"}
    {"v":1,"kind":"http","status":201,"headers":[["content-type","..."]],"b64":"<body>"}
    {"v":1,"kind":"grpc","b64":"<serialized response>"}

An unknown ``v`` or ``kind``, or a kind the reader does not serve (an HTTP record read by a
gRPC server), is *unreadable*: adapters fail closed (a :class:`~resilience.StoreError`, HTTP
503, gRPC ``UNAVAILABLE``), never replaying something they cannot interpret.

Records written before this format (three dialects) are still read, so an upgrade replays them:
``"r"`` + packed codec data and ``"e"`` + a JSON error (:class:`~resilience.Idempotent`),
``{"s":…,"h":…,"b":…}`` (the ASGI middleware) and ``"b"`` + base64 (the gRPC server).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any, Literal

from ._codec import Codec, JSONCodec

__all__ = ["OUTCOME_VERSION", "OutcomeKind", "StoredOutcome", "encode_result"]

#: Version of the stored-outcome envelope (``"v"``).
OUTCOME_VERSION = 1
OutcomeKind = Literal["result", "error", "http", "grpc"]

_JSON = JSONCodec()
_HEAD = '{"v":1,"kind":'
#: How a :class:`JSONCodec` result's envelope starts: what follows is the value, then ``}``
#: (the policy's replay reads just the value: one parse, as many instructions as before v1).
JSON_RESULT = _HEAD + '"result","json":'


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _text(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def encode_result(codec: Codec, value: Any) -> tuple[str, int]:
    """The envelope of a function result and the size of the codec's data (bytes or chars).

    :class:`JSONCodec`'s text is itself JSON, so it is embedded as is (no second encoding).
    Raises what ``codec.encode`` raises (``TypeError`` / ``ValueError``: not retained).

    Example:
        >>> encode_result(JSONCodec(), {"id": 7})
        ('{"v":1,"kind":"result","json":{"id":7}}', 8)
    """
    data = codec.encode(value)
    if type(codec) is JSONCodec and isinstance(data, str):
        return f"{JSON_RESULT}{data}}}", len(data)
    if isinstance(data, bytes):
        return f'{_HEAD}"result","b64":"{_b64(data)}"}}', len(data)
    if isinstance(data, str):
        return f'{_HEAD}"result","text":{_text(data)}}}', len(data)
    raise TypeError(f"codec.encode returned {type(data).__name__}, not str or bytes")


@dataclass(slots=True)
class StoredOutcome:
    """One stored outcome (see the format above): :meth:`encode` it to store, :meth:`decode`
    what a claim replays.

    Attributes:
        kind: ``"result"`` / ``"error"`` (:class:`~resilience.Idempotent`), ``"http"`` (the
            ASGI middleware) or ``"grpc"`` (the gRPC server).
        body: the response bytes (``http``, ``grpc``) or the codec's data (``result``; ``None``
            when the value was stored as JSON: then it is in ``value``).
        value: a ``result`` stored as JSON.
        status: the HTTP status (``http``).
        headers: the replayed HTTP headers (``http``), as ``(name, value)`` latin-1 strings.
        error_type: the qualified name of the listed exception type (``error``).
        error_args: the exception's JSON-compatible ``args`` (``error``).
        raised: the qualified name of the type actually raised (``error``).

    Example:
        >>> stored = StoredOutcome("http", b"{}", status=201,
        ...                        headers=(("content-type", "application/json"),)).encode()
        >>> stored
        '{"v":1,"kind":"http","status":201,"headers":[["content-type","application/json"]],"b64":"e30="}'
        >>> StoredOutcome.decode(stored).body
        b'{}'
        >>> old = StoredOutcome.decode('{"s":200,"h":[],"b":"b2s="}')  # the ASGI dialect before v1
        >>> old.kind, old.status, old.body
        ('http', 200, b'ok')
    """

    kind: OutcomeKind
    body: bytes | str | None = None
    value: Any = None
    status: int = 0
    headers: tuple[tuple[str, str], ...] = ()
    error_type: str = ""
    error_args: tuple[Any, ...] = ()
    raised: str = ""

    def encode(self) -> str:
        """The stored text (the envelope)."""
        kind, body = self.kind, self.body
        if kind == "grpc":
            return f'{_HEAD}"grpc","b64":"{_b64(_bytes(body))}"}}'
        if kind == "http":
            headers = json.dumps([list(h) for h in self.headers], separators=(",", ":"))
            return (
                f'{_HEAD}"http","status":{int(self.status)},"headers":{headers},'
                f'"b64":"{_b64(_bytes(body))}"}}'
            )
        if kind == "error":
            data = {"type": self.error_type, "args": list(self.error_args), "raised": self.raised}
            return f'{_HEAD}"error",{json.dumps(data, separators=(",", ":"))[1:]}'
        if kind == "result":
            if body is None:
                return f'{_HEAD}"result","json":{_JSON.encode(self.value)}}}'
            if isinstance(body, bytes):
                return f'{_HEAD}"result","b64":"{_b64(body)}"}}'
            return f'{_HEAD}"result","text":{_text(body)}}}'
        raise ValueError(f"unknown stored outcome kind {kind!r}")

    @classmethod
    def decode(cls, payload: str) -> StoredOutcome:
        """Read a stored outcome (this format or a dialect before it).

        Raises:
            ValueError: the payload is unreadable (corrupt, an unknown version or kind).
        """
        try:
            if payload[:1] == "{":
                data = json.loads(payload)
                if not isinstance(data, dict):
                    raise TypeError("not an object")
                if "v" not in data:
                    return cls._legacy_http(data)
                if data["v"] != OUTCOME_VERSION:
                    raise ValueError(f"unknown version {data['v']!r}")
                return cls._from_envelope(data)
            return cls._legacy(payload)
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise ValueError(f"unreadable stored outcome ({exc!r})") from None

    @classmethod
    def _from_envelope(cls, data: dict[str, Any]) -> StoredOutcome:
        kind = data["kind"]
        if kind == "result":
            if "json" in data:
                return cls("result", value=data["json"])
            if "text" in data:
                return cls("result", _str(data["text"]))
            return cls("result", base64.b64decode(_str(data["b64"]), validate=True))
        if kind == "grpc":
            return cls("grpc", base64.b64decode(_str(data["b64"]), validate=True))
        if kind == "http":
            return cls._http(data["status"], data["headers"], data["b64"])
        if kind == "error":
            return cls._error(data["type"], data["args"], data["raised"])
        raise ValueError(f"unknown kind {kind!r}")

    @classmethod
    def _http(cls, status: Any, headers: Any, b64: Any) -> StoredOutcome:
        if type(status) is not int:
            raise TypeError(f"status {status!r}")
        pairs = tuple((_str(k), _str(v)) for k, v in headers)
        return cls("http", base64.b64decode(_str(b64), validate=True), status=status, headers=pairs)

    @classmethod
    def _error(cls, type_name: Any, args: Any, raised: Any) -> StoredOutcome:
        if not isinstance(args, list):
            raise TypeError(f"args {args!r}")
        return cls("error", error_type=_str(type_name), error_args=tuple(args), raised=_str(raised))

    @classmethod
    def _legacy_http(cls, data: dict[str, Any]) -> StoredOutcome:
        """The ASGI middleware's dialect: ``{"s": status, "h": headers, "b": base64 body}``."""
        return cls._http(data["s"], data["h"], data["b"])

    @classmethod
    def _legacy(cls, payload: str) -> StoredOutcome:
        """The prefixed dialects: ``r`` + packed result, ``e`` + JSON error, packed gRPC bytes."""
        tag = payload[:1]
        if tag == "r":
            return cls("result", _unpack(payload[1:]))
        if tag == "e":
            data = json.loads(payload[1:])
            return cls._error(data["t"], data["a"], data["n"])
        if tag in ("b", "s"):  # IdempotencyRecords.run: the packed response bytes
            body = _unpack(payload)
            return cls("grpc", body if isinstance(body, bytes) else body.encode("utf-8"))
        raise ValueError("unknown dialect")

    def result(self, codec: Codec) -> Any:
        """The stored function result, decoded by ``codec`` (``kind == "result"``)."""
        if self.body is None:
            if type(codec) is JSONCodec:
                return self.value
            return codec.decode(_JSON.encode(self.value))
        return codec.decode(self.body)


def _bytes(body: bytes | str | None) -> bytes:
    if isinstance(body, str):
        return body.encode("utf-8")
    return bytes(body or b"")


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value


def _unpack(packed: str) -> str | bytes:
    """The legacy packing of codec data: ``"b"`` + base64 of bytes, ``"s"`` + text."""
    tag = packed[:1]
    if tag == "b":
        return base64.b64decode(packed[1:], validate=True)
    if tag == "s":
        return packed[1:]
    raise ValueError("unknown packing")
