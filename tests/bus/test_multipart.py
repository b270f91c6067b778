"""bus/multipart.py: the hot paths' multipart send and receive, over a real ZeroMQ socket pair."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import zmq

from bus import multipart


@pytest.fixture
def pair() -> Iterator[tuple[zmq.Socket[bytes], zmq.Socket[bytes]]]:
    ctx = zmq.Context()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    a.bind("inproc://multipart")
    b.connect("inproc://multipart")
    yield a, b
    a.close(0)
    b.close(0)
    ctx.term()


def test_frames_arrive_whole_and_in_order(
    pair: tuple[zmq.Socket[bytes], zmq.Socket[bytes]],
) -> None:
    a, b = pair
    sent = [b"AMB1", b"\x01", b"", b"x" * 100_000]
    multipart.send(a, sent)
    multipart.send(a, [b"one frame"])
    assert b.poll(5000)
    assert multipart.recv(b) == sent
    assert b.recv_multipart() == [b"one frame"]  # what pyzmq's own API reads: the same frames
    a.send_multipart([b"from", b"pyzmq"])
    assert b.poll(5000)
    first = multipart.recv_frame(b)
    assert (first.bytes, first.more) == (b"from", True)
    last = multipart.recv_frame(b)
    assert (last.bytes, last.more) == (b"pyzmq", False)


def test_nothing_queued_raises_again(pair: tuple[zmq.Socket[bytes], zmq.Socket[bytes]]) -> None:
    _, b = pair
    with pytest.raises(zmq.Again):
        multipart.recv(b)
    with pytest.raises(zmq.Again):
        multipart.recv_frame(b)


def test_a_send_with_no_peer_raises_again_and_queues_nothing() -> None:
    ctx = zmq.Context()
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.IMMEDIATE, 1)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect("ipc:///nonexistent-dir/multipart.ipc")
    try:
        with pytest.raises(zmq.Again):
            multipart.send(dealer, [b"AMB1", b"\x01", b"{}"])
    finally:
        dealer.close(0)
        ctx.term()
