// CUDA kernels of volume compositing (one thread per ray); maths in volume_math.h.
// No torch headers.
#include "cuda_launch.cuh"
#include "volume_kernels.h"

namespace nerf_native {

namespace {

__global__ void ray_ranges_kernel(const int64_t* __restrict__ ray_indices, int64_t n_samples, int64_t n_rays,
                                  int64_t* __restrict__ begin, int64_t* __restrict__ end) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n_samples) return;
  const int64_t r = ray_indices[i];
  if (r < 0 || r >= n_rays) return;
  if (i == 0 || ray_indices[i - 1] != r) begin[r] = i;
  if (i == n_samples - 1 || ray_indices[i + 1] != r) end[r] = i + 1;
}

__global__ void forward_kernel(PackedSamples s, const int64_t* __restrict__ begin,
                               const int64_t* __restrict__ end, CompositeOut out) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= s.n_rays) return;
  composite_forward_ray(r, begin[r], end[r], s.sigmas, s.rgbs, s.t_starts, s.t_ends, out);
}

__global__ void backward_kernel(PackedSamples s, const int64_t* __restrict__ begin,
                                const int64_t* __restrict__ end, CompositeGrads grads,
                                const float* __restrict__ weights, const float* __restrict__ transmittance,
                                float* __restrict__ grad_sigmas, float* __restrict__ grad_rgbs) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= s.n_rays) return;
  composite_backward_ray(r, begin[r], end[r], grads, s.sigmas, s.rgbs, s.t_starts, s.t_ends, weights,
                         transmittance, grad_sigmas, grad_rgbs);
}

void ranges(const PackedSamples& s, int64_t* begin, int64_t* end, cudaStream_t stream) {
  if (s.n_samples == 0) return;
  ray_ranges_kernel<<<blocks_for(s.n_samples), kThreads, 0, stream>>>(s.ray_indices, s.n_samples, s.n_rays,
                                                                       begin, end);
  check(cudaGetLastError(), "composite ray ranges");
}

}  // namespace

void composite_forward_cuda(const PackedSamples& s, int64_t* begin, int64_t* end, CompositeOut out, void* stream) {
  auto st = static_cast<cudaStream_t>(stream);
  ranges(s, begin, end, st);
  if (s.n_rays == 0) return;
  forward_kernel<<<blocks_for(s.n_rays), kThreads, 0, st>>>(s, begin, end, out);
  check(cudaGetLastError(), "composite_forward_cuda");
}

void composite_backward_cuda(const PackedSamples& s, int64_t* begin, int64_t* end, CompositeGrads grads,
                             const float* weights, const float* transmittance, float* grad_sigmas,
                             float* grad_rgbs, void* stream) {
  auto st = static_cast<cudaStream_t>(stream);
  ranges(s, begin, end, st);
  if (s.n_rays == 0) return;
  backward_kernel<<<blocks_for(s.n_rays), kThreads, 0, st>>>(s, begin, end, grads, weights, transmittance,
                                                              grad_sigmas, grad_rgbs);
  check(cudaGetLastError(), "composite_backward_cuda");
}

}  // namespace nerf_native
