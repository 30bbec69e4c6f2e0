"""Fakes for the installer tests: a cluster CA, a fake server, the fake scripts' paths.

- ``install.sh`` and ``systemctl`` (shell, next to this file) stand in for the official
  install script and systemd; they write under ``$RANCHERD_ROOT`` only.
- ``populate_root`` makes a root they run in: under ``--root`` rancherd runs only what is
  inside the root (``rancherd/install/inroot.py``), so the root gets ``/bin/sh`` (a copy
  of the host's), the tools the fakes use (copies, in ``/usr/bin``), the fake
  ``systemctl`` in ``/usr/bin`` and the fake install script at ``ROOT_INSTALL_SCRIPT``;
  ``root_with_install_script`` adds a test's own script at ``/install.sh``.
- ``make_tls`` makes a CA and a certificate it signs for 127.0.0.1 (and more addresses
  when asked), as k3s has at ``/var/lib/rancher/k3s/server/tls``.
- ``FakeServer`` serves ``/cacerts``, ``/readyz`` and ``/healthz`` over HTTPS and HTTP on
  127.0.0.1 (trio tasks, ended with the test's nursery).
- ``python -m fake_runtime.server`` is the fake runtime as a process, for tests whose
  nodes run in network namespaces: the fake ``systemctl`` starts it when
  ``$FAKE_RUNTIME_SERVE`` is set (see ``server.py``).
- The fake scripts append ``<time.time()> <node> <event>`` lines to ``$FAKE_EVENT_LOG``
  when it is set (see ``read_events``), so a test can order what happened across nodes.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import shutil
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

HERE = Path(__file__).resolve().parent
INSTALL_SCRIPT = HERE / "install.sh"
SYSTEMCTL = HERE / "systemctl"
TESTS_DIR = HERE.parent
"""Put it on ``PYTHONPATH`` to run ``python -m fake_runtime.server``."""

ROOT_INSTALL_SCRIPT = "/opt/fake-runtime/install.sh"
"""Where ``populate_root`` puts the fake install script (a path inside the root)."""
ROOT_TOOLS = (
    "basename", "cat", "chmod", "cp", "date", "dirname", "env", "grep", "mkdir", "mktemp",
    "rm", "sleep", "sort", "tail", "curl",
)  # fmt: skip
"""Host programs the fakes run by name, copied into the root's /usr/bin when present."""


def populate_root(root: Path, tools: Sequence[str] = ROOT_TOOLS) -> Path:
    """Make ``root`` a tree the fakes run in (see the module's docstring); ``root``."""
    bin_dir = root / "usr" / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    (root / "bin").mkdir(exist_ok=True)
    (root / "fake").mkdir(exist_ok=True)
    shutil.copy2(os.path.realpath("/bin/sh"), root / "bin" / "sh")
    for tool in tools:
        found = shutil.which(tool)
        if found is not None:
            shutil.copy2(os.path.realpath(found), bin_dir / tool)
    shutil.copy2(SYSTEMCTL, bin_dir / "systemctl")
    script = root / ROOT_INSTALL_SCRIPT.lstrip("/")
    script.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(INSTALL_SCRIPT, script)
    return root


def root_with_install_script(root: Path, text: str) -> Path:
    """``populate_root(root)`` with the shell script ``text`` as its ``/install.sh`` (the
    ``RANCHERD_INSTALL_SCRIPT`` such a test names); ``root``."""
    populate_root(root)  # under --root only the root's programs run
    script = root / "install.sh"
    script.write_text(text)
    script.chmod(0o755)
    return root


def running(pid: int) -> bool:
    """Alive and not a zombie (one that exited waits there until its parent reaps it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


@dataclass(frozen=True, slots=True)
class Event:
    """One line of ``$FAKE_EVENT_LOG``."""

    time: float
    node: str
    name: str


def read_events(path: Path) -> list[Event]:
    """The events of the log at ``path`` in time order (none if it does not exist yet)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    events = []
    for line in text.splitlines():
        stamp, node, name = line.split(" ", 2)
        events.append(Event(float(stamp), node, name))
    return sorted(events, key=lambda event: event.time)


@dataclass(frozen=True)
class Tls:
    """A cluster CA and a serving certificate it signed, as files in ``directory``."""

    directory: Path
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes

    @property
    def ca_file(self) -> Path:
        return self.directory / "server-ca.crt"

    @property
    def cert_file(self) -> Path:
        return self.directory / "client-kube-apiserver.crt"

    @property
    def key_file(self) -> Path:
        return self.directory / "client-kube-apiserver.key"

    @classmethod
    def load(cls, directory: Path) -> Tls:
        """The files ``make_tls`` wrote (or a copy of them) in ``directory``."""
        tls = cls(directory, b"", b"", b"")
        return cls(
            directory,
            tls.ca_file.read_bytes(),
            tls.cert_file.read_bytes(),
            tls.key_file.read_bytes(),
        )

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_tls(directory: Path, name: str = "k3s-server-ca", *, addresses: Sequence[str] = ()) -> Tls:
    """A self-signed CA and a certificate for 127.0.0.1/localhost (and ``addresses``)
    signed by it.

    The files are named like k3s's (``server-ca.crt``, ``client-kube-apiserver.crt``
    and ``.key``) so the fake systemctl can copy the directory into the root.
    """
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("k3s"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    *(
                        x509.IPAddress(ipaddress.ip_address(address))
                        for address in ("127.0.0.1", *addresses)
                    ),
                ]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    tls = Tls(
        directory,
        ca.public_bytes(serialization.Encoding.PEM),
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    tls.ca_file.write_bytes(tls.ca_pem)
    tls.cert_file.write_bytes(tls.cert_pem)
    tls.key_file.write_bytes(tls.key_pem)
    return tls


@dataclass
class FakeServer:
    """HTTPS and HTTP answering fixed routes; records the paths asked.

    Both listen on 127.0.0.1 on free ports unless told otherwise (``https_host``, the
    ports); after ``start`` the ports are the ones bound.
    """

    tls: Tls
    routes: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    https_port: int = 0
    http_port: int = 0
    https_host: str = "127.0.0.1"

    @property
    def https_url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    async def start(self, nursery: trio.Nursery) -> None:
        tls_listeners = await nursery.start(
            partial(
                trio.serve_ssl_over_tcp,
                self.handle,
                self.https_port,
                self.tls.server_context(),
                host=self.https_host,
                https_compatible=True,
            )
        )
        self.https_port = tls_listeners[0].transport_listener.socket.getsockname()[1]
        tcp_listeners = await nursery.start(
            partial(trio.serve_tcp, self.handle, self.http_port, host="127.0.0.1")
        )
        self.http_port = tcp_listeners[0].socket.getsockname()[1]

    async def handle(self, stream: trio.abc.Stream) -> None:
        try:
            data = b""
            with trio.move_on_after(5):
                while b"\r\n\r\n" not in data and len(data) < 65536:
                    chunk = await stream.receive_some(4096)
                    if not chunk:
                        break
                    data += chunk
            words = data.split(b"\r\n", 1)[0].decode("latin-1").split()
            path = words[1] if len(words) > 1 else "/"
            self.requests.append(path)
            status, body = self.routes.get(path, (404, b"not found\n"))
            head = f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n\r\n"
            await stream.send_all(head.encode() + body)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await stream.aclose()
