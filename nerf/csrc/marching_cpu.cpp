// OpenMP CPU kernels of occupancy-grid ray marching: one ray per iteration, rays in parallel.
#include "marching_kernels.h"

namespace nerf_native {

void march_count_cpu(const MarchRays& m, const GridView& g, int64_t* kept) {
#pragma omp parallel for schedule(dynamic, 64)
  for (int64_t r = 0; r < m.n; ++r) kept[r] = march_count_ray(m, g, r);
}

void march_fill_cpu(const MarchRays& m, const GridView& g, const int64_t* offsets, int64_t first_ray,
                    int64_t* ray_indices, float* t_starts, float* t_ends) {
#pragma omp parallel for schedule(dynamic, 64)
  for (int64_t r = 0; r < m.n; ++r) march_fill_ray(m, g, r, offsets[r], first_ray, ray_indices, t_starts, t_ends);
}

}  // namespace nerf_native
