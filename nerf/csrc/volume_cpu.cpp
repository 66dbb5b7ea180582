// OpenMP CPU kernels of volume compositing: one ray per iteration, rays in parallel.
#include <stdexcept>

#include "volume_kernels.h"

namespace nerf_native {

namespace {

void ray_ranges(const PackedSamples& s, int64_t* begin, int64_t* end) {
  for (int64_t i = 0; i < s.n_samples; ++i) {
    const int64_t r = s.ray_indices[i];
    if (r < 0 || r >= s.n_rays) throw std::invalid_argument("composite: ray index outside [0, n_rays)");
    if (i > 0 && r < s.ray_indices[i - 1]) throw std::invalid_argument("composite: ray_indices not sorted");
    if (i == 0 || s.ray_indices[i - 1] != r) begin[r] = i;
    end[r] = i + 1;
  }
}

}  // namespace

void composite_forward_cpu(const PackedSamples& s, int64_t* begin, int64_t* end, CompositeOut out) {
  ray_ranges(s, begin, end);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < s.n_rays; ++r) {
    composite_forward_ray(r, begin[r], end[r], s.sigmas, s.rgbs, s.t_starts, s.t_ends, out);
  }
}

void composite_backward_cpu(const PackedSamples& s, int64_t* begin, int64_t* end, CompositeGrads grads,
                            const float* weights, const float* transmittance, float* grad_sigmas,
                            float* grad_rgbs) {
  ray_ranges(s, begin, end);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < s.n_rays; ++r) {
    composite_backward_ray(r, begin[r], end[r], grads, s.sigmas, s.rgbs, s.t_starts, s.t_ends, weights,
                           transmittance, grad_sigmas, grad_rgbs);
  }
}

}  // namespace nerf_native
