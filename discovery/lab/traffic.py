"""Test traffic between lab namespaces: a hashed TCP transfer and a continuous UDP echo.

Both ends are small Python programs started inside the namespaces; results come back as
JSON or one line per reply on their stdout.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass

from discovery.lab.netns import Daemon, LabError, Namespace, poll

_TCP_RECEIVER = r"""
import hashlib, json, socket, sys
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
srv = socket.socket(family, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], int(sys.argv[2])))
srv.listen(1)
srv.settimeout(float(sys.argv[3]))
print("listening", flush=True)
conn, peer = srv.accept()
conn.settimeout(float(sys.argv[3]))
h, n = hashlib.sha256(), 0
while True:
    chunk = conn.recv(1 << 16)
    if not chunk:
        break
    h.update(chunk)
    n += len(chunk)
print(json.dumps({"bytes": n, "sha256": h.hexdigest(), "peer": peer[0]}), flush=True)
"""

_TCP_SENDER = r"""
import hashlib, json, os, socket, sys, time
ip, port, n, timeout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
seconds = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
rate = float(sys.argv[6]) if len(sys.argv) > 6 else 0.0
s = socket.create_connection((ip, port), timeout=timeout)
h, sent, chunk = hashlib.sha256(), 0, 1 << 16
start = time.monotonic()
if seconds:  # stream for a duration, paced to `rate` bytes/s (0 = as fast as possible)
    while time.monotonic() - start < seconds:
        block = os.urandom(chunk)
        s.sendall(block)
        h.update(block)
        sent += len(block)
        if rate:
            ahead = sent / rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
else:
    data = os.urandom(n)
    view = memoryview(data)
    for off in range(0, n, chunk):
        s.sendall(view[off:off + chunk])
    h.update(data)
    sent = n
s.shutdown(socket.SHUT_WR)
s.recv(1)
print(json.dumps({"bytes": sent, "sha256": h.hexdigest(),
                  "seconds": time.monotonic() - start}), flush=True)
"""


@dataclass
class TransferResult:
    """What the sender sent and the receiver got (bytes and SHA-256), and the seconds the
    sender took."""

    sent_bytes: int
    sent_sha256: str
    received_bytes: int
    received_sha256: str
    seconds: float

    @property
    def intact(self) -> bool:
        return (self.sent_bytes == self.received_bytes
                and self.sent_sha256 == self.received_sha256)


def tcp_transfer(sender: Namespace, receiver: Namespace, receiver_ip: str, nbytes: int = 0,
                 port: int = 5201, timeout: float = 60.0, seconds: float = 0.0,
                 rate: float = 0.0) -> TransferResult:
    """Send random data over TCP to ``receiver_ip``:``port``; both sides hash what they
    sent / received.

    Sends ``nbytes``, or, when ``seconds`` is given, streams for that long paced to ``rate``
    bytes per second (0 = unpaced). Blocks until the receiver reports; LabError when either
    side fails.
    """
    rx = _start_receiver(receiver, receiver_ip, port, timeout)
    tx = sender.run_python(_TCP_SENDER, receiver_ip, port, nbytes, timeout, seconds, rate,
                           timeout=timeout + 10, check=False)
    if tx.returncode != 0:
        rx.stop()
        raise LabError(f"TCP sender failed (exit {tx.returncode}): {tx.stderr[-2000:]}\n"
                       f"{rx.output()}")
    try:
        rx.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        rx.stop()
    return _result(rx, tx.stdout)


def _start_receiver(receiver: Namespace, receiver_ip: str, port: int, timeout: float) -> Daemon:
    rx = receiver.popen_python(_TCP_RECEIVER, receiver_ip, port, timeout, name="tcp-rx")

    def listening() -> bool:
        rx.check_alive()
        return "listening" in rx.stdout()
    poll(listening, 10, lambda: f"TCP receiver on {receiver_ip}:{port}\n{rx.output()}")
    return rx


def _result(rx: Daemon, sender_stdout: str) -> TransferResult:
    lines = [line for line in rx.stdout().splitlines() if line.startswith("{")]
    if not lines:
        raise LabError(f"TCP receiver gave no result\n{rx.output()}")
    got, sent = json.loads(lines[-1]), json.loads(sender_stdout.strip().splitlines()[-1])
    return TransferResult(sent["bytes"], sent["sha256"], got["bytes"], got["sha256"],
                          sent["seconds"])


class TcpStream:
    """:func:`tcp_transfer` streaming for ``seconds`` in the background (both ends are lab
    daemons, stopped by the registry also on failure): :meth:`running` while it lasts,
    :meth:`result` once done (LabError when either side failed, e.g. a connection reset)."""

    def __init__(self, sender: Namespace, receiver: Namespace, receiver_ip: str,
                 seconds: float, rate: float = 0.0, port: int = 5201, timeout: float = 60.0):
        self.rx = _start_receiver(receiver, receiver_ip, port, timeout)
        self.tx = sender.popen_python(_TCP_SENDER, receiver_ip, port, 0, timeout, seconds, rate,
                                      name="tcp-tx")

    def running(self) -> bool:
        return self.tx.alive

    def result(self, timeout: float) -> TransferResult:
        """Wait up to ``timeout`` seconds for both ends; what was sent and received."""
        try:
            code = self.tx.wait(timeout)
            self.rx.wait(timeout)
        except subprocess.TimeoutExpired:
            raise LabError(f"TCP stream still running after {timeout} s\n{self.tx.output()}\n"
                           f"{self.rx.output()}") from None
        if code != 0:
            raise LabError(f"TCP sender failed (exit {code})\n{self.tx.output()}\n{self.rx.output()}")
        return _result(self.rx, self.tx.stdout())


_ECHO_SERVER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(2048)
    s.sendto(data, peer)
"""

_ECHO_CLIENT = """
import socket, sys, threading, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
target, interval = (sys.argv[1], int(sys.argv[2])), float(sys.argv[3])
def receive():
    while True:
        data = s.recv(2048)
        seq, sent = data.decode().split()
        print(seq, sent, repr(time.time()), flush=True)
threading.Thread(target=receive, daemon=True).start()
seq = 0
while True:
    try:
        s.sendto(f"{seq} {time.time()!r}".encode(), target)
    except OSError:
        pass
    seq += 1
    time.sleep(interval)
"""


class EchoProbe:
    """A continuous UDP echo from ``source`` to ``address`` (served in ``target``), one
    probe every ``interval`` seconds, one line per reply.

    Unlike ``ping`` writing to a file (block-buffered), every reply is flushed at once, so
    a test can poll for traffic resuming and measure the gap precisely.
    """

    PORT = 7077

    def __init__(self, source: Namespace, target: Namespace, address: str,
                 interval: float = 0.05, bind: str | None = None):
        # `bind`: the server's address when not `address` ("0.0.0.0": before it exists)
        self.server = target.popen_python(_ECHO_SERVER, bind or address, self.PORT,
                                          name="echo-server")

        def ready() -> bool:
            self.server.check_alive()
            return "ready" in self.server.stdout()
        poll(ready, 10, lambda: f"echo server on {address}\n{self.server.output()}")
        self.client = source.popen_python(_ECHO_CLIENT, address, self.PORT, interval,
                                          name="echo-client")
        self.interval = interval

    def replies(self) -> list[tuple[int, float, float]]:
        """(sequence number, sent at, received at) of every reply so far (unix times)."""
        rows = []
        for line in self.client.stdout().splitlines():
            parts = line.split()
            if len(parts) == 3:
                rows.append((int(parts[0]), float(parts[1]), float(parts[2])))
        return rows

    def gap(self, change_started: float, change_done: float) -> float | None:
        """Seconds from the last reply received before a change started to the first reply
        to a probe sent after it was done (None while traffic has not resumed)."""
        rows = self.replies()
        before = [r[2] for r in rows if r[2] <= change_started]
        after = [r[2] for r in rows if r[1] > change_done]
        if not after:
            return None
        return min(after) - (max(before) if before else change_started)

    def lost(self) -> int:
        """Probes without a reply so far (counted up to the newest reply)."""
        rows = self.replies()
        return (max(r[0] for r in rows) + 1 - len(rows)) if rows else 0

    def stop(self) -> None:
        self.client.stop()
        self.server.stop()
