/* boad_check (which launcher started the process), then reduce, allgather and barrier with boad, plus the errors a caller can get back:
 * a bitwise op on floats (BOAD_ERR_INVALID_OP, seen by every rank), a bad dtype code and a NULL
 * buffer (found locally). Every rank checks its results.
 *
 *   cc collectives.c $(pkg-config --cflags --libs boad) -o collectives && boadrun -n 4 ./collectives
 */
#include <boad.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

int main(void) {
    int size;
    /* Which launcher started this process (no init needed): boadrun here. */
    char launcher[256];
    size_t need = boad_check(NULL, 0);
    EXPECT(boad_check(launcher, sizeof launcher) == need && need < sizeof launcher, "boad_check: %zu bytes", need);
    EXPECT(strncmp(launcher, "launcher: boadrun: rank ", 24) == 0, "boad_check: %s", launcher);
    CHECK(boad_init());
    CHECK(boad_rank(&rank));
    CHECK(boad_size(&size));
    char expected[64];
    snprintf(expected, sizeof expected, "launcher: boadrun: rank %d of %d\n", rank, size);
    EXPECT(strcmp(launcher, expected) == 0, "boad_check: %s, want %s", launcher, expected);
    int root = size / 2;

    /* Reduce (product of int32) to a root other than 0; recvbuf is only used there. */
    int32_t contrib[2] = {rank + 1, -1};
    int32_t prod[2] = {0, 0};
    CHECK(boad_reduce(contrib, rank == root ? prod : NULL, 2, BOAD_I32, BOAD_PROD, root));
    if (rank == root) {
        int32_t fact = 1;
        for (int r = 1; r <= size; r++) fact *= r;
        int32_t sign = size % 2 ? -1 : 1;
        EXPECT(prod[0] == fact && prod[1] == sign, "prod = {%d, %d}, want {%d, %d}", prod[0], prod[1], fact, sign);
    }

    /* Reduce in place: min of floats to root 0. */
    float m[2] = {(float)rank, 10.0f - rank};
    CHECK(boad_reduce(BOAD_IN_PLACE, m, 2, BOAD_F32, BOAD_MIN, 0));
    if (rank == 0) EXPECT(m[0] == 0.0f && m[1] == 11.0f - size, "min = {%g, %g}", m[0], m[1]);
    else EXPECT(m[0] == (float)rank, "in-place reduce changed a non-root buffer");

    /* Allgather: 3 uint16 per rank. */
    uint16_t mine[3] = {(uint16_t)rank, (uint16_t)(rank * 10), 7};
    uint16_t *all = calloc((size_t)size * 3, sizeof *all);
    if (!all) return 1;
    CHECK(boad_allgather(mine, all, 3, BOAD_U16));
    for (int r = 0; r < size; r++)
        EXPECT(all[3 * r] == r && all[3 * r + 1] == r * 10 && all[3 * r + 2] == 7, "allgather block %d", r);

    /* Allgather in place: each rank's block is already in recvbuf. */
    memset(all, 0, (size_t)size * 3 * sizeof *all);
    memcpy(all + 3 * rank, mine, sizeof mine);
    CHECK(boad_allgather(BOAD_IN_PLACE, all, 3, BOAD_U16));
    for (int r = 0; r < size; r++) EXPECT(all[3 * r + 1] == r * 10, "in-place allgather block %d", r);
    free(all);

    CHECK(boad_barrier());

    /* Errors. A bitwise op on floats: every rank makes the same bad call, every rank gets the code. */
    double d = 1.0, out = 0.0;
    boad_result rc = boad_allreduce(&d, &out, 1, BOAD_F64, BOAD_BAND);
    char msg[512];
    boad_last_error_message(msg, sizeof msg);
    EXPECT(rc == BOAD_ERR_INVALID_OP, "allreduce(f64, BAND) returned %s", boad_strerror(rc));
    char want[32];
    snprintf(want, sizeof want, "rank %d:", rank);
    EXPECT(strncmp(msg, want, strlen(want)) == 0, "message does not name the rank: %s", msg);
    if (rank == 0) printf("expected error: %s -> %s\n", boad_strerror(rc), msg);

    /* Argument errors found locally: every rank makes the same bad call, so each gets its own code
     * (and the others hear that the collective failed here too). */
    rc = boad_allreduce(&d, &out, 1, (boad_dtype)42, BOAD_SUM);
    EXPECT(rc == BOAD_ERR_INVALID_DTYPE, "dtype 42 returned %s", boad_strerror(rc));
    rc = boad_bcast(NULL, 4, BOAD_I32, 0);
    EXPECT(rc == BOAD_ERR_NULL_POINTER, "NULL buffer returned %s", boad_strerror(rc));
    rc = boad_rank(NULL);
    EXPECT(rc == BOAD_ERR_NULL_POINTER, "boad_rank(NULL) returned %s", boad_strerror(rc));

    /* The communicator is still usable after a failed collective. */
    int one = 1, n = 0;
    CHECK(boad_allreduce(&one, &n, 1, BOAD_I32, BOAD_SUM));
    EXPECT(n == size, "count of ranks = %d", n);

    printf("rank %d/%d: reduce, allgather, barrier and error cases ok\n", rank, size);
    CHECK(boad_finalize());
    EXPECT(boad_barrier() == BOAD_ERR_FINALIZED, "barrier after finalize");
    return 0;
}
