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

// OccupancyGrid.cell_indices of one world point: its flat cell index, or -1 outside the grid (or NaN).
HD inline int64_t grid_cell(const GridView& g, const float x[3]) {
  const float r = static_cast<float>(g.resolution);
  float units[3];
  unit_coords(g.box, g.contracted, x, units);
  int64_t ijk[3];
  for (int a = 0; a < 3; ++a) {
    const float unit = units[a];
    if (!(unit >= 0.f && unit <= 1.f)) return -1;
    const int64_t c = static_cast<int64_t>(floorf(unit * r));
    ijk[a] = c < g.resolution ? c : g.resolution - 1;  // unit = 1 is the last cell
  }
  return (ijk[0] * g.resolution + ijk[1]) * g.resolution + ijk[2];
}

// OccupancyGrid.occupied of one world point.
HD inline bool grid_occupied(const GridView& g, const float x[3]) {
  if (g.mask == nullptr) return true;
  const int64_t cell = grid_cell(g, x);
  return cell >= 0 && g.mask[cell];
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

// The cell (-1: outside the grid) of the mid-point of uniform sample k, computed as march_keep computes it.
HD inline int64_t uniform_cell(const float* o, const float* d, float t0, float step, float t_far, int64_t k,
                               const GridView& g) {
  const float s = t0 + static_cast<float>(k) * step;
  const float next = s + step;
  const float e = next < t_far ? next : t_far;
  const float mid = 0.5f * (s + e);
  const float x[3] = {o[0] + d[0] * mid, o[1] + d[1] * mid, o[2] + d[2] * mid};
  return grid_cell(g, x);
}

// Uniform marching, after sample k's mid-point fell in the empty cell `cell` of an uncontracted grid: the next
// sample worth testing. The geometric exit of the ray from the cell proposes the last sample j whose mid-point is
// still inside; it is skipped with k .. j when its mid-point, computed exactly as march_keep computes it, lies in
// the same cell. That is exact, not approximate: every float operation from k to the cell index (s, mid, x, the
// unit coordinate, floor) is monotonic in k, so the samples between two of the same cell are in that cell too.
HD inline int64_t skip_empty_cell(const float* o, const float* d, float t0, float step, float t_far, int64_t k,
                                  int64_t count, int64_t cell, const GridView& g) {
  const int64_t r = g.resolution;
  const int64_t ijk[3] = {cell / (r * r), (cell / r) % r, cell % r};
  float t_exit = INFINITY;
  for (int a = 0; a < 3; ++a) {
    if (d[a] == 0.f) continue;
    const float face = g.box.lo[a] + static_cast<float>(ijk[a] + (d[a] > 0.f ? 1 : 0)) * g.box.extent[a] /
                                         static_cast<float>(r);
    const float t = (face - o[a]) / d[a];
    t_exit = t < t_exit ? t : t_exit;
  }
  const float last = floorf((t_exit - t0) / step - 0.5f);  // mid-point t0 + (j + 1/2) step before the exit
  if (!(last > static_cast<float>(k + 1))) return k + 1;  // NaN included
  const int64_t j = last < static_cast<float>(count - 1) ? static_cast<int64_t>(last) : count - 1;
  return uniform_cell(o, d, t0, step, t_far, j, g) == cell ? j + 1 : k + 1;
}

// Calls emit(s, e) for every kept sample of ray r, in order.
template <typename Emit>
HD inline void march_ray(const MarchRays& m, const GridView& g, int64_t r, Emit emit) {
  const float* o = m.o + 3 * r;
  const float* d = m.d + 3 * r;
  const float t0 = m.t0[r], t_far = m.t_far[r];
  float e;
  if (m.rule.uniform()) {
    const float step = m.rule.step;
    const int64_t count = m.counts[r];
    if (g.mask == nullptr || g.contracted) {
      for (int64_t k = 0; k < count; ++k) {
        const float s = t0 + static_cast<float>(k) * step;
        if (march_keep(o, d, s, s + step, t_far, g, &e)) emit(s, e);
      }
      return;
    }
    for (int64_t k = 0; k < count;) {
      const int64_t cell = uniform_cell(o, d, t0, step, t_far, k, g);
      if (cell >= 0 && g.mask[cell]) {
        const float s = t0 + static_cast<float>(k) * step;
        const float next = s + step;
        emit(s, next < t_far ? next : t_far);
        ++k;
      } else {
        k = cell >= 0 ? skip_empty_cell(o, d, t0, step, t_far, k, count, cell, g) : k + 1;
      }
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
