// Per-sample maths of occupancy-grid ray marching into packed samples, shared by the CPU and CUDA kernels. The
// function is nerf/marching.py's `march_candidates` (the PyTorch reference), operation for operation in float32:
// sample k of a ray is [s, e] with s = t0 + k * step, e = min(s + step, t_far); it is kept when its mid-point
// o + d * (0.5 * (s + e)) lies in the aabb and in an occupied cell of the grid (every sample when no grid).
#pragma once

#include <cmath>
#include <cstdint>

#include "hashgrid_math.h"  // HD

namespace nerf_native {

// The occupancy grid: mask (R, R, R) over the box lo + [0, 1] * extent; mask == nullptr: everything occupied.
struct GridView {
  const bool* mask;
  int64_t resolution;
  float lo[3];
  float extent[3];  // hi - lo, as the reference computes it (float32)
};

// OccupancyGrid.occupied of one world point.
HD inline bool grid_occupied(const GridView& g, const float x[3]) {
  if (g.mask == nullptr) return true;
  const float r = static_cast<float>(g.resolution);
  int64_t ijk[3];
  for (int a = 0; a < 3; ++a) {
    const float unit = (x[a] - g.lo[a]) / g.extent[a];
    if (!(unit >= 0.f && unit <= 1.f)) return false;  // outside the aabb (or NaN)
    const int64_t c = static_cast<int64_t>(floorf(unit * r));
    ijk[a] = c < g.resolution ? c : g.resolution - 1;  // unit = 1 is the last cell
  }
  return g.mask[(ijk[0] * g.resolution + ijk[1]) * g.resolution + ijk[2]];
}

// Sample k of one ray: its interval and whether it is kept.
HD inline bool march_sample(const float* o, const float* d, float t0, float t_far, int64_t k, float step,
                            const GridView& g, float* start, float* end) {
  const float s = t0 + static_cast<float>(k) * step;
  const float next = s + step;
  const float e = next < t_far ? next : t_far;
  const float mid = 0.5f * (s + e);
  const float x[3] = {o[0] + d[0] * mid, o[1] + d[1] * mid, o[2] + d[2] * mid};
  *start = s;
  *end = e;
  return grid_occupied(g, x);
}

// The rays of one march: origins and directions (n, 3), first sample t0, exit t_far and candidate counts (n,).
struct MarchRays {
  const float* o;
  const float* d;
  const float* t0;
  const float* t_far;
  const int64_t* counts;
  int64_t n;
  float step;
};

// Kept samples of ray r.
HD inline int64_t march_count_ray(const MarchRays& m, const GridView& g, int64_t r) {
  int64_t kept = 0;
  float s, e;
  for (int64_t k = 0; k < m.counts[r]; ++k) {
    if (march_sample(m.o + 3 * r, m.d + 3 * r, m.t0[r], m.t_far[r], k, m.step, g, &s, &e)) ++kept;
  }
  return kept;
}

// Writes the kept samples of ray r from position `at` on: ray index first_ray + r, interval [s, e].
HD inline void march_fill_ray(const MarchRays& m, const GridView& g, int64_t r, int64_t at, int64_t first_ray,
                              int64_t* ray_indices, float* t_starts, float* t_ends) {
  float s, e;
  for (int64_t k = 0; k < m.counts[r]; ++k) {
    if (!march_sample(m.o + 3 * r, m.d + 3 * r, m.t0[r], m.t_far[r], k, m.step, g, &s, &e)) continue;
    ray_indices[at] = first_ray + r;
    t_starts[at] = s;
    t_ends[at] = e;
    ++at;
  }
}

}  // namespace nerf_native
