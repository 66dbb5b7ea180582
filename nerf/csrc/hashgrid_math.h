// Per-point maths of the multiresolution hash encoding, shared by the CPU (OpenMP) and CUDA kernels.
// The function is the one of nerf/hashgrid.py (the PyTorch reference, tiny-cuda-nn's HashGrid); see its docstring.
#pragma once

#include <cmath>
#include <cstdint>

#ifdef __CUDACC__
#define HD __host__ __device__
#else
#define HD
#endif

namespace nerf_native {

constexpr int kMaxLevels = 32;
constexpr uint32_t kPrimeY = 2654435761u;
constexpr uint32_t kPrimeZ = 805459861u;

struct Level {
  float scale;          // s_l: vertex coordinates are p * s_l + 0.5
  uint32_t resolution;  // R_l = ceil(s_l) + 1 vertices per axis
  uint64_t size;        // entries of the level: R_l^3 rounded up to a multiple of 8 when dense, T when hashed
  int64_t offset;       // first row of the level in the shared table
  uint32_t hashed;      // 1: hashed, 0: dense
};

// All levels, passed by value (fits a CUDA kernel's parameter space).
struct Levels {
  Level lv[kMaxLevels];
  int count;
};

// p * s + 0.5 as a product then a sum, each rounded, exactly as the reference's float32 ops: the sources are
// compiled without fused multiply-adds (-ffp-contract=off, nvcc --fmad=false; see CMakeLists.txt).
HD inline float grid_pos(float p, float scale) { return p * scale + 0.5f; }

// NaN -> 0 (as the reference's nan_to_num): a NaN must never become a vertex index.
HD inline float clamp01(float v) { return v > 0.f ? (v < 1.f ? v : 1.f) : 0.f; }

// The cell of one point on one level: lower/upper vertex per axis and the fractional position.
struct Cell {
  uint32_t lo[3];
  uint32_t hi[3];
  float frac[3];
  float dfrac_dx[3];  // s_l inside [0, 1] (bounds included, as torch.clamp), 0 outside
};

HD inline Cell locate(const float* p, const Level& level) {
  Cell c;
  for (int d = 0; d < 3; ++d) {
    const float v = p[d];
    const float pos = grid_pos(clamp01(v), level.scale);
    const float lower = floorf(pos);
    c.lo[d] = static_cast<uint32_t>(lower);
    c.hi[d] = c.lo[d] + 1;  // may be R_l on the upper faces: its index wraps around, as in tcnn
    c.frac[d] = pos - lower;
    c.dfrac_dx[d] = (v >= 0.f && v <= 1.f) ? level.scale : 0.f;
  }
  return c;
}

// Row of vertex (x, y, z) inside its level (add Level::offset for the table row).
HD inline uint64_t vertex_index(uint32_t x, uint32_t y, uint32_t z, const Level& level) {
  if (level.hashed) {
    const uint32_t h = x ^ (y * kPrimeY) ^ (z * kPrimeZ);  // uint32 arithmetic: mod 2^32
    return static_cast<uint64_t>(h) & (level.size - 1);    // mod T, a power of two
  }
  const uint64_t side = level.resolution;
  const uint64_t i = x + side * (y + side * static_cast<uint64_t>(z));
  return i < level.size ? i : i % level.size;  // only vertices on the upper faces wrap around
}

// Corner c = 4*bx + 2*by + bz (the reference's order): its table row and trilinear weight.
HD inline int64_t corner_row(const Cell& cell, int c, const Level& level) {
  const uint32_t x = (c & 4) ? cell.hi[0] : cell.lo[0];
  const uint32_t y = (c & 2) ? cell.hi[1] : cell.lo[1];
  const uint32_t z = (c & 1) ? cell.hi[2] : cell.lo[2];
  return level.offset + static_cast<int64_t>(vertex_index(x, y, z, level));
}

HD inline float axis_weight(const Cell& cell, int d, int bit) { return bit ? cell.frac[d] : 1.f - cell.frac[d]; }

HD inline float corner_weight(const Cell& cell, int c) {
  return axis_weight(cell, 0, c & 4) * axis_weight(cell, 1, c & 2) * axis_weight(cell, 2, c & 1);
}

// d weight / d frac_d for corner c.
HD inline void corner_weight_grad(const Cell& cell, int c, float g[3]) {
  const float wx = axis_weight(cell, 0, c & 4), wy = axis_weight(cell, 1, c & 2), wz = axis_weight(cell, 2, c & 1);
  g[0] = ((c & 4) ? 1.f : -1.f) * wy * wz;
  g[1] = ((c & 2) ? 1.f : -1.f) * wx * wz;
  g[2] = ((c & 1) ? 1.f : -1.f) * wx * wy;
}

// The 8 table rows and trilinear weights of one point on one level, corners in order; returns its cell.
HD inline Cell point_corners(const float* p, const Level& level, int64_t rows[8], float weights[8]) {
  const Cell cell = locate(p, level);
  for (int c = 0; c < 8; ++c) {
    rows[c] = corner_row(cell, c, level);
    weights[c] = corner_weight(cell, c);
  }
  return cell;
}

// out[f] = sum_c weights[c] * table[rows[c], f], corners in order.
template <int F>
HD inline void interpolate(const int64_t rows[8], const float weights[8], const float* table, float* out) {
  float acc[F];
  for (int f = 0; f < F; ++f) acc[f] = 0.f;
  for (int c = 0; c < 8; ++c) {
    const float* row = table + rows[c] * F;
    for (int f = 0; f < F; ++f) acc[f] += weights[c] * row[f];
  }
  for (int f = 0; f < F; ++f) out[f] = acc[f];
}

// interpolate<F>, and the derivatives of out[f] along the three axes: dy_dx[3 * f + d] =
// sum_c table[row_c, f] * (d w_c / d frac_d) * (d frac_d / d x_d), the point located in `cell`.
template <int F>
HD inline void interpolate_dx(const Cell& cell, const int64_t rows[8], const float weights[8], const float* table,
                              float* out, float* dy_dx) {
  float acc[F], dacc[F][3];
  for (int f = 0; f < F; ++f) acc[f] = dacc[f][0] = dacc[f][1] = dacc[f][2] = 0.f;
  for (int c = 0; c < 8; ++c) {
    const float* row = table + rows[c] * F;
    float g[3];
    corner_weight_grad(cell, c, g);
    for (int f = 0; f < F; ++f) {
      acc[f] += weights[c] * row[f];
      for (int d = 0; d < 3; ++d) dacc[f][d] += row[f] * g[d];
    }
  }
  for (int f = 0; f < F; ++f) {
    out[f] = acc[f];
    for (int d = 0; d < 3; ++d) dy_dx[3 * f + d] = dacc[f][d] * cell.dfrac_dx[d];
  }
}

// Forward of one point on one level: out[f] = sum_c w_c * table[row_c, f].
template <int F>
HD inline void forward_point_level(const float* p, const float* table, const Level& level, float* out) {
  int64_t rows[8];
  float weights[8];
  point_corners(p, level, rows, weights);
  interpolate<F>(rows, weights, table, out);
}

// Backward scatter of one point on one level into dL/dtable; `add(ptr, value)` does the accumulation
// (a plain += on the CPU where one thread owns the level, atomicAdd on the GPU).
template <int F, typename Add>
HD inline void scatter(const int64_t rows[8], const float weights[8], const float* grad_out, float* grad_table,
                       Add add) {
  for (int c = 0; c < 8; ++c) {
    float* row = grad_table + rows[c] * F;
    for (int f = 0; f < F; ++f) add(row + f, weights[c] * grad_out[f]);
  }
}

template <int F, typename Add>
HD inline void backward_point_level(const float* p, const float* grad_out, const Level& level, float* grad_table,
                                    Add add) {
  int64_t rows[8];
  float weights[8];
  point_corners(p, level, rows, weights);
  scatter<F>(rows, weights, grad_out, grad_table, add);
}

// dL/dx of one point from one level, located in `cell`, whose corners' table rows are rows[8] (corners in
// order), added to gx[3].
template <int F>
HD inline void input_grad(const Cell& cell, const int64_t rows[8], const float* grad_out, const float* table,
                          float gx[3]) {
  for (int c = 0; c < 8; ++c) {
    const float* row = table + rows[c] * F;
    float dot = 0.f;
    for (int f = 0; f < F; ++f) dot += grad_out[f] * row[f];
    float g[3];
    corner_weight_grad(cell, c, g);
    for (int d = 0; d < 3; ++d) gx[d] += dot * g[d] * cell.dfrac_dx[d];
  }
}

// dL/dx of one point from one level, added to gx[3].
template <int F>
HD inline void input_grad_point_level(const float* p, const float* grad_out, const float* table, const Level& level,
                                      float gx[3]) {
  const Cell cell = locate(p, level);
  int64_t rows[8];
  for (int c = 0; c < 8; ++c) rows[c] = corner_row(cell, c, level);
  input_grad<F>(cell, rows, grad_out, table, gx);
}

}  // namespace nerf_native
