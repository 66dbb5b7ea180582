// OpenMP CPU kernels of the hash encoding.
#include <cstring>

#include "hashgrid_kernels.h"

namespace nerf_native {

namespace {

constexpr int64_t kBlock = 2048;

template <int F>
void forward_cpu(const float* x, int64_t n, const float* table, const Levels& levels, float* out) {
  const int L = levels.count;
  // Blocks of points, level by level inside a block: one level's table stays in cache while a block reads it.
  const int64_t blocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t end = blk * kBlock + kBlock < n ? blk * kBlock + kBlock : n;
    for (int l = 0; l < L; ++l) {
      for (int64_t i = blk * kBlock; i < end; ++i) {
        forward_point_level<F>(x + 3 * i, table, levels.lv[l], out + (i * L + l) * F);
      }
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
    for (int64_t i = 0; i < n; ++i) {
      backward_point_level<F>(x + 3 * i, grad_out + (i * L + l) * F, levels.lv[l], grad_table, add);
    }
  }
  if (grad_x == nullptr) return;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    float gx[3] = {0.f, 0.f, 0.f};
    for (int l = 0; l < L; ++l) {
      input_grad_point_level<F>(x + 3 * i, grad_out + (i * L + l) * F, table, levels.lv[l], gx);
    }
    std::memcpy(grad_x + 3 * i, gx, sizeof(gx));
  }
}

}  // namespace

void hash_encode_forward_cpu(const float* x, int64_t n, const float* table, const Levels& levels, int features,
                             float* out) {
  NERF_DISPATCH_FEATURES(features, forward_cpu<kF>(x, n, table, levels, out));
}

void hash_encode_backward_cpu(const float* grad_out, const float* x, int64_t n, const float* table,
                              const Levels& levels, int features, float* grad_table, float* grad_x) {
  NERF_DISPATCH_FEATURES(features, backward_cpu<kF>(grad_out, x, n, table, levels, grad_table, grad_x));
}

}  // namespace nerf_native
