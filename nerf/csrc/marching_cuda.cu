// CUDA kernels of occupancy-grid ray marching (one thread per ray); maths in marching_math.h. No torch headers.
#include "cuda_launch.cuh"
#include "marching_kernels.h"

namespace nerf_native {

namespace {

__global__ void count_kernel(MarchRays m, GridView g, int64_t* __restrict__ kept) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r < m.n) kept[r] = march_count_ray(m, g, r);
}

__global__ void fill_kernel(MarchRays m, GridView g, const int64_t* __restrict__ offsets, int64_t first_ray,
                            int64_t* __restrict__ ray_indices, float* __restrict__ t_starts,
                            float* __restrict__ t_ends) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r < m.n) march_fill_ray(m, g, r, offsets[r], first_ray, ray_indices, t_starts, t_ends);
}

}  // namespace

void march_count_cuda(const MarchRays& m, const GridView& g, int64_t* kept, void* stream) {
  if (m.n == 0) return;
  count_kernel<<<blocks_for(m.n), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(m, g, kept);
  check(cudaGetLastError(), "march_count_cuda");
}

void march_fill_cuda(const MarchRays& m, const GridView& g, const int64_t* offsets, int64_t first_ray,
                     int64_t* ray_indices, float* t_starts, float* t_ends, void* stream) {
  if (m.n == 0) return;
  fill_kernel<<<blocks_for(m.n), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(m, g, offsets, first_ray,
                                                                                   ray_indices, t_starts, t_ends);
  check(cudaGetLastError(), "march_fill_cuda");
}

}  // namespace nerf_native
