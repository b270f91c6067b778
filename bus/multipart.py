"""Multipart messages in and out of a ZeroMQ socket, for the bus's hot paths (the broker, the
async DEALER). Same frames as pyzmq's `send_multipart`/`recv_multipart`, at half the cost: those
go through pyzmq's Python layer per frame and ask `getsockopt(RCVMORE)` after each one (a call
into libzmq that costs more than the recv); these call the Cython socket directly and read a
frame's `more` flag. A bus message is 4–5 frames, six messages per tool call.
"""

from __future__ import annotations

import zmq
from zmq.backend import Socket as _Backend

_NOBLOCK = int(zmq.NOBLOCK)
_SNDMORE_NOBLOCK = int(zmq.SNDMORE | zmq.NOBLOCK)
_send = _Backend.send
_recv = _Backend.recv


def send(sock: zmq.Socket[bytes], msg: list[bytes]) -> None:
    """Send without blocking; raises zmq.Again (nowhere to send now) or another ZMQError. A
    message is atomic in ZeroMQ: an error on its first frame leaves nothing queued."""
    last = len(msg) - 1
    for i, frame in enumerate(msg):
        _send(sock, frame, _SNDMORE_NOBLOCK if i < last else _NOBLOCK)


def recv_frame(sock: zmq.Socket[bytes]) -> zmq.Frame:
    """The next frame, without blocking (its `more`: frames of its message follow); raises
    zmq.Again if none is queued."""
    return _recv(sock, _NOBLOCK, False)


def recv(sock: zmq.Socket[bytes]) -> list[bytes]:
    """The next message, whole, without blocking; raises zmq.Again if none is queued."""
    frame = _recv(sock, _NOBLOCK, False)
    msg = [frame.bytes]
    while frame.more:
        frame = _recv(sock, _NOBLOCK, False)
        msg.append(frame.bytes)
    return msg
