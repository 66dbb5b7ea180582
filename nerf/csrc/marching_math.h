// Per-sample maths of occupancy-grid ray marching into packed samples, shared by the CPU and CUDA kernels. The
// function is nerf/marching.py's `march_candidates` (the PyTorch reference), operation for operation in float32:
// with a uniform step, sample k of a ray is [s, e] with s = t0 + k * step, e = min(s + step, t_far); otherwise
// (StepRule: a cone angle, a contraction) s starts at t0 and moves on by dt(s) while s < t_far. A sample is kept
// when its mid-point o + d * (0.5 * (s + e)) lies in an occupied cell of the grid (every sample when no grid).
// The contraction is nerf/contraction.py's (mip-NeRF 360's, L-infinity norm), operation for operation.
#pragma once

#include <cmath>
#include <cstdint>

#include "hashgrid_math.h"  // HD

namespace nerf_native {

// A box lo + [0, 1] * extent; extent = hi - lo, as the reference computes it (float32).
struct Box {
  float lo[3];
  float extent[3];
};

// contraction.box_coords of one point: u in [-1, 1] inside the box; returns n = max |u_a| (box_norm).
HD inline float box_coords(const Box& b, const float x[3], float u[3]) {
  float n = 0.f;
  for (int a = 0; a < 3; ++a) {
    u[a] = (x[a] - b.lo[a]) / b.extent[a] * 2.f - 1.f;
    const float m = fabsf(u[a]);
    n = m > n ? m : n;
  }
  return n;
}

// contraction.unit_coords of one point (contracted or not).
HD inline void unit_coords(const Box& b, bool contracted, const float x[3], float unit[3]) {
  if (!contracted) {
    for (int a = 0; a < 3; ++a) unit[a] = (x[a] - b.lo[a]) / b.extent[a];
    return;
  }
  float u[3];
  const float n = box_coords(b, x, u);
  for (int a = 0; a < 3; ++a) {
    const float c = n <= 1.f ? u[a] : (2.f - 1.f / n) * (u[a] / n);
    unit[a] = c * 0.25f + 0.5f;
  }
}

// The occupancy grid: mask (R, R, R) over the unit coordinates of box; mask == nullptr: everything occupied.
struct GridView {
  const bool* mask;
  int64_t resolution;
  Box box;
  bool contracted;
};

// OccupancyGrid.occupied of one world point.
HD inline bool grid_occupied(const GridView& g, const float x[3]) {
  if (g.mask == nullptr) return true;
  const float r = static_cast<float>(g.resolution);
  float units[3];
  unit_coords(g.box, g.contracted, x, units);
  int64_t ijk[3];
  for (int a = 0; a < 3; ++a) {
    const float unit = units[a];
    if (!(unit >= 0.f && unit <= 1.f)) return false;  // outside the grid (or NaN)
    const int64_t c = static_cast<int64_t>(floorf(unit * r));
    ijk[a] = c < g.resolution ? c : g.resolution - 1;  // unit = 1 is the last cell
  }
  return g.mask[(ijk[0] * g.resolution + ijk[1]) * g.resolution + ijk[2]];
}

// StepRule: dt = clamp(t * cone_angle, step, max_step), times n^2 (n >= 1) outside the box when contracted.
struct StepRule {
  float step;
  float cone_angle;
  float max_step;
  bool contracted;
  Box box;
  HD bool uniform() const { return cone_angle == 0.f && !contracted; }
};

HD inline float step_length(const StepRule& rule, const float* o, const float* d, float t) {
  const float grown = t * rule.cone_angle;
  const float lower = grown < rule.step ? rule.step : grown;
  float dt = lower > rule.max_step ? rule.max_step : lower;
  if (rule.contracted) {
    const float x[3] = {o[0] + d[0] * t, o[1] + d[1] * t, o[2] + d[2] * t};
    float u[3];
    float n = box_coords(rule.box, x, u);
    n = n < 1.f ? 1.f : n;
    dt = dt * (n * n);
  }
  return dt;
}

// The sample [s, min(next, t_far)] of one ray: whether it is kept.
HD inline bool march_keep(const float* o, const float* d, float s, float next, float t_far, const GridView& g,
                          float* end) {
  const float e = next < t_far ? next : t_far;
  const float mid = 0.5f * (s + e);
  const float x[3] = {o[0] + d[0] * mid, o[1] + d[1] * mid, o[2] + d[2] * mid};
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
  StepRule rule;
};

// Calls emit(s, e) for every kept sample of ray r, in order.
template <typename Emit>
HD inline void march_ray(const MarchRays& m, const GridView& g, int64_t r, Emit emit) {
  const float* o = m.o + 3 * r;
  const float* d = m.d + 3 * r;
  const float t0 = m.t0[r], t_far = m.t_far[r];
  float e;
  if (m.rule.uniform()) {
    for (int64_t k = 0; k < m.counts[r]; ++k) {
      const float s = t0 + static_cast<float>(k) * m.rule.step;
      if (march_keep(o, d, s, s + m.rule.step, t_far, g, &e)) emit(s, e);
    }
    return;
  }
  float s = t0;
  for (int64_t k = 0; k < m.counts[r] && s < t_far; ++k) {
    const float next = s + step_length(m.rule, o, d, s);
    if (march_keep(o, d, s, next, t_far, g, &e)) emit(s, e);
    s = next;
  }
}

// Kept samples of ray r.
HD inline int64_t march_count_ray(const MarchRays& m, const GridView& g, int64_t r) {
  int64_t kept = 0;
  march_ray(m, g, r, [&kept](float, float) { ++kept; });
  return kept;
}

// Writes the kept samples of ray r from position `at` on: ray index first_ray + r, interval [s, e].
HD inline void march_fill_ray(const MarchRays& m, const GridView& g, int64_t r, int64_t at, int64_t first_ray,
                              int64_t* ray_indices, float* t_starts, float* t_ends) {
  march_ray(m, g, r, [&](float s, float e) {
    ray_indices[at] = first_ray + r;
    t_starts[at] = s;
    t_ends[at] = e;
    ++at;
  });
}

}  // namespace nerf_native
