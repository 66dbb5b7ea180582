// CUDA kernels of the hash encoding; the per-point maths is hashgrid_math.h, shared with the CPU kernels.
// No torch headers here: this file compiles with nvcc alone (the cuda-check build target).
#include "cuda_launch.cuh"
#include "hashgrid_kernels.h"

namespace nerf_native {

namespace {

struct AtomicAdd {
  __device__ void operator()(float* dst, float v) const { atomicAdd(dst, v); }
};

// One thread per (point, level); blockIdx.y is the level.
template <int F>
__global__ void forward_kernel(const float* __restrict__ x, int64_t n, const float* __restrict__ table,
                               Levels levels, float* __restrict__ out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int l = blockIdx.y;
  if (i >= n) return;
  const float p[3] = {x[3 * i], x[3 * i + 1], x[3 * i + 2]};
  forward_point_level<F>(p, table, levels.lv[l], out + (i * levels.count + l) * F);
}

template <int F>
__global__ void backward_table_kernel(const float* __restrict__ grad_out, const float* __restrict__ x, int64_t n,
                                      Levels levels, float* __restrict__ grad_table) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int l = blockIdx.y;
  if (i >= n) return;
  const float p[3] = {x[3 * i], x[3 * i + 1], x[3 * i + 2]};
  float g[F];
  for (int f = 0; f < F; ++f) g[f] = grad_out[(i * levels.count + l) * F + f];
  backward_point_level<F>(p, g, levels.lv[l], grad_table, AtomicAdd{});
}

// One thread per point, levels in order: deterministic.
template <int F>
__global__ void backward_input_kernel(const float* __restrict__ grad_out, const float* __restrict__ x, int64_t n,
                                      const float* __restrict__ table, Levels levels, float* __restrict__ grad_x) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float p[3] = {x[3 * i], x[3 * i + 1], x[3 * i + 2]};
  float gx[3] = {0.f, 0.f, 0.f};
  for (int l = 0; l < levels.count; ++l) {
    input_grad_point_level<F>(p, grad_out + (i * levels.count + l) * F, table, levels.lv[l], gx);
  }
  for (int d = 0; d < 3; ++d) grad_x[3 * i + d] = gx[d];
}

}  // namespace

void hash_encode_forward_cuda(const float* x, int64_t n, const float* table, const Levels& levels, int features,
                              float* out, void* stream) {
  if (n == 0) return;
  const dim3 grid(blocks_for(n), static_cast<unsigned>(levels.count));
  auto s = static_cast<cudaStream_t>(stream);
  NERF_DISPATCH_FEATURES(features, forward_kernel<kF><<<grid, kThreads, 0, s>>>(x, n, table, levels, out));
  check(cudaGetLastError(), "hash_encode_forward_cuda");
}

void hash_encode_backward_cuda(const float* grad_out, const float* x, int64_t n, const float* table,
                               const Levels& levels, int features, float* grad_table, float* grad_x, void* stream) {
  if (n == 0) return;
  const dim3 grid(blocks_for(n), static_cast<unsigned>(levels.count));
  auto s = static_cast<cudaStream_t>(stream);
  NERF_DISPATCH_FEATURES(features,
                         backward_table_kernel<kF><<<grid, kThreads, 0, s>>>(grad_out, x, n, levels, grad_table));
  check(cudaGetLastError(), "hash_encode_backward_cuda (table)");
  if (grad_x == nullptr) return;
  NERF_DISPATCH_FEATURES(
      features, backward_input_kernel<kF><<<blocks_for(n), kThreads, 0, s>>>(grad_out, x, n, table, levels, grad_x));
  check(cudaGetLastError(), "hash_encode_backward_cuda (input)");
}

}  // namespace nerf_native
