"""An SSH transport spoken by hand over a raw socket, for what no client library sends: messages out
of place before or in the middle of key exchange (RFC 4253). Only the clear-text part: the banner,
KEXINIT, the curve25519 ECDH_INIT, and any packet sent unencrypted after them.
"""

from __future__ import annotations

import os
import socket
import struct
import time

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

MSG_KEXINIT = 20
MSG_NEWKEYS = 21
MSG_KEX_ECDH_INIT = 30
MSG_KEX_ECDH_REPLY = 31


def packet(payload: bytes) -> bytes:
    """An unencrypted SSH binary packet (RFC 4253 6): what is sent before keys are in use."""
    pad = 8 - (len(payload) + 5) % 8
    pad += 8 if pad < 4 else 0
    return struct.pack(">IB", len(payload) + pad + 1, pad) + payload + bytes(pad)


def string(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


class RawClient:
    """One connection to ``port`` on loopback, driven a message at a time."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self._buf = b""

    def close(self) -> None:
        self.sock.close()

    def _more(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("the server closed the connection")
        self._buf += chunk

    def banner(self) -> bytes:
        """Send ours, return the server's."""
        self.sock.sendall(b"SSH-2.0-OpenSSH_9.9\r\n")
        while b"\r\n" not in self._buf:
            self._more()
        line, _, self._buf = self._buf.partition(b"\r\n")
        return line

    def read_packet(self) -> bytes:
        """The payload of the next clear-text packet."""
        while len(self._buf) < 4:
            self._more()
        (length,) = struct.unpack(">I", self._buf[:4])
        while len(self._buf) < 4 + length:
            self._more()
        pad = self._buf[4]
        payload = self._buf[5 : 4 + length - pad]
        self._buf = self._buf[4 + length :]
        return payload

    def send(self, payload: bytes) -> None:
        self.sock.sendall(packet(payload))

    def start_kex(self) -> None:
        """Banners, then KEXINIT both ways: ours asks for curve25519-sha256 and strict KEX, and takes
        the server's lists for the rest (its first choices, so they match)."""
        self.banner()
        theirs = self.read_packet()
        if theirs[0] != MSG_KEXINIT:
            raise ValueError(f"expected KEXINIT, got message {theirs[0]}")
        lists, off = [], 17
        for _ in range(10):
            (n,) = struct.unpack(">I", theirs[off : off + 4])
            lists.append(theirs[off + 4 : off + 4 + n])
            off += 4 + n
        lists[0] = b"curve25519-sha256,kex-strict-c-v00@openssh.com"
        self.send(bytes([MSG_KEXINIT]) + os.urandom(16) + b"".join(string(x) for x in lists) + b"\x00" + bytes(4))

    def send_ecdh_init(self) -> None:
        """The client's half of curve25519: the server answers ECDH_REPLY and NEWKEYS, and then
        waits for our NEWKEYS (key exchange is still not complete)."""
        pub = X25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.send(bytes([MSG_KEX_ECDH_INIT]) + string(pub))
        for expected in (MSG_KEX_ECDH_REPLY, MSG_NEWKEYS):
            got = self.read_packet()
            if got[0] != expected:
                raise ValueError(f"expected message {expected}, got {got[0]}")

    def wait_closed(self, seconds: float = 10) -> bool:
        """Read until the server hangs up (True) or ``seconds`` pass (False)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                if not self.sock.recv(65536):
                    return True
            except (ConnectionResetError, BrokenPipeError):
                return True
            except TimeoutError:
                continue
        return False
