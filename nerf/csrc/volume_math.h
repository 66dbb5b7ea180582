// Per-ray maths of front-to-back volume compositing over packed samples (sorted by ray, then by t), shared by the
// CPU and CUDA kernels. The function is nerf/volume.py's `composite` (the PyTorch reference):
// tau_i = sigma_i (t_end_i - t_start_i), T_i = exp(-sum_{j<i} tau_j) (sum in double), alpha_i = 1 - exp(-tau_i),
// w_i = T_i alpha_i; per ray: rgb = sum w_i c_i, opacity = sum w_i, depth_sum = sum w_i (t_start_i + t_end_i) / 2.
#pragma once

#include <cstdint>

#include "hashgrid_math.h"  // HD

namespace nerf_native {

struct CompositeOut {
  float* weights;        // (S,)
  float* transmittance;  // (S,)
  float* rgb;            // (R, 3)
  float* depth_sum;      // (R,)
  float* opacity;        // (R,)
};

// Samples [begin, end) of ray r.
HD inline void composite_forward_ray(int64_t r, int64_t begin, int64_t end, const float* sigmas, const float* rgbs,
                                     const float* t_starts, const float* t_ends, CompositeOut out) {
  double acc = 0.0;
  float rgb[3] = {0.f, 0.f, 0.f}, depth = 0.f, opacity = 0.f;
  for (int64_t i = begin; i < end; ++i) {
    const float tau = sigmas[i] * (t_ends[i] - t_starts[i]);
    const float trans = expf(-static_cast<float>(acc));
    const float w = trans * (1.f - expf(-tau));
    acc += tau;
    out.weights[i] = w;
    out.transmittance[i] = trans;
    for (int c = 0; c < 3; ++c) rgb[c] += w * rgbs[3 * i + c];
    depth += w * (0.5f * (t_starts[i] + t_ends[i]));
    opacity += w;
  }
  for (int c = 0; c < 3; ++c) out.rgb[3 * r + c] = rgb[c];
  out.depth_sum[r] = depth;
  out.opacity[r] = opacity;
}

struct CompositeGrads {
  const float* weights;      // (S,) or nullptr
  const float* rgb;          // (R, 3)
  const float* depth_sum;    // (R,)
  const float* opacity;      // (R,)
};

// dL/dsigma (S,) and dL/drgbs (S, 3) of ray r, given the forward's weights and transmittance.
// g_i = dL/dw_i (all paths); dL/dtau_i = g_i T_i (1 - alpha_i) - sum_{k>i} g_k w_k.
HD inline void composite_backward_ray(int64_t r, int64_t begin, int64_t end, CompositeGrads grads,
                                      const float* sigmas, const float* rgbs, const float* t_starts,
                                      const float* t_ends, const float* weights, const float* transmittance,
                                      float* grad_sigmas, float* grad_rgbs) {
  const float gr[3] = {grads.rgb[3 * r], grads.rgb[3 * r + 1], grads.rgb[3 * r + 2]};
  const float gd = grads.depth_sum[r], go = grads.opacity[r];
  auto g_of = [&](int64_t i) {
    float g = go + gd * (0.5f * (t_starts[i] + t_ends[i]));
    for (int c = 0; c < 3; ++c) g += gr[c] * rgbs[3 * i + c];
    if (grads.weights != nullptr) g += grads.weights[i];
    return g;
  };
  double total = 0.0;
  for (int64_t i = begin; i < end; ++i) total += static_cast<double>(g_of(i)) * weights[i];
  double prefix = 0.0;
  for (int64_t i = begin; i < end; ++i) {
    const float g = g_of(i), w = weights[i];
    prefix += static_cast<double>(g) * w;
    const float delta = t_ends[i] - t_starts[i];
    const float after = transmittance[i] * expf(-sigmas[i] * delta);  // T_{i+1}
    grad_sigmas[i] = (g * after - static_cast<float>(total - prefix)) * delta;
    for (int c = 0; c < 3; ++c) grad_rgbs[3 * i + c] = w * gr[c];
  }
}

}  // namespace nerf_native
