/* osu-style latency of MPI_Bcast, MPI_Reduce, MPI_Allreduce, MPI_Allgather, printing the lines
 * boad-bench's driver reads: RESULT <coll> <bytes> <avg_us> <max_us> <p50_us> <p99_us>.
 * Same method as boad-bench's worker: warm-up, timed iterations with a barrier between them (only the
 * collective is timed), per-rank mean/median/p99, then the mean and max over ranks.
 *
 *   mpicc -O2 -o mpi_bench tests-integration/benches/mpi_bench.c
 *   mpirun --allow-run-as-root --oversubscribe -n 4 ./mpi_bench [max_bytes]
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void iterations(long bytes, int ranks, int *warm, int *iters) {
    int scale = ranks > 4 ? 2 : 1;
    if (bytes <= 16384) { *warm = 100 / scale; *iters = 1000 / scale; }
    else if (bytes <= 131072) { *warm = 20; *iters = 200 / scale; }
    else { *warm = 5; *iters = 50 / scale; }
}

static void one(int coll, float *buf, float *out, int n) {
    switch (coll) {
    case 0: MPI_Bcast(buf, n, MPI_FLOAT, 0, MPI_COMM_WORLD); break;
    case 1: MPI_Reduce(buf, out, n, MPI_FLOAT, MPI_SUM, 0, MPI_COMM_WORLD); break;
    case 2: MPI_Allreduce(buf, out, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD); break;
    default: MPI_Allgather(buf, n, MPI_FLOAT, out, n, MPI_FLOAT, MPI_COMM_WORLD); break;
    }
}

int main(int argc, char **argv) {
    const char *names[4] = {"bcast", "reduce", "allreduce", "allgather"};
    int rank, size;
    long max = argc > 1 ? atol(argv[1]) : 1 << 20;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    for (int c = 0; c < 4; c++) {
        for (long bytes = 4; bytes <= max; bytes *= 4) {
            int n = (int)(bytes / 4), warm, iters;
            float *buf = malloc(bytes), *out = malloc(bytes * size);
            for (int i = 0; i < n; i++) buf[i] = 1.0f;
            iterations(bytes, size, &warm, &iters);
            double *lat = malloc(sizeof(double) * iters);
            for (int i = 0; i < warm; i++) one(c, buf, out, n);
            MPI_Barrier(MPI_COMM_WORLD);
            for (int i = 0; i < iters; i++) {
                double t = MPI_Wtime();
                one(c, buf, out, n);
                lat[i] = MPI_Wtime() - t;
                MPI_Barrier(MPI_COMM_WORLD);
            }
            qsort(lat, iters, sizeof(double), cmp);
            double mine[3] = {0, lat[iters * 50 / 100], lat[iters * 99 / 100 < iters ? iters * 99 / 100 : iters - 1]};
            for (int i = 0; i < iters; i++) mine[0] += lat[i];
            mine[0] /= iters;
            double *all = malloc(sizeof(double) * 3 * size);
            MPI_Gather(mine, 3, MPI_DOUBLE, all, 3, MPI_DOUBLE, 0, MPI_COMM_WORLD);
            if (rank == 0) {
                double avg = 0, mx = 0, p50 = 0, p99 = 0;
                for (int r = 0; r < size; r++) {
                    avg += all[3 * r] / size;
                    if (all[3 * r] > mx) mx = all[3 * r];
                    if (all[3 * r + 1] > p50) p50 = all[3 * r + 1];
                    if (all[3 * r + 2] > p99) p99 = all[3 * r + 2];
                }
                printf("RESULT %s %ld %.2f %.2f %.2f %.2f\n", names[c], bytes, avg * 1e6, mx * 1e6,
                       p50 * 1e6, p99 * 1e6);
                fflush(stdout);
            }
            free(all); free(lat); free(buf); free(out);
        }
    }
    MPI_Finalize();
    return 0;
}
