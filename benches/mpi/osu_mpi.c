/* The osu-style benchmark of boad-osu, for MPI (Open MPI, MPICH): prints the same JSON records
 * (benches/src/record.rs) on rank 0's stdout, one per line.
 *
 *   latency     bcast, reduce, allreduce, allgather at 4 B .. MAX bytes (x4), and barrier (one record,
 *               under 4 B), root 0: warm-up, then
 *               timed iterations with a barrier between them (only the collective is timed); each
 *               rank's mean, p50, p99; the record holds the max over ranks of each.
 *   throughput  bcast, reduce, allreduce of 4 B back to back, no barrier, roots rotating for bcast and
 *               reduce: iterations / the slowest rank's wall time.
 *   cpu         the four collectives of 4 B back to back from root 0, a barrier every 16: CPU time
 *               (user + sys, CLOCK_PROCESS_CPUTIME_ID) inside the calls, per collective, at the
 *               root and the mean of the others.
 *
 * Reductions are MPI_INT sums (as boad-osu's i32 sums). Iterations: ITERS up to 16 KiB, a quarter up
 * to 128 KiB, a tenth above (as boad-osu).
 *
 *   mpicc -O2 -o osu_mpi benches/mpi/osu_mpi.c
 *   mpirun -n 4 ./osu_mpi IMPL_NAME ITERS WARMUP MAX_BYTES PASS_ITERS
 *
 * PASS_ITERS 0: latency only (no throughput nor cpu records). "hosts" is always 1: boad-bench
 * rewrites it (and adds "launch") for the ranks it starts on several hosts over ssh.
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *names[5] = {"bcast", "reduce", "allreduce", "allgather", "barrier"};
static const char *impl = "mpi";
static int rank, size;

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted samples (as boad_benches::stats::percentile). */
static double pct(const double *sorted, int n, double p) {
    int r = (int)((p / 100.0) * n + 0.999999999);
    if (r < 1) r = 1;
    if (r > n) r = n;
    return sorted[r - 1];
}

static double cpu_s(void) {
    struct timespec ts;
    if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) != 0) return 0;
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void one(int coll, int *buf, int *out, int n, int root) {
    switch (coll) {
    case 0: MPI_Bcast(buf, n, MPI_INT, root, MPI_COMM_WORLD); break;
    case 1: MPI_Reduce(buf, out, n, MPI_INT, MPI_SUM, root, MPI_COMM_WORLD); break;
    case 2: MPI_Allreduce(buf, out, n, MPI_INT, MPI_SUM, MPI_COMM_WORLD); break;
    case 3: MPI_Allgather(buf, n, MPI_INT, out, n, MPI_INT, MPI_COMM_WORLD); break;
    default: MPI_Barrier(MPI_COMM_WORLD); break;
    }
}

static void head(const char *bench, int coll, long bytes, long iters) {
    printf("{\"bench\":\"%s\",\"implementation\":\"%s\",\"coll\":\"%s\",\"bytes\":%ld,\"ranks\":%d,"
           "\"hosts\":1,\"iters\":%ld",
           bench, impl, names[coll], bytes, size, iters);
}

static void latency(int coll, long bytes, long iters, long warm) {
    int n = (int)(bytes / 4);
    int *buf = malloc(bytes), *out = malloc(bytes * size);
    double *lat = malloc(sizeof(double) * iters), mine[3] = {0, 0, 0};
    double *all = malloc(sizeof(double) * 3 * size);
    for (int i = 0; i < n; i++) buf[i] = rank + 1;
    for (long i = 0; i < warm + iters; i++) {
        double t = MPI_Wtime();
        one(coll, buf, out, n, 0);
        if (i >= warm) lat[i - warm] = MPI_Wtime() - t;
        MPI_Barrier(MPI_COMM_WORLD);
    }
    qsort(lat, iters, sizeof(double), cmp);
    for (long i = 0; i < iters; i++) mine[0] += lat[i] / iters;
    mine[1] = pct(lat, iters, 50);
    mine[2] = pct(lat, iters, 99);
    MPI_Gather(mine, 3, MPI_DOUBLE, all, 3, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    if (rank == 0) {
        double m[3] = {0, 0, 0};
        for (int r = 0; r < size; r++)
            for (int k = 0; k < 3; k++)
                if (all[3 * r + k] > m[k]) m[k] = all[3 * r + k];
        head("latency", coll, bytes, iters);
        printf(",\"avg_us\":%.3f,\"p50_us\":%.3f,\"p99_us\":%.3f}\n", m[0] * 1e6, m[1] * 1e6,
               m[2] * 1e6);
        fflush(stdout);
    }
    free(all); free(lat); free(buf); free(out);
}

/* Back to back; rotate: roots rotate over the ranks. Prints a throughput or a cpu record. */
static void back_to_back(const char *bench, int coll, long iters, int rotate) {
    int buf[1] = {rank + 1}, *out = malloc(sizeof(int) * size);
    for (int i = 0; i < 10; i++) one(coll, buf, out, 1, 0);
    MPI_Barrier(MPI_COMM_WORLD);
    /* cpu: only the time inside the calls (clock read around each), a barrier every 16 (as
     * boad-osu). throughput: nothing but the collectives. */
    int cpu = strcmp(bench, "cpu") == 0;
    double t = MPI_Wtime(), inside = 0;
    for (long i = 0; i < iters; i++) {
        double c = cpu ? cpu_s() : 0;
        one(coll, buf, out, 1, rotate ? (int)(i % size) : 0);
        if (cpu) {
            inside += cpu_s() - c;
            if (i % 16 == 15) MPI_Barrier(MPI_COMM_WORLD);
        }
    }
    double mine[2] = {MPI_Wtime() - t, inside};
    double *all = malloc(sizeof(double) * 2 * size);
    MPI_Gather(mine, 2, MPI_DOUBLE, all, 2, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    if (rank == 0) {
        double wall = 0, others = 0;
        for (int r = 0; r < size; r++) {
            if (all[2 * r] > wall) wall = all[2 * r];
            if (r > 0) others += all[2 * r + 1] / (size - 1);
        }
        head(bench, coll, 4, iters);
        if (strcmp(bench, "throughput") == 0)
            printf(",\"ops_per_s\":%.1f,\"note\":\"back to back, %s\"}\n", iters / wall,
                   rotate ? "roots rotating over the ranks" : "no root");
        else
            printf(",\"cpu_us_root\":%.3f,\"cpu_us_other\":%.3f,\"note\":\"CPU inside the calls, "
                   "root 0, back to back with a barrier every 16\"}\n",
                   all[1] / iters * 1e6, others / iters * 1e6);
        fflush(stdout);
    }
    free(all); free(out);
    MPI_Barrier(MPI_COMM_WORLD);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (argc > 1) impl = argv[1];
    long iters = argc > 2 ? atol(argv[2]) : 200, warm = argc > 3 ? atol(argv[3]) : 20;
    long max = argc > 4 ? atol(argv[4]) : 1 << 20, pass = argc > 5 ? atol(argv[5]) : 1000;
    if (iters < 5) iters = 5;
    for (int c = 0; c < 5; c++) {
        /* The barrier moves no data: one record, under the smallest size (as boad-osu's). */
        for (long bytes = 4; bytes <= (c == 4 ? 4 : max); bytes *= 4) {
            long div = bytes <= 16384 ? 1 : bytes <= 131072 ? 4 : 10;
            long it = iters / div < 5 ? 5 : iters / div, w = warm / div < 2 ? 2 : warm / div;
            latency(c, bytes, it, w);
        }
    }
    if (pass > 0) {
        for (int c = 0; c < 3; c++) back_to_back("throughput", c, pass, c < 2);
        for (int c = 0; c < 4; c++) back_to_back("cpu", c, pass, 0);
    }
    MPI_Finalize();
    return 0;
}
