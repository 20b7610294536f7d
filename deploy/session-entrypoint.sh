#!/bin/sh
# deploy/session-entrypoint.sh - the git restore contract of a session
# image (docs/sessions.md): bring the session's work tree back from its git
# remote when the container is fresh, then run the app.
#
#   COPY session-entrypoint.sh /usr/local/bin/
#   ENTRYPOINT ["/usr/local/bin/session-entrypoint.sh"]
#   CMD ["my-app", "--port", "8080"]
#
# Environment (set them in the session's spec or its template's env):
#   WAKEGATE_GIT_REMOTE  the work tree's remote: a URL, or a path such as a
#                        bare repository on a bind mount or shared volume.
#                        Unset: nothing is restored.
#   WAKEGATE_WORK_PATH   the work tree, the same path as sessions.save.path
#                        (default /work).
#   WAKEGATE_GIT_BRANCH  the branch to check out (default: main when the
#                        remote has it, else its first branch).
#
# What it does, before `exec "$@"`:
#   - the path is missing or an empty directory: clone the remote into it
#     (a container created afresh, e.g. on another host after its own was
#     lost: the work the save hook pushed comes back);
#   - the path is a repository without a commit (its tree absent, e.g. an
#     `git init` left by an image): fetch the remote and check the branch
#     out, tracking it;
#   - the path holds a repository with commits, or files that are no
#     repository: leave it alone (the container's own work wins; nothing is
#     ever overwritten).
# A clone or fetch that fails ends the script with status 1 before the app
# starts, so the wake fails with this output in its log tail instead of
# serving an empty tree that would never be saved. With no command given it
# only restores. Needs sh, git and the usual applets (busybox is enough).
set -eu

path=${WAKEGATE_WORK_PATH:-/work}
remote=${WAKEGATE_GIT_REMOTE:-}

say() {
    echo "session-entrypoint: $*" >&2
}

# The branch to check out: the configured one, else main when the remote
# has it, else its first branch; empty for an empty remote.
remote_branch() {
    if [ -n "${WAKEGATE_GIT_BRANCH:-}" ]; then
        echo "$WAKEGATE_GIT_BRANCH"
        return 0
    fi
    refs=$(git ls-remote --heads "$remote") || return 1
    heads=$(printf '%s\n' "$refs" | awk 'NF == 2 { sub("^refs/heads/", "", $2); print $2 }')
    if printf '%s\n' "$heads" | grep -qx main; then
        echo main
    else
        printf '%s\n' "$heads" | head -n 1
    fi
}

restore() {
    if [ -z "$remote" ]; then
        return 0
    fi
    if [ -d "$path/.git" ] || git -C "$path" rev-parse --git-dir >/dev/null 2>&1; then
        if git -C "$path" rev-parse -q --verify HEAD >/dev/null 2>&1; then
            return 0 # the container's own work tree
        fi
        branch=$(remote_branch) || { say "cannot read $remote"; exit 1; }
        if [ -z "$branch" ]; then
            say "$remote is empty: nothing to restore"
            return 0
        fi
        say "fetching $remote ($branch) into the empty repository $path"
        git -C "$path" remote get-url origin >/dev/null 2>&1 || git -C "$path" remote add origin "$remote"
        git -C "$path" fetch -q origin "$branch" || { say "cannot fetch $remote"; exit 1; }
        git -C "$path" checkout -q -B "$branch" --track "origin/$branch"
        return 0
    fi
    if [ -d "$path" ] && [ -n "$(ls -A "$path")" ]; then
        say "$path holds files but no repository: leaving it alone"
        return 0
    fi
    branch=$(remote_branch) || { say "cannot read $remote"; exit 1; }
    mkdir -p "$path"
    if [ -z "$branch" ]; then
        say "$remote is empty: cloning it empty"
        git clone -q "$remote" "$path" 2>/dev/null || { say "cannot clone $remote"; exit 1; }
        return 0
    fi
    say "cloning $remote ($branch) into $path"
    git clone -q -b "$branch" "$remote" "$path" || { say "cannot clone $remote"; exit 1; }
}

restore
if [ $# -eq 0 ]; then
    exit 0
fi
exec "$@"
