/* test/unit/loop_fixture.c - see loop_fixture.h. */
#include "loop_fixture.h"

static void guard_cb(uv_timer_t *t)
{
    *(bool *)t->data = true;
}

bool wg_test_run_until(uv_loop_t *loop, const int *counter, int target, uint64_t ms)
{
    uv_timer_t guard;
    bool expired = false;

    uv_timer_init(loop, &guard);
    guard.data = &expired;
    uv_timer_start(&guard, guard_cb, ms, 0);
    while (*counter < target && !expired)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&guard, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return *counter >= target;
}

void wg_test_run_for(uv_loop_t *loop, uint64_t ms)
{
    int never = 0;
    wg_test_run_until(loop, &never, 1, ms);
}
