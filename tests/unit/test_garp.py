"""Gratuitous ARP frames byte by byte, and the burst's schedule and cancellation."""
from __future__ import annotations

import socket
import struct
import threading
import time

import pytest

from pgwarden.netroute import garp

MAC = bytes.fromhex("020000aabbcc")
VIP = "10.200.7.100"


def parse(frame: bytes) -> dict[str, object]:
    dst, src, ethertype = frame[0:6], frame[6:12], struct.unpack("!H", frame[12:14])[0]
    htype, ptype, hlen, plen, op, sha, spa, tha, tpa = struct.unpack(
        "!HHBBH6s4s6s4s", frame[14:42])
    return dict(dst=dst, src=src, ethertype=ethertype, htype=htype, ptype=ptype, hlen=hlen,
                plen=plen, op=op, sha=sha, spa=socket.inet_ntoa(spa), tha=tha,
                tpa=socket.inet_ntoa(tpa))


@pytest.mark.parametrize("op", [garp.ARP_REQUEST, garp.ARP_REPLY])
def test_frame_common_fields(op: int) -> None:
    frame = garp.arp_frame(MAC, VIP, op)
    assert len(frame) == 60  # padded to the Ethernet minimum
    assert frame[42:] == b"\x00" * 18
    f = parse(frame)
    assert f["dst"] == b"\xff" * 6  # broadcast
    assert f["src"] == MAC
    assert f["ethertype"] == 0x0806
    assert (f["htype"], f["ptype"], f["hlen"], f["plen"]) == (1, 0x0800, 6, 4)
    assert f["op"] == op
    assert f["sha"] == MAC
    assert f["spa"] == VIP and f["tpa"] == VIP  # gratuitous: sender = target = VIP


def test_request_form_has_zero_target_mac() -> None:
    f = parse(garp.arp_frame(MAC, VIP, garp.ARP_REQUEST))
    assert f["op"] == 1 and f["tha"] == b"\x00" * 6


def test_reply_form_has_our_mac_as_target() -> None:
    # Linux only treats a reply as gratuitous when the target MAC equals the sender MAC.
    f = parse(garp.arp_frame(MAC, VIP, garp.ARP_REPLY))
    assert f["op"] == 2 and f["tha"] == MAC


def test_exact_bytes_of_the_request() -> None:
    expected = bytes.fromhex(
        "ffffffffffff" "020000aabbcc" "0806"          # Ethernet
        "0001" "0800" "06" "04" "0001"                # htype, ptype, hlen, plen, op
        "020000aabbcc" "0ac80764" "000000000000" "0ac80764")
    assert garp.arp_frame(MAC, VIP, garp.ARP_REQUEST) == expected.ljust(60, b"\x00")


def test_frames_are_request_then_reply() -> None:
    ops = [parse(f)["op"] for f in garp.garp_frames(MAC, VIP)]
    assert ops == [1, 2]


def test_bad_mac_and_address_rejected() -> None:
    with pytest.raises(ValueError):
        garp.arp_frame(b"\x01\x02", VIP, 1)
    with pytest.raises(OSError):
        garp.arp_frame(MAC, "not-an-ip", 1)


class FakeSocket:
    def __init__(self) -> None:
        self.sent: list[tuple[float, bytes]] = []
        self.closed = False
        self.lock = threading.Lock()

    def send(self, frame: bytes) -> int:
        with self.lock:
            self.sent.append((time.monotonic(), frame))
        return len(frame)

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeSocket:
    sock = FakeSocket()
    monkeypatch.setattr(garp, "_open", lambda interface, netns: (sock, MAC))
    return sock


def test_burst_first_round_at_once_then_schedule(fake: FakeSocket) -> None:
    t0 = time.monotonic()
    burst = garp.send_burst("lan0", VIP, schedule=(0.0, 0.05, 0.1, 0.2))
    assert len(fake.sent) == 2  # the first round is sent before send_burst returns
    burst.join(2.0)
    assert burst.done() and burst.rounds_sent == 4 and fake.closed
    times = [t - t0 for t, _ in fake.sent[::2]]
    for got, want in zip(times, (0.0, 0.05, 0.1, 0.2)):
        assert want - 0.005 <= got <= want + 0.1
    assert burst.error is None


def test_cancel_stops_the_burst(fake: FakeSocket) -> None:
    burst = garp.send_burst("lan0", VIP, schedule=(0.0, 0.1, 0.2))
    burst.cancel()
    time.sleep(0.3)
    assert len(fake.sent) == 2 and burst.done() and fake.closed


def test_failure_is_logged_once_and_not_fatal(monkeypatch: pytest.MonkeyPatch,
                                              caplog: pytest.LogCaptureFixture) -> None:
    def refuse(interface: str, netns: str | None) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(garp, "_open", refuse)
    monkeypatch.setattr(garp, "_warned", False)
    with caplog.at_level("DEBUG", logger="pgwarden.netroute"):
        b1 = garp.send_burst("lan0", VIP)
        b2 = garp.send_burst("lan0", VIP)
    assert b1.error and b2.error and b1.done() and b2.done()
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "CAP_NET_RAW" in warnings[0].getMessage()
