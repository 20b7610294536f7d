/* src/wire_session_cache.c - wires the proxy's session cache: session routes resolve
 * through it, /readyz needs its state channel, /metrics shows what it holds. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "common/buf.h"
#include "admin/listener.h"
#include "proxy/proxy.h"
#include "proxy/session_cache.h"
#include "src/app.h"

static bool sessions_ready(void *arg, char *why, size_t whylen)
{
    struct app *app = arg;
    if (wg_session_cache_connected(app->sessions))
        return true;
    snprintf(why, whylen, "session state channel (redis pub/sub) not subscribed");
    return false;
}

void app_session_cache_stats_add(struct wg_session_cache_stats *sum,
                                 const struct wg_session_cache_stats *st)
{
    sum->lookups += st->lookups;
    sum->fetches += st->fetches;
    sum->wakes_sent += st->wakes_sent;
    sum->wakes_suppressed += st->wakes_suppressed;
    sum->held += st->held;
    sum->hold_refused += st->hold_refused;
    sum->state_messages += st->state_messages;
    sum->activity_open += st->activity_open;
    sum->activity_batches += st->activity_batches;
    sum->activity_touches += st->activity_touches;
    sum->activity_errors += st->activity_errors;
    sum->streams_open += st->streams_open;
    sum->streams_ended += st->streams_ended;
    sum->versions_lost += st->versions_lost;
}

static void sessions_metrics(void *arg, struct wg_buf *out)
{
    struct app *app = arg;
    app_session_cache_metrics(wg_session_cache_stats(app->sessions), out);
}

void app_session_cache_metrics(const struct wg_session_cache_stats *st, struct wg_buf *out)
{
    wg_buf_appendf(out,
                   "# HELP wakegate_held_requests Requests held until their session is ready.\n"
                   "# TYPE wakegate_held_requests gauge\n"
                   "wakegate_held_requests %" PRIu64 "\n"
                   "# HELP wakegate_hold_refused_total Requests refused over the hold caps.\n"
                   "# TYPE wakegate_hold_refused_total counter\n"
                   "wakegate_hold_refused_total %" PRIu64 "\n"
                   "# HELP wakegate_wake_requests_total Wake commands this gateway sent.\n"
                   "# TYPE wakegate_wake_requests_total counter\n"
                   "wakegate_wake_requests_total %" PRIu64 "\n"
                   "# HELP wakegate_wakes_suppressed_total Requests for a sleeping session that "
                   "did not wake it (probes, non-waking paths and user agents).\n"
                   "# TYPE wakegate_wakes_suppressed_total counter\n"
                   "wakegate_wakes_suppressed_total %" PRIu64 "\n"
                   "# HELP wakegate_session_fetches_total Session records read from Redis into the "
                   "route cache.\n"
                   "# TYPE wakegate_session_fetches_total counter\n"
                   "wakegate_session_fetches_total %" PRIu64 "\n"
                   "# HELP wakegate_state_messages_total Session state messages received.\n"
                   "# TYPE wakegate_state_messages_total counter\n"
                   "wakegate_state_messages_total %" PRIu64 "\n"
                   "# HELP wakegate_session_versions_lost_total Sessions whose version went back "
                   "after a Redis resync (writes lost in a failover).\n"
                   "# TYPE wakegate_session_versions_lost_total counter\n"
                   "wakegate_session_versions_lost_total %" PRIu64 "\n",
                   st->held, st->hold_refused, st->wakes_sent, st->wakes_suppressed, st->fetches,
                   st->state_messages, st->versions_lost);
    wg_buf_appendf(
        out,
        "# HELP wakegate_activity_writes_total Session activity entries written to wg:active.\n"
        "# TYPE wakegate_activity_writes_total counter\n"
        "wakegate_activity_writes_total %" PRIu64 "\n"
        "# HELP wakegate_activity_batches_total Batches of session activity written (one per "
        "flush).\n"
        "# TYPE wakegate_activity_batches_total counter\n"
        "wakegate_activity_batches_total %" PRIu64 "\n"
        "# HELP wakegate_activity_write_errors_total Batches of session activity that failed (kept "
        "for the next flush).\n"
        "# TYPE wakegate_activity_write_errors_total counter\n"
        "wakegate_activity_write_errors_total %" PRIu64 "\n"
        "# HELP wakegate_session_exchanges_open Requests and streams proxied to sessions now that "
        "keep their session active (not the streams quiet past idle.stream_after).\n"
        "# TYPE wakegate_session_exchanges_open gauge\n"
        "wakegate_session_exchanges_open %" PRIu64 "\n"
        "# HELP wakegate_session_streams_open Exchanges proxied to sessions now that will be ended "
        "when their session leaves running (WebSockets, streamed responses, requests).\n"
        "# TYPE wakegate_session_streams_open gauge\n"
        "wakegate_session_streams_open %" PRIu64 "\n"
        "# HELP wakegate_session_streams_left_total Exchanges told that their session left "
        "running (a WebSocket closed with 1001, a streamed response ended).\n"
        "# TYPE wakegate_session_streams_left_total counter\n"
        "wakegate_session_streams_left_total %" PRIu64 "\n",
        st->activity_touches, st->activity_batches, st->activity_errors, st->activity_open,
        st->streams_open, st->streams_ended);
}

int app_session_cache_start(struct app *app)
{
    if (app->px == NULL || app->store == NULL)
        return 0;
    int r = wg_session_cache_new(&app->loop, &app->cfg, &app->log, app->store, &app->sessions);
    if (r < 0) {
        WG_ERROR(&app->log, "main", "cannot set up the session cache", "error=%s", strerror(-r));
        return r;
    }
    wg_proxy_set_session_cache(app->px, app->sessions);
    wg_admin_add_ready_check(app->admin, sessions_ready, app);
    wg_admin_add_metrics(app->admin, sessions_metrics, app);
    return 0;
}

void app_session_cache_free(struct app *app)
{
    wg_session_cache_free(app->sessions);
    app->sessions = NULL;
}
