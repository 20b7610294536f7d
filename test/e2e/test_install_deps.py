"""scripts/install-deps.sh: the demo installs only what it runs, and no
package it installs is left serving.

What this proves, and what it does not. A really clean machine would need a
fresh Debian and its mirrors, and these tests touch no network beyond
loopback and no package of this machine. So:

- the package lists are the script's own (`--print`), checked against a list
  written here of what only the tests use: the demo's list has none of them,
  and has what scripts/demo.sh runs;
- the install itself runs the real script against fake `apt-get`,
  `dpkg-query` and `systemctl` first on PATH, over a fake package database in
  the test's directory. The fake apt-get does what Debian's maintainer scripts
  do: it installs the dependencies too, enables each unit a package ships
  (deb-systemd-helper) and asks policy-rc.d before starting it
  (deb-systemd-invoke). The tests then read which units were left enabled or
  running, and what became of the machine's own policy-rc.d and units.

That Debian's real packages behave like the fake (they enable and start
through deb-systemd-helper/-invoke, which honour policy-rc.d) is assumed,
not tested here.
"""

import os
import pathlib
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "install-deps.sh"

# Packages only the tests use: none of them may come with the demo.
TEST_ONLY = {
    "clang", "clang-format", "libclang-rt-14-dev", "libcmocka-dev", "nginx-light", "nginx",
    "libnginx-mod-http-echo", "haproxy", "wrk", "chromium", "python3-pytest",
    "python3-pytest-timeout", "python3-requests", "python3-redis", "python3-websockets",
    "python3-yaml", "python3-h2", "nghttp2-client", "openssl", "redis-sentinel",
}
# What scripts/demo.sh runs: the build, wakegate's private redis-server, an
# engine (dockerd, docker), the demo image's busybox and git, curl.
DEMO_NEEDS = {"build-essential", "meson", "ninja-build", "pkg-config", "node-llhttp", "libuv1-dev", "libnghttp2-dev",
              "libcurl4-openssl-dev", "libhiredis-dev", "libjansson-dev", "libyaml-dev", "libssl-dev",
              "redis-server", "docker.io", "busybox-static", "git", "curl"}
# A PATH without /usr/sbin: no dockerd, so docker.io is wanted.
BASE_PATH = "/usr/bin:/bin"


def print_list(mode=None, path=BASE_PATH):
    argv = ["bash", str(SCRIPT)] + ([mode] if mode else []) + ["--print"]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=30, env={"PATH": path})
    assert p.returncode == 0, p.stderr
    return p.stdout.split()


def test_the_demo_installs_no_test_only_package():
    demo = print_list()
    assert demo == print_list("demo")
    assert not set(demo) & TEST_ONLY, set(demo) & TEST_ONLY
    assert DEMO_NEEDS <= set(demo), DEMO_NEEDS - set(demo)
    assert set(print_list("run")) == {"redis-server", "docker.io", "busybox-static", "git", "curl"}
    assert not set(print_list("build")) & (TEST_ONLY | {"redis-server", "docker.io"})
    # The test command installs everything.
    full = set(print_list("test"))
    assert TEST_ONLY - {"nginx"} <= full and set(demo) <= full
    assert len(full) == len(print_list("test")), "a package listed twice"


def test_docker_io_is_not_installed_over_another_engine(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("dockerd", "docker"):
        exe = bin_dir / name
        exe.write_text("#!/bin/sh\nexit 0\n")
        exe.chmod(0o755)
    assert "docker.io" not in print_list(path="%s:%s" % (bin_dir, BASE_PATH))
    assert "docker.io" in print_list()


def test_a_bad_mode_is_refused():
    p = subprocess.run(["bash", str(SCRIPT), "everything"], capture_output=True, text=True, timeout=30,
                       env={"PATH": BASE_PATH})
    assert p.returncode == 2 and "unknown argument 'everything'" in p.stderr, p


# ---------------------------------------------------------------- the install, against fakes

FAKE_DPKG_QUERY = r'''#!/usr/bin/python3
import os, sys
d = os.environ["FAKE"]
installed = open(d + "/installed").read().split()
args = sys.argv[1:]
if args[0] == "-L":
    path = "%s/repo/%s" % (d, args[1])
    if args[1] not in installed:
        sys.exit(1)
    for line in open(path).read().splitlines() if os.path.exists(path) else []:
        kind, _, what = line.partition(" ")
        if kind == "unit":
            print("/lib/systemd/system/" + what)
        elif kind == "file":
            print(what)
    sys.exit(0)
assert args[0] == "-W", args
fmt = args[1][len("-f="):]
pkgs = args[2:]
if pkgs:
    if pkgs[0] not in installed:
        sys.stderr.write("dpkg-query: no packages found matching %s\n" % pkgs[0])
        sys.exit(1)
    sys.stdout.write(fmt.replace("${Status}", "install ok installed"))
else:
    for p in installed:
        sys.stdout.write(fmt.replace("${binary:Package}", p + ":amd64").replace("${db:Status-Status}", "installed")
                         .replace("\\n", "\n"))
'''

FAKE_APT_GET = r'''#!/usr/bin/python3
import os, subprocess, sys
d = os.environ["FAKE"]
policy = os.environ["WAKEGATE_DEPS_POLICY_RC"]
def log(s):
    with open(d + "/calls", "a") as f:
        f.write(s + "\n")
def lines(name):
    p = d + "/" + name
    return open(p).read().split() if os.path.exists(p) else []
def put(name, items):
    open(d + "/" + name, "w").write("".join(i + "\n" for i in items))
log("apt-get " + " ".join(sys.argv[1:]))
if sys.argv[1] == "update":
    sys.exit(0)
assert sys.argv[1] == "install", sys.argv
if os.path.exists(d + "/apt-fails"):
    sys.exit(100)
want = [a for a in sys.argv[2:] if not a.startswith("-")]
installed, enabled, active = lines("installed"), lines("enabled"), lines("active")
def repo(p):
    path = "%s/repo/%s" % (d, p)
    return [l.split(" ", 1) for l in open(path).read().splitlines()] if os.path.exists(path) else []
todo = list(want)
while todo:
    p = todo.pop(0)
    if p in installed:
        continue
    installed.append(p)
    log("installed " + p)
    for kind, what in repo(p):
        if kind == "dep":
            todo.append(what)
    for kind, what in repo(p):
        if kind != "unit":
            continue
        if what not in enabled:          # deb-systemd-helper enable
            enabled.append(what)
        rc = subprocess.run([policy, what, "start"]).returncode if os.access(policy, os.X_OK) else 0
        if rc == 101:                     # deb-systemd-invoke start
            log("policy denied start " + what)
        else:
            log("started " + what)
            active.append(what)
put("installed", installed)
put("enabled", enabled)
put("active", active)
'''

FAKE_SYSTEMCTL = r'''#!/usr/bin/python3
import os, sys
d = os.environ["FAKE"]
def lines(name):
    p = d + "/" + name
    return open(p).read().split() if os.path.exists(p) else []
def put(name, items):
    open(d + "/" + name, "w").write("".join(i + "\n" for i in items))
args = [a for a in sys.argv[1:] if a not in ("--quiet", "--no-legend", "--no-pager")]
with open(d + "/calls", "a") as f:
    f.write("systemctl " + " ".join(args) + "\n")
verb = args[0]
if verb == "list-unit-files":
    assert "--state=enabled" in args
    for u in lines("enabled"):
        print("%s enabled enabled" % u)
elif verb == "is-enabled":
    on = args[1] in lines("enabled")
    print("enabled" if on else "disabled")
    sys.exit(0 if on else 1)
elif verb == "disable":
    put("enabled", [u for u in lines("enabled") if u != args[1]])
elif verb == "is-active":
    sys.exit(0 if args[1] in lines("active") else 3)
elif verb == "stop":
    put("active", [u for u in lines("active") if u != args[1]])
else:
    sys.exit("fake systemctl: %r" % args)
'''


class Fake:
    """A package database, systemd and apt in a directory; the tools on PATH."""

    def __init__(self, tmp, installed, enabled, repo):
        self.dir = tmp / "fake"
        self.bin = tmp / "bin"
        self.dir.mkdir()
        self.bin.mkdir()
        self.policy = tmp / "sbin" / "policy-rc.d"
        self.policy.parent.mkdir()
        for name, text in (("dpkg-query", FAKE_DPKG_QUERY), ("apt-get", FAKE_APT_GET),
                           ("systemctl", FAKE_SYSTEMCTL)):
            (self.bin / name).write_text(text)
            (self.bin / name).chmod(0o755)
        self.put("installed", installed)
        self.put("enabled", enabled)
        self.put("active", [])
        (self.dir / "repo").mkdir()
        for pkg, entries in repo.items():
            (self.dir / "repo" / pkg).write_text("".join(e + "\n" for e in entries))

    def put(self, name, items):
        (self.dir / name).write_text("".join(i + "\n" for i in items))

    def lines(self, name):
        p = self.dir / name
        return p.read_text().split() if p.exists() else []

    def calls(self):
        return (self.dir / "calls").read_text().splitlines() if (self.dir / "calls").exists() else []

    def run(self, *args):
        env = {"PATH": "%s:%s" % (self.bin, BASE_PATH), "FAKE": str(self.dir),
               "WAKEGATE_DEPS_POLICY_RC": str(self.policy)}
        return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=60, env=env)


# The demo's packages, as Debian ships them in the respects that matter here.
REPO = {
    "redis-server": ["dep redis-tools", "unit redis-server.service", "unit redis-server@.service"],
    "redis-tools": [],
    "docker.io": ["dep containerd", "dep runc", "unit docker.service", "unit docker.socket"],
    "containerd": ["unit containerd.service"],
    "runc": [],
    "git": ["dep git-man"],
    "git-man": [],
    "curl": [],
    "busybox-static": [],
}


def everything_but(*missing):
    return [p for p in print_list("demo") if p not in missing]


def test_the_install_leaves_no_service_it_added_enabled_or_running(tmp_path):
    # The machine already runs nginx and postgresql: enabled units of its own.
    mine = ["nginx.service", "postgresql.service", "ssh.service"]
    fake = Fake(tmp_path, everything_but("redis-server", "docker.io", "git") + ["nginx-light", "postgresql"],
                mine, REPO)
    p = fake.run()
    assert p.returncode == 0, (p.stdout, p.stderr, fake.calls())
    calls = fake.calls()
    assert "apt-get install -y -qq --no-install-recommends redis-server docker.io git" in calls, calls
    # Nothing started during the install: policy-rc.d said no to every unit.
    assert not [c for c in calls if c.startswith("started ")], calls
    denied = {c.split()[-1] for c in calls if c.startswith("policy denied start ")}
    assert denied == {"redis-server.service", "redis-server@.service", "docker.service", "docker.socket",
                      "containerd.service"}, calls
    # Afterwards: the units the install enabled are disabled, dependencies'
    # too (containerd); the machine's own units are as they were.
    assert sorted(fake.lines("enabled")) == sorted(mine + ["redis-server@.service"]), calls
    disabled = {c.split()[-1] for c in calls if c.startswith("systemctl disable ")}
    assert disabled == {"redis-server.service", "docker.service", "docker.socket", "containerd.service"}
    assert not disabled & set(mine)
    assert fake.lines("active") == []
    # And the policy-rc.d it wrote is gone.
    assert not fake.policy.exists()
    assert "disabled redis-server.service" in p.stdout


def test_a_unit_enabled_before_the_install_is_not_touched(tmp_path):
    # redis-server.service was enabled before (a unit the operator wrote in
    # /etc/systemd/system): installing the package must not disable it.
    fake = Fake(tmp_path, everything_but("redis-server"), ["redis-server.service"], REPO)
    p = fake.run("run")
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert "redis-server.service" in fake.lines("enabled")
    assert "systemctl disable redis-server.service" not in fake.calls(), fake.calls()


def test_a_service_started_despite_the_policy_is_stopped(tmp_path):
    # A maintainer script that starts its daemon by hand (not through
    # invoke-rc.d): the unit is active after the install; the script stops it.
    repo = dict(REPO, **{"redis-server": ["unit redis-server.service"]})
    fake = Fake(tmp_path, everything_but("redis-server"), [], repo)
    apt = (fake.bin / "apt-get").read_text().replace(
        'log("policy denied start " + what)',
        'log("policy denied start " + what); active.append(what)')
    (fake.bin / "apt-get").write_text(apt)
    p = fake.run()
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert "systemctl stop redis-server.service" in fake.calls(), fake.calls()
    assert fake.lines("active") == [] and fake.lines("enabled") == []


def test_the_machines_policy_rc_d_is_kept_or_put_back(tmp_path):
    # One that allows starts: replaced while apt-get runs, put back after.
    fake = Fake(tmp_path, everything_but("redis-server"), [], REPO)
    allow = "#!/bin/sh\n# the machine's own\nexit 0\n"
    fake.policy.write_text(allow)
    fake.policy.chmod(0o755)
    p = fake.run()
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert "policy denied start redis-server.service" in fake.calls()
    assert fake.policy.read_text() == allow and os.access(fake.policy, os.X_OK)
    assert not list(fake.policy.parent.glob("*wakegate*"))


def test_a_policy_rc_d_that_forbids_starts_is_left_alone(tmp_path):
    fake = Fake(tmp_path, everything_but("git"), [], REPO)
    forbid = "#!/bin/sh\nexit 101\n"
    fake.policy.write_text(forbid)
    fake.policy.chmod(0o755)
    before = fake.policy.stat()
    p = fake.run()
    assert p.returncode == 0, (p.stdout, p.stderr)
    after = fake.policy.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert fake.policy.read_text() == forbid


def test_a_failed_install_still_puts_the_policy_back(tmp_path):
    fake = Fake(tmp_path, everything_but("redis-server"), [], REPO)
    allow = "#!/bin/sh\nexit 0\n"
    fake.policy.write_text(allow)
    fake.policy.chmod(0o755)
    (fake.dir / "apt-fails").write_text("")
    p = fake.run()
    assert p.returncode != 0
    assert fake.policy.read_text() == allow
    assert not list(fake.policy.parent.glob("*wakegate*"))


def test_nothing_missing_runs_no_apt_get(tmp_path):
    fake = Fake(tmp_path, print_list("test"), [], REPO)
    p = fake.run("test")
    assert p.returncode == 0, p.stderr
    assert "all %d packages for 'test' present" % len(print_list("test")) in p.stdout
    assert not [c for c in fake.calls() if c.startswith("apt-get")]
    assert not fake.policy.exists()
