/* common/labels.h - the container labels wakegate reads and writes.
 *
 * Every key under WG_LABEL_PREFIX is reserved: the admin API refuses them
 * in a caller's labels, so a session cannot claim another's identity. */
#ifndef WG_COMMON_LABELS_H
#define WG_COMMON_LABELS_H

/* Prefix of every reserved label key. */
#define WG_LABEL_PREFIX "wakegate."
/* The session id a container belongs to; labelled containers are adopted. */
#define WG_LABEL_SESSION "wakegate.session"
/* The container port that routes reach. */
#define WG_LABEL_PORT "wakegate.port"
/* The orchestrator (docker.name) that created the container: set on every
 * container wakegate makes, so a container without it was made by hand. */
#define WG_LABEL_HOST "wakegate.host"
/* The template the container was made from (its idle.cpu_threshold). */
#define WG_LABEL_TEMPLATE "wakegate.template"
/* Per-session idle tiers, a duration ("90s", "0s" turns the tier off). */
#define WG_LABEL_IDLE_STOP_AFTER "wakegate.idle.stop_after"
#define WG_LABEL_IDLE_PAUSE_AFTER "wakegate.idle.pause_after"
/* On a session network (not a container): the template it was made for. */
#define WG_LABEL_NETWORK "wakegate.network"
/* Marks the throwaway probe container of `wakegatectl doctor`. */
#define WG_LABEL_DOCTOR "wakegate.doctor"

#endif
