#!/bin/sh
# Builds the demo session image (default tag wakegate-demo:latest) FROM
# scratch, from this machine's Debian binaries, so no registry is needed:
# busybox (package busybox-static) for the shell, httpd and the applets, and
# git (package git) with the shared libraries ldd lists.
#
#   deploy/demo-image/build.sh [-H DOCKER_HOST] [-t TAG]
#
#   -H HOST   the engine to build on, e.g. unix:///run/docker.sock
#             (default: $DOCKER_HOST, else the docker CLI's default)
#   -t TAG    the image tag (default wakegate-demo:latest)
#   DOCKER    the docker CLI to run (default: docker, i.e. Debian's docker.io)
#
# The image runs /entrypoint.sh: it clones the bare repository mounted on
# /remote into /work/repo (or pushes a first commit to an empty one), then
# serves the app with busybox httpd on :8080. See deploy/README.md.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
tag=wakegate-demo:latest
docker=${DOCKER:-docker}
busybox=/bin/busybox
git=/usr/bin/git

usage() {
    sed -n '2,16s/^# \{0,1\}//p' "$0"
}

while getopts H:t:h opt; do
    case $opt in
    H) DOCKER_HOST=$OPTARG; export DOCKER_HOST ;;
    t) tag=$OPTARG ;;
    h) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
if [ $# -gt 0 ]; then
    echo "build.sh: unexpected argument '$1'" >&2
    exit 2
fi

for f in "$busybox" "$git"; do
    if [ ! -x "$f" ]; then
        echo "build.sh: $f not found: apt-get install busybox-static git" >&2
        exit 1
    fi
done
# A dynamic busybox would need its libraries too; the static one needs none.
if ldd "$busybox" >/dev/null 2>&1; then
    echo "build.sh: $busybox is not static: apt-get install busybox-static" >&2
    exit 1
fi
if ! command -v "$docker" >/dev/null 2>&1; then
    echo "build.sh: no docker CLI ($docker): apt-get install docker.io" >&2
    exit 1
fi

ctx=$(mktemp -d "${TMPDIR:-/tmp}/wakegate-demo.XXXXXX")
trap 'rm -rf "$ctx"' EXIT INT TERM
root=$ctx/rootfs

# Copies a file (following links) to the same absolute path under rootfs.
copy_in() {
    mkdir -p "$root$(dirname "$1")"
    cp -L "$1" "$root$1"
}

mkdir -p "$root/bin" "$root/usr/bin" "$root/usr/lib/git-core" "$root/usr/share/git-core/templates" \
    "$root/etc" "$root/root" "$root/tmp" "$root/www/cgi-bin" "$root/work"
chmod 1777 "$root/tmp"

copy_in "$busybox"
copy_in "$git"
# The loader and every library git needs, at the paths ldd shows.
for lib in $(ldd "$git" | awk '/=> \// { print $3 } /^[[:space:]]*\/[^ ]+ \(/ { print $1 }'); do
    copy_in "$lib"
done
# A push to the bare repository runs git-receive-pack, a clone
# git-upload-pack: both are git itself under another name.
for name in git-receive-pack git-upload-pack; do
    ln -s git "$root/usr/bin/$name"
    ln -s ../../bin/git "$root/usr/lib/git-core/$name"
done

printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
cp "$here/gitconfig" "$root/etc/gitconfig"
cp "$here/entrypoint.sh" "$root/entrypoint.sh"
cp "$here/index.cgi" "$root/www/cgi-bin/index.cgi"
chmod 0755 "$root/entrypoint.sh" "$root/www/cgi-bin/index.cgi"
cp "$here/Dockerfile" "$ctx/Dockerfile"

"$docker" build --force-rm -t "$tag" "$ctx"
echo "build.sh: built $tag"
