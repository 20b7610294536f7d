/* orchestrator/stale.h - a returning host's stale containers: the pure
 * decisions (unit-tested row by row). The task that saves and removes them
 * is in stale.c.
 *
 * A host that was lost (its heartbeat expired) or cut off from Redis may
 * come back with containers of sessions that meanwhile live elsewhere (the
 * record's host names another orchestrator) or were destroyed. Such a
 * container is stale: its work is older than the session's, so it is never
 * adopted and its record is never written; its last work is saved to a side
 * ref of the work tree's remote, never to the main line, and it is removed. */
#ifndef WG_ORCHESTRATOR_STALE_H
#define WG_ORCHESTRATOR_STALE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The set of lost hosts' names (written by the placement side). */

/* What a reconcile round does with a labelled container of this host. */
enum wg_stale_verdict {
    WG_STALE_OURS,   /* the record is this host's: the usual recheck */
    WG_STALE_ADOPT,  /* no record: adopt it (a container made by hand, or Redis lost data) */
    WG_STALE_REMOVE, /* stale: save it to a side ref, remove it */
    WG_STALE_LEAVE,  /* not ours to judge (a record without a host), or not yet */
};

/* Whether this host was in wg:lost_hosts when it came back (the check made
 * before its first heartbeat after a gap). */
enum wg_stale_lost { WG_STALE_LOST_UNKNOWN = -1, WG_STALE_LOST_NO = 0, WG_STALE_LOST_YES = 1 };

struct wg_stale_in {
    bool has_record;
    const char *record_host; /* the record's host; "" for a record made without one */
    const char *me;          /* this orchestrator's docker.name */
    bool made_here;          /* the container carries wakegate.host: wakegate created it */
    enum wg_stale_lost lost;
};

/* The verdict, and in *why a phrase for the log and the event:
 * - a record of this host: ours;
 * - a record of another host: stale (the session was placed there while
 *   this host was away);
 * - a record without a host: left (the first wake claims it);
 * - no record, a container made by hand: adopted, as always;
 * - no record, a container wakegate made: adopted when this host was not
 *   lost (the record went with Redis's data: adoption brings it back), stale
 *   when it was (the session was destroyed, or its record replaced, while
 *   this host was away), left for the next round while that is unknown. */
enum wg_stale_verdict wg_stale_decide(const struct wg_stale_in *in, const char **why);

/* The side ref a stale container's save pushes to:
 * refs/heads/wakegate/stale/<session>/<host>-<ms>, the host's characters
 * other than [A-Za-z0-9_-] written as '-', so the name is a valid git ref
 * whatever the host name. Returns the length, or -ENOSPC. */
int wg_stale_ref(char *out, size_t len, const char *session, const char *host, int64_t ms);

#endif
