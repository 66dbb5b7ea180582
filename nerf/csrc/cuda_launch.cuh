// Launch helpers shared by the CUDA sources: block size, grid size and the error check after each launch.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

namespace nerf_native {

constexpr int kThreads = 256;

// Throws (with `what`) when a CUDA call or the last launch failed.
inline void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
}

// Blocks of kThreads covering n threads.
inline unsigned blocks_for(int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

}  // namespace nerf_native
