"""Connecting to the LXD daemon, with one clear message when it cannot be reached."""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from pytest_lxdsnap.errors import LxdUnreachable
from pytest_lxdsnap.options import DEFAULT_TIMEOUT

if TYPE_CHECKING:
    import pylxd
    import requests



LOCAL_SOCKETS = ("/var/snap/lxd/common/lxd/unix.socket", "/var/lib/lxd/unix.socket", "/var/lib/incus/unix.socket")


def default_socket() -> str:
    """The local socket: $LXD_DIR's, else the first that exists of the snap's, Debian's LXD, Incus."""
    if os.environ.get("LXD_DIR"):
        return os.path.join(os.environ["LXD_DIR"], "unix.socket")
    return next((path for path in LOCAL_SOCKETS if os.path.exists(path)), "/var/lib/lxd/unix.socket")


@dataclass(frozen=True)
class Endpoint:
    """Where and how to reach LXD (or Incus)."""

    url: str | None = None
    project: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    cert: str | None = None  # client certificate (PEM) for an https:// endpoint
    key: str | None = None  # its private key
    server_cert: str | None = None  # pin the server's certificate (PEM), whatever the CA bundles say
    insecure: bool = False  # trust the certificate the server presents first (an explicit option; warned about)
    fingerprint: str | None = None  # --lxd-insecure: the SHA-256 (hex) it pins, once trusted_on_first_use fetched it

    @property
    def is_https(self) -> bool:
        return bool(self.url and self.url.startswith("https://"))

    def describe(self) -> str:
        where = self.url or default_socket()
        kind = "HTTPS endpoint" if self.is_https else "unix socket"
        project = f" (project {self.project!r})" if self.project else ""
        return f"{kind} {where}{project}"


def unreachable_message(endpoint: Endpoint, reason: object) -> str:
    where = endpoint.describe()
    return (
        f"LXD is not reachable at {where}: {reason}.\n"
        "Start it, or install and start it with `lxdsnap setup` (as root), then check with `lxdsnap doctor`.\n"
        "Without systemd: `setsid lxd --group root --logfile /var/log/lxd.log </dev/null >/dev/null 2>&1 &` "
        "then `lxd waitready`. Point the plugin elsewhere with --lxd-endpoint."
    )


def check_tls_files(endpoint: Endpoint) -> None:
    """The TLS options make sense together and name readable files; raises ConfigError saying which."""
    from pytest_lxdsnap.errors import ConfigError

    given = {"--lxd-cert": endpoint.cert, "--lxd-key": endpoint.key, "--lxd-server-cert": endpoint.server_cert}
    if not endpoint.is_https:
        used = [option for option, value in given.items() if value] + (["--lxd-insecure"] if endpoint.insecure else [])
        if used:
            raise ConfigError(f"{', '.join(used)} only apply to an https:// --lxd-endpoint, "
                              f"not to {endpoint.describe()}: drop them or set --lxd-endpoint https://host:8443")
        return
    if bool(endpoint.cert) != bool(endpoint.key):
        raise ConfigError("--lxd-cert and --lxd-key go together (the client certificate and its private key); "
                          "give both, or neither to use ~/.config/lxc/client.crt and client.key")
    if endpoint.insecure and endpoint.server_cert:
        raise ConfigError("--lxd-insecure turns verification off, --lxd-server-cert pins the server: choose one")
    for option, path in given.items():
        if path and not os.access(path, os.R_OK):
            raise ConfigError(f"{option} {path}: no such readable file")


OFF_ENDPOINT = "lxdsnap sends requests only to"


class OffEndpoint(LxdUnreachable):
    """The session was asked to send a request outside its endpoint's origin, and refused."""


def origin(url: str) -> str:
    """``scheme://host:port/`` of a URL: the prefix the session's pinned adapter is mounted for (with the slash,
    so that https://host:84 does not also cover https://host:8443)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/".lower()


def https_session(endpoint: Endpoint) -> requests.Session:
    """The session pylxd uses for an https:// endpoint: client certificate, and the server's certificate pinned
    by fingerprint (--lxd-server-cert, or with --lxd-insecure whatever it presents when the session starts),
    else verified against the system's CAs. It sends nothing anywhere else: a request to another origin (a
    redirect, or an address in an answer) is refused before it connects. ``session.fingerprint`` is the pin."""
    import requests
    from pylxd.client import DEFAULT_CERTS

    class PinnedSession(requests.Session):
        """Keeps its `verify` when $REQUESTS_CA_BUNDLE / $CURL_CA_BUNDLE are set: requests would let them
        override it on every request, and pylxd would then pin the fingerprint of the bundle's first
        certificate instead of the server's ("Fingerprints did not match"). Proxies still apply."""

        fingerprint: str | None = None

        def merge_environment_settings(self, url, proxies, stream, verify, cert):  # type: ignore[no-untyped-def]
            settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
            settings["verify"] = self.verify if verify is None else verify
            return settings

    class FingerprintAdapter(requests.adapters.HTTPAdapter):
        """Accepts exactly the server certificate with this SHA-256 fingerprint (LXD's certificates are
        self-signed: pinning, not a CA, is how `lxc remote add` trusts them too)."""

        def __init__(self, fingerprint: str) -> None:
            super().__init__()
            self.fingerprint = fingerprint

        def cert_verify(self, conn, url, verify, cert):  # type: ignore[no-untyped-def]
            conn.assert_fingerprint = self.fingerprint
            super().cert_verify(conn, url, False, cert)

    class OffEndpointAdapter(requests.adapters.BaseAdapter):
        """Mounted for every origin but the endpoint's: refuses to connect, so neither a redirect nor an
        address the server answers with can take the client certificate elsewhere or skip the pin."""

        def send(self, request, *args, **kwargs):  # type: ignore[no-untyped-def]
            raise OffEndpoint(f"{OFF_ENDPOINT} {home} (the --lxd-endpoint it verified); refused {request.url} "
                              "(a redirect, or an address the server answered with). If LXD moved, point "
                              "--lxd-endpoint at it. Nothing was sent there.")

        def close(self) -> None:
            pass

    home = origin(str(endpoint.url))
    session = PinnedSession()
    refuse = OffEndpointAdapter()
    session.mount("https://", refuse)  # every origin but the endpoint's (requests picks the longest prefix)
    session.mount("http://", refuse)
    if endpoint.cert and endpoint.key:
        session.cert = (endpoint.cert, endpoint.key)
    elif os.path.exists(DEFAULT_CERTS.cert) and os.path.exists(DEFAULT_CERTS.key):
        session.cert = (DEFAULT_CERTS.cert, DEFAULT_CERTS.key)  # what `lxc` itself uses
    if endpoint.server_cert or endpoint.insecure:
        if endpoint.server_cert:
            with open(endpoint.server_cert, "rb") as fh:
                session.fingerprint = fingerprint(fh.read())
        else:
            session.fingerprint = endpoint.fingerprint or trusted_on_first_use(endpoint).fingerprint
        session.verify = False
        session.mount(home, FingerprintAdapter(str(session.fingerprint)))
    else:
        session.verify = True  # the system's CA store: a server certificate signed by a CA
        session.mount(home, requests.adapters.HTTPAdapter())
    return session


def fingerprint(pem: bytes) -> str:
    """SHA-256 fingerprint (hex) of a PEM certificate, as `lxc config trust list` shows it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    return x509.load_pem_x509_certificate(pem).fingerprint(hashes.SHA256()).hex()


def presented_certificate(url: str, timeout: float) -> bytes:
    """The certificate the server at ``url`` presents (PEM), not verified: --lxd-insecure's trust on first use."""
    import ssl
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    port = parts.port or 443  # where requests connects for this URL, so the pin is for the same server
    return ssl.get_server_certificate((parts.hostname or "", port), timeout=timeout).encode()


def trusted_on_first_use(endpoint: Endpoint) -> Endpoint:
    """--lxd-insecure: ``endpoint`` pinned to the certificate its server presents now (fetched once, so what the
    warning shows is what every later request is held to). Raises ConfigError for options that do not fit,
    LxdUnreachable when nothing answers."""
    check_tls_files(endpoint)
    try:
        pem = presented_certificate(str(endpoint.url), endpoint.timeout)
    except OSError as exc:
        raise LxdUnreachable(unreachable_message(endpoint, exc)) from None
    return replace(endpoint, fingerprint=fingerprint(pem))


def pinned_fingerprint(client: pylxd.Client) -> str | None:
    """The SHA-256 fingerprint (hex) a client's HTTPS session holds the server to; None for a socket or CAs."""
    return getattr(client.api.session, "fingerprint", None)


def insecure_warning(endpoint: Endpoint, digest: str | None) -> str:
    """What --lxd-insecure trusted: the warning for the header, the summary and the CLI."""
    if not digest:
        return (f"TLS verification is off for {endpoint.url} (--lxd-insecure): anyone on the path can pose as the "
                "server; pin its certificate with --lxd-server-cert instead")
    pairs = ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))
    return (f"TLS verification is off for {endpoint.url} (--lxd-insecure): trusting the certificate it presented, "
            f"SHA-256 fingerprint {pairs}; compare it with certificate_fingerprint in the server's `lxc info`, "
            "then pin the certificate with --lxd-server-cert")


def tls_failure_message(endpoint: Endpoint, exc: BaseException) -> str:
    """Why the TLS handshake failed, and the fix."""
    text = str(exc)
    if "Fingerprints did not match" in text or "fingerprint" in text.lower():
        return (f"the server at {endpoint.url} is not the one --lxd-server-cert {endpoint.server_cert} pins "
                "(its certificate's fingerprint differs). Copy the server's certificate (server.crt in its "
                "LXD directory, or `openssl s_client -connect HOST:PORT </dev/null | openssl x509`) and pass it "
                "to --lxd-server-cert. Nothing was changed on the server.")
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return (f"the certificate of {endpoint.url} is not signed by a CA this machine trusts ({text}). LXD "
                "servers usually have a self-signed certificate: pin it with --lxd-server-cert PATH "
                "(server.crt in the server's LXD directory). Nothing was changed on the server.")
    return (f"the TLS handshake with {endpoint.url} failed: {text}. Check --lxd-cert/--lxd-key (a PEM certificate "
            "and its key, not expired) and --lxd-server-cert. Nothing was changed on the server.")


def untrusted_message(endpoint: Endpoint, cert: str | None) -> str:
    from cryptography import x509

    if not cert:
        return (f"{endpoint.url} answered, but no client certificate was given: pass --lxd-cert and --lxd-key "
                "(make a pair with `openssl req -x509 -newkey rsa:2048 -nodes -keyout client.key -out client.crt "
                "-days 365 -subj /CN=lxdsnap`), then trust it on the server: `lxc config trust add client.crt`.")
    with open(cert, "rb") as fh:
        pem = fh.read()
    parsed, digest = x509.load_pem_x509_certificate(pem), fingerprint(pem)
    expired = parsed.not_valid_after_utc.timestamp() < time.time()
    why = " It expired on " + parsed.not_valid_after_utc.strftime("%Y-%m-%d") + ": make a new one." if expired else ""
    return (f"{endpoint.url} does not trust the client certificate {cert} (fingerprint {digest[:12]}).{why} "
            f"On the server run `lxc config trust add {os.path.basename(cert)}` (Incus: `incus config trust add-"
            "certificate`), or give --lxd-cert/--lxd-key of a trusted certificate. Nothing was changed on the server.")


def connect(endpoint: Endpoint) -> pylxd.Client:
    """A pylxd client for ``endpoint``; raises LxdUnreachable or ConfigError with the fix when that fails."""
    import pylxd  # imported here: a suite without LXD tests never pays for it
    import requests
    from pylxd.exceptions import ClientConnectionFailed, LXDAPIException

    from pytest_lxdsnap.errors import ConfigError

    url = endpoint.url
    if url and not url.startswith(("https://", "/")):
        raise ConfigError(f"--lxd-endpoint {url!r}: give a unix socket path (/...) or an https:// URL")
    check_tls_files(endpoint)
    if url and url.startswith("/") and not os.path.exists(url):
        raise LxdUnreachable(unreachable_message(endpoint, "the socket file does not exist"))
    if not url and not os.path.exists(default_socket()):
        raise LxdUnreachable(unreachable_message(endpoint, "the socket file does not exist"))
    try:
        session = https_session(endpoint) if endpoint.is_https else None
    except ValueError as exc:  # not a PEM certificate
        raise ConfigError(f"--lxd-server-cert {endpoint.server_cert}: not a PEM certificate ({exc})") from None
    except OSError as exc:  # --lxd-server-cert became unreadable since it was checked
        raise LxdUnreachable(unreachable_message(endpoint, exc)) from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # pylxd warns about server fields it does not know
            client = pylxd.Client(endpoint=url, project=endpoint.project, timeout=endpoint.timeout,
                                  session=session)
    except ClientConnectionFailed as exc:
        if any(word in str(exc).lower() for word in ("ssl", "fingerprint")):
            raise LxdUnreachable(f"LXD at {endpoint.describe()}: {tls_failure_message(endpoint, exc)}") from None
        raise LxdUnreachable(unreachable_message(endpoint, exc)) from None
    except requests.exceptions.SSLError as exc:
        raise LxdUnreachable(f"LXD at {endpoint.describe()}: {tls_failure_message(endpoint, exc)}") from None
    except (LXDAPIException, requests.exceptions.RequestException) as exc:
        raise LxdUnreachable(unreachable_message(endpoint, exc)) from None
    if endpoint.is_https and client.host_info.get("auth") != "trusted":
        cert = endpoint.cert or (session.cert[0] if session is not None and session.cert else None)
        raise LxdUnreachable(untrusted_message(endpoint, cert if isinstance(cert, str) else None))
    if endpoint.project:
        try:
            client.api.projects[endpoint.project].get()
        except LXDAPIException:
            names = sorted(p.name for p in client.projects.all())
            raise ConfigError(
                f"LXD project {endpoint.project!r} does not exist at {endpoint.describe()}; "
                f"existing projects: {', '.join(names)}. Create it with `lxc project create {endpoint.project}` "
                "or fix --lxd-project."
            ) from None
    return client
