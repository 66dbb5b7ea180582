// Plain C++ launch API of the marching kernels (no torch types). Two passes: the kept-sample count of every
// ray, then (after an exclusive scan of the counts into `offsets`) the samples themselves, packed by ray.
#pragma once

#include <cstdint>

#include "marching_math.h"

namespace nerf_native {

void march_count_cpu(const MarchRays& m, const GridView& g, int64_t* kept);
void march_fill_cpu(const MarchRays& m, const GridView& g, const int64_t* offsets, int64_t first_ray,
                    int64_t* ray_indices, float* t_starts, float* t_ends);

// CUDA (stream is a cudaStream_t).
void march_count_cuda(const MarchRays& m, const GridView& g, int64_t* kept, void* stream);
void march_fill_cuda(const MarchRays& m, const GridView& g, const int64_t* offsets, int64_t first_ray,
                     int64_t* ray_indices, float* t_starts, float* t_ends, void* stream);

}  // namespace nerf_native
