// OpenMP CPU kernel of occupancy-grid ray marching: one pass, chunks of rays in parallel, each chunk's samples
// gathered in its own buffers and then copied into place (the GPU counts, scans and fills instead).
#include <cstring>
#include <vector>

#include "marching_kernels.h"

namespace nerf_native {

namespace {

constexpr int64_t kRaysPerChunk = 256;

struct ChunkSamples {
  std::vector<int64_t> rays;
  std::vector<float> starts;
  std::vector<float> ends;
};

}  // namespace

void march_cpu(const MarchRays& m, const GridView& g, int64_t first_ray,
               const std::function<MarchOutput(int64_t)>& allocate) {
  const int64_t chunks = (m.n + kRaysPerChunk - 1) / kRaysPerChunk;
  std::vector<ChunkSamples> parts(static_cast<size_t>(chunks));
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t c = 0; c < chunks; ++c) {
    ChunkSamples& part = parts[static_cast<size_t>(c)];
    const int64_t end = (c + 1) * kRaysPerChunk < m.n ? (c + 1) * kRaysPerChunk : m.n;
    for (int64_t r = c * kRaysPerChunk; r < end; ++r) {
      march_ray(m, g, r, [&](float s, float e) {
        part.rays.push_back(first_ray + r);
        part.starts.push_back(s);
        part.ends.push_back(e);
      });
    }
  }
  std::vector<int64_t> offsets(static_cast<size_t>(chunks) + 1, 0);
  for (int64_t c = 0; c < chunks; ++c) offsets[c + 1] = offsets[c] + static_cast<int64_t>(parts[c].rays.size());
  const MarchOutput out = allocate(offsets[chunks]);
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < chunks; ++c) {
    const ChunkSamples& part = parts[static_cast<size_t>(c)];
    const size_t k = part.rays.size();
    if (k == 0) continue;
    std::memcpy(out.ray_indices + offsets[c], part.rays.data(), k * sizeof(int64_t));
    std::memcpy(out.t_starts + offsets[c], part.starts.data(), k * sizeof(float));
    std::memcpy(out.t_ends + offsets[c], part.ends.data(), k * sizeof(float));
  }
}

}  // namespace nerf_native
