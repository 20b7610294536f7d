"""The test image, built FROM scratch because no registry can be reached.

Recipe (DESIGN.md, "Facts about the machines"): /bin/busybox from the Debian
package busybox-static, installed as applets in /bin; /usr/bin/git with the
libraries ldd lists, and git-receive-pack/git-upload-pack linked to git so a
bare repository on a bind mount takes a `git push` from inside. The default
command is `busybox httpd -f -p 8080 -h /www`, serving /www/index.html.
"""

import os
import pathlib
import re
import shutil
import subprocess

from .util import HarnessError

BUSYBOX = "/bin/busybox"
GIT = "/usr/bin/git"
INDEX_HTML = "<!doctype html><title>wakegate-test</title><p>wakegate test image</p>\n"

TEST_IMAGE = "wakegate-test:latest"
TEST_IMAGE_HEALTHY = "wakegate-test-healthcheck:latest"

# A HEALTHCHECK that turns healthy as soon as httpd answers.
HEALTHCHECK_EXTRA = (
    'HEALTHCHECK --interval=500ms --timeout=2s --retries=3 '
    'CMD ["/bin/wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/"]'
)

GITCONFIG = """[user]
\tname = wakegate test
\temail = test@wakegate.invalid
[init]
\tdefaultBranch = main
[safe]
\tdirectory = *
"""


def _ldd(path):
    """Absolute paths of the shared objects path needs, the loader included."""
    out = subprocess.run(["ldd", path], check=True, capture_output=True, text=True).stdout
    libs = []
    for line in out.splitlines():
        m = re.search(r"=>\s+(/\S+)", line) or re.match(r"\s*(/\S+)\s+\(", line)
        if m:
            libs.append(m.group(1))
    return libs


def _copy_into(rootfs, src):
    """Copy src (following symlinks) to the same absolute path inside rootfs."""
    dst = rootfs / src.lstrip("/")
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(os.path.realpath(src), dst)


def make_context(ctx_dir, dockerfile_extra="", index_html=INDEX_HTML, extra_files=None, cmd=None):
    """Write a build context into ctx_dir and return its path.

    extra_files maps an absolute path inside the image to bytes or str.
    cmd replaces the default CMD (a list, exec form).
    """
    for exe in (BUSYBOX, GIT):
        if not os.access(exe, os.X_OK):
            raise HarnessError("%s not found: install busybox-static and git (scripts/install-deps.sh)" % exe)
    ctx = pathlib.Path(ctx_dir)
    if ctx.exists():
        shutil.rmtree(ctx)
    rootfs = ctx / "rootfs"
    for d in ("bin", "usr/bin", "usr/lib/git-core", "usr/share/git-core/templates", "etc", "www", "root", "tmp", "srv"):
        (rootfs / d).mkdir(parents=True, exist_ok=True)
    os.chmod(rootfs / "tmp", 0o1777)

    _copy_into(rootfs, BUSYBOX)
    _copy_into(rootfs, GIT)
    for lib in _ldd(GIT):
        _copy_into(rootfs, lib)
    for name in ("git-receive-pack", "git-upload-pack"):
        os.symlink("git", rootfs / "usr/bin" / name)
        os.symlink("../../bin/git", rootfs / "usr/lib/git-core" / name)

    (rootfs / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    (rootfs / "etc/group").write_text("root:x:0:\nnogroup:x:65534:\n")
    (rootfs / "etc/gitconfig").write_text(GITCONFIG)
    (rootfs / "www/index.html").write_text(index_html)
    for path, content in (extra_files or {}).items():
        dst = rootfs / path.lstrip("/")
        dst.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            content = content.encode()
        dst.write_bytes(content)

    cmd = cmd or ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]
    cmd_json = "[" + ", ".join('"%s"' % c.replace("\\", "\\\\").replace('"', '\\"') for c in cmd) + "]"
    (ctx / "Dockerfile").write_text(
        "FROM scratch\n"
        "COPY rootfs/ /\n"
        'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
        "ENV HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
        "WORKDIR /\n"
        "EXPOSE 8080\n"
        "LABEL org.wakegate.test=1\n"
        "CMD %s\n"
        "%s\n" % (cmd_json, dockerfile_extra)
    )
    return ctx


def build_image(docker, tag, dockerfile_extra="", index_html=INDEX_HTML, extra_files=None, cmd=None):
    """Build the test image with `docker -H … build` and tag it. Returns tag.

    docker is a harness Dockerd. dockerfile_extra is appended to the
    Dockerfile (e.g. HEALTHCHECK_EXTRA).
    """
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", tag)
    ctx = make_context(docker.dir / "images" / safe, dockerfile_extra, index_html, extra_files, cmd)
    docker.cli("build", "--force-rm", "-t", tag, str(ctx), timeout=300)
    return tag


# A WebSocket endpoint for one connection (run by busybox nc -ll -e): answers the handshake, then
# holds the connection open, reading whatever comes.
WS_SH = r"""#!/bin/sh
key=
while IFS= read -r line; do
  line=$(printf '%s' "$line" | tr -d '\r')
  [ -z "$line" ] && break
  case "$line" in
    [Ss]ec-[Ww]eb[Ss]ocket-[Kk]ey:*) key=$(printf '%s' "${line#*:}" | tr -d ' ');;
  esac
done
acc=$(printf '%s' "${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11" | sha1sum | cut -c1-40 | xxd -r -p | base64)
printf 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n' "$acc"
exec cat >/dev/null
"""

# The test image plus a WebSocket endpoint on 8081 (one connection at a
# time) beside the app on 8080. With /remote bind-mounted, the work tree
# /www/repo is cloned from it first; IGNORE_TERM makes PID 1 ignore SIGTERM.
WS_IMAGE = "wakegate-test-ws:latest"
WS_START_SH = """#!/bin/sh
if [ -d /remote ] && [ ! -d /www/repo/.git ]; then
  git clone -q /remote /www/repo
fi
nc -ll -p 8081 -e /ws.sh &
[ -n "$IGNORE_TERM" ] && trap '' TERM
exec httpd -f -p 8080 -h /www
"""
