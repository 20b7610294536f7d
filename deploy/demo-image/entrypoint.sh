#!/bin/sh
# The demo session's entrypoint: bring the git work tree /work/repo back,
# then serve the app.
#
# /remote is a bare repository the operator bind-mounts (one per session).
# When /work/repo is not a work tree yet (a fresh container, e.g. after the
# session's container was re-created), it is cloned from /remote, so the
# counter that the auto-save hook pushed comes back. An empty /remote gets a
# first commit pushed. Without /remote the work tree is local only, and
# the save hook's push fails (the gateway then keeps the session awake).
set -eu

REPO=/work/repo
REMOTE=/remote

# The branch to check out: main if the bare repository has it, else its
# first branch (its HEAD may name a branch that does not exist).
remote_branch() {
    heads=$(git ls-remote --heads "$REMOTE" 2>/dev/null | awk '{ sub("^refs/heads/", "", $2); print $2 }')
    if printf '%s\n' "$heads" | grep -qx main; then
        echo main
    else
        printf '%s\n' "$heads" | head -n 1
    fi
}

first_commit() {
    git init -q -b main "$REPO"
    echo 0 >"$REPO/counter.txt"
    git -C "$REPO" add counter.txt
    git -C "$REPO" commit -q -m "demo: counter starts at 0"
}

prepare_repo() {
    if git -C "$REPO" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        return 0
    fi
    mkdir -p "$(dirname "$REPO")"
    if [ ! -d "$REMOTE" ]; then
        echo "demo: no $REMOTE mounted, the work tree is local only" >&2
        first_commit
        return 0
    fi
    branch=$(remote_branch)
    if [ -n "$branch" ]; then
        echo "demo: cloning $REMOTE ($branch) into $REPO" >&2
        git clone -q -b "$branch" "$REMOTE" "$REPO"
    else
        echo "demo: $REMOTE is empty, pushing a first commit" >&2
        first_commit
        git -C "$REPO" remote add origin "$REMOTE"
        git -C "$REPO" push -q -u origin main
        # Clones check out the bare repository's HEAD: make it name main.
        git --git-dir="$REMOTE" symbolic-ref HEAD refs/heads/main
    fi
}

prepare_repo
exec httpd -f -p "${PORT:-8080}" -h /www
