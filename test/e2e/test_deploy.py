"""Tests of deploy/: the systemd units, the compose file, the Dockerfile
and the demo session image.

- The units go through `systemd-analyze verify` (Debian package systemd)
  and are checked key by key: hardening, the restart policy against the
  binary's real exit codes, and that the proxy unit has no way to the Docker
  socket.
- The compose file is parsed (python3-yaml) and its gateway configuration
  is validated by the binary itself (--check-config).
- The Dockerfile cannot be built here: no registry can be reached, so
  debian:bookworm cannot be pulled. What can be checked is: its stages,
  that every package it installs exists in Debian 12 (apt-cache show), that
  its meson commands build and install the binary on this Debian 12 host,
  and that the runtime stage installs the package of every library the
  binary links.
- The demo image is built with deploy/demo-image/build.sh on the test's
  private dockerd and run: the page shows the session and a counter kept in
  a git work tree; a git add/commit/push (the save hook's job) into a
  bind-mounted bare repository survives re-creating the container. Then
  the same with a real gateway, whose own save hook does the push.
"""

import os
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
import time

import pytest
import yaml

from harness import rawhttp
from harness.dockerd import http_get_container
from harness.util import REPO_ROOT, HarnessError, wait_for
from harness.wakegate import clean_env, wakegate_bin

DEPLOY = REPO_ROOT / "deploy"
UNITS = DEPLOY / "systemd"
SERVICES = ("wakegate.service", "wakegate-proxy.service", "wakegate-orchestrator.service")
SYSTEMD_ANALYZE = "/usr/bin/systemd-analyze"
DOCKER_CLI = "/usr/bin/docker"
DEMO_TAG = "wakegate-demo:latest"
INSTALLED_BIN = "/usr/local/bin/wakegate"
FIREWALL_UNIT = "wakegate-session-firewall.service"
INSTALLED_FIREWALL = "/usr/local/lib/wakegate/session-firewall.sh"
REPO_FIREWALL = DEPLOY.parent / "scripts" / "session-firewall.sh"

# Each service must carry these exactly.
HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    "RestrictNamespaces": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "CapabilityBoundingSet": "",
    "Restart": "on-failure",
}


# ---------------------------------------------------------------- helpers

def parse_unit(path):
    """{section: [(key, value), ...]} of a systemd unit file, keys in order
    (a key may repeat), continuation lines joined."""
    sections, cur, pending = {}, None, ""
    for raw in path.read_text().splitlines():
        line = pending + raw.strip() if pending else raw.strip()
        pending = ""
        if not line or line[0] in "#;":
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("[") and line.endswith("]"):
            cur = sections.setdefault(line[1:-1], [])
            continue
        assert cur is not None and "=" in line, "%s: stray line %r" % (path.name, line)
        k, v = line.split("=", 1)
        cur.append((k.strip(), v.strip()))
    return sections


def values(unit, section, key):
    return [v for k, v in unit.get(section, []) if k == key]


def one(unit, section, key):
    vs = values(unit, section, key)
    assert len(vs) == 1, "%s=: %r" % (key, vs)
    return vs[0]


def run(argv, timeout=120, **kw):
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)


def dockerfile_instructions(path):
    """[(INSTRUCTION, argument text)] with continuations joined and comments dropped."""
    out, buf = [], ""
    for raw in path.read_text().splitlines():
        s = raw.strip()
        if s.startswith("#") or (not s and not buf):
            continue
        if s.endswith("\\"):
            buf += s[:-1] + " "
            continue
        buf += s
        if buf.strip():
            word, _, rest = buf.strip().partition(" ")
            out.append((word.upper(), " ".join(rest.split())))
        buf = ""
    return out


def stages(instructions):
    """[(FROM argument, [(INSTRUCTION, text), ...])] per build stage."""
    out = []
    for ins, text in instructions:
        if ins == "FROM":
            out.append((text, []))
        else:
            assert out, "instruction before FROM: %s" % ins
            out[-1][1].append((ins, text))
    return out


def apt_packages(stage_body):
    """Package names of every `apt-get install` in a stage's RUN lines."""
    pkgs = []
    for ins, text in stage_body:
        if ins != "RUN":
            continue
        for cmd in re.split(r"&&|;", text):
            words = shlex.split(cmd)
            if len(words) >= 2 and words[0] == "apt-get" and "install" in words:
                pkgs += [w for w in words[words.index("install") + 1:] if not w.startswith("-")]
    return pkgs


def debian_version():
    with open("/etc/os-release") as f:
        info = dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)
    return info.get("VERSION_ID", "").strip('"'), info.get("VERSION_CODENAME", "").strip('"')


# ================================================================ systemd

def test_units_pass_systemd_analyze_verify(e2e_tmp):
    if not os.access(SYSTEMD_ANALYZE, os.X_OK):
        pytest.fail("%s not found: install the Debian package systemd" % SYSTEMD_ANALYZE)
    binary = wakegate_bin().resolve()
    assert binary.is_file(), binary
    d = tempfile.mkdtemp(prefix="units-", dir=e2e_tmp)
    # verify checks that ExecStart's program exists: point it at the build.
    names = list(SERVICES) + ["wakegate.target", FIREWALL_UNIT]
    for name in names:
        text = (UNITS / name).read_text()
        if name == FIREWALL_UNIT:
            assert ("ExecStart=%s apply " % INSTALLED_FIREWALL) in text, name
            text = text.replace(INSTALLED_FIREWALL, str(REPO_FIREWALL))
        elif name.endswith(".service"):
            assert ("ExecStart=%s " % INSTALLED_BIN) in text, name
            text = text.replace(INSTALLED_BIN, str(binary))
        with open(os.path.join(d, name), "w") as f:
            f.write(text)
    argv = [SYSTEMD_ANALYZE, "verify", "--man=no", "--generators=no"] + ["./" + n for n in names]
    r = run(argv, cwd=d)
    # verify exits 0 even after "Unknown key" warnings: any output is a failure.
    assert r.returncode == 0 and r.stdout.strip() == "" and r.stderr.strip() == "", (r.returncode, r.stdout, r.stderr)

    # The same run does see a mistake (so the silence above means something).
    bad = os.path.join(d, "wakegate-bad.service")
    with open(bad, "w") as f:
        f.write((UNITS / "wakegate.service").read_text().replace(INSTALLED_BIN, str(binary))
                .replace("Restart=on-failure", "Restart=on-failur\nProtectKernelTunabels=yes"))
    r = run([SYSTEMD_ANALYZE, "verify", "--man=no", "--generators=no", "./wakegate-bad.service"], cwd=d)
    assert "ProtectKernelTunabels" in r.stderr and "on-failur" in r.stderr, r.stderr


@pytest.mark.parametrize("name", SERVICES)
def test_unit_hardening_and_restart_policy(name):
    u = parse_unit(UNITS / name)
    svc = "Service"
    for key, want in HARDENING.items():
        assert one(u, svc, key) == want, (name, key)
    filters = values(u, svc, "SystemCallFilter")
    assert "@system-service" in filters, filters
    assert one(u, svc, "AmbientCapabilities") == "", name
    # Nothing is written: no path is made writable again.
    assert values(u, svc, "ReadWritePaths") == [], name
    assert one(u, svc, "User") == "wakegate" and one(u, svc, "Group") == "wakegate", name
    assert "-/etc/default/wakegate" in values(u, svc, "EnvironmentFile"), name
    assert re.fullmatch(r"(/usr)?/bin/kill -HUP \$MAINPID", one(u, svc, "ExecReload")), name
    assert set(one(u, svc, "RestartPreventExitStatus").split()) == {"2", "3"}, name
    argv = shlex.split(one(u, svc, "ExecStart"))
    assert argv[0] == INSTALLED_BIN and "--config" in argv, argv
    role = argv[argv.index("--role") + 1]
    assert role == {"wakegate.service": "all", "wakegate-proxy.service": "proxy",
                    "wakegate-orchestrator.service": "orchestrator"}[name], argv


def test_restart_prevent_codes_are_the_binarys_usage_and_config_errors(start_wakegate, e2e_tmp):
    """RestartPreventExitStatus=2 3 relies on these codes; 4 (cannot listen) stays restartable."""
    readme = (REPO_ROOT / "README.md").read_text()
    assert re.search(r"^\| 2 \| bad command-line usage", readme, re.M)
    assert re.search(r"^\| 3 \| configuration error", readme, re.M)
    binary = str(wakegate_bin().resolve())
    env = clean_env()
    assert run([binary, "--no-such-flag"], env=env, timeout=10).returncode == 2
    bad = os.path.join(e2e_tmp, "bad-unit-config.yaml")
    with open(bad, "w") as f:
        f.write("listen: 1\nno_such_key: true\n")
    r = run([binary, "--config", bad], env=env, timeout=10)
    assert r.returncode == 3, (r.returncode, r.stderr)
    # A Redis URL refused at setup is a configuration error too (exit 3),
    # found after the event loop is up: this exit goes through the cleanup.
    r = run([binary, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"],
            env=clean_env({"WAKEGATE_REDIS_URL": "redis://[bad"}), timeout=10)
    assert r.returncode == 3, (r.returncode, r.stderr[-500:])
    # No Redis here: without one configured wakegate would start its own.
    norecfg = os.path.join(e2e_tmp, "no-redis.yaml")
    with open(norecfg, "w") as f:
        f.write("redis: { private: { enabled: false } }\n")
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        r = run([binary, "--config", norecfg, "--listen", "127.0.0.1:%d" % busy.getsockname()[1],
                 "--admin-listen", "127.0.0.1:0"], env=env, timeout=10)
    finally:
        busy.close()
    assert r.returncode == 4, (r.returncode, r.stderr[-500:])
    for name in SERVICES:
        assert "4" not in one(parse_unit(UNITS / name), "Service", "RestartPreventExitStatus").split()


def test_proxy_unit_has_no_docker_access_and_the_pair_fits_together():
    proxy = parse_unit(UNITS / "wakegate-proxy.service")
    orch = parse_unit(UNITS / "wakegate-orchestrator.service")
    allin = parse_unit(UNITS / "wakegate.service")
    target = parse_unit(UNITS / "wakegate.target")
    svc = "Service"

    # Unprivileged, without the docker group, and the socket's paths hidden.
    assert one(proxy, svc, "User") not in ("root", "0")
    groups = " ".join(values(proxy, svc, "SupplementaryGroups") + values(proxy, svc, "Group"))
    assert "docker" not in groups and "root" not in groups, groups
    hidden = " ".join(values(proxy, svc, "InaccessiblePaths")).split()
    assert {"-/run/docker.sock", "-/var/run/docker.sock"} <= set(hidden), hidden
    assert not any("DOCKER" in v for v in values(proxy, svc, "Environment")), proxy[svc]
    body = "\n".join("%s=%s" % kv for kv in proxy[svc])
    assert "docker.sock" not in body.replace("InaccessiblePaths=-/run/docker.sock -/var/run/docker.sock", "")
    assert one(proxy, svc, "CapabilityBoundingSet") == "" and one(proxy, svc, "AmbientCapabilities") == ""
    # The drop-in for a port below 1024 is documented in the unit itself.
    text = (UNITS / "wakegate-proxy.service").read_text()
    assert "#   AmbientCapabilities=CAP_NET_BIND_SERVICE" in text

    # Only the Docker-facing units get the socket's group.
    assert values(orch, svc, "SupplementaryGroups") == ["docker"]
    assert values(allin, svc, "SupplementaryGroups") == ["docker"]

    # The pair runs on one host: the proxy moves its admin listener off the
    # configuration's admin.listen, which the orchestrator (the API) keeps.
    argv = shlex.split(one(proxy, svc, "ExecStart"))
    assert argv[argv.index("--admin-listen") + 1] == "${WAKEGATE_PROXY_ADMIN_LISTEN}", argv
    assert values(proxy, svc, "Environment") == ["WAKEGATE_PROXY_ADMIN_LISTEN=127.0.0.1:8082"]
    assert "--admin-listen" not in shlex.split(one(orch, svc, "ExecStart"))

    # wakegate.target starts both; either the target or the all-in-one unit.
    assert set(one(target, "Unit", "Wants").split()) == {"wakegate-proxy.service", "wakegate-orchestrator.service"}
    for u in (proxy, orch):
        assert one(u, "Unit", "PartOf") == "wakegate.target"
        assert one(u, "Install", "WantedBy") == "wakegate.target"
        assert one(u, "Unit", "Conflicts") == "wakegate.service"
    assert set(one(allin, "Unit", "Conflicts").split()) == {"wakegate-proxy.service", "wakegate-orchestrator.service"}
    sysusers = (UNITS / "wakegate.sysusers").read_text()
    assert re.search(r"^u wakegate ", sysusers, re.M) and not re.search(r"^m wakegate docker", sysusers, re.M)


# ================================================================ compose

def test_compose_file_parses_and_its_config_validates():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"wakegate", "redis", "demo-session"} <= set(services), services.keys()

    wg = services["wakegate"]
    assert wg["build"]["dockerfile"] == "deploy/Dockerfile"
    assert (DEPLOY / wg["build"]["context"] / wg["build"]["dockerfile"]).resolve() == (DEPLOY / "Dockerfile").resolve()
    assert wg["network_mode"] == "host"
    mounts = {v.split(":")[1]: v.split(":")[0] for v in wg["volumes"]}
    assert mounts["/var/run/docker.sock"] == "/var/run/docker.sock"
    cfg_path = (DEPLOY / mounts["/etc/wakegate/wakegate.yaml"]).resolve()
    assert cfg_path.is_file(), cfg_path
    assert wg["command"][:2] == ["--config", "/etc/wakegate/wakegate.yaml"] and "all" in wg["command"]
    assert wg["group_add"], "the unprivileged image user needs the docker socket's group"
    assert wg["depends_on"] == ["redis"]

    # wakegate reaches Redis through the port the redis service publishes.
    env = wg["environment"]
    published = services["redis"]["ports"][0]
    host_ip, host_port, ctr_port = published.split(":")
    assert host_ip == "127.0.0.1" and ctr_port == "6379"
    assert env["WAKEGATE_REDIS_URL"] == "redis://127.0.0.1:%s/0" % host_port

    # The session image: the compose entry, the config and build.sh agree.
    cfg = yaml.safe_load(cfg_path.read_text())
    assert services["demo-session"]["image"] == cfg["sessions"]["image"] == DEMO_TAG
    assert services["demo-session"]["profiles"] == ["demo-image"]
    assert "tag=%s" % DEMO_TAG in (DEPLOY / "demo-image" / "build.sh").read_text()
    assert cfg["sessions"]["save"]["path"] == "/work/repo"

    # The binary accepts the configuration, with what compose sets.
    run_env = clean_env({"WAKEGATE_REDIS_URL": env["WAKEGATE_REDIS_URL"], "WAKEGATE_ADMIN_TOKEN": "compose-test"})
    r = run([str(wakegate_bin().resolve()), "--config", str(cfg_path), "--role", "all", "--check-config"],
            env=run_env, timeout=10)
    assert r.returncode == 0, r.stderr
    assert "admin.listen  127.0.0.1:8081" in r.stdout and "listen        0.0.0.0:8080" in r.stdout, r.stdout


# ================================================================ Dockerfile

def test_dockerfile_stages_and_packages_exist_in_debian_12():
    version, codename = debian_version()
    assert (version, codename) == ("12", "bookworm"), "this check needs a Debian 12 host, not %s %s" % (version, codename)
    st = stages(dockerfile_instructions(DEPLOY / "Dockerfile"))
    assert [s[0] for s in st] == ["debian:bookworm AS build", "debian:bookworm AS runtime"], [s[0] for s in st]
    build, runtime = st[0][1], st[1][1]
    build_pkgs, runtime_pkgs = apt_packages(build), apt_packages(runtime)
    assert {"meson", "ninja-build", "node-llhttp", "libuv1-dev"} <= set(build_pkgs), build_pkgs
    assert runtime_pkgs and not [p for p in runtime_pkgs if p.endswith("-dev") or p in ("build-essential", "meson")]
    for pkg in build_pkgs + runtime_pkgs:
        r = run(["apt-cache", "show", "--no-all-versions", pkg], timeout=30)
        assert r.returncode == 0 and re.search(r"^Package: %s$" % re.escape(pkg), r.stdout, re.M), \
            "%s is not a Debian 12 package here: %s" % (pkg, r.stderr.strip())

    ins = dict((i, t) for i, t in runtime)
    assert ins["USER"] not in ("root", "0"), ins["USER"]
    assert set(ins["EXPOSE"].split()) == {"8080", "8081"}
    assert "/healthz" in ins["HEALTHCHECK"] and "127.0.0.1:8081" in ins["HEALTHCHECK"], ins["HEALTHCHECK"]
    assert "busybox" in runtime_pkgs and ins["HEALTHCHECK"].split('CMD ["')[1].startswith("busybox")
    assert any(i == "COPY" and t.startswith("--from=build /out/usr/local/") for i, t in runtime)
    assert ins["ENTRYPOINT"] == '["%s"]' % INSTALLED_BIN
    for stage in (build, runtime):
        assert all("rm -rf /var/lib/apt/lists/*" in t for i, t in stage if i == "RUN" and "apt-get install" in t)


def test_dockerfile_build_commands_work_here_and_runtime_has_every_library(e2e_tmp):
    """Runs the build stage's meson RUN line on this Debian 12 host (paths
    moved into the test's tmp dir), then checks that the runtime stage
    installs the package of every library the built binary needs."""
    st = stages(dockerfile_instructions(DEPLOY / "Dockerfile"))
    build, runtime = st[0][1], st[1][1]
    assert ("WORKDIR", "/src") in build and ("COPY", ". .") in build
    cmd = [t for i, t in build if i == "RUN" and "meson setup" in t]
    assert len(cmd) == 1, cmd
    tmp = tempfile.mkdtemp(prefix="dockerfile-build-", dir=e2e_tmp)
    line = cmd[0].replace(" /build", " %s/build" % tmp).replace("DESTDIR=/out", "DESTDIR=%s/out" % tmp) \
                 .replace(" /out/", " %s/out/" % tmp)
    assert "/build" not in line.replace("%s/build" % tmp, "") and " /out" not in line, line
    r = run(["sh", "-ec", line], cwd=str(REPO_ROOT), timeout=280, env=clean_env())
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    binary = os.path.join(tmp, "out", INSTALLED_BIN.lstrip("/"))
    assert os.access(binary, os.X_OK), binary
    assert re.match(r"^wakegate \d", r.stdout.strip().splitlines()[-1]), r.stdout[-300:]

    # Each shared library the binary names -> its Debian package, which the
    # runtime stage must install (libc6 is in every Debian image).
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", run(["readelf", "-d", binary]).stdout)
    assert "libuv.so.1" in needed, needed
    ldd = run(["ldd", binary]).stdout
    runtime_pkgs = set(apt_packages(runtime)) | {"libc6"}
    for lib in needed:
        m = re.search(r"^\s*%s => (\S+)" % re.escape(lib), ldd, re.M)
        assert m, "ldd does not resolve %s:\n%s" % (lib, ldd)
        path = os.path.realpath(m.group(1))
        # usrmerge: dpkg may know the file under /lib rather than /usr/lib.
        candidates = [path] + ([path[len("/usr"):]] if path.startswith("/usr/lib/") else [])
        owners = [run(["dpkg", "-S", p]).stdout.split(":")[0] for p in candidates]
        owner = next((o for o in owners if o), "")
        assert owner in runtime_pkgs, "%s comes from %s, which the runtime stage does not install" % (lib, owner)
    shutil.rmtree(tmp, ignore_errors=True)


# ================================================================ the demo image

def git_host(*args, check=True):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_CONFIG_NOSYSTEM="1", HOME="/nonexistent", GIT_CONFIG_GLOBAL="/dev/null")
    r = run(["git", *args], env=env, timeout=30)
    if check:
        assert r.returncode == 0, (args, r.stderr)
    return r


def bare_counter(bare):
    return git_host("--git-dir", bare, "show", "main:counter.txt").stdout.strip()


def page(ip, path="/", timeout=15.0):
    st, body = http_get_container(ip, 8080, path, timeout=timeout)
    assert st == 200, (st, body[:300])
    text = body.decode()
    m = {k: re.search(r'id="%s">([^<]*)<' % k, text) for k in ("session", "counter", "tree", "commit")}
    assert all(m.values()), text
    return {k: v.group(1) for k, v in m.items()}


def post(ip, path="/"):
    data = rawhttp.send(8080, ("POST %s HTTP/1.0\r\nHost: %s\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                               "Content-Length: 0\r\n\r\n" % (path, ip)).encode(), host=ip, timeout=5).data
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.") and b" 200 " in head.split(b"\r\n")[0], head
    return re.search(rb'id="counter">(\d+)<', body).group(1).decode()


@pytest.fixture(scope="module")
def demo_image(dockerd, e2e_tmp):
    """Builds wakegate-demo:latest with deploy/demo-image/build.sh on the private engine."""
    env = dockerd.cli_env()
    env.pop("DOCKER_HOST", None)
    env.update(DOCKER=DOCKER_CLI, TMPDIR=e2e_tmp)
    r = run([str(DEPLOY / "demo-image" / "build.sh"), "-H", dockerd.host, "-t", DEMO_TAG], env=env, timeout=300)
    if r.returncode != 0:
        raise HarnessError("build.sh failed (%d):\n%s\n%s" % (r.returncode, r.stdout[-3000:], r.stderr[-3000:]))
    assert "build.sh: built %s" % DEMO_TAG in r.stdout, r.stdout[-500:]
    return DEMO_TAG


def test_demo_image_build_sh_refuses_bad_usage(tmp_path):
    r = run([str(DEPLOY / "demo-image" / "build.sh"), "-x"], timeout=10)
    assert r.returncode == 2 and r.stdout == "" and "-H HOST" in r.stderr, (r.stdout, r.stderr)
    r = run([str(DEPLOY / "demo-image" / "build.sh"), "-h"], timeout=10)
    assert r.returncode == 0 and "wakegate-demo:latest" in r.stdout


def test_demo_image_counter_survives_recreation_through_git(clean_engine, demo_image, e2e_tmp):
    dockerd = clean_engine
    img = dockerd.api_json("GET", "/images/%s/json" % demo_image)
    assert img["Config"]["Entrypoint"] == ["/entrypoint.sh"] and "8080/tcp" in img["Config"]["ExposedPorts"], img["Config"]
    assert len(img["RootFS"]["Layers"]) == 2, img["RootFS"]  # FROM scratch: the COPY and the RUN

    work = tempfile.mkdtemp(prefix="demo-", dir=e2e_tmp)
    bare = os.path.join(work, "remote.git")
    git_host("init", "-q", "--bare", bare)  # the host's default branch: maybe master
    binds = ["%s:/remote" % bare]
    env = {"WAKEGATE_SESSION": "s-demo"}
    cid = dockerd.run(demo_image, name="wg-demo-1", env=env, binds=binds, init=True)
    ip = dockerd.container_ip(cid)
    p = page(ip)
    assert p["session"] == "s-demo" and p["counter"] == "0" and p["tree"] == "clean", (p, dockerd.logs(cid))
    # The empty bare repository got the first commit, and its HEAD names it.
    assert bare_counter(bare) == "0"
    assert git_host("--git-dir", bare, "symbolic-ref", "HEAD").stdout.strip() == "refs/heads/main"

    assert page(ip, "/?incr=1")["counter"] == "1"
    assert page(ip, "/cgi-bin/index.cgi?incr=1")["counter"] == "2"
    assert post(ip, "/") == "3"
    p = page(ip)
    assert p["counter"] == "3" and p["tree"] == "not saved yet", p
    # Written, not committed: the work tree is dirty and the remote still says 0.
    assert dockerd.exec(cid, "cat", "/work/repo/counter.txt").stdout == "3\n"
    assert dockerd.exec(cid, "git", "-C", "/work/repo", "status", "--porcelain").stdout.split() == ["M", "counter.txt"]
    assert bare_counter(bare) == "0"

    # What the save hook does, by hand.
    dockerd.exec(cid, "sh", "-c", "cd /work/repo && git add -A && git commit -q -m autosave && git push -q")
    assert bare_counter(bare) == "3"
    saved = git_host("--git-dir", bare, "rev-parse", "--short", "main").stdout.strip()
    dockerd.remove(cid)

    # A new container of the same session gets the saved counter back.
    cid = dockerd.run(demo_image, name="wg-demo-2", env=env, binds=binds, init=True)
    p = page(dockerd.container_ip(cid))
    assert p["counter"] == "3" and p["tree"] == "clean" and saved.startswith(p["commit"][:7]), (p, saved)
    assert "cloning /remote" in dockerd.logs(cid).decode()
    dockerd.remove(cid)

    # No session env and no /remote: the hostname, and a local-only tree.
    cid = dockerd.run(demo_image, name="wg-demo-3", init=True)
    p = page(dockerd.container_ip(cid))
    assert p["session"] == cid[:12] and p["counter"] == "0", (p, cid)
    assert "no /remote mounted" in dockerd.logs(cid).decode()


def test_demo_image_with_the_gateway_saves_on_sleep_and_restores(clean_engine, demo_image, redis_server,
                                                                 start_wakegate, e2e_tmp):
    """The whole loop with wakegate: wake through the proxy, count, sleep
    (wakegate's own save hook commits and pushes), destroy, create again:
    the counter is back."""
    import http.client

    dockerd = clean_engine
    token = "deploy-t"
    cfg = yaml.safe_load((DEPLOY / "demo-image" / "wakegate.yaml").read_text())
    cfg.pop("listen")
    cfg["admin"] = {"token": token}
    cfg["redis"] = {"url": redis_server.url}
    cfg["docker"] = {"host": dockerd.host, "name": "deploy"}
    cfg["log"] = {"level": "debug", "access": True}
    # The session's bare repository is under the test's tmp, not the demo's
    # /srv/wakegate/remotes/ (binds are refused outside binds.allow).
    cfg["sessions"]["binds"] = {"allow": [e2e_tmp]}
    gw = start_wakegate(cfg, args=["--role", "all"])
    gw.wait_log(r"startup reconciliation done", timeout=15)

    def api(method, path, body=None):
        r = gw.admin(method, path, body=body, token=token, timeout=60)
        return r.status, r.json()

    def through_proxy(method, path):
        c = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=30)
        try:
            c.request(method, "/s/s-loop" + path, headers={"Accept": "*/*", "Content-Length": "0"})
            resp = c.getresponse()
            body = resp.read().decode()
        finally:
            c.close()
        assert resp.status == 200, (resp.status, body[:300], gw.log_tail(30))
        return re.search(r'id="counter">(\d+)<', body).group(1), re.search(r'id="session">([^<]*)<', body).group(1)

    work = tempfile.mkdtemp(prefix="demo-gw-", dir=e2e_tmp)
    bare = os.path.join(work, "s-loop.git")
    git_host("init", "-q", "--bare", bare)
    spec = {"id": "s-loop", "image": demo_image, "env": ["WAKEGATE_SESSION=s-loop"], "binds": ["%s:/remote" % bare]}
    try:
        st, got = api("POST", "/v1/sessions", spec)
        assert st == 201, (st, got)
        # The first request wakes the session and is held until it is ready.
        assert through_proxy("GET", "/") == ("0", "s-loop")
        assert through_proxy("POST", "/")[0] == "1"
        assert through_proxy("GET", "/?incr=1")[0] == "2"
        assert bare_counter(bare) == "0"

        # Activity that lands while the session drains cancels the sleep (by
        # design): let the proxy's last activity write (every
        # sessions.idle.activity_interval, 1s) go out first.
        time.sleep(2.0)
        st, got = api("POST", "/v1/sessions/s-loop/sleep?wait=1")
        assert st == 200 and got["state"] in ("asleep", "paused"), (st, got, gw.log_tail(40))
        assert got["last_save"] and got["last_save"]["ok"] is True, got
        assert bare_counter(bare) == "2"
        head = git_host("--git-dir", bare, "rev-parse", "main").stdout.strip()
        commit = got["last_save"]["commit"] or ""
        assert len(commit) >= 7 and head.startswith(commit), (got["last_save"], head)

        st, _ = api("DELETE", "/v1/sessions/s-loop?force=1")
        assert st == 202
        wait_for(lambda: api("GET", "/v1/sessions/s-loop")[0] == 404, 15,
                 lambda: "s-loop to be gone; tail:\n" + gw.log_tail(30), interval=0.05)
        st, got = api("POST", "/v1/sessions", spec)
        assert st == 201, (st, got)
        assert through_proxy("GET", "/") == ("2", "s-loop")
    finally:
        dockerd.remove_all_containers()
    assert gw.stop() == 0
