"""Remote LXD over HTTPS (the local daemon on loopback): client certificates, a pinned server certificate
whatever $REQUESTS_CA_BUNDLE says, and one clear message for each way the connection can be wrong."""

from __future__ import annotations

import contextlib
import http.server
import json
import re
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import replace

import pytest

from pytest_lxdsnap.errors import LxdUnreachable
from pytest_lxdsnap.lxd.connection import (
    Endpoint,
    OffEndpoint,
    connect,
    fingerprint,
    https_session,
    pinned_fingerprint,
    trusted_on_first_use,
)

from .helpers import (
    PYPROJECT,
    as_found,
    assert_left_as_found,
    assert_summary,
    declare,
    instance_names,
    lxc,
    lxdsnap,
    make_certificate,
)

DIRTIES = """
import socket
import threading

import pytest


@pytest.mark.lxd("{name}", "web")
@pytest.mark.parametrize("i", range(3))
def test_dirty(lxd, i):
    for container in lxd.values():
        assert not container.exists("/root/dirty")
        container.write_text("/root/dirty", str(i))
    assert lxd["{name}"].exec(["cat", "/root/dirty"]).stdout == str(i)
"""
WEB = PYPROJECT + declare("web", provision=["touch /root/provisioned"])


def test_the_tutorial_scenario_runs_over_https_with_the_server_pinned(pytester, https_lxd, lxd_client,
                                                                      make_instance, monkeypatch):
    name = make_instance(snapshot="user-snap")
    found, before = as_found(lxd_client, name), instance_names(lxd_client)
    # the trap: requests would let these override the pinned server certificate
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    monkeypatch.setenv("CURL_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    pytester.makefile(".toml", pyproject=WEB)
    pytester.makepyfile(DIRTIES.format(name=name))
    result = pytester.runpytest(*https_lxd.options())
    result.assert_outcomes(passed=3)
    assert_summary(result, name, kind="existing", resets="3", leftovers="0")
    assert_summary(result, "web", kind="declared", resets="3", leftovers="0")
    assert instance_names(lxd_client) == before
    assert_left_as_found(lxd_client, name, found)
    assert lxc("exec", name, "--", "ls", "/root") == ""


def usage_error(pytester: pytest.Pytester, *args: str) -> str:
    pytester.makefile(".toml", pyproject=PYPROJECT)
    pytester.makepyfile(DIRTIES.format(name="anything"))
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str() + result.stderr.str()
    return " ".join(result.stderr.str().split())


def test_an_untrusted_client_certificate_says_how_to_trust_it(pytester, https_lxd, lxd_client):
    before = instance_names(lxd_client)
    cert, key = make_certificate(https_lxd.folder, "stranger")
    message = usage_error(pytester, f"--lxd-endpoint={https_lxd.url}", f"--lxd-cert={cert}", f"--lxd-key={key}",
                          f"--lxd-server-cert={https_lxd.server_cert}")
    assert f"{https_lxd.url} does not trust the client certificate {cert}" in message
    assert "lxc config trust add stranger.crt" in message and "Nothing was changed" in message
    assert instance_names(lxd_client) == before


def test_an_expired_client_certificate_is_named_as_expired(pytester, https_lxd):
    cert, key = make_certificate(https_lxd.folder, "old", days=-1)
    message = usage_error(pytester, f"--lxd-endpoint={https_lxd.url}", f"--lxd-cert={cert}", f"--lxd-key={key}",
                          f"--lxd-server-cert={https_lxd.server_cert}")
    assert "does not trust the client certificate" in message and "expired on" in message


def test_a_wrong_server_certificate_is_refused_before_anything_is_sent(pytester, https_lxd):
    impostor, _ = make_certificate(https_lxd.folder, "impostor")
    message = usage_error(pytester, f"--lxd-endpoint={https_lxd.url}", f"--lxd-cert={https_lxd.cert}",
                          f"--lxd-key={https_lxd.key}", f"--lxd-server-cert={impostor}")
    assert f"the server at {https_lxd.url} is not the one --lxd-server-cert {impostor} pins" in message


def test_without_a_pinned_certificate_the_self_signed_server_is_refused_with_the_fix(pytester, https_lxd):
    message = usage_error(pytester, f"--lxd-endpoint={https_lxd.url}", f"--lxd-cert={https_lxd.cert}",
                          f"--lxd-key={https_lxd.key}")
    assert f"the certificate of {https_lxd.url} is not signed by a CA this machine trusts" in message
    assert "--lxd-server-cert PATH" in message


def colon_fingerprint(pem_path: str) -> str:
    with open(pem_path, "rb") as fh:
        digest = fingerprint(fh.read())
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def test_insecure_works_but_shows_the_fingerprint_it_trusted(pytester, https_lxd, make_instance):
    name = make_instance()
    pytester.makefile(".toml", pyproject=PYPROJECT)
    pytester.makepyfile(f"""
        import pytest

        @pytest.mark.lxd("{name}")
        def test_it(lxd):
            lxd["{name}"].write_text("/root/dirty", "x")
    """)
    result = pytester.runpytest(f"--lxd-endpoint={https_lxd.url}", f"--lxd-cert={https_lxd.cert}",
                                f"--lxd-key={https_lxd.key}", "--lxd-insecure")
    result.assert_outcomes(passed=1)
    trusted = (f"TLS verification is off for {https_lxd.url} (--lxd-insecure): trusting the certificate it presented, "
               f"SHA-256 fingerprint {colon_fingerprint(https_lxd.server_cert)}; *--lxd-server-cert")
    result.stdout.fnmatch_lines([f"lxdsnap: WARNING {trusted}", f"NOTE {trusted}"])


def test_the_cli_insecure_warning_shows_the_fingerprint_it_trusted(https_lxd):
    done = lxdsnap("--endpoint", https_lxd.url, "--cert", https_lxd.cert, "--key", https_lxd.key, "--insecure",
                   "publish", "t-lxdsnap-nothing-kept")
    assert done.returncode == 1 and "no kept build of declared container 't-lxdsnap-nothing-kept'" in done.stderr
    assert (f"lxdsnap: WARNING TLS verification is off for {https_lxd.url} (--lxd-insecure): trusting the certificate "
            f"it presented, SHA-256 fingerprint {colon_fingerprint(https_lxd.server_cert)}; ") in done.stderr


def test_insecure_pins_what_it_trusted_first(https_lxd):
    endpoint = Endpoint(url=https_lxd.url, cert=https_lxd.cert, key=https_lxd.key, insecure=True)
    pinned = trusted_on_first_use(endpoint)
    assert pinned.fingerprint == colon_fingerprint(https_lxd.server_cert).replace(":", "")
    assert pinned_fingerprint(connect(pinned)) == pinned.fingerprint
    assert pinned_fingerprint(connect(endpoint)) == pinned.fingerprint  # fetched at connect when not yet pinned
    with pytest.raises(LxdUnreachable, match="is not the one"):  # a different server later is refused
        connect(replace(endpoint, fingerprint="00" * 32))


def test_an_unreachable_endpoint_names_it(pytester, https_lxd):
    message = usage_error(pytester, "--lxd-endpoint=https://127.0.0.1:1", f"--lxd-cert={https_lxd.cert}",
                          f"--lxd-key={https_lxd.key}", f"--lxd-server-cert={https_lxd.server_cert}")
    assert "LXD is not reachable at HTTPS endpoint https://127.0.0.1:1" in message


def test_a_refused_tls_handshake_names_the_endpoint(pytester, https_lxd):
    with socket.socket() as server:  # on loopback: accepts, then hangs up before any TLS is spoken
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(0.2)
        port, stop = server.getsockname()[1], threading.Event()

        def hang_up() -> None:
            while not stop.is_set():
                try:
                    server.accept()[0].close()
                except TimeoutError:
                    continue

        thread = threading.Thread(target=hang_up)
        thread.start()
        try:
            message = usage_error(pytester, f"--lxd-endpoint=https://127.0.0.1:{port}", f"--lxd-cert={https_lxd.cert}",
                                  f"--lxd-key={https_lxd.key}", f"--lxd-server-cert={https_lxd.server_cert}")
        finally:
            stop.set()
            thread.join()
    assert f"the TLS handshake with https://127.0.0.1:{port} failed" in message
    assert "Nothing was changed on the server" in message


# -- the session talks to its endpoint only ------------------------------------------------------------------------

def lxd_reply(metadata: dict[str, object]) -> bytes:
    return json.dumps({"type": "sync", "status": "Success", "status_code": 200, "metadata": metadata}).encode()


IMPOSTOR_INFO = {"auth": "trusted", "api_extensions": [], "environment": {"server": "lxd"}, "config": {}}


def handler(redirect_to: str | None) -> type[http.server.BaseHTTPRequestHandler]:
    """Answers every GET like LXD's /1.0 (a trusted client), or redirects it to ``redirect_to`` + its path."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if redirect_to:
                self.send_response(302)
                self.send_header("Location", redirect_to + self.path)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = lxd_reply(IMPOSTOR_INFO)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@contextlib.contextmanager
def loopback_server(cert: tuple[str, str] | None, redirect_to: str | None = None) -> Iterator[str]:
    """An HTTP(S) server on 127.0.0.1 in a thread, for the length of the block; its URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler(redirect_to))
    server.timeout = 5
    if cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*cert)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"{'https' if cert else 'http'}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.mark.parametrize("pinned", [True, False], ids=["pinned", "system-cas"])
@pytest.mark.parametrize("scheme", ["https", "http"])
def test_the_session_refuses_every_origin_but_its_endpoint(https_lxd, pinned, scheme):
    endpoint = Endpoint(url=https_lxd.url, cert=https_lxd.cert, key=https_lxd.key,
                        server_cert=https_lxd.server_cert if pinned else None)
    session = https_session(endpoint)
    other = make_certificate(https_lxd.folder, "other-origin") if scheme == "https" else None
    with loopback_server(other) as url:
        with pytest.raises(OffEndpoint, match=f"only to {re.escape(https_lxd.url)}/.* refused {re.escape(url)}/1.0"):
            session.get(f"{url}/1.0", timeout=10)
    if pinned:  # the endpoint itself still answers, pinned
        assert session.get(f"{https_lxd.url}/1.0", timeout=10).json()["metadata"]["auth"] == "trusted"


def test_a_redirect_to_another_origin_is_refused_not_followed(https_lxd):
    server_cert = make_certificate(https_lxd.folder, "redirecting")
    impostor = make_certificate(https_lxd.folder, "impostor-origin")
    with loopback_server(impostor) as elsewhere, loopback_server(server_cert, redirect_to=elsewhere) as url:
        endpoint = Endpoint(url=url, cert=https_lxd.cert, key=https_lxd.key, server_cert=server_cert[0])
        with pytest.raises(LxdUnreachable) as raised:
            connect(endpoint)
    message = str(raised.value)
    assert f"sends requests only to {url}/" in message and f"refused {elsewhere}/1.0" in message
    assert "point --lxd-endpoint at it" in message
