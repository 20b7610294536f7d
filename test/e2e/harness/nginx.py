"""Debian's nginx as a realistic upstream: static files and an upload sink.

Everything nginx writes stays in its directory: the pid file, the error log
(also set with -e, because nginx opens its compiled-in error log before it
reads the configuration), the access log and all five temp paths.

Locations:
  /small.txt, /64k.bin   files on disk (64k.bin is pattern() bytes, 65536 of them)
  /1g.bin                1 GiB sparse file (truncate): zeros, no disk blocks used
  /upload                reads the whole request body (Content-Length or chunked,
                         no size limit), then answers "received=N\\n" with N the
                         body size. Needs the echo module (libnginx-mod-http-echo).
                         nginx buffers a body bigger than 1 MiB into a temp file
                         under DIR/tmp/body and deletes it after the request, so
                         a 1 GiB upload needs 1 GiB of free disk for a moment.
  /discard           answers 200 "discarded\\n" at once and drops the body as it
                         arrives (nginx's discard path: no disk use, but the answer
                         may come before the upload ends).
  anything else          404 from the static root.
"""

import os
import pathlib

from .procs import REGISTRY
from .upstream import pattern
from .util import HarnessError, free_port, tail, tcp_connectable, wait_until

NGINX = "/usr/sbin/nginx"
ECHO_MODULE = "/usr/lib/nginx/modules/ngx_http_echo_module.so"
ONE_GIB = 1 << 30


class NginxUpstream:
    def __init__(self, base_dir, log_dir, port=None):
        self.dir = pathlib.Path(base_dir)
        self.www = self.dir / "www"
        self.port = port or free_port()
        self.log_dir = pathlib.Path(log_dir)
        self.error_log = self.log_dir / "nginx-error.log"
        self.access_log = self.log_dir / "nginx-access.log"
        self.stdout_log = self.log_dir / "nginx-stdout.log"
        self.pid_file = self.dir / "nginx.pid"
        self.proc = None
        self.files = {}  # url path -> size

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    @property
    def address(self):
        return "127.0.0.1:%d" % self.port

    def url(self, path="/"):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def _write_files(self):
        self.www.mkdir(parents=True, exist_ok=True)
        (self.www / "small.txt").write_bytes(b"hello from nginx\n")
        (self.www / "64k.bin").write_bytes(pattern(0, 64 * 1024))
        with open(self.www / "1g.bin", "wb") as f:
            f.truncate(ONE_GIB)
        self.files = {"/small.txt": 17, "/64k.bin": 65536, "/1g.bin": ONE_GIB}

    def _config(self):
        d = self.dir
        return """
load_module {echo};
user root;
worker_processes 1;
pid {d}/nginx.pid;
error_log {err} info;
events {{ worker_connections 1024; }}
http {{
    access_log {acc} combined;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    default_type application/octet-stream;
    sendfile on;
    keepalive_requests 100000;
    server {{
        listen 127.0.0.1:{port};
        server_name _;
        root {www};
        client_max_body_size 0;
        location = /upload {{
            client_body_buffer_size 1m;
            echo_read_request_body;
            echo "received=$content_length";
        }}
        location = /discard {{
            return 200 "discarded\\n";
        }}
    }}
}}
""".format(echo=ECHO_MODULE, d=d, err=self.error_log, acc=self.access_log, port=self.port, www=self.www)

    def start(self, timeout=10.0):
        for f in (NGINX, ECHO_MODULE):
            if not os.path.exists(f):
                raise HarnessError("%s not found: install nginx-light and libnginx-mod-http-echo (scripts/install-deps.sh)" % f)
        (self.dir / "tmp").mkdir(parents=True, exist_ok=True)
        self._write_files()
        conf = self.dir / "nginx.conf"
        conf.write_text(self._config())
        argv = [NGINX, "-p", str(self.dir) + "/", "-c", str(conf), "-e", str(self.error_log), "-g", "daemon off;"]
        self.proc = REGISTRY.spawn("nginx", argv, log_path=self.stdout_log, cwd=self.dir)
        try:
            wait_until(self._up, timeout=timeout, what="nginx on port %d" % self.port)
        except (TimeoutError, HarnessError) as e:
            self.stop()
            raise HarnessError("nginx did not start: %s\n--- error log tail:\n%s\n%s" % (e, tail(self.error_log), tail(self.stdout_log))) from None
        return self

    def _up(self):
        if self.proc.poll() is not None:
            raise HarnessError("nginx exited with %s" % self.proc.returncode)
        return tcp_connectable("127.0.0.1", self.port)

    def stop(self, timeout=10.0):
        """SIGTERM (fast shutdown) to the master by pid; it stops its workers.
        Returns the exit code."""
        if self.proc is None:
            return None
        code = REGISTRY.stop(self.proc, timeout=timeout)
        self.proc = None
        return code
