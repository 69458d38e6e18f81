/* test_c_abi.c — dring.h compiled as C99 and used the way a trainer would: status codes and
 * messages for bad arguments, then forward and backward on this rank's shard, compared with a
 * naive float64 implementation of the definition written here in C; then the context's state
 * after failed calls (an argument error on one rank, a peer later than the deadline). Run under
 * mpirun. */
#define _POSIX_C_SOURCE 199309L /* nanosleep */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dring/dring.h"

enum { B = 2, S = 29, H = 4, HKV = 2, D = 8, NPAIRS = 2 };
static const int64_t kSegments[NPAIRS] = {8, 29};
static const int64_t kDilations[NPAIRS] = {2, 1};
static const double kScale = 0.4;

static int failures = 0;
#define EXPECT(cond, ...)                                   \
  do {                                                      \
    if (!(cond)) {                                          \
      fprintf(stderr, "test_c_abi: %s:%d: ", __FILE__, __LINE__); \
      fprintf(stderr, __VA_ARGS__);                         \
      fputc('\n', stderr);                                  \
      ++failures;                                           \
    }                                                       \
  } while (0)

/* Inputs by formula, so every rank can evaluate any row. t: 0 q, 1 k, 2 v, 3 dout. */
static double input(int t, int b, int s, int h, int d) {
  return sin(0.37 * (t + 1) + 0.11 * b + 0.071 * s * (h + 1) + 0.53 * d) + 0.1 * cos(1.3 * s + d);
}

/* Number of pairs connecting query (i, h) to key j: the multiset weight of the definition. */
static int weight(int i, int j, int h) {
  int n = 0;
  for (int p = 0; p < NPAIRS; ++p) {
    const int w = kSegments[p] < S ? (int)kSegments[p] : S, r = (int)kDilations[p], off = h % r;
    if ((i % w) % r == off && (j % w) % r == off && i / w == j / w && j <= i) ++n;
  }
  return n;
}

/* Naive float64 forward and backward over the whole tensors. */
static void naive(double* out, double* lse, double* dq, double* dk, double* dv) {
  memset(dq, 0, sizeof(double) * B * S * H * D);
  memset(dk, 0, sizeof(double) * B * S * HKV * D);
  memset(dv, 0, sizeof(double) * B * S * HKV * D);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h) {
      const int g = h / (H / HKV);
      for (int i = 0; i < S; ++i) {
        double s[S], m = -INFINITY, l = 0.0, o[D] = {0}, delta = 0.0;
        for (int j = 0; j < S; ++j) {
          double dot = 0.0;
          for (int c = 0; c < D; ++c) dot += input(0, b, i, h, c) * input(1, b, j, g, c);
          s[j] = kScale * dot;
          if (weight(i, j, h) > 0 && s[j] > m) m = s[j];
        }
        for (int j = 0; j < S; ++j) l += weight(i, j, h) * exp(s[j] - m);
        for (int j = 0; j < S; ++j)
          for (int c = 0; c < D; ++c) o[c] += weight(i, j, h) * exp(s[j] - m) / l * input(2, b, j, g, c);
        const double row_lse = m + log(l);
        lse[(b * H + h) * S + i] = row_lse;
        for (int c = 0; c < D; ++c) {
          out[((b * S + i) * H + h) * D + c] = o[c];
          delta += o[c] * input(3, b, i, h, c);
        }
        for (int j = 0; j < S; ++j) {
          if (weight(i, j, h) == 0) continue;
          const double p = weight(i, j, h) * exp(s[j] - row_lse);
          double dp = 0.0;
          for (int c = 0; c < D; ++c) dp += input(3, b, i, h, c) * input(2, b, j, g, c);
          const double ds = p * (dp - delta);
          for (int c = 0; c < D; ++c) {
            dq[((b * S + i) * H + h) * D + c] += kScale * ds * input(1, b, j, g, c);
            dk[((b * S + j) * HKV + g) * D + c] += kScale * ds * input(0, b, i, h, c);
            dv[((b * S + j) * HKV + g) * D + c] += p * input(3, b, i, h, c);
          }
        }
      }
    }
}

/* Fills this rank's rows [begin, begin+rows) of tensor t with `heads` heads. */
static float* shard(int t, int64_t begin, int64_t rows, int heads) {
  float* x = malloc(sizeof(float) * B * rows * heads * D);
  for (int b = 0; b < B; ++b)
    for (int64_t i = 0; i < rows; ++i)
      for (int h = 0; h < heads; ++h)
        for (int c = 0; c < D; ++c) x[((b * rows + i) * heads + h) * D + c] = (float)input(t, b, (int)(begin + i), h, c);
  return x;
}

/* Max |got - want| over this rank's rows, relative to max |want| over the whole tensor. */
static double error(const float* got, const double* want, int64_t begin, int64_t rows, int heads) {
  double worst = 0.0, largest = 0.0;
  for (int64_t n = 0; n < (int64_t)B * S * heads * D; ++n) largest = fmax(largest, fabs(want[n]));
  for (int b = 0; b < B; ++b)
    for (int64_t i = 0; i < rows; ++i)
      for (int e = 0; e < heads * D; ++e)
        worst = fmax(worst, fabs(got[(b * rows + i) * heads * D + e] - want[(b * S + begin + i) * heads * D + e]));
  return worst / largest;
}

int main(int argc, char** argv) {
  int provided = 0, rank = 0, size = 1;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);

  dring_options options;
  dring_options_init(&options);
  options.threads = 1;

  /* Bad arguments: a status and a message, the same on every rank, no context. */
  const int64_t bad_segments[1] = {6}, bad_dilations[1] = {4};
  dring_problem bad = {B, S, H, HKV, D, 1, bad_segments, bad_dilations, 0, 0.0};
  dring_context* ctx = (dring_context*)1;
  dring_status st = dring_context_create(&bad, MPI_COMM_WORLD, &options, &ctx);
  EXPECT(st == DRING_INVALID_ARGUMENT, "w %% r != 0 gave status %d", (int)st);
  EXPECT(ctx == NULL, "a failed create must leave the context NULL");
  EXPECT(strstr(dring_last_error(), "not a multiple of its dilation rate 4") != NULL, "message: %s", dring_last_error());
  EXPECT(strcmp(dring_status_string(st), "invalid argument") == 0, "status string: %s", dring_status_string(st));
  st = dring_context_create(NULL, MPI_COMM_WORLD, &options, &ctx);
  EXPECT(st == DRING_INVALID_ARGUMENT, "NULL problem gave status %d", (int)st);
  options.backend = DRING_BACKEND_CUDA;
  dring_problem good = {B, S, H, HKV, D, NPAIRS, kSegments, kDilations, 1, kScale};
  st = dring_context_create(&good, MPI_COMM_WORLD, &options, &ctx);
  EXPECT(st == DRING_UNSUPPORTED, "CUDA backend in a CPU build gave status %d", (int)st);
  options.backend = DRING_BACKEND_CPU;
  options.dtype = DRING_DTYPE_F16;
  st = dring_context_create(&good, MPI_COMM_WORLD, &options, &ctx);
  EXPECT(st == DRING_UNSUPPORTED, "fp16 on the CPU backend gave status %d", (int)st);
  /* C lets an enum field hold any int: an unknown value is an argument error (tests/fuzz found
   * the C++ side reading it as its enum type, undefined behaviour there). */
  options.dtype = (dring_dtype)7;
  st = dring_context_create(&good, MPI_COMM_WORLD, &options, &ctx);
  EXPECT(st == DRING_INVALID_ARGUMENT, "dtype 7 gave status %d", (int)st);
  options.dtype = DRING_DTYPE_F32;
  options.backend = (dring_backend)-1;
  st = dring_context_create(&good, MPI_COMM_WORLD, &options, &ctx);
  EXPECT(st == DRING_INVALID_ARGUMENT, "backend -1 gave status %d", (int)st);
  EXPECT(strstr(dring_last_error(), "unknown backend -1") != NULL, "message: %s", dring_last_error());
  options.backend = DRING_BACKEND_CPU;

  /* The real thing, with the communicator passed as a Fortran handle as bindings do. */
  st = dring_context_create_f(&good, MPI_Comm_c2f(MPI_COMM_WORLD), &options, &ctx);
  EXPECT(st == DRING_OK, "create: %s", dring_last_error());
  if (st == DRING_OK) {
    int64_t begin = 0, rows = 0;
    EXPECT(dring_shard_range(ctx, &begin, &rows) == DRING_OK, "shard range");
    float *q = shard(0, begin, rows, H), *k = shard(1, begin, rows, HKV), *v = shard(2, begin, rows, HKV),
          *dout = shard(3, begin, rows, H);
    float* out = malloc(sizeof(float) * B * rows * H * D);
    float* lse = malloc(sizeof(float) * B * H * rows);
    float *dq = malloc(sizeof(float) * B * rows * H * D), *dk = malloc(sizeof(float) * B * rows * HKV * D),
          *dv = malloc(sizeof(float) * B * rows * HKV * D);
    EXPECT(dring_forward(ctx, q, k, v, NULL, lse) == DRING_INVALID_ARGUMENT, "NULL out must be refused");
    EXPECT(dring_forward(ctx, q, k, v, out, lse) == DRING_OK, "forward: %s", dring_last_error());
    EXPECT(dring_backward(ctx, q, k, v, out, lse, dout, dq, dk, dv) == DRING_OK, "backward: %s", dring_last_error());

    double *r_out = malloc(sizeof(double) * B * S * H * D), *r_lse = malloc(sizeof(double) * B * H * S),
           *r_dq = malloc(sizeof(double) * B * S * H * D), *r_dk = malloc(sizeof(double) * B * S * HKV * D),
           *r_dv = malloc(sizeof(double) * B * S * HKV * D);
    naive(r_out, r_lse, r_dq, r_dk, r_dv);
    double lse_err = 0.0;
    for (int b = 0; b < B; ++b)
      for (int h = 0; h < H; ++h)
        for (int64_t i = 0; i < rows; ++i) lse_err = fmax(lse_err, fabs(lse[(b * H + h) * rows + i] - r_lse[(b * H + h) * S + begin + i]));
    EXPECT(error(out, r_out, begin, rows, H) < 1e-5, "out error %g", error(out, r_out, begin, rows, H));
    EXPECT(lse_err < 1e-5, "lse error %g", lse_err);
    EXPECT(error(dq, r_dq, begin, rows, H) < 1e-5, "dq error %g", error(dq, r_dq, begin, rows, H));
    EXPECT(error(dk, r_dk, begin, rows, HKV) < 1e-5, "dk error %g", error(dk, r_dk, begin, rows, HKV));
    EXPECT(error(dv, r_dv, begin, rows, HKV) < 1e-5, "dv error %g", error(dv, r_dv, begin, rows, HKV));
    EXPECT(dring_peak_tracked_bytes(ctx) > 0, "peak tracked bytes");

    /* An argument error on one rank only: every rank gets it, and the context stays usable. */
    st = dring_forward(ctx, q, k, v, rank == size - 1 ? NULL : out, lse);
    EXPECT(st == DRING_INVALID_ARGUMENT, "NULL out on rank %d only gave status %d", size - 1, (int)st);
    st = dring_forward(ctx, q, k, v, out, lse);
    EXPECT(st == DRING_OK, "forward after an agreed argument error: %s", dring_last_error());
    EXPECT(error(out, r_out, begin, rows, H) < 1e-5, "out error after the retry %g", error(out, r_out, begin, rows, H));
    free(q), free(k), free(v), free(dout), free(out), free(lse), free(dq), free(dk), free(dv);
    free(r_out), free(r_lse), free(r_dq), free(r_dk), free(r_dv);
  }
  dring_context_destroy(ctx);
  dring_context_destroy(NULL);

  /* A peer later than the deadline (rank 1 starts its pass 2 s after the others, the limit is
   * 0.5 s): the call fails on every rank, and the context then reports itself unusable on every
   * later call, at once, with no wait. */
  if (size > 1) {
    options.comm_timeout_s = 0.5;
    dring_context* late = NULL;
    st = dring_context_create(&good, MPI_COMM_WORLD, &options, &late);
    EXPECT(st == DRING_OK, "create with a 0.5 s deadline: %s", dring_last_error());
    if (st == DRING_OK) {
      int64_t begin = 0, rows = 0;
      dring_shard_range(late, &begin, &rows);
      float *q = shard(0, begin, rows, H), *k = shard(1, begin, rows, HKV), *v = shard(2, begin, rows, HKV);
      float* out = malloc(sizeof(float) * B * rows * H * D);
      float* lse = malloc(sizeof(float) * B * H * rows);
      if (rank == 1) {
        const struct timespec pause = {2, 0};
        nanosleep(&pause, NULL);
      }
      st = dring_forward(late, q, k, v, out, lse);
      EXPECT(st == DRING_COMM_ERROR, "a peer 2 s late under a 0.5 s deadline gave status %d: %s", (int)st,
             dring_last_error());
      const double t0 = MPI_Wtime();
      const dring_status again = dring_forward(late, q, k, v, out, lse);
      EXPECT(again == st, "the call after a failed pass gave status %d, not %d", (int)again, (int)st);
      EXPECT(strstr(dring_last_error(), "unusable") != NULL, "message after a failed pass: %s", dring_last_error());
      EXPECT(MPI_Wtime() - t0 < 0.2, "an unusable context must fail at once (took %.2f s)", MPI_Wtime() - t0);
      free(q), free(k), free(v), free(out), free(lse);
    }
    dring_context_destroy(late);
  }

  int any = 0;
  MPI_Allreduce(&failures, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (rank == 0) printf("test_c_abi (dring %s): %s\n", dring_version(), any ? "FAILED" : "passed");
  MPI_Finalize();
  return any ? 1 : 0;
}
