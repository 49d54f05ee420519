/* An argument one rank rejects fails the collective on every rank at once: rank 1 passes a NULL
 * send buffer to boad_allreduce and gets BOAD_ERR_NULL_POINTER; the others, which passed valid
 * buffers, get an error (BOAD_ERR_ABORTED, naming rank 1's mistake) right away instead of waiting
 * BOAD_TIMEOUT_MS for rank 1. Then the job goes on: a barrier and an allreduce succeed everywhere.
 *
 *   cc fail_fast.c $(pkg-config --cflags --libs boad) -o fail_fast && boadrun -n 3 ./fail_fast
 */
#define _POSIX_C_SOURCE 200809L
#include <boad.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int rank = -1;

#define CHECK(call)                                                                   \
    do {                                                                              \
        boad_result rc_ = (call);                                                     \
        if (rc_ != BOAD_OK) {                                                         \
            char msg_[512];                                                           \
            boad_last_error_message(msg_, sizeof msg_);                               \
            fprintf(stderr, "rank %d: %s: %s\n  %s\n", rank, #call, boad_strerror(rc_), msg_); \
            return 1;                                                                 \
        }                                                                             \
    } while (0)

#define EXPECT(cond, ...)                                                             \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "rank %d: wrong result: ", rank);                         \
            fprintf(stderr, __VA_ARGS__);                                             \
            fprintf(stderr, "\n");                                                    \
            return 1;                                                                 \
        }                                                                             \
    } while (0)

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int main(void) {
    int size;
    CHECK(boad_init());
    CHECK(boad_rank(&rank));
    CHECK(boad_size(&size));
    EXPECT(size >= 2, "run with at least 2 ranks (boadrun -n 3 ./fail_fast)");
    const char *t = getenv("BOAD_TIMEOUT_MS");
    double timeout_ms = t ? atof(t) : 60000.0;

    enum { N = 64 };
    int32_t send[N], recv[N];
    for (int i = 0; i < N; i++) send[i] = i + rank;

    CHECK(boad_barrier()); /* start together, so the time below is the collective's alone */
    double start = now_ms();
    boad_result rc = boad_allreduce(rank == 1 ? NULL : send, recv, N, BOAD_I32, BOAD_SUM);
    double took = now_ms() - start;
    char msg[512];
    boad_last_error_message(msg, sizeof msg);
    if (rank == 1) {
        EXPECT(rc == BOAD_ERR_NULL_POINTER, "NULL sendbuf returned %s", boad_strerror(rc));
    } else {
        EXPECT(rc != BOAD_OK, "allreduce succeeded although rank 1 passed NULL");
        EXPECT(strstr(msg, "rank 1: boad_allreduce: sendbuf is NULL") != NULL,
               "the message does not give rank 1's reason: %s", msg);
    }
    EXPECT(took < timeout_ms / 4, "the failed allreduce took %.0f ms (BOAD_TIMEOUT_MS=%.0f)", took, timeout_ms);
    printf("rank %d: %s after %.1f ms: %s\n", rank, boad_strerror(rc), took, msg);

    /* The job goes on. */
    CHECK(boad_barrier());
    int one = 1, n = 0;
    CHECK(boad_allreduce(&one, &n, 1, BOAD_I32, BOAD_SUM));
    EXPECT(n == size, "count of ranks = %d", n);

    printf("rank %d/%d: failed fast, then went on\n", rank, size);
    CHECK(boad_finalize());
    return 0;
}
