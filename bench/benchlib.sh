# bench/benchlib.sh - the shell helpers every bench script shares. Sourcing
# it defines functions only; they use what the script sets before calling
# them: ROOT, TMP (its temp dir), PIDS (the pids it started) and the log and
# die functions. Nothing here starts a process but the build of bench_wakegate.

# The wakegate binary to measure, on stdout: $BENCH_WAKEGATE, else a release
# build in build-bench/, configured and built first unless BENCH_NO_BUILD=1.
bench_wakegate() {
    local wg=${BENCH_WAKEGATE:-$ROOT/build-bench/src/wakegate}
    if [[ -z ${BENCH_WAKEGATE:-} && ${BENCH_NO_BUILD:-0} != 1 ]]; then
        if [[ ! -d $ROOT/build-bench ]]; then
            meson setup "$ROOT/build-bench" "$ROOT" --buildtype=release >/dev/null || die "meson setup failed"
        fi
        ninja -C "$ROOT/build-bench" src/wakegate >/dev/null ||
            die "ninja failed (someone mid-edit? retry later, or BENCH_NO_BUILD=1)"
    fi
    [[ -x $wg ]] || die "no wakegate binary at $wg"
    echo "$wg"
}

running() { # a live process (a zombie child is not), by PID
    local st
    st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    st=${st##*) }
    [[ ${st:0:1} != Z ]]
}

# Stops one process we started, by its pid: SIGTERM, 5 s, then SIGKILL.
stop_pid() {
    local pid=$1 i
    if running "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            running "$pid" || break
            sleep 0.1
        done
        if running "$pid"; then
            log "pid $pid did not stop on SIGTERM in 5 s, sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true
    local keep=() p
    for p in "${PIDS[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

# The EXIT trap: every process started, then the temp dir (kept on failure
# or with BENCH_KEEP_TMP=1).
cleanup() {
    local rc=$? pid
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    if [[ ${BENCH_KEEP_TMP:-0} == 1 || $rc != 0 ]]; then
        log "temp dir kept: $TMP"
    else
        rm -rf "$TMP"
    fi
    exit $rc
}

# utime + stime of one pid (a process: all its threads), in clock ticks.
cpu_ticks() {
    local stat
    stat=$(cat "/proc/$1/stat") || { echo 0; return; }
    stat=${stat##*) }
    # shellcheck disable=SC2086
    set -- $stat
    echo $((${12} + ${13}))
}

# The child pid of an nginx master: its single worker.
nginx_worker() {
    local kids
    kids=$(cat "/proc/$1/task/$1/children" 2>/dev/null || true)
    [[ -n $kids ]] || return 1
    echo "${kids%% *}"
}

# nginx's temp paths inside directory $1, as config lines.
nginx_temp_paths() {
    local d
    for d in client_body proxy fastcgi uwsgi scgi; do
        echo "    ${d}_temp_path $1/${d}_temp;"
    done
}
