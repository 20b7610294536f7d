/* common/container_spec.h - the container spec of a session record: what
 * the orchestrator creates a session's container from on its first wake
 * (struct wg_session, field spec: compact JSON text).
 *
 * The admin API encodes it from a create request; the waker decodes it from
 * the record. Both apply the one set of rules below, so whatever the API
 * writes the waker reads, and a record the API would have refused (written
 * by hand, or by an older wakegate) is refused when read too:
 *
 *   cmd     array of non-empty strings; [] is the image's CMD, as absent
 *   env     array of "NAME=value" strings, NAME not empty
 *   labels  object of strings; keys not empty and not under WG_LABEL_PREFIX
 *           (common/labels.h: those are wakegate's own, so a session cannot
 *           claim another's identity)
 *   binds   array of "host:container[:ro|rw]": host an absolute path or a
 *           volume name, container an absolute path
 *   save    object shaped like sessions.save in the configuration: command
 *           (non-empty array of non-empty strings), timeout (a duration over
 *           0s), path (absolute), on_failure ("keep_awake" or "stop")
 *
 * Each array, and labels, holds at most WG_CONTAINER_SPEC_ITEMS_MAX entries.
 * A null member counts as absent; duplicate keys are refused. An error names
 * the member the way the admin API's 400 does: field "env[0]": must be
 * "NAME=value". Pure code: no I/O. */
#ifndef WG_COMMON_CONTAINER_SPEC_H
#define WG_COMMON_CONTAINER_SPEC_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define WG_CONTAINER_SPEC_ITEMS_MAX 256    /* entries in each of cmd, env, labels, binds */
#define WG_CONTAINER_SPEC_NAME_SHOW_MAX 64 /* bytes of a caller's member name echoed back */

/* A decoded spec. Arrays end with NULL; label keys and values alternate
 * (key, value, ..., NULL). A member that was absent is NULL (cmd also when
 * it was []). Everything is owned; release with wg_container_spec_release(). */
struct wg_container_spec {
    char **cmd;
    char **env;
    char **labels;
    char **binds;
    /* "limits" {memory, nano_cpus, pids}: the caller's, written by the admin
     * API within the template's maxima; 0: the template's own. */
    uint64_t memory_bytes, nano_cpus;
    unsigned pids;
};

/* The checks of wg_container_spec_encode() on obj's members, without
 * writing the text. Returns 0 or -EINVAL with err naming the field. */
int wg_container_spec_check(const json_t *obj, char *err, size_t errlen);

/* Checks the spec members (cmd, env, labels, binds, save) of obj, a create
 * request; its other members are not looked at. On success *ret_text gets
 * the compact, ASCII-only JSON of the members given (malloc'ed; NULL when
 * none is), in that order. Text over WG_SESSION_SPEC_MAX bytes is refused.
 * Returns 0, -EINVAL with err naming the field, or -ENOMEM. */
int wg_container_spec_encode(const json_t *obj, char **ret_text, char *err, size_t errlen);

/* Decodes a record's spec text (NULL or "" is an empty spec). Members other
 * than the five are ignored, so a newer writer can add some; save is
 * checked but not returned (the save hook takes sessions.save from the
 * configuration); limits is read when it is an object. Returns 0 with *ret_spec filled, -EINVAL
 * with err naming the problem, or -ENOMEM; on failure *ret_spec is untouched. */
int wg_container_spec_decode(const char *text, struct wg_container_spec *ret_spec, char *err,
                             size_t errlen);

/* Frees what spec owns and zeroes it. NULL-safe. */
void wg_container_spec_release(struct wg_container_spec *spec);

/* ---- shared with the admin API's other request fields ------------------------------------ */

/* A caller's member name made safe to echo in an error: printable ASCII
 * with '"' and '\\' replaced by '?', at most WG_CONTAINER_SPEC_NAME_SHOW_MAX
 * bytes of it. */
void wg_container_spec_show_name(char *dst, size_t dstlen, const char *name);

/* A duration member ("30s", "20m", as in the configuration) named field.
 * Returns 0 with *ret_ms, or -EINVAL with err. */
int wg_container_spec_duration(const json_t *v, const char *field, uint64_t *ret_ms, char *err,
                               size_t errlen);

#endif
