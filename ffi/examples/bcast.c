/* Broadcast with boad from the last rank, for several sizes; every rank checks what it got.
 *
 *   cc bcast.c $(pkg-config --cflags --libs boad) -o bcast && boadrun -n 4 ./bcast
 */
#include <boad.h>
#include <stdio.h>
#include <stdlib.h>

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

int main(void) {
    int size;
    CHECK(boad_init());
    CHECK(boad_rank(&rank));
    CHECK(boad_size(&size));
    int root = size - 1;

    const size_t counts[] = {0, 1, 1000, 100000};
    for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++) {
        size_t n = counts[c];
        double *buf = malloc((n ? n : 1) * sizeof *buf);
        if (!buf) return 1;
        for (size_t i = 0; i < n; i++) buf[i] = rank == root ? (double)i * 0.5 : -1.0;
        CHECK(boad_bcast(buf, n, BOAD_F64, root));
        for (size_t i = 0; i < n; i++) {
            if (buf[i] != (double)i * 0.5) {
                fprintf(stderr, "rank %d: wrong result: bcast of %zu doubles from %d: buf[%zu] = %g, want %g\n",
                        rank, n, root, i, buf[i], (double)i * 0.5);
                return 1;
            }
        }
        free(buf);
    }

    /* A struct-free way to share a small header: int32 values from root 0. */
    int32_t params[2] = {0, 0};
    if (rank == 0) {
        params[0] = 42;
        params[1] = size;
    }
    CHECK(boad_bcast(params, 2, BOAD_I32, 0));
    if (params[0] != 42 || params[1] != size) {
        fprintf(stderr, "rank %d: wrong result: params = {%d, %d}\n", rank, params[0], params[1]);
        return 1;
    }

    printf("rank %d/%d: bcast ok (root %d, up to %zu doubles)\n", rank, size, root, counts[3]);
    CHECK(boad_finalize());
    return 0;
}
