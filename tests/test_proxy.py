"""The TLS proxy of docker-compose.yml, run with the real nginx in front of the Procfile's gunicorn receiver.

deploy/nginx/templates/default.conf.template is rendered the way nginx's image renders it (envsubst over
the PROXY_ variables) inside an http block like the image's own, on ports of the test's own, with a
certificate from a throwaway CA. nginx comes from the distribution: scripts/ensure-proxy installs it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx
import pytest
import trustme

from tests.helpers import (
    ROOT,
    TEST_TOKEN,
    as_jsonl,
    free_port,
    make_record,
    procfile_receiver,
    stop_process_group,
    wait_for,
)
from tests.test_processes import compose

pytestmark = pytest.mark.process  # gunicorn and nginx

TEMPLATE = ROOT / "deploy" / "nginx" / "templates" / "default.conf.template"
BODY_LIMIT = 64 * 1024  # the receiver's AUTH0_EVENTS_MAX_BODY_BYTES and the proxy's limit in these tests
HEADER_AND_BODY_TIMEOUT = 10.0  # client_header_timeout and client_body_timeout of the template
INSTALL_HINT = (
    "run scripts/ensure-proxy (as root it installs nginx from the distribution: apt-get install nginx)"
)


def tool(name: str, *fallbacks: str) -> str:
    """The path of a program the proxy tests need, or a failure saying how to install it."""
    found = shutil.which(name) or next((path for path in fallbacks if os.access(path, os.X_OK)), None)
    if found is None:
        pytest.fail(f"{name} is not installed: {INSTALL_HINT}")
    return found


def render(values: dict[str, str]) -> str:
    """The template as nginx's image renders it: envsubst of exactly the PROXY_ variables that are set."""
    shell_format = " ".join(f"${{{name}}}" for name in values if name.startswith("PROXY_"))
    result = subprocess.run(
        [tool("envsubst"), shell_format],
        input=TEMPLATE.read_text(),
        env={"PATH": os.environ["PATH"], **values},
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return result.stdout


# The http block of nginx's image (its nginx.conf), which includes the rendered file: the template must fit
# in it, e.g. not set keepalive_timeout a second time at this level.
MAIN_CONFIG = """
{user}
worker_processes 1;
pid {dir}/nginx.pid;
daemon off;
events {{ worker_connections 256; }}
http {{
    default_type application/octet-stream;
    access_log {dir}/access.log;
    sendfile on;
    keepalive_timeout 65;
    client_body_temp_path {dir}/client_temp;
    proxy_temp_path {dir}/proxy_temp;
    fastcgi_temp_path {dir}/fastcgi_temp;
    uwsgi_temp_path {dir}/uwsgi_temp;
    scgi_temp_path {dir}/scgi_temp;
    include {dir}/conf.d/default.conf;
}}
"""


@dataclass
class Receiver:
    """The Procfile's web process: gunicorn with two sync workers."""

    url: str
    log: Path

    def access_lines(self, path: str) -> int:
        """How many of gunicorn's access-log lines name ``path``."""
        return sum(f'"POST {path} ' in line for line in self.log.read_text().splitlines())


@dataclass
class Proxy:
    """nginx running the rendered template in front of the receiver."""

    https_port: int
    http_port: int
    ca_file: Path
    acme_root: Path
    config: Path
    nginx: str

    @property
    def url(self) -> str:
        """https://127.0.0.1:<port>, as Auth0 would reach the public host."""
        return f"https://127.0.0.1:{self.https_port}"

    def client(self) -> httpx.Client:
        """An HTTPS client trusting the proxy's certificate."""
        return httpx.Client(verify=ssl.create_default_context(cafile=str(self.ca_file)), timeout=10)


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    """The Procfile's web line on a port of its own, with a small body limit and a queue of its own."""
    log = tmp_path_factory.mktemp("receiver") / "gunicorn.log"
    env = {
        "AUTH0_EVENTS_MAX_BODY_BYTES": str(BODY_LIMIT),
        "AUTH0_EVENTS_ROUTES": f"s=test.proxy.{uuid.uuid4().hex[:8]}",
    }
    with procfile_receiver(log, env, workers=2, ready="/healthz") as process:
        yield Receiver(process.url, log)


@pytest.fixture(scope="module")
def proxy(receiver: Receiver, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    """nginx with the rendered template in front of ``receiver``, TLS from a throwaway CA."""
    nginx = tool("nginx", "/usr/sbin/nginx")
    directory = tmp_path_factory.mktemp("proxy")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    certificate = ca.issue_cert("127.0.0.1")
    certificate.private_key_pem.write_to_path(str(directory / "privkey.pem"))
    certificate.cert_chain_pems[0].write_to_path(str(directory / "fullchain.pem"))
    (directory / "acme").mkdir()
    (directory / "conf.d").mkdir()
    https_port, http_port = free_port(), free_port()
    values = {
        "PROXY_HTTPS_PORT": str(https_port),
        "PROXY_HTTP_PORT": str(http_port),
        "PROXY_TLS_CERTIFICATE": str(directory / "fullchain.pem"),
        "PROXY_TLS_CERTIFICATE_KEY": str(directory / "privkey.pem"),
        "PROXY_ACME_ROOT": str(directory / "acme"),
        "PROXY_RECEIVER": receiver.url.removeprefix("http://"),
        "PROXY_MAX_BODY_BYTES": str(BODY_LIMIT),
    }
    (directory / "conf.d" / "default.conf").write_text(render(values))
    # As root, nginx's workers would drop to nobody, who cannot enter pytest's private temporary directory.
    user = "user root;" if os.geteuid() == 0 else ""
    config = directory / "nginx.conf"
    config.write_text(MAIN_CONFIG.format(user=user, dir=directory))
    proxy = Proxy(https_port, http_port, directory / "ca.pem", directory / "acme", config, nginx)
    with open(directory / "nginx.out", "wb") as output:
        process = subprocess.Popen(
            nginx_command(proxy),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(lambda: listening(https_port) or process.poll() is not None, 30, 0.05, "nginx to listen")
        assert process.poll() is None, (directory / "error.log").read_text()
        yield proxy
    finally:
        stop_process_group(process)


def nginx_command(proxy: Proxy, *args: str) -> list[str]:
    """nginx with the test's configuration, prefix and error log (-e: before the configuration is read)."""
    directory = proxy.config.parent
    return [
        proxy.nginx,
        "-p",
        str(directory),
        "-c",
        str(proxy.config),
        "-e",
        str(directory / "error.log"),
        *args,
    ]


def answers(url: str, timeout: float = 5.0, verify: ssl.SSLContext | bool = True) -> httpx.Response | None:
    """GET ``url``; None while nothing answers within ``timeout``."""
    try:
        return httpx.get(url, timeout=timeout, verify=verify)
    except httpx.HTTPError:
        return None


def listening(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:``port``."""
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


class SlowClient:
    """A client that sends a webhook request slowly: the header a byte at a time, or half a body and no more.

    ``header``: trickles header bytes every half second and never ends the header. ``body``: a complete
    header announcing 1,000 bytes, then 10 of them and silence.
    """

    def __init__(self, port: int, kind: Literal["header", "body"], tls: ssl.SSLContext | None) -> None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock = tls.wrap_socket(raw, server_hostname="127.0.0.1") if tls else raw
        self.kind = kind
        self.started = time.monotonic()
        self.closed_after: float | None = None
        self._stop = threading.Event()
        start = f"POST /webhooks/auth0 HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {TEST_TOKEN}\r\n"
        if kind == "body":
            start += "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n" + "[" * 10
        self.sock.sendall(start.encode())
        self._threads = [threading.Thread(target=self._watch, daemon=True)]
        if kind == "header":
            self._threads.append(threading.Thread(target=self._trickle, daemon=True))
        for thread in self._threads:
            thread.start()

    def _trickle(self) -> None:
        try:
            while not self._stop.wait(0.5):
                self.sock.sendall(b"X")
        except OSError:
            return  # the other side closed the connection: what the test waits for

    def _watch(self) -> None:
        try:
            while self.sock.recv(4096):
                pass  # an error status (408) may come before the close
        except OSError:
            pass
        self.closed_after = time.monotonic() - self.started

    def close(self) -> None:
        """Stop sending and close the connection."""
        self._stop.set()
        with contextlib.suppress(OSError):  # already closed by the other side
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        for thread in self._threads:
            thread.join(timeout=5)


@pytest.fixture
def slow_clients() -> Iterator[list[SlowClient]]:
    """A list the test fills with slow clients; each is closed afterwards."""
    clients: list[SlowClient] = []
    yield clients
    for client in clients:
        client.close()


def healthz_seconds(url: str, verify: ssl.SSLContext | bool = True) -> float | None:
    """Seconds GET /healthz took to answer 200, or None when it did not within 3 s."""
    started = time.monotonic()
    response = answers(f"{url}/healthz", timeout=3, verify=verify)
    if response is None or response.status_code != 200:
        return None
    return time.monotonic() - started


def test_rendered_template_passes_nginx_t(proxy: Proxy) -> None:
    """The rendered configuration, inside the image's http block, is what nginx -t accepts."""
    result = subprocess.run(nginx_command(proxy, "-t"), capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "${" not in (proxy.config.parent / "conf.d" / "default.conf").read_text()


def test_the_template_uses_exactly_the_variables_compose_sets() -> None:
    """Every variable of the template is set by compose's proxy service, and compose sets no other PROXY_."""
    used = set(re.findall(r"\$\{(PROXY_[A-Z_]+)\}", TEMPLATE.read_text()))
    environment = compose()["services"]["proxy"]["environment"]
    assert used == {name for name in environment if name.startswith("PROXY_")}
    assert environment["NGINX_ENVSUBST_FILTER"] == "^PROXY_"


def test_a_batch_through_the_proxy_reaches_the_receiver(proxy: Proxy, receiver: Receiver) -> None:
    """A batch POSTed over TLS, framed by Content-Length or chunked, is answered 202 by the receiver."""
    with proxy.client() as client:
        plain = client.post(
            f"{proxy.url}/webhooks/auth0",
            content=as_jsonl([make_record("s")]),
            headers={"Authorization": f"Bearer {TEST_TOKEN}"},
        )
        chunked = client.post(
            f"{proxy.url}/webhooks/auth0",
            content=iter([as_jsonl([make_record("s")])]),
            headers={"Authorization": f"Bearer {TEST_TOKEN}"},
        )
    assert (plain.status_code, plain.json()["accepted"]) == (202, 1), plain.text
    assert (chunked.status_code, chunked.json()["accepted"]) == (202, 1), chunked.text


def test_slow_clients_hold_the_bare_receivers_workers(
    receiver: Receiver, slow_clients: list[SlowClient]
) -> None:
    """Without the proxy, two clients sending their header slowly take both sync workers: /healthz waits.

    The reported failure, and proof that these clients are slow enough for the test below to mean anything.
    """
    port = int(receiver.url.rsplit(":", 1)[1])
    slow_clients.extend(SlowClient(port, "header", None) for _ in range(2))
    assert healthz_seconds(receiver.url) is None
    for client in slow_clients:
        client.close()
    wait_for(lambda: healthz_seconds(receiver.url), 30, 0.1, "the receiver to answer again")


def test_slow_clients_are_held_and_cut_off_by_the_proxy_not_the_receiver(
    proxy: Proxy, receiver: Receiver, slow_clients: list[SlowClient]
) -> None:
    """Four slow clients at the proxy: /healthz through it answers at once, and the proxy drops them.

    Two trickle their header, two stop half-way through the body; the receiver never sees any of them.
    """
    tls = ssl.create_default_context(cafile=str(proxy.ca_file))
    before = receiver.access_lines("/webhooks/auth0")
    slow_clients.extend(
        SlowClient(proxy.https_port, kind, tls) for kind in ("header", "header", "body", "body")
    )

    took = healthz_seconds(proxy.url, verify=tls)
    assert took is not None, "/healthz through the proxy did not answer within 3 s"
    assert took < 2, f"/healthz through the proxy took {took} s"
    with proxy.client() as client:
        accepted = client.post(
            f"{proxy.url}/webhooks/auth0",
            content=as_jsonl([make_record("s")]),
            headers={"Authorization": TEST_TOKEN},
        )
    assert accepted.status_code == 202, accepted.text

    wait_for(
        lambda: all(client.closed_after is not None for client in slow_clients),
        HEADER_AND_BODY_TIMEOUT + 10,
        0.1,
        "the proxy to drop the slow clients",
    )
    for slow in slow_clients:
        assert slow.closed_after is not None
        assert HEADER_AND_BODY_TIMEOUT - 1 < slow.closed_after < HEADER_AND_BODY_TIMEOUT + 5, slow.kind
    assert receiver.access_lines("/webhooks/auth0") == before + 1  # only the batch above got through


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_body_over_the_limit_is_413_at_the_proxy(proxy: Proxy, receiver: Receiver, framing: str) -> None:
    """A body over PROXY_MAX_BODY_BYTES is refused 413 (the receiver's JSON shape) and never forwarded."""
    before = receiver.access_lines("/webhooks/auth0")
    body = b"x" * (BODY_LIMIT + 1)
    with proxy.client() as client:
        response = client.post(
            f"{proxy.url}/webhooks/auth0",
            content=body if framing == "content-length" else iter([body[:1000], body[1000:]]),
            headers={"Authorization": TEST_TOKEN},
        )
    assert response.status_code == 413
    assert response.json()["error"] == "request_entity_too_large"
    assert str(BODY_LIMIT) in response.json()["message"]
    assert receiver.access_lines("/webhooks/auth0") == before


@pytest.mark.parametrize("path", ["/metrics", "/readyz", "/events", "/flower", "/"])
def test_only_the_webhook_and_healthz_are_routed(proxy: Proxy, receiver: Receiver, path: str) -> None:
    """Metrics, readiness, the archive API and anything else are 404 at the proxy (the receiver has them)."""
    with proxy.client() as client:
        assert client.get(f"{proxy.url}{path}").status_code == 404
    if path == "/metrics":
        assert httpx.get(f"{receiver.url}/metrics", timeout=10).status_code == 200


def test_plain_http_serves_acme_challenges_and_redirects_the_rest(proxy: Proxy) -> None:
    """Port 80 answers certificate challenges from the ACME root and sends everything else to HTTPS."""
    challenge = proxy.acme_root / ".well-known" / "acme-challenge"
    challenge.mkdir(parents=True)
    (challenge / "token-123").write_text("token-123.thumbprint")
    http = f"http://127.0.0.1:{proxy.http_port}"

    served = httpx.get(f"{http}/.well-known/acme-challenge/token-123", timeout=10)
    moved = httpx.post(f"{http}/webhooks/auth0", content=b"{}", timeout=10)

    assert (served.status_code, served.text) == (200, "token-123.thumbprint")
    assert moved.status_code == 301
    assert moved.headers["location"] == "https://127.0.0.1/webhooks/auth0"
