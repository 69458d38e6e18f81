/* test_c_abi.c — dring.h compiled as C99 and used the way a trainer would: status codes and
 * messages for bad arguments, then forward and backward on this rank's shard, compared with a
 * naive float64 implementation of the definition written here in C; then packed documents and
 * windows under every layout (the rank's rows from dring_shard_positions); then the context's
 * state after failed calls (an argument error on one rank, a peer later than the deadline). Run
 * under mpirun. */
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

/* The case under test: causal, packed documents (none: one of length S) and a window (0: none). */
static int g_causal = 1;
static int g_num_docs = 0;
static const int64_t* g_doc_lens = NULL;
static int g_window = 0;

/* Number of pairs connecting query (i, h) to key j: the multiset weight of the definition, applied
 * inside the document of i (positions counted from its start, segments cut to its length). */
static int weight(int i, int j, int h) {
  int start = 0, len = S;
  for (int d = 0; d < g_num_docs; ++d) {
    if (i < start + (int)g_doc_lens[d]) {
      len = (int)g_doc_lens[d];
      break;
    }
    start += (int)g_doc_lens[d];
  }
  if (j < start || j >= start + len) return 0;
  if (g_causal && j > i) return 0;
  if (g_window > 0 && abs(i - j) >= g_window) return 0;
  const int a = i - start, c = j - start;
  int n = 0;
  for (int p = 0; p < NPAIRS; ++p) {
    const int w = kSegments[p] < len ? (int)kSegments[p] : len, r = (int)kDilations[p], off = h % r;
    if ((a % w) % r == off && (c % w) % r == off && a / w == c / w) ++n;
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
        for (int j = 0; j < S; ++j) l += weight(i, j, h);
        if (l == 0.0) { /* no keys: out 0, lse -inf, no gradient */
          lse[(b * H + h) * S + i] = -INFINITY;
          for (int c = 0; c < D; ++c) out[((b * S + i) * H + h) * D + c] = 0.0;
          continue;
        }
        l = 0.0;
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

/* Fills this rank's rows (positions pos[0..rows)) of tensor t with `heads` heads. */
static float* shard(int t, const int64_t* pos, int64_t rows, int heads) {
  float* x = malloc(sizeof(float) * B * rows * heads * D);
  for (int b = 0; b < B; ++b)
    for (int64_t i = 0; i < rows; ++i)
      for (int h = 0; h < heads; ++h)
        for (int c = 0; c < D; ++c) x[((b * rows + i) * heads + h) * D + c] = (float)input(t, b, (int)pos[i], h, c);
  return x;
}

/* Max |got - want| over this rank's rows, relative to max |want| over the whole tensor. */
static double error(const float* got, const double* want, const int64_t* pos, int64_t rows, int heads) {
  double worst = 0.0, largest = 0.0;
  for (int64_t n = 0; n < (int64_t)B * S * heads * D; ++n) largest = fmax(largest, fabs(want[n]));
  for (int b = 0; b < B; ++b)
    for (int64_t i = 0; i < rows; ++i)
      for (int e = 0; e < heads * D; ++e)
        worst = fmax(worst, fabs(got[(b * rows + i) * heads * D + e] - want[(b * S + pos[i]) * heads * D + e]));
  return worst / largest;
}

/* The max over this rank's rows of |lse - want| (both -inf where a row has no keys). */
static double lse_error(const float* got, const double* want, const int64_t* pos, int64_t rows) {
  double worst = 0.0;
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h)
      for (int64_t i = 0; i < rows; ++i) {
        const double g = got[(b * H + h) * rows + i], w = want[(b * H + h) * S + pos[i]];
        worst = fmax(worst, isinf(w) ? (g == w ? 0.0 : INFINITY) : fabs(g - w));
      }
  return worst;
}

/* This rank's positions (dring_shard_positions, after a count-only query), malloc'd. */
static int64_t* positions_of(const dring_context* ctx, int64_t* rows) {
  EXPECT(dring_shard_positions(ctx, NULL, 0, rows) == DRING_OK, "count query: %s", dring_last_error());
  int64_t* pos = malloc(sizeof(int64_t) * (size_t)*rows);
  int64_t again = 0;
  if (*rows > 1) {
    EXPECT(dring_shard_positions(ctx, pos, *rows - 1, &again) == DRING_INVALID_ARGUMENT, "a short buffer must be refused");
  }
  EXPECT(dring_shard_positions(ctx, pos, *rows, &again) == DRING_OK && again == *rows, "positions: %s", dring_last_error());
  for (int64_t i = 1; i < *rows; ++i) EXPECT(pos[i] > pos[i - 1], "positions must ascend");
  return pos;
}

/* Forward and backward of the current case under `layout`, against the naive definition. */
static void run_case(const char* name, const dring_problem* problem, dring_layout layout, int64_t stripe) {
  dring_options options;
  dring_options_init(&options);
  options.threads = 1;
  options.layout = layout;
  options.stripe = stripe;
  dring_context* ctx = NULL;
  dring_status st = dring_context_create(problem, MPI_COMM_WORLD, &options, &ctx);
  EXPECT(st == DRING_OK, "%s, layout %d: create: %s", name, (int)layout, dring_last_error());
  if (st != DRING_OK) return;
  int64_t rows = 0, begin = 0, range_rows = 0;
  int64_t* pos = positions_of(ctx, &rows);
  st = dring_shard_range(ctx, &begin, &range_rows);
  if (layout == DRING_LAYOUT_CONTIGUOUS) {
    EXPECT(st == DRING_OK && begin == pos[0] && range_rows == rows, "%s: shard range and positions differ", name);
  } else {
    EXPECT(st == DRING_UNSUPPORTED && strstr(dring_last_error(), "dring_shard_positions") != NULL,
           "%s, layout %d: shard range gave status %d (%s)", name, (int)layout, (int)st, dring_last_error());
  }
  float *q = shard(0, pos, rows, H), *k = shard(1, pos, rows, HKV), *v = shard(2, pos, rows, HKV),
        *dout = shard(3, pos, rows, H);
  float* out = malloc(sizeof(float) * B * rows * H * D);
  float* lse = malloc(sizeof(float) * B * H * rows);
  float *dq = malloc(sizeof(float) * B * rows * H * D), *dk = malloc(sizeof(float) * B * rows * HKV * D),
        *dv = malloc(sizeof(float) * B * rows * HKV * D);
  EXPECT(dring_forward(ctx, q, k, v, out, lse) == DRING_OK, "%s: forward: %s", name, dring_last_error());
  EXPECT(dring_backward(ctx, q, k, v, out, lse, dout, dq, dk, dv) == DRING_OK, "%s: backward: %s", name,
         dring_last_error());
  double *r_out = malloc(sizeof(double) * B * S * H * D), *r_lse = malloc(sizeof(double) * B * H * S),
         *r_dq = malloc(sizeof(double) * B * S * H * D), *r_dk = malloc(sizeof(double) * B * S * HKV * D),
         *r_dv = malloc(sizeof(double) * B * S * HKV * D);
  naive(r_out, r_lse, r_dq, r_dk, r_dv);
  const double errs[5] = {error(out, r_out, pos, rows, H), lse_error(lse, r_lse, pos, rows),
                          error(dq, r_dq, pos, rows, H), error(dk, r_dk, pos, rows, HKV),
                          error(dv, r_dv, pos, rows, HKV)};
  const char* what[5] = {"out", "lse", "dq", "dk", "dv"};
  for (int n = 0; n < 5; ++n) EXPECT(errs[n] < 1e-5, "%s, layout %d: %s error %g", name, (int)layout, what[n], errs[n]);
  free(q), free(k), free(v), free(dout), free(out), free(lse), free(dq), free(dk), free(dv);
  free(r_out), free(r_lse), free(r_dq), free(r_dk), free(r_dv), free(pos);
  dring_context_destroy(ctx);
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
  dring_problem bad;
  dring_problem_init(&bad);
  bad.batch = B, bad.seq = S, bad.heads = H, bad.kv_heads = HKV, bad.head_dim = D;
  bad.num_pairs = 1, bad.segments = bad_segments, bad.dilations = bad_dilations;
  dring_context* ctx = (dring_context*)1;
  dring_status st = dring_context_create(&bad, MPI_COMM_WORLD, &options, &ctx);
  EXPECT(st == DRING_INVALID_ARGUMENT, "w %% r != 0 gave status %d", (int)st);
  EXPECT(ctx == NULL, "a failed create must leave the context NULL");
  EXPECT(strstr(dring_last_error(), "not a multiple of its dilation rate 4") != NULL, "message: %s", dring_last_error());
  EXPECT(strcmp(dring_status_string(st), "invalid argument") == 0, "status string: %s", dring_status_string(st));
  st = dring_context_create(NULL, MPI_COMM_WORLD, &options, &ctx);
  EXPECT(st == DRING_INVALID_ARGUMENT, "NULL problem gave status %d", (int)st);
  options.backend = DRING_BACKEND_CUDA;
  dring_problem good = {.batch = B, .seq = S, .heads = H, .kv_heads = HKV, .head_dim = D, .num_pairs = NPAIRS,
                        .segments = kSegments, .dilations = kDilations, .causal = 1, .scale = kScale};
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
  EXPECT(dring_abi_version() == DRING_ABI_VERSION, "library ABI %d, header %d", dring_abi_version(), DRING_ABI_VERSION);

  /* The entries without MPI (an NCCL unique id): unusable arguments are refused at once, locally;
   * a good call either makes a one-process context (a GPU and NCCL at hand) or fails cleanly with
   * no context (DRING_UNSUPPORTED without NCCL, a device error without a GPU). */
  {
    char id[DRING_NCCL_UNIQUE_ID_BYTES] = {0};
    EXPECT(dring_nccl_unique_id(NULL) == DRING_INVALID_ARGUMENT, "a NULL id buffer was accepted");
    ctx = (dring_context*)1;
    st = dring_context_create_nccl(&good, id, 2, 2, &options, &ctx);
    EXPECT(st == DRING_INVALID_ARGUMENT && ctx == NULL, "rank 2 of 2 gave status %d", (int)st);
    EXPECT(strstr(dring_last_error(), "rank 2 is not in [0, world_size 2)") != NULL, "message: %s", dring_last_error());
    st = dring_context_create_nccl(&good, NULL, 0, 1, &options, &ctx);
    EXPECT(st == DRING_INVALID_ARGUMENT && ctx == NULL, "a NULL unique id gave status %d", (int)st);
    const dring_status made = dring_nccl_unique_id(id);
    dring_options cuda = options;
    cuda.backend = DRING_BACKEND_CUDA;
    st = dring_context_create_nccl(&good, id, 0, 1, &cuda, &ctx);
    if (made != DRING_OK) {
      EXPECT(made == DRING_UNSUPPORTED || made == DRING_COMM_ERROR, "dring_nccl_unique_id gave status %d", (int)made);
      EXPECT(st != DRING_OK && ctx == NULL, "a context from an id that could not be made: status %d", (int)st);
    } else {
      EXPECT((st == DRING_OK) == (ctx != NULL), "status %d with context %p", (int)st, (void*)ctx);
    }
    dring_context_destroy(ctx);
    ctx = NULL;
  }

  /* Documents, windows and layouts: bad values are refused with the field named. */
  {
    const int64_t short_docs[2] = {10, 18}, zero_doc[3] = {10, 0, 19};
    dring_problem p = good;
    p.num_docs = 2, p.doc_lens = short_docs;
    st = dring_context_create(&p, MPI_COMM_WORLD, &options, &ctx);
    EXPECT(st == DRING_INVALID_ARGUMENT && strstr(dring_last_error(), "sum to 28, not to the sequence length 29"),
           "doc lengths summing to 28 gave status %d: %s", (int)st, dring_last_error());
    p.num_docs = 3, p.doc_lens = zero_doc;
    st = dring_context_create(&p, MPI_COMM_WORLD, &options, &ctx);
    EXPECT(st == DRING_INVALID_ARGUMENT && strstr(dring_last_error(), "length 0"), "a document of length 0: %d %s",
           (int)st, dring_last_error());
    p.num_docs = 2, p.doc_lens = NULL;
    st = dring_context_create(&p, MPI_COMM_WORLD, &options, &ctx);
    EXPECT(st == DRING_INVALID_ARGUMENT && strstr(dring_last_error(), "doc_lens"), "NULL doc_lens: %s",
           dring_last_error());
    p = good;
    p.window = -1;
    st = dring_context_create(&p, MPI_COMM_WORLD, &options, &ctx);
    EXPECT(st == DRING_INVALID_ARGUMENT && strstr(dring_last_error(), "window"), "window -1: %s", dring_last_error());
    options.layout = (dring_layout)7;
    st = dring_context_create(&good, MPI_COMM_WORLD, &options, &ctx);
    EXPECT(st == DRING_INVALID_ARGUMENT && strstr(dring_last_error(), "unknown layout 7"), "layout 7: %s",
           dring_last_error());
    options.layout = DRING_LAYOUT_ZIGZAG;
    p.window = 0;
    p.seq = 2 * size - 1;
    if (p.seq >= size) {
      st = dring_context_create(&p, MPI_COMM_WORLD, &options, &ctx);
      EXPECT(st == DRING_INVALID_ARGUMENT && strstr(dring_last_error(), "zigzag"), "zigzag, seq %d: %s", (int)p.seq,
             dring_last_error());
    }
    options.layout = DRING_LAYOUT_CONTIGUOUS;
    EXPECT(ctx == NULL, "failed creates must leave the context NULL");
  }

  /* Documents (one of length 1, one longer than a shard) and windows, causal or not, on every layout. */
  {
    const int64_t docs[4] = {5, 1, 15, 8}, two_docs[2] = {12, 17};
    struct {
      const char* name;
      int causal, num_docs, window;
      const int64_t* doc_lens;
    } cases[3] = {{"documents, causal", 1, 4, 0, docs}, {"window 6", 0, 0, 6, NULL},
                  {"documents and window 4, causal", 1, 2, 4, two_docs}};
    for (int c = 0; c < 3; ++c) {
      g_causal = cases[c].causal, g_num_docs = cases[c].num_docs, g_doc_lens = cases[c].doc_lens;
      g_window = cases[c].window;
      dring_problem p = good;
      p.causal = g_causal, p.num_docs = g_num_docs, p.doc_lens = g_doc_lens, p.window = g_window;
      run_case(cases[c].name, &p, DRING_LAYOUT_CONTIGUOUS, 0);
      run_case(cases[c].name, &p, DRING_LAYOUT_ZIGZAG, 0);
      run_case(cases[c].name, &p, DRING_LAYOUT_STRIPED, 2);
    }
    g_causal = 1, g_num_docs = 0, g_doc_lens = NULL, g_window = 0;
  }
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
    int64_t* pos = malloc(sizeof(int64_t) * (size_t)rows);
    for (int64_t i = 0; i < rows; ++i) pos[i] = begin + i;
    float *q = shard(0, pos, rows, H), *k = shard(1, pos, rows, HKV), *v = shard(2, pos, rows, HKV),
          *dout = shard(3, pos, rows, H);
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
    EXPECT(error(out, r_out, pos, rows, H) < 1e-5, "out error %g", error(out, r_out, pos, rows, H));
    EXPECT(lse_err < 1e-5, "lse error %g", lse_err);
    EXPECT(error(dq, r_dq, pos, rows, H) < 1e-5, "dq error %g", error(dq, r_dq, pos, rows, H));
    EXPECT(error(dk, r_dk, pos, rows, HKV) < 1e-5, "dk error %g", error(dk, r_dk, pos, rows, HKV));
    EXPECT(error(dv, r_dv, pos, rows, HKV) < 1e-5, "dv error %g", error(dv, r_dv, pos, rows, HKV));
    EXPECT(dring_peak_tracked_bytes(ctx) > 0, "peak tracked bytes");

    /* An argument error on one rank only: every rank gets it, and the context stays usable. */
    st = dring_forward(ctx, q, k, v, rank == size - 1 ? NULL : out, lse);
    EXPECT(st == DRING_INVALID_ARGUMENT, "NULL out on rank %d only gave status %d", size - 1, (int)st);
    st = dring_forward(ctx, q, k, v, out, lse);
    EXPECT(st == DRING_OK, "forward after an agreed argument error: %s", dring_last_error());
    EXPECT(error(out, r_out, pos, rows, H) < 1e-5, "out error after the retry %g", error(out, r_out, pos, rows, H));
    free(q), free(k), free(v), free(dout), free(out), free(lse), free(dq), free(dk), free(dv);
    free(r_out), free(r_lse), free(r_dq), free(r_dk), free(r_dv), free(pos);
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
      int64_t* pos = malloc(sizeof(int64_t) * (size_t)rows);
      for (int64_t i = 0; i < rows; ++i) pos[i] = begin + i;
      float *q = shard(0, pos, rows, H), *k = shard(1, pos, rows, HKV), *v = shard(2, pos, rows, HKV);
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
      free(q), free(k), free(v), free(out), free(lse), free(pos);
    }
    dring_context_destroy(late);
  }

  int any = 0;
  MPI_Allreduce(&failures, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (rank == 0) printf("test_c_abi (dring %s): %s\n", dring_version(), any ? "FAILED" : "passed");
  MPI_Finalize();
  return any ? 1 : 0;
}
