/* test/unit/loop_fixture.h - driving a private libuv loop from a test. */
#ifndef WG_TEST_LOOP_FIXTURE_H
#define WG_TEST_LOOP_FIXTURE_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

/* Runs loop until *counter >= target or ms pass; true if reached. */
bool wg_test_run_until(uv_loop_t *loop, const int *counter, int target, uint64_t ms);
/* Runs loop for ms. */
void wg_test_run_for(uv_loop_t *loop, uint64_t ms);

#endif
