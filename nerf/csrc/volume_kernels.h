// Plain C++ launch API of the compositing kernels (no torch types). Samples are packed and sorted by ray;
// ray_indices (S,) int64 in [0, R). begin/end (R,) int64 are scratch arrays, zero-filled by the caller.
#pragma once

#include <cstdint>

#include "volume_math.h"

namespace nerf_native {

struct PackedSamples {
  const float* sigmas;       // (S,)
  const float* rgbs;         // (S, 3)
  const float* t_starts;     // (S,)
  const float* t_ends;       // (S,)
  const int64_t* ray_indices;  // (S,)
  int64_t n_samples;
  int64_t n_rays;
};

// CPU: throws std::invalid_argument when ray_indices are not sorted or out of [0, R).
void composite_forward_cpu(const PackedSamples& s, int64_t* begin, int64_t* end, CompositeOut out);
void composite_backward_cpu(const PackedSamples& s, int64_t* begin, int64_t* end, CompositeGrads grads,
                            const float* weights, const float* transmittance, float* grad_sigmas,
                            float* grad_rgbs);

// CUDA (stream is a cudaStream_t); ray indices outside [0, R) are skipped, unsorted ones give wrong sums.
void composite_forward_cuda(const PackedSamples& s, int64_t* begin, int64_t* end, CompositeOut out, void* stream);
void composite_backward_cuda(const PackedSamples& s, int64_t* begin, int64_t* end, CompositeGrads grads,
                             const float* weights, const float* transmittance, float* grad_sigmas,
                             float* grad_rgbs, void* stream);

}  // namespace nerf_native
