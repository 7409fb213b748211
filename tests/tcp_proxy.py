"""A TCP proxy in front of RabbitMQ that tests switch into the failures a network can produce.

Written by hand because no packaged tool (toxiproxy and the like) is installable here; it only relays
bytes on loopback.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass


@dataclass
class _Link:
    """One relayed connection: whether the broker's replies reach its client."""

    replies_flowing: bool


class TcpProxy:
    """Relays 127.0.0.1:<port> to the broker; can refuse, cut or black-hole connections."""

    def __init__(self, target: tuple[str, int] = ("127.0.0.1", 5672)) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._links: list[_Link] = []
        self._lock = threading.Lock()
        self.refusing = False
        self._replies_flowing = True
        self._closed = False
        threading.Thread(target=self._accept_loop, daemon=True).start()

    def url(self, vhost_url: str) -> str:
        """Return ``vhost_url`` (amqp://…:5672/vhost) rewritten to go through this proxy."""
        return vhost_url.replace(f":{self.target[1]}/", f":{self.port}/", 1)

    @property
    def replies_flowing(self) -> bool:
        """Whether the broker's replies reach the clients; False black-holes them on every connection."""
        return self._replies_flowing

    @replies_flowing.setter
    def replies_flowing(self, flowing: bool) -> None:
        with self._lock:
            self._replies_flowing = flowing
            for link in self._links:
                link.replies_flowing = flowing

    def cut(self, restore_replies: bool = False) -> None:
        """Close every relayed connection at once, as a broker crash or a network drop would.

        ``restore_replies`` lets the broker's replies flow again on the connections made after the cut,
        not before: whatever the black-holed connections still had in flight (a late confirm) is lost.
        Both happen under one lock: a client reconnecting while the old sockets close already gets its
        replies (set after the closing, a loaded machine let a reconnect's handshake vanish).
        """
        with self._lock:
            sockets, self._sockets, self._links = self._sockets, [], []
            if restore_replies:
                self._replies_flowing = True
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        """Stop accepting and cut everything."""
        self._closed = True
        self._listener.close()
        self.cut()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.refusing:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                link = _Link(self._replies_flowing)
                self._sockets += [client, upstream]
                self._links.append(link)
            threading.Thread(target=self._pump, args=(client, upstream, None), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, link), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, replies: _Link | None) -> None:
        """Relay ``source`` to ``sink``; ``replies`` is the link when they are the broker's replies."""
        try:
            while data := source.recv(65536):
                if replies is not None and not replies.replies_flowing:
                    continue  # black hole: the client's writes succeed, the broker's answers vanish
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
