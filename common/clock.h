/* common/clock.h - the two clocks wakegate reads.
 *
 * Wall time (milliseconds since the epoch) is what goes into Redis and
 * events: state_since, activity scores, keepalive deadlines. It is shared
 * by every gateway and orchestrator, so it must be the real clock.
 * Monotonic time is for deadlines and durations inside one process: it
 * never jumps. Code on a libuv loop uses uv_now() (loop time, no syscall)
 * or uv_hrtime() for finer durations; these helpers are for the rest. */
#ifndef WG_COMMON_CLOCK_H
#define WG_COMMON_CLOCK_H

#include <stdint.h>
#include <time.h>

/* CLOCK_REALTIME in milliseconds since the epoch. */
static inline int64_t wg_clock_wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* CLOCK_MONOTONIC in milliseconds from an arbitrary start. */
static inline int64_t wg_clock_mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#endif
