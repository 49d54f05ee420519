/* Allreduce with boad: every rank contributes, every rank checks the result.
 *
 *   cc allreduce.c $(pkg-config --cflags --libs boad) -o allreduce && boadrun -n 4 ./allreduce
 */
#include <boad.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
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
    CHECK(boad_init());
    CHECK(boad_rank(&rank));
    CHECK(boad_size(&size));

    /* Sum of int64: element i is i + rank on each rank. */
    enum { N = 1000 };
    int64_t *send = malloc(N * sizeof *send), *recv = malloc(N * sizeof *recv);
    if (!send || !recv) return 1;
    for (int i = 0; i < N; i++) send[i] = i + rank;
    CHECK(boad_allreduce(send, recv, N, BOAD_I64, BOAD_SUM));
    for (int i = 0; i < N; i++) {
        int64_t want = (int64_t)i * size + (int64_t)size * (size - 1) / 2;
        EXPECT(recv[i] == want, "sum[%d] = %lld, want %lld", i, (long long)recv[i], (long long)want);
    }

    /* Max of doubles, in place. */
    double v[3] = {rank * 1.5, -rank, 0.25};
    CHECK(boad_allreduce(BOAD_IN_PLACE, v, 3, BOAD_F64, BOAD_MAX));
    EXPECT(v[0] == (size - 1) * 1.5 && v[1] == 0.0 && v[2] == 0.25, "max = {%g, %g, %g}", v[0], v[1], v[2]);

    /* Bitwise or of uint8: each rank sets its own bit. */
    uint8_t bits = (uint8_t)(1u << (rank % 8)), all = 0;
    CHECK(boad_allreduce(&bits, &all, 1, BOAD_U8, BOAD_BOR));
    uint8_t want_bits = size >= 8 ? 0xff : (uint8_t)((1u << size) - 1);
    EXPECT(all == want_bits, "bor = %#x, want %#x", all, want_bits);

    /* The counters: three allreduces on whichever path ran. */
    size_t nstats = boad_stats_count();
    EXPECT(nstats > 0 && boad_stats_name(0) != NULL && boad_stats_name(nstats) == NULL, "%zu counters", nstats);
    uint64_t stats[64] = {0};
    EXPECT(nstats <= 64, "%zu counters", nstats);
    CHECK(boad_stats(stats, nstats));
    uint64_t collectives = 0;
    for (size_t i = 0; i < nstats; i++) {
        const char *name = boad_stats_name(i);
        if (strcmp(name, "collectives_udp") == 0 || strcmp(name, "collectives_shm") == 0 ||
            strcmp(name, "collectives_kernel") == 0 || strcmp(name, "collectives_hier") == 0)
            collectives += stats[i];
    }
    EXPECT(size == 1 || collectives >= 3, "counted %llu collectives", (unsigned long long)collectives);

    const char *path = NULL;
    CHECK(boad_last_path(&path));
    printf("rank %d/%d: allreduce ok (sum[%d] = %lld, path %s)\n", rank, size, N - 1, (long long)recv[N - 1],
           path ? path : "-");
    free(send);
    free(recv);
    CHECK(boad_finalize());
    return 0;
}
