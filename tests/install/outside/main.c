/* main.c — a program outside dring, built against an installed dring (README.md, Embedding, shows
 * it whole; tests/install builds it with CMake and with pkg-config and runs it under mpirun).
 * Causal GQA attention over the ranks of MPI_COMM_WORLD: each rank passes its shard of q, k, v,
 * gets its shard of out and lse, and checks them against a float64 loop over the whole sequence. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include <dring/dring.h>

enum { S = 67, H = 4, KVH = 2, D = 16 };

/* Tensor t (0 q, 1 k, 2 v) at row i, head h, column c: a formula, so every rank knows every row. */
static double input(int t, int64_t i, int h, int c) { return sin(0.9 * t + 0.05 * (double)i * (h + 1) + 0.7 * c); }

static float* shard(int t, int64_t begin, int64_t rows, int heads) {
  float* x = malloc(sizeof(float) * (size_t)(rows * heads * D));
  for (int64_t i = 0; i < rows; ++i)
    for (int h = 0; h < heads; ++h)
      for (int c = 0; c < D; ++c) x[(i * heads + h) * D + c] = (float)input(t, begin + i, h, c);
  return x;
}

int main(int argc, char** argv) {
  int provided = 0, rank = 0, ranks = 1;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &ranks);

  /* Dense (no pairs), causal, scale 1/sqrt(D); batch 1. */
  dring_problem problem = {.batch = 1, .seq = S, .heads = H, .kv_heads = KVH, .head_dim = D, .causal = 1};
  dring_context* ctx = NULL;
  int64_t begin = 0, rows = 0;
  if (dring_context_create(&problem, MPI_COMM_WORLD, NULL, &ctx) != DRING_OK ||
      dring_shard_range(ctx, &begin, &rows) != DRING_OK) {
    fprintf(stderr, "rank %d: %s\n", rank, dring_last_error());
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  float *q = shard(0, begin, rows, H), *k = shard(1, begin, rows, KVH), *v = shard(2, begin, rows, KVH);
  float *out = malloc(sizeof(float) * (size_t)(rows * H * D)), *lse = malloc(sizeof(float) * (size_t)(rows * H));
  if (dring_forward(ctx, q, k, v, out, lse) != DRING_OK) {
    fprintf(stderr, "rank %d: %s\n", rank, dring_last_error());
    MPI_Abort(MPI_COMM_WORLD, 1);
  }

  /* float64: row i of head h attends to keys 0..i of kv head h / (H / KVH). */
  double err = 0.0;
  for (int64_t r = 0; r < rows; ++r)
    for (int h = 0; h < H; ++h) {
      const int64_t i = begin + r;
      const int g = h / (H / KVH);
      double s[S], m = -INFINITY, l = 0.0;
      for (int64_t j = 0; j <= i; ++j) {
        s[j] = 0.0;
        for (int c = 0; c < D; ++c) s[j] += input(0, i, h, c) * input(1, j, g, c) / sqrt(D);
        m = fmax(m, s[j]);
      }
      for (int64_t j = 0; j <= i; ++j) l += exp(s[j] - m);
      for (int c = 0; c < D; ++c) {
        double o = 0.0;
        for (int64_t j = 0; j <= i; ++j) o += exp(s[j] - m) / l * input(2, j, g, c);
        err = fmax(err, fabs(out[(r * H + h) * D + c] - o));
      }
      err = fmax(err, fabs(lse[h * rows + r] - (m + log(l))));
    }
  double worst = 0.0;
  MPI_Allreduce(&err, &worst, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  if (rank == 0)
    printf("dring %s: %d ranks, causal GQA, seq %d: max |error| vs float64 %.1e: %s\n", dring_version(), ranks, S,
           worst, worst < 1e-5 ? "passed" : "FAILED");

  free(q), free(k), free(v), free(out), free(lse);
  dring_context_destroy(ctx);
  MPI_Finalize();
  return worst < 1e-5 ? 0 : 1;
}
