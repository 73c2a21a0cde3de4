"""Where audit events go besides the chained log: JSON Lines, RFC 5424 syslog, an HTTP webhook.

Sinks are fed after the transaction commits; the chained log in the database is the record of
truth. A sink that fails prints a warning and never undoes or blocks the change it reports.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
import threading
import urllib.request
from collections import deque
from collections.abc import Iterable
from datetime import UTC
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from replay import printable

from .audit import AuditEvent

__all__ = ["BackgroundSink", "JsonlSink", "Sink", "SyslogSink", "WebhookSink", "dispatch", "format_rfc5424"]

SD_ID = "zsp@32473"
"""Structured-data id of our syslog element. 32473 is the documentation PEN of RFC 5612; a
deployment with its own Private Enterprise Number can rewrite it in its collector."""
_SEVERITY = {"I": 6, "W": 4, "E": 3}  # info, warning, error
_FACILITY_AUTHPRIV = 10
_SD_NAME = re.compile(r'[!#-<>-\\^-~]{1,32}')  # PRINTUSASCII except "=", "]", '"' and space


class Sink(Protocol):
    name: str

    def send(self, events: list[AuditEvent]) -> None: ...


class JsonlSink:
    """Appends one JSON object per line (UTF-8, RFC 3339 UTC times)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = f"jsonl:{path}"

    def send(self, events: list[AuditEvent]) -> None:
        data = "".join(json.dumps(e.to_json(), sort_keys=True) + "\n" for e in events)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        try:
            os.write(fd, data.encode())
        finally:
            os.close(fd)


def _sd_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _sd_value(value: Any) -> str:
    """An SD-PARAM value (RFC 5424 6.3.3): booleans as ``true``/``false`` (as in the JSON), text
    with its control characters escaped (:func:`replay.printable`: many syslog pipelines are
    line-based, and a newline must not start a forged record), then ``"``, ``\\`` and ``]``
    escaped as the RFC requires."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str | int | float):
        text = str(value)
    else:
        text = json.dumps(value, sort_keys=True, ensure_ascii=False)
    return _sd_escape(printable(text))


def format_rfc5424(event: AuditEvent, hostname: str, procid: int) -> bytes:
    """``<PRI>1 TIMESTAMP HOST zsp PROCID MSGID [zsp@32473 k="v" ...] MESSAGE`` (RFC 5424)."""
    pri = _FACILITY_AUTHPRIV * 8 + _SEVERITY.get(event.code[-1], 6)
    ts = event.time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    params = {k: v for k, v in event.to_json().items() if v is not None and k not in ("message", "time")}
    sd = " ".join(f'{k}="{_sd_value(v)}"' for k, v in sorted(params.items()) if _SD_NAME.fullmatch(k))
    msgid = event.event[:32]
    # MSG: one line with control characters escaped, so that it cannot forge a record either.
    return f"<{pri}>1 {ts} {hostname[:255]} zsp {procid} {msgid} [{SD_ID} {sd}] {printable(event.message)}".encode()


class SyslogSink:
    """RFC 5424 over UDP (``udp://host:port``), TCP with octet counting (``tcp://``, RFC 6587)
    or a local datagram socket (``unix:///dev/log``)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.name = f"syslog:{url}"
        u = urlparse(url)
        if u.scheme not in ("udp", "tcp", "unix"):
            raise ValueError(f"syslog URL must start with udp://, tcp:// or unix://, not {url!r}")
        self._u = u

    def send(self, events: list[AuditEvent]) -> None:
        host, pid = socket.gethostname(), os.getpid()
        msgs = [format_rfc5424(e, host, pid) for e in events]
        u = self._u
        if u.scheme == "unix":
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                for m in msgs:
                    s.sendto(m, u.path)
        elif u.scheme == "udp":
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                for m in msgs:
                    s.sendto(m, (u.hostname or "127.0.0.1", u.port or 514))
        else:
            with socket.create_connection((u.hostname or "127.0.0.1", u.port or 514), timeout=5) as s:
                s.sendall(b"".join(str(len(m)).encode() + b" " + m for m in msgs))


class WebhookSink:
    """POSTs ``{"events": [...]}`` as JSON to an HTTP(S) URL (chat notifications of new requests)."""

    def __init__(self, url: str, events: Iterable[str]) -> None:
        if urlparse(url).scheme not in ("http", "https"):
            raise ValueError(f"webhook URL must be http:// or https://, not {url!r}")
        self.url = url
        self.events = frozenset(events)
        self.name = f"webhook:{url}"

    def send(self, events: list[AuditEvent]) -> None:
        # A rule that asked to notify (its ``rule.match``/``rule.hold`` says notify) is sent whatever the filter.
        chosen = [e.to_json() for e in events if e.event in self.events or _notify(e)]
        if not chosen:
            return
        req = urllib.request.Request(  # noqa: S310 - scheme checked in __init__
            self.url,
            data=json.dumps({"events": chosen}).encode(),
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "zsp"},
        )
        with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310
            resp.read()


def _notify(event: AuditEvent) -> bool:
    # rule.hold too: an approver must learn that a command waits, and its hold id to decide it.
    return event.event in ("rule.match", "rule.hold") and event.fields.get("notify") is True


def dispatch(sinks: Iterable[Sink], events: list[AuditEvent]) -> None:
    if not events:
        return
    for sink in sinks:
        try:
            sink.send(events)
        except (OSError, ValueError) as exc:  # URLError and socket errors are OSErrors
            _warn(sink.name, str(exc))


class BackgroundSink:
    """A sink fed from its own thread, for the bastion: a collector that is slow or unreachable
    (a TCP syslog that never accepts, a webhook that hangs) then delays nobody's login, session or
    control command, where ``dispatch`` would hold the caller, and the database thread with it,
    for up to its timeout per event. Events wait in a bounded queue; past ``max_pending`` they are
    dropped with a warning (the chained log in the database remains the record). ``close`` sends
    what is queued, waiting at most ``timeout`` seconds.
    """

    def __init__(self, sink: Sink, *, max_pending: int = 10_000) -> None:
        self.sink = sink
        self.name = sink.name
        self.dropped = 0
        self._max = max_pending
        self._queue: deque[AuditEvent] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name=f"zsp-sink-{sink.name[:40]}", daemon=True)
        self._thread.start()

    def send(self, events: list[AuditEvent]) -> None:
        with self._cond:
            room = self._max - len(self._queue)
            if room < len(events):
                lost = len(events) - max(room, 0)
                if not self.dropped:
                    _warn(self.name, f"{lost} event(s) dropped: more than {self._max} waiting to be sent")
                self.dropped += lost
                events = events[: max(room, 0)]
            self._queue.extend(events)
            self._cond.notify()

    def close(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                batch = list(self._queue)
                self._queue.clear()
            try:
                self.sink.send(batch)
            except (OSError, ValueError) as exc:
                _warn(self.name, str(exc))


def _warn(name: str, problem: str) -> None:
    print(f"zsp: warning: audit sink {printable(name)} failed: {printable(problem)}", file=sys.stderr)
