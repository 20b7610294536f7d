#!/bin/sh
# scripts/session-firewall.sh - the host rules that complete the isolation
# of wakegate's session networks on a Docker host.
#
# The engine's own rules already keep sessions from each other and, on an
# internal network (egress: false), off every other host. They do not
# filter traffic from a container to the Docker host itself (the INPUT
# chain) nor, with egress: true, to the private networks around it. Every
# session network wakegate makes has a bridge named wgs-<hex>, so two
# chains of ours cover all of them, present and future:
#
#   WAKEGATE-SESSIONS-IN   (from INPUT): a session may answer, never open a
#                          connection to this host (the Docker API on TCP,
#                          an admin listener, Redis, sshd, ...).
#   WAKEGATE-SESSIONS-FWD  (from DOCKER-USER, before Docker's own rules):
#                          gateways named with --allow-from reach session
#                          ports; sessions never open a connection to a
#                          private, link-local (cloud metadata) or shared
#                          address, nor to a --deny network.
#
# Usage: session-firewall.sh apply [--allow-from CIDR]... [--deny CIDR]...
#        session-firewall.sh remove
#        session-firewall.sh status
# Exit codes: 0 done (status: applied), 1 failed, 2 bad usage,
#             3 status: not applied.
# Run it as root on each Docker host, after dockerd has started (Docker
# makes DOCKER-USER). The rules are IPv4: session networks are IPv4 only.
# deploy/systemd/wakegate-session-firewall.service applies them after the
# engine starts and at each engine restart.
set -eu

IN=WAKEGATE-SESSIONS-IN
FWD=WAKEGATE-SESSIONS-FWD
BRIDGES='wgs-+'
PRIVATE="10.0.0.0/8 172.16.0.0/12 192.168.0.0/16 100.64.0.0/10 169.254.0.0/16 127.0.0.0/8 0.0.0.0/8"
IPT=${IPTABLES:-iptables}

usage() {
    sed -n '21,25p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

die() {
    echo "session-firewall: $*" >&2
    exit 1
}

valid_cidr() {
    printf '%s\n' "$1" | grep -Eq '^([0-9]{1,3}\.){3}[0-9]{1,3}(/([0-9]|[12][0-9]|3[0-2]))?$'
}

chain_exists() {
    "$IPT" -w -n -L "$1" >/dev/null 2>&1
}

# Inserts the jump from $1 to $2 at the top unless it is there.
jump_first() {
    "$IPT" -w -C "$1" "$3" "$BRIDGES" -j "$2" 2>/dev/null ||
        "$IPT" -w -I "$1" 1 "$3" "$BRIDGES" -j "$2"
}

apply() {
    allow=""
    deny=""
    while [ $# -gt 0 ]; do
        case "$1" in
        --allow-from | --deny)
            [ $# -ge 2 ] || usage
            valid_cidr "$2" || die "$1 $2: not an IPv4 address or network"
            if [ "$1" = --allow-from ]; then allow="$allow $2"; else deny="$deny $2"; fi
            shift 2
            ;;
        *) usage ;;
        esac
    done
    command -v "$IPT" >/dev/null 2>&1 || die "$IPT not found (Debian package iptables)"
    chain_exists DOCKER-USER ||
        die "no DOCKER-USER chain: start dockerd (with its iptables rules on) first"
    for c in "$IN" "$FWD"; do
        chain_exists "$c" || "$IPT" -w -N "$c"
        "$IPT" -w -F "$c"
    done

    "$IPT" -w -A "$IN" -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN
    "$IPT" -w -A "$IN" -p tcp -j REJECT --reject-with tcp-reset
    "$IPT" -w -A "$IN" -j REJECT --reject-with icmp-port-unreachable

    # Answers to connections a gateway or the session opened, first: an
    # internal network's own rule would drop them on the way out.
    "$IPT" -w -A "$FWD" -i "$BRIDGES" -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
    "$IPT" -w -A "$FWD" -o "$BRIDGES" -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
    for a in $allow; do
        "$IPT" -w -A "$FWD" -s "$a" -o "$BRIDGES" -p tcp -m conntrack --ctstate NEW -j ACCEPT
    done
    for d in $PRIVATE $deny; do
        "$IPT" -w -A "$FWD" -i "$BRIDGES" -d "$d" -p tcp -j REJECT --reject-with tcp-reset
        "$IPT" -w -A "$FWD" -i "$BRIDGES" -d "$d" -j REJECT --reject-with icmp-net-prohibited
    done
    "$IPT" -w -A "$FWD" -j RETURN

    jump_first INPUT "$IN" -i
    jump_first DOCKER-USER "$FWD" -i
    jump_first DOCKER-USER "$FWD" -o
    echo "session-firewall: applied (allow-from:${allow:- none}; deny: private ranges${deny})"
}

remove() {
    command -v "$IPT" >/dev/null 2>&1 || die "$IPT not found (Debian package iptables)"
    while "$IPT" -w -D INPUT -i "$BRIDGES" -j "$IN" 2>/dev/null; do :; done
    for dir in -i -o; do
        while "$IPT" -w -D DOCKER-USER "$dir" "$BRIDGES" -j "$FWD" 2>/dev/null; do :; done
    done
    for c in "$IN" "$FWD"; do
        if chain_exists "$c"; then
            "$IPT" -w -F "$c"
            "$IPT" -w -X "$c"
        fi
    done
    echo "session-firewall: removed"
}

status() {
    if chain_exists "$IN" && "$IPT" -w -C INPUT -i "$BRIDGES" -j "$IN" 2>/dev/null &&
        chain_exists "$FWD" && "$IPT" -w -C DOCKER-USER -i "$BRIDGES" -j "$FWD" 2>/dev/null; then
        "$IPT" -w -S "$IN"
        "$IPT" -w -S "$FWD"
        echo "session-firewall: applied"
        return 0
    fi
    echo "session-firewall: not applied"
    return 3
}

[ $# -ge 1 ] || usage
cmd=$1
shift
case "$cmd" in
apply) apply "$@" ;;
remove) [ $# -eq 0 ] || usage; remove ;;
status) [ $# -eq 0 ] || usage; status ;;
-h | --help | help) usage ;;
*) usage ;;
esac
