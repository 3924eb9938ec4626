"""Binary frame codec of the agent tunnel protocol (see api_schema/agent-protocol.asyncapi.yaml)."""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

PROTOCOL_VERSION = 1
# The websocket path agents connect to; an agent given a bare host dials this path.
AGENT_PATH = "/agent/connect"
# type (u8), flags (u8), stream id (u32); payload follows up to the end of the websocket message.
HEADER = struct.Struct("!BBI")
HEADER_SIZE = HEADER.size
DEFAULT_MAX_PAYLOAD = 64 * 1024
FLAG_END = 0x01


class FrameType(enum.IntEnum):
    HELLO = 0x01
    OPEN = 0x02
    HEADERS = 0x03
    DATA = 0x04
    END = 0x05
    RESET = 0x06
    WINDOW = 0x07
    PING = 0x08
    PONG = 0x09
    DRAIN = 0x0A


class CloseCode(enum.IntEnum):
    """Websocket close codes used by the tunnel; 4xxx are ours."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    BAD_HELLO = 4001
    INCOMPATIBLE_VERSION = 4002
    FLOW_CONTROL_VIOLATION = 4003
    HEARTBEAT_TIMEOUT = 4004
    TOKEN_REVOKED = 4005
    DRAINED = 4006
    TOO_MANY_STREAMS = 4007
    REPLACED = 4008


class ResetCode(enum.IntEnum):
    """Why a single stream was aborted; the connection stays up."""

    CANCEL = 1
    REFUSED = 2
    INTERNAL = 3
    UPSTREAM_UNREACHABLE = 4
    UPSTREAM_TIMEOUT = 5
    CONNECTION_LOST = 6
    BAD_REQUEST = 7
    # The stream's frames broke the protocol (a HEADERS payload that is not a valid reply).
    MALFORMED = 8


class ProtocolViolation(Exception):
    """The peer broke the protocol; the connection must close with `code`."""

    def __init__(self, code: CloseCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Frame:
    type: FrameType
    stream_id: int
    payload: bytes = b""
    flags: int = 0


_STREAM_FRAMES = frozenset(
    {
        FrameType.OPEN,
        FrameType.HEADERS,
        FrameType.DATA,
        FrameType.END,
        FrameType.RESET,
        FrameType.WINDOW,
    }
)
# END may ride on the frame that opens, answers or carries the last data of a stream.
_END_FRAMES = frozenset({FrameType.OPEN, FrameType.HEADERS, FrameType.DATA})
_FIXED_SIZES = {FrameType.WINDOW: 4, FrameType.PING: 8, FrameType.PONG: 8, FrameType.END: 0}
_WINDOW = struct.Struct("!I")
_RESET = struct.Struct("!H")


def encode(
    frame_type: FrameType, stream_id: int = 0, payload: bytes = b"", flags: int = 0
) -> bytes:
    return HEADER.pack(frame_type, flags, stream_id) + payload


def decode(message: bytes, max_payload: int) -> Frame:
    """Parse one websocket message; raise ProtocolViolation for anything malformed."""
    if len(message) < HEADER_SIZE:
        raise ProtocolViolation(CloseCode.PROTOCOL_ERROR, "frame shorter than its header")
    raw_type, flags, stream_id = HEADER.unpack_from(message)
    payload = message[HEADER_SIZE:]
    if len(payload) > max_payload:
        raise ProtocolViolation(CloseCode.MESSAGE_TOO_BIG, "frame payload exceeds the maximum")
    try:
        frame_type = FrameType(raw_type)
    except ValueError:
        raise ProtocolViolation(
            CloseCode.PROTOCOL_ERROR, f"unknown frame type {raw_type}"
        ) from None
    if (frame_type in _STREAM_FRAMES) != (stream_id != 0):
        raise ProtocolViolation(CloseCode.PROTOCOL_ERROR, f"{frame_type.name} on wrong stream id")
    expected = _FIXED_SIZES.get(frame_type)
    if expected is not None and len(payload) != expected:
        raise ProtocolViolation(CloseCode.PROTOCOL_ERROR, f"{frame_type.name} has a bad length")
    if frame_type is FrameType.RESET and len(payload) < _RESET.size:
        raise ProtocolViolation(CloseCode.PROTOCOL_ERROR, "RESET without an error code")
    if flags & ~FLAG_END or (flags and frame_type not in _END_FRAMES):
        raise ProtocolViolation(CloseCode.PROTOCOL_ERROR, "unknown frame flags")
    return Frame(frame_type, stream_id, payload, flags)


def window_payload(increment: int) -> bytes:
    return _WINDOW.pack(increment)


def parse_window(payload: bytes) -> int:
    return int(_WINDOW.unpack(payload)[0])


def reset_payload(code: int, reason: str) -> bytes:
    return _RESET.pack(code) + reason.encode()[:256]


def parse_reset(payload: bytes) -> tuple[int, str]:
    return int(_RESET.unpack_from(payload)[0]), payload[_RESET.size :].decode(errors="replace")
