// Plain C++ launch API of the marching kernels (no torch types). CUDA: two passes, the kept-sample count of every
// ray, then (after an exclusive scan of the counts into `offsets`) the samples themselves, packed by ray. CPU: one
// pass into per-chunk buffers, then `allocate(total)` gives the packed outputs they are copied into.
#pragma once

#include <cstdint>
#include <functional>

#include "marching_math.h"

namespace nerf_native {

// The packed samples: ray index (first_ray + r), interval start and end.
struct MarchOutput {
  int64_t* ray_indices;
  float* t_starts;
  float* t_ends;
};

void march_cpu(const MarchRays& m, const GridView& g, int64_t first_ray,
               const std::function<MarchOutput(int64_t)>& allocate);

// CUDA (stream is a cudaStream_t).
void march_count_cuda(const MarchRays& m, const GridView& g, int64_t* kept, void* stream);
void march_fill_cuda(const MarchRays& m, const GridView& g, const int64_t* offsets, int64_t first_ray,
                     int64_t* ray_indices, float* t_starts, float* t_ends, void* stream);

}  // namespace nerf_native
