"""Protobuf wire encoding straight from descriptors, for fuzzing: values the generated classes
refuse to hold (invalid UTF-8 in a string, out-of-range integers, a field sent with the wrong
wire type) can still be put on the wire. Shared by tests/reliability/test_fuzz.py and
bench/fuzz.py.

A message is given as a list of ``(field, value)`` pairs in wire order; ``field`` is a
FieldDescriptor, or an int for a field number the schema does not have. A message-typed value
is itself such a list (or raw bytes, sent as is).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

from google.protobuf.descriptor import FieldDescriptor

F = FieldDescriptor
Fields = Sequence[tuple[Any, Any]]

_U64 = (1 << 64) - 1
_VARINT = {F.TYPE_INT32, F.TYPE_INT64, F.TYPE_UINT32, F.TYPE_UINT64, F.TYPE_BOOL, F.TYPE_ENUM}
_ZIGZAG = {F.TYPE_SINT32, F.TYPE_SINT64}
_FIXED64 = {F.TYPE_DOUBLE: "<d", F.TYPE_FIXED64: "<Q", F.TYPE_SFIXED64: "<q"}
_FIXED32 = {F.TYPE_FLOAT: "<f", F.TYPE_FIXED32: "<I", F.TYPE_SFIXED32: "<i"}


def varint(value: int) -> bytes:
    value &= _U64  # negatives: ten bytes of two's complement, as protobuf sends them
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def key(number: int, wire_type: int) -> bytes:
    return varint((number << 3) | wire_type)


def delimited(number: int, payload: bytes) -> bytes:
    return key(number, 2) + varint(len(payload)) + payload


def _pack(fmt: str, value: Any) -> bytes:
    try:
        return struct.pack(fmt, value)
    except (struct.error, OverflowError):
        # Out of range for the fixed width: send the low bits (still a well-formed field).
        size = struct.calcsize(fmt)
        return (int(value) & ((1 << (8 * size)) - 1)).to_bytes(size, "little")


def encode_value(field: FieldDescriptor, value: Any) -> bytes:
    n, t = field.number, field.type
    if t in _VARINT:
        return key(n, 0) + varint(int(value))
    if t in _ZIGZAG:
        v = int(value)
        return key(n, 0) + varint((v << 1) ^ (v >> 63))
    if t in _FIXED64:
        return key(n, 1) + _pack(_FIXED64[t], value)
    if t in _FIXED32:
        return key(n, 5) + _pack(_FIXED32[t], value)
    if t == F.TYPE_STRING:
        return delimited(
            n, value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass")
        )
    if t == F.TYPE_BYTES:
        return delimited(n, bytes(value))
    if t == F.TYPE_MESSAGE:
        return delimited(n, value if isinstance(value, bytes) else encode(value))
    raise ValueError(f"unsupported field type {t} ({field.full_name})")


def encode(fields: Fields) -> bytes:
    out = bytearray()
    for field, value in fields:
        if isinstance(field, int):  # a field number the schema lacks, as a varint
            out += key(field, 0) + varint(int(value))
        else:
            out += encode_value(field, value)
    return bytes(out)
