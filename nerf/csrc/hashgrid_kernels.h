// Plain C++ launch API of the hash-grid kernels (no torch types: the CUDA side compiles with nvcc alone).
// Arrays are contiguous float32: x (n, 3), table (rows, F), out / grad_out (n, L*F) level-major,
// grad_table (rows, F) zero-filled by the caller, grad_x (n, 3) or nullptr when not wanted.
#pragma once

#include <cstdint>

#include "hashgrid_math.h"

namespace nerf_native {

constexpr int kMaxFeatures = 8;

// With dy_dx (not nullptr), also each output's derivative along each axis, (n, L*F, 3): the input gradient is then
// grad_out @ dy_dx, with no second pass over the table.
void hash_encode_forward_cpu(const float* x, int64_t n, const float* table, const Levels& levels, int features,
                             float* out, float* dy_dx);
// Deterministic: each level is accumulated by one thread, points in order (bit-identical across runs and
// thread counts).
void hash_encode_backward_cpu(const float* grad_out, const float* x, int64_t n, const float* table,
                              const Levels& levels, int features, float* grad_table, float* grad_x);

// CUDA (stream is a cudaStream_t). dL/dtable uses float atomicAdd: not bit-reproducible between runs.
void hash_encode_forward_cuda(const float* x, int64_t n, const float* table, const Levels& levels, int features,
                              float* out, void* stream);
void hash_encode_backward_cuda(const float* grad_out, const float* x, int64_t n, const float* table,
                               const Levels& levels, int features, float* grad_table, float* grad_x, void* stream);

}  // namespace nerf_native

// Calls BODY with a compile-time constant `kF` equal to the runtime feature count (1..kMaxFeatures).
#define NERF_DISPATCH_FEATURES(features, ...)        \
  switch (features) {                                \
    case 1: { constexpr int kF = 1; __VA_ARGS__; } break; \
    case 2: { constexpr int kF = 2; __VA_ARGS__; } break; \
    case 3: { constexpr int kF = 3; __VA_ARGS__; } break; \
    case 4: { constexpr int kF = 4; __VA_ARGS__; } break; \
    case 5: { constexpr int kF = 5; __VA_ARGS__; } break; \
    case 6: { constexpr int kF = 6; __VA_ARGS__; } break; \
    case 7: { constexpr int kF = 7; __VA_ARGS__; } break; \
    case 8: { constexpr int kF = 8; __VA_ARGS__; } break; \
    default: break;                                  \
  }
