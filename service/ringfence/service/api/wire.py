"""Find the field that made a protobuf message undecodable, so the error can name it.

protobuf rejects a message whose ``string`` field holds invalid UTF-8 without saying which
field; clients in other languages can send such bytes. This walks the wire format along the
message's descriptor and reports the path of the first bad string (or the first malformed
field), e.g. ``fingerprint.user_agent``.
"""

from __future__ import annotations

from google.protobuf.descriptor import Descriptor, FieldDescriptor


class _Malformed(Exception):
    pass


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise _Malformed
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def find_bad_field(descriptor: Descriptor, data: bytes, prefix: str = "") -> str | None:
    """Path of the first field in ``data`` that cannot be decoded, or None if none is found."""
    try:
        return _walk(descriptor, data, prefix, {})
    except _Malformed:
        return prefix.rstrip(".") or None


def _walk(descriptor: Descriptor, data: bytes, prefix: str, counts: dict[str, int]) -> str | None:
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire_type = key >> 3, key & 7
        field = descriptor.fields_by_number.get(number)
        name = f"{prefix}{field.name}" if field else prefix.rstrip(".")
        if wire_type == 0:
            _, pos = _varint(data, pos)
        elif wire_type == 1:
            pos += 8
        elif wire_type == 5:
            pos += 4
        elif wire_type == 2:
            length, pos = _varint(data, pos)
            if pos + length > len(data):
                return name or None
            chunk = data[pos:pos + length]
            pos += length
            if field is None:
                continue
            if field.is_repeated:
                if field.message_type is not None and field.message_type.GetOptions().map_entry:
                    name = f"{name}{{}}"  # a map entry: the key is what may be unreadable
                else:
                    index = counts.get(field.name, 0)
                    counts[field.name] = index + 1
                    name = f"{name}[{index}]"
            if field.type == FieldDescriptor.TYPE_STRING:
                try:
                    chunk.decode("utf-8")
                except UnicodeDecodeError:
                    return name
            elif field.type == FieldDescriptor.TYPE_MESSAGE:
                try:
                    bad = _walk(field.message_type, chunk, f"{name}.", {})
                except _Malformed:
                    return name
                if bad:
                    return bad
        else:
            return name or None
        if pos > len(data):
            return name or None
    return None
