"""A TCP or TLS relay to the engine's unix socket, and the certificates for
the TLS one: what test_docker_client.py (the client library) and
test_docker_tls_config.py (the binary's docker.tls) point their tcp:// host at.

Nothing here is a fixture; each test module makes its own from these.
"""

import pathlib
import socket
import ssl
import subprocess
import threading

from harness.util import HarnessError


class TcpRelay:
    """127.0.0.1:port -> the engine's unix socket, one thread pair per connection."""

    def __init__(self, unix_path):
        self.unix_path = unix_path
        self.srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(16)
        self.port = self.srv.getsockname()[1]
        self.conns = 0
        self.stopping = False
        self.socks = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.stopping:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            self._on_accept(c)

    def _on_accept(self, c):
        self._relay(c)

    def _relay(self, c):
        """Pipes c both ways to a new connection to the engine's socket."""
        u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        u.connect(self.unix_path)
        self.conns += 1
        self.socks += [c, u]
        for a, b in ((c, u), (u, c)):
            threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a, b):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        finally:
            try:
                b.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def stop(self):
        self.stopping = True
        self.srv.close()
        for s in self.socks:
            try:
                s.close()
            except OSError:
                pass


def _openssl(*args, cwd):
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise HarnessError("openssl %s failed: %s" % (" ".join(args), r.stderr[-2000:]))


def make_tls_files(directory):
    """Writes into directory a CA (ca.pem), a server certificate for
    localhost/127.0.0.1 (server.pem, server.key) and a client certificate
    (client.pem, client.key) it signed, and a second CA that signed nothing
    of ours (other-ca.pem). Returns the directory as a Path."""
    d = pathlib.Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for ca in ("ca", "other-ca"):
        _openssl("req", "-x509", *ec, "-keyout", ca + ".key", "-out", ca + ".pem", "-days", "1",
                 "-subj", "/CN=wakegate test " + ca, cwd=d)
    (d / "server.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for who in ("server", "client"):
        _openssl("req", *ec, "-keyout", who + ".key", "-out", who + ".csr", "-subj", "/CN=" + who, cwd=d)
        _openssl("x509", "-req", "-in", who + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", who + ".pem", "-days", "1", "-extfile", who + ".ext", cwd=d)
    return d


class TlsRelay(TcpRelay):
    """Like TcpRelay, but TLS on the TCP side, with client certificates required
    (Docker's --tlsverify)."""

    def __init__(self, unix_path, files):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(str(files / "server.pem"), str(files / "server.key"))
        self.ctx.load_verify_locations(str(files / "ca.pem"))
        self.ctx.verify_mode = ssl.CERT_REQUIRED
        self.handshakes_failed = 0
        super().__init__(unix_path)

    def _on_accept(self, raw):
        # The handshake in a thread of its own, so a stuck one blocks no other.
        threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw):
        raw.settimeout(10)
        try:
            c = self.ctx.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            self.handshakes_failed += 1
            raw.close()
            return
        c.settimeout(None)
        self._relay(c)
