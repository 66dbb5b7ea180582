// OpenMP CPU kernels of the hash encoding.
#include <cstring>

#include "hashgrid_kernels.h"

namespace nerf_native {

namespace {

constexpr int64_t kBlock = 2048;
constexpr int64_t kSub = 32;  // points whose table rows are prefetched while the previous ones are visited

// visit(i, rows, weights, cell) for the points [begin, end) of one level, in order, software-pipelined: the rows of the
// next kSub points are computed and prefetched (for reading, or for writing with kWrite = 1) while the current
// kSub points are visited, so the random table accesses of many points are in flight at once instead of one
// point's at a time (these loops are bound by memory latency, not arithmetic).
template <int F, int kWrite, typename Visit>
void for_each_point(const float* x, int64_t begin, int64_t end, const Level& level, const float* table,
                    Visit visit) {
  int64_t rows[2][kSub][8];
  float weights[2][kSub][8];
  Cell cells[2][kSub];
  const auto prepare = [&](int buf, int64_t start) {
    const int64_t stop = start + kSub < end ? start + kSub : end;
    for (int64_t i = start; i < stop; ++i) {
      cells[buf][i - start] = point_corners(x + 3 * i, level, rows[buf][i - start], weights[buf][i - start]);
      for (int c = 0; c < 8; ++c) __builtin_prefetch(table + rows[buf][i - start][c] * F, kWrite);
    }
  };
  prepare(0, begin);
  int buf = 0;
  for (int64_t start = begin; start < end; start += kSub, buf ^= 1) {
    if (start + kSub < end) prepare(buf ^ 1, start + kSub);
    const int64_t stop = start + kSub < end ? start + kSub : end;
    for (int64_t i = start; i < stop; ++i) {
      visit(i, rows[buf][i - start], weights[buf][i - start], cells[buf][i - start]);
    }
  }
}

// With dy_dx (not nullptr), also the derivatives of each output along the three axes, (n, L*F, 3): the input
// gradient's factor, computed while the table rows are at hand (as tiny-cuda-nn's encodings do).
template <int F>
void forward_cpu(const float* x, int64_t n, const float* table, const Levels& levels, float* out, float* dy_dx) {
  const int L = levels.count;
  // Blocks of points, level by level inside a block: one level's table stays in cache while a block reads it.
  const int64_t blocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t end = blk * kBlock + kBlock < n ? blk * kBlock + kBlock : n;
    for (int l = 0; l < L; ++l) {
      for_each_point<F, 0>(x, blk * kBlock, end, levels.lv[l], table,
                           [&](int64_t i, const int64_t* rows, const float* weights, const Cell& cell) {
                             const int64_t k = (i * L + l) * F;
                             if (dy_dx == nullptr) {
                               interpolate<F>(rows, weights, table, out + k);
                             } else {
                               interpolate_dx<F>(cell, rows, weights, table, out + k, dy_dx + 3 * k);
                             }
                           });
    }
  }
}

template <int F>
void backward_cpu(const float* grad_out, const float* x, int64_t n, const float* table, const Levels& levels,
                  float* grad_table, float* grad_x) {
  const int L = levels.count;
  const auto add = [](float* dst, float v) { *dst += v; };  // one thread owns each level: no race
  // Levels occupy disjoint rows of the table: one thread per level needs neither atomics nor private copies.
#pragma omp parallel for schedule(dynamic, 1)
  for (int l = 0; l < L; ++l) {
    for_each_point<F, 1>(x, 0, n, levels.lv[l], grad_table,
                         [&](int64_t i, const int64_t* rows, const float* weights, const Cell&) {
                           scatter<F>(rows, weights, grad_out + (i * L + l) * F, grad_table, add);
                         });
  }
  if (grad_x == nullptr) return;
  // dL/dx as the forward reads the table: blocks of points, level by level, the rows prefetched.
  const int64_t blocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t begin = blk * kBlock, end = begin + kBlock < n ? begin + kBlock : n;
    std::memset(grad_x + 3 * begin, 0, sizeof(float) * 3 * (end - begin));
    for (int l = 0; l < L; ++l) {
      for_each_point<F, 0>(x, begin, end, levels.lv[l], table,
                           [&](int64_t i, const int64_t* rows, const float*, const Cell& cell) {
                             input_grad<F>(cell, rows, grad_out + (i * L + l) * F, table, grad_x + 3 * i);
                           });
    }
  }
}

}  // namespace

void hash_encode_forward_cpu(const float* x, int64_t n, const float* table, const Levels& levels, int features,
                             float* out, float* dy_dx) {
  NERF_DISPATCH_FEATURES(features, forward_cpu<kF>(x, n, table, levels, out, dy_dx));
}

void hash_encode_backward_cpu(const float* grad_out, const float* x, int64_t n, const float* table,
                              const Levels& levels, int features, float* grad_table, float* grad_x) {
  NERF_DISPATCH_FEATURES(features, backward_cpu<kF>(grad_out, x, n, table, levels, grad_table, grad_x));
}

}  // namespace nerf_native
