"""Helpers of test_tls.py: a test CA and leaf certificates made with the
openssl CLI in the test's own directory, TLS configurations, and the real
clients (curl, openssl s_client, Python's ssl) pointed at a gateway."""

import os
import re
import shutil
import socket
import ssl
import subprocess

from harness.util import HarnessError


def run(args, timeout=20, input=None, check=True):
    p = subprocess.run(args, capture_output=True, timeout=timeout, input=input)
    if check and p.returncode != 0:
        raise HarnessError("%s failed (%d): %s" % (args[0], p.returncode, p.stderr.decode(errors="replace")[-800:]))
    return p


class CA:
    """A test CA in directory d; leaf() signs certificates for DNS names."""

    def __init__(self, d):
        self.d = d
        os.makedirs(d, exist_ok=True)
        self.cert = os.path.join(d, "ca.pem")
        self.key = os.path.join(d, "ca.key")
        run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", self.key, "-out", self.cert, "-days", "2", "-subj", "/CN=wakegate test CA",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"])
        self.serial = 1

    def leaf(self, label, names, key_type="ec", org="wakegate tests"):
        """(cert path, key path) of a leaf for the DNS names (the first is the CN);
        the cert file holds the leaf then the CA (a full chain)."""
        base = os.path.join(self.d, label)
        keyargs = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"] if key_type == "ec" else \
            ["-newkey", "rsa:2048"]
        run(["openssl", "req", "-new", "-nodes"] + keyargs + ["-keyout", base + ".key", "-out", base + ".csr",
             "-subj", "/O=%s/CN=%s" % (org, names[0])])
        ext = base + ".ext"
        with open(ext, "w") as f:
            f.write("subjectAltName=%s\nextendedKeyUsage=serverAuth\n" % ",".join("DNS:" + n for n in names))
        self.serial += 1
        run(["openssl", "x509", "-req", "-in", base + ".csr", "-CA", self.cert, "-CAkey", self.key,
             "-set_serial", str(self.serial), "-days", "2", "-extfile", ext, "-out", base + ".leaf"])
        with open(base + ".pem", "w") as out:
            out.write(open(base + ".leaf").read() + open(self.cert).read())
        return base + ".pem", base + ".key"


def tls_block(pairs, **extra):
    block = {"certificates": [{"cert": c, "key": k} for c, k in pairs]}
    block.update(extra)
    return block


def s_client(port, servername=None, extra=(), stdin=b"", timeout=10):
    """openssl s_client against 127.0.0.1:port: (returncode, text of stdout+stderr)."""
    args = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port]
    args += ["-servername", servername] if servername else ["-noservername"]
    args += list(extra)
    p = run(args, timeout=timeout, input=stdin, check=False)
    return p.returncode, (p.stdout + p.stderr).decode(errors="replace")


def subject_cn(text):
    """The CN of the certificate s_client was shown (its subject= line)."""
    m = re.search(r"^subject=.*?CN\s*=\s*([^,\n/]+)", text, re.M)
    return m.group(1).strip() if m else None


def serial_of(port, servername, ca):
    """The serial number of the leaf the gateway presents for servername."""
    _, text = s_client(port, servername, ["-CAfile", ca, "-showcerts"])
    pem = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", text, re.S).group(0)
    p = run(["openssl", "x509", "-noout", "-serial"], input=pem.encode())
    return p.stdout.decode().strip()


def curl_full(port, host, path="/", ca=None, extra=(), timeout=20, http="--http1.1"):
    """curl over TLS to host (resolved to 127.0.0.1:port), with http one of
    curl's --http1.1 or --http2: (status, headers dict with lower-case names,
    body bytes, the HTTP version curl used: "1.1" or "2")."""
    args = ["curl", http, "-sS", "-D", "-", "--max-time", str(timeout), "-o", "-",
            "-w", "\n__VERSION__%{http_version}",
            "--resolve", "%s:%d:127.0.0.1" % (host, port), "https://%s:%d%s" % (host, port, path)]
    args += ["--cacert", ca] if ca else ["-k"]
    args += list(extra)
    out = run(args, timeout=timeout + 5).stdout
    out, _, version = out.rpartition(b"\n__VERSION__")
    head, _, body = out.partition(b"\r\n\r\n")
    while re.match(rb"HTTP/[0-9.]+ 1\d\d", head):  # interim answers
        head, _, body = body.partition(b"\r\n\r\n")
    lines = head.decode(errors="replace").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, body, version.decode()


def curl(port, host, path="/", ca=None, extra=(), timeout=20):
    """curl --http1.1 over TLS: (status, headers, body) of curl_full()."""
    return curl_full(port, host, path, ca, extra, timeout)[:3]


def fresh_ca(e2e_tmp, sub, name):
    """A fresh test CA in e2e_tmp/sub/<name>, for one test."""
    d = os.path.join(e2e_tmp, sub, name[:60])
    shutil.rmtree(d, ignore_errors=True)
    return CA(d)


class TlsConn:
    """One kept-alive TLS connection (Python's ssl, verifying with the CA)."""

    def __init__(self, port, servername, ca, timeout=10):
        ctx = ssl.create_default_context(cafile=ca)
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock = ctx.wrap_socket(raw, server_hostname=servername)
        self.host = servername
        self.buf = b""

    def peer_serial(self):
        return self.sock.getpeercert()["serialNumber"]

    def get(self, path):
        self.sock.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (path, self.host)).encode())
        return self.read_response()

    def read_response(self):
        """(status, headers, body) of the next Content-Length response."""
        while b"\r\n\r\n" not in self.buf:
            d = self.sock.recv(65536)
            if not d:
                raise HarnessError("closed before a response head")
            self.buf += d
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        hdrs = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        n = int(hdrs.get("content-length", "0"))
        while len(rest) < n:
            d = self.sock.recv(65536)
            if not d:
                raise HarnessError("closed mid-body")
            rest += d
        self.buf = rest[n:]
        return int(lines[0].split()[1]), hdrs, rest[:n]

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
