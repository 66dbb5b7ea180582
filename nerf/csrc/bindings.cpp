// torch.ops.nerf_native.{hash_encode,composite}_{forward,backward} and march_samples: validation, allocation and
// dispatch to the kernels. Built twice: without NERF_WITH_CUDA it defines the ops with their CPU and Meta kernels
// (libnerf_native.so); with it, it registers their CUDA kernels alone (libnerf_native_cuda.so, loaded on top).
// Loaded from Python with torch.ops.load_library; no Python linkage.
#include <ATen/ATen.h>
#include <torch/library.h>

#ifdef NERF_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include <cmath>
#include <stdexcept>

#include "hashgrid_kernels.h"
#include "marching_kernels.h"
#include "volume_kernels.h"

namespace nerf_native {

namespace {

// The levels of a layout that nerf.hashgrid.GridLayout validated on the host (resolution = ceil(scale) + 1, dense
// levels at least R^3 rows, hashed ones table_size rows, all inside the table): only its form is checked here.
Levels make_levels(const at::Tensor& table, const at::Tensor& offsets, const at::Tensor& scales, int64_t table_size) {
  const int64_t count = scales.numel();
  TORCH_CHECK(count >= 1 && count <= kMaxLevels, "nerf_native: need 1..", kMaxLevels, " levels, got ", count);
  TORCH_CHECK(scales.dim() == 1 && scales.scalar_type() == at::kFloat && scales.device().is_cpu() &&
                  offsets.dim() == 1 && offsets.numel() == count + 1 && offsets.scalar_type() == at::kLong &&
                  offsets.device().is_cpu(),
              "nerf_native: a layout is (L + 1,) int64 offsets and (L,) float32 scales on the CPU");
  const at::Tensor off = offsets.contiguous(), sc = scales.contiguous();
  const int64_t* o = off.data_ptr<int64_t>();
  const float* s = sc.data_ptr<float>();
  TORCH_CHECK(o[count] == table.size(0), "nerf_native: the layout has ", o[count], " rows, the table ",
              table.size(0));
  Levels levels{};
  levels.count = static_cast<int>(count);
  for (int64_t l = 0; l < count; ++l) {
    const auto res = static_cast<uint64_t>(std::ceil(s[l])) + 1;
    const uint32_t hashed = res * res * res > static_cast<uint64_t>(table_size) ? 1u : 0u;
    levels.lv[l] = Level{s[l], static_cast<uint32_t>(res), static_cast<uint64_t>(o[l + 1] - o[l]), o[l], hashed};
  }
  return levels;
}

void check_inputs(const at::Tensor& x, const at::Tensor& table, int64_t features) {
  TORCH_CHECK(x.dim() == 2 && x.size(1) == 3, "nerf_native: x must be (N, 3), got ", x.sizes());
  TORCH_CHECK(table.dim() == 2 && table.size(1) == features, "nerf_native: table must be (rows, ", features,
              "), got ", table.sizes());
  TORCH_CHECK(features >= 1 && features <= kMaxFeatures, "nerf_native: features must be in 1..", kMaxFeatures);
  TORCH_CHECK(x.scalar_type() == at::kFloat && table.scalar_type() == at::kFloat,
              "nerf_native: x and table must be float32, got ", x.scalar_type(), " and ", table.scalar_type());
  TORCH_CHECK(x.device() == table.device(), "nerf_native: x and table on different devices");
}

// The encoding (N, L*F) and, with `with_dx` (on the CPU: CUDA's backward computes the input gradient from the
// table), each output's derivative along each axis, (N, L*F, 3); else an empty (0, L*F, 3).
std::tuple<at::Tensor, at::Tensor> encode(const at::Tensor& x_in, const at::Tensor& table_in,
                                          const at::Tensor& offsets, const at::Tensor& scales, int64_t table_size,
                                          bool with_dx) {
  const int64_t features = table_in.size(-1);
  check_inputs(x_in, table_in, features);
  TORCH_CHECK(!(with_dx && x_in.is_cuda()), "nerf_native: hash_encode_forward_dx runs on the CPU only");
  const at::Tensor x = x_in.contiguous(), table = table_in.contiguous();
  const Levels levels = make_levels(table, offsets, scales, table_size);
  const int64_t n = x.size(0);
  at::Tensor out = at::empty({n, levels.count * features}, table.options());
  at::Tensor dy_dx = at::empty({with_dx ? n : 0, levels.count * features, 3}, table.options());
  if (x.is_cuda()) {
#ifdef NERF_WITH_CUDA
    const c10::cuda::CUDAGuard guard(x.device());
    hash_encode_forward_cuda(x.data_ptr<float>(), n, table.data_ptr<float>(), levels, static_cast<int>(features),
                             out.data_ptr<float>(), c10::cuda::getCurrentCUDAStream().stream());
#endif
  } else {
    hash_encode_forward_cpu(x.data_ptr<float>(), n, table.data_ptr<float>(), levels, static_cast<int>(features),
                            out.data_ptr<float>(), with_dx ? dy_dx.data_ptr<float>() : nullptr);
  }
  return {out, dy_dx};
}

at::Tensor forward_impl(const at::Tensor& x, const at::Tensor& table, const at::Tensor& offsets,
                        const at::Tensor& scales, int64_t table_size) {
  return std::get<0>(encode(x, table, offsets, scales, table_size, false));
}

#ifndef NERF_WITH_CUDA
std::tuple<at::Tensor, at::Tensor> forward_dx_impl(const at::Tensor& x, const at::Tensor& table,
                                                   const at::Tensor& offsets, const at::Tensor& scales,
                                                   int64_t table_size) {
  return encode(x, table, offsets, scales, table_size, true);
}
#endif

std::tuple<at::Tensor, at::Tensor> backward_impl(const at::Tensor& grad_out_in, const at::Tensor& x_in,
                                                 const at::Tensor& table_in, const at::Tensor& offsets,
                                                 const at::Tensor& scales, int64_t table_size, bool input_grad) {
  const int64_t features = table_in.size(-1);
  check_inputs(x_in, table_in, features);
  const at::Tensor x = x_in.contiguous(), table = table_in.contiguous();
  const Levels levels = make_levels(table, offsets, scales, table_size);
  const int64_t n = x.size(0);
  TORCH_CHECK(grad_out_in.sizes() == at::IntArrayRef({n, levels.count * features}),
              "nerf_native: grad_out must be (N, L*F), got ", grad_out_in.sizes());
  const at::Tensor grad_out = grad_out_in.to(table.options()).contiguous();
  at::Tensor grad_table = at::zeros_like(table);
  at::Tensor grad_x = input_grad ? at::empty_like(x) : at::empty({0, 3}, x.options());
  float* gx = input_grad ? grad_x.data_ptr<float>() : nullptr;
  if (x.is_cuda()) {
#ifdef NERF_WITH_CUDA
    const c10::cuda::CUDAGuard guard(x.device());
    hash_encode_backward_cuda(grad_out.data_ptr<float>(), x.data_ptr<float>(), n, table.data_ptr<float>(), levels,
                              static_cast<int>(features), grad_table.data_ptr<float>(), gx,
                              c10::cuda::getCurrentCUDAStream().stream());
#endif
  } else {
    hash_encode_backward_cpu(grad_out.data_ptr<float>(), x.data_ptr<float>(), n, table.data_ptr<float>(), levels,
                             static_cast<int>(features), grad_table.data_ptr<float>(), gx);
  }
  return {grad_table, grad_x};
}

#ifndef NERF_WITH_CUDA
// Shapes only (torch.compile's fake tensors).
at::Tensor forward_meta(const at::Tensor& x, const at::Tensor& table, const at::Tensor&, const at::Tensor& scales,
                        int64_t) {
  // SymInt-aware, so that torch.compile's dynamic shapes trace through it.
  return at::empty_symint({x.sym_size(0), scales.sym_numel() * table.sym_size(-1)}, table.options());
}

std::tuple<at::Tensor, at::Tensor> forward_dx_meta(const at::Tensor& x, const at::Tensor& table,
                                                   const at::Tensor& offsets, const at::Tensor& scales,
                                                   int64_t table_size) {
  const at::Tensor out = forward_meta(x, table, offsets, scales, table_size);
  return {out, at::empty_symint({out.sym_size(0), out.sym_size(1), 3}, table.options())};
}

std::tuple<at::Tensor, at::Tensor> backward_meta(const at::Tensor&, const at::Tensor& x, const at::Tensor& table,
                                                 const at::Tensor&, const at::Tensor&, int64_t, bool input_grad) {
  return {at::empty_like(table), input_grad ? at::empty_like(x) : at::empty_symint({0, 3}, x.options())};
}
#endif

void check_samples(const at::Tensor& sigmas, const at::Tensor& rgbs, const at::Tensor& t_starts,
                   const at::Tensor& t_ends, const at::Tensor& ray_indices) {
  TORCH_CHECK(sigmas.dim() == 1 && t_starts.sizes() == sigmas.sizes() && t_ends.sizes() == sigmas.sizes() &&
                  ray_indices.sizes() == sigmas.sizes(),
              "nerf_native: sigmas, t_starts, t_ends and ray_indices must all be (S,)");
  const int64_t s = sigmas.size(0);
  TORCH_CHECK(rgbs.dim() == 2 && rgbs.size(0) == s && rgbs.size(1) == 3, "nerf_native: rgbs must be (S, 3)");
  for (const at::Tensor* t : {&sigmas, &rgbs, &t_starts, &t_ends}) {
    TORCH_CHECK(t->scalar_type() == at::kFloat, "nerf_native: composite takes float32 samples");
    TORCH_CHECK(t->device() == sigmas.device(), "nerf_native: composite inputs on different devices");
  }
  TORCH_CHECK(ray_indices.scalar_type() == at::kLong && ray_indices.device() == sigmas.device(),
              "nerf_native: ray_indices must be int64 on the samples' device");
}

PackedSamples packed(const at::Tensor& sigmas, const at::Tensor& rgbs, const at::Tensor& t_starts,
                     const at::Tensor& t_ends, const at::Tensor& ray_indices, int64_t n_rays) {
  return PackedSamples{sigmas.data_ptr<float>(), rgbs.data_ptr<float>(), t_starts.data_ptr<float>(),
                       t_ends.data_ptr<float>(), ray_indices.data_ptr<int64_t>(), sigmas.size(0), n_rays};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> composite_forward_impl(
    const at::Tensor& sigmas_in, const at::Tensor& rgbs_in, const at::Tensor& t_starts_in,
    const at::Tensor& t_ends_in, const at::Tensor& ray_indices_in, int64_t n_rays) {
  check_samples(sigmas_in, rgbs_in, t_starts_in, t_ends_in, ray_indices_in);
  TORCH_CHECK(n_rays >= 0, "nerf_native: n_rays must be >= 0");
  const at::Tensor sigmas = sigmas_in.contiguous(), rgbs = rgbs_in.contiguous(), t_starts = t_starts_in.contiguous(),
                   t_ends = t_ends_in.contiguous(), ray_indices = ray_indices_in.contiguous();
  const PackedSamples s = packed(sigmas, rgbs, t_starts, t_ends, ray_indices, n_rays);
  // Zero-filled: the CUDA kernels skip samples whose ray index is out of order instead of raising.
  at::Tensor weights = at::zeros_like(sigmas), transmittance = at::zeros_like(sigmas);
  at::Tensor rgb = at::empty({n_rays, 3}, sigmas.options()), depth_sum = at::empty({n_rays}, sigmas.options()),
             opacity = at::empty({n_rays}, sigmas.options());
  at::Tensor ranges = at::zeros({2, n_rays}, ray_indices.options());
  int64_t* begin = ranges.data_ptr<int64_t>();
  const CompositeOut out{weights.data_ptr<float>(), transmittance.data_ptr<float>(), rgb.data_ptr<float>(),
                         depth_sum.data_ptr<float>(), opacity.data_ptr<float>()};
  if (sigmas.is_cuda()) {
#ifdef NERF_WITH_CUDA
    const c10::cuda::CUDAGuard guard(sigmas.device());
    composite_forward_cuda(s, begin, begin + n_rays, out, c10::cuda::getCurrentCUDAStream().stream());
#endif
  } else {
    try {
      composite_forward_cpu(s, begin, begin + n_rays, out);
    } catch (const std::invalid_argument& err) {
      TORCH_CHECK(false, "nerf_native: ", err.what());
    }
  }
  return {weights, transmittance, rgb, depth_sum, opacity};
}

std::tuple<at::Tensor, at::Tensor> composite_backward_impl(
    const std::optional<at::Tensor>& grad_weights_in, const at::Tensor& grad_rgb_in,
    const at::Tensor& grad_depth_sum_in, const at::Tensor& grad_opacity_in, const at::Tensor& sigmas_in,
    const at::Tensor& rgbs_in, const at::Tensor& t_starts_in, const at::Tensor& t_ends_in,
    const at::Tensor& ray_indices_in, const at::Tensor& weights_in, const at::Tensor& transmittance_in) {
  check_samples(sigmas_in, rgbs_in, t_starts_in, t_ends_in, ray_indices_in);
  const int64_t n_rays = grad_opacity_in.size(0);
  TORCH_CHECK(grad_rgb_in.sizes() == at::IntArrayRef({n_rays, 3}) &&
                  grad_depth_sum_in.sizes() == at::IntArrayRef({n_rays}),
              "nerf_native: per-ray gradients must be (R, 3), (R,), (R,)");
  TORCH_CHECK(weights_in.sizes() == sigmas_in.sizes() && transmittance_in.sizes() == sigmas_in.sizes(),
              "nerf_native: weights and transmittance must be (S,)");
  const auto opts = sigmas_in.options();
  const at::Tensor sigmas = sigmas_in.contiguous(), rgbs = rgbs_in.contiguous(), t_starts = t_starts_in.contiguous(),
                   t_ends = t_ends_in.contiguous(), ray_indices = ray_indices_in.contiguous();
  const at::Tensor grad_rgb = grad_rgb_in.to(opts).contiguous(), grad_depth = grad_depth_sum_in.to(opts).contiguous(),
                   grad_opacity = grad_opacity_in.to(opts).contiguous(), weights = weights_in.to(opts).contiguous(),
                   transmittance = transmittance_in.to(opts).contiguous();
  at::Tensor grad_weights;
  if (grad_weights_in.has_value() && grad_weights_in->defined()) {
    TORCH_CHECK(grad_weights_in->sizes() == sigmas.sizes(), "nerf_native: grad_weights must be (S,)");
    grad_weights = grad_weights_in->to(opts).contiguous();
  }
  const PackedSamples s = packed(sigmas, rgbs, t_starts, t_ends, ray_indices, n_rays);
  const CompositeGrads grads{grad_weights.defined() ? grad_weights.data_ptr<float>() : nullptr,
                             grad_rgb.data_ptr<float>(), grad_depth.data_ptr<float>(), grad_opacity.data_ptr<float>()};
  at::Tensor grad_sigmas = at::zeros_like(sigmas), grad_rgbs = at::zeros_like(rgbs);  // as weights, above
  at::Tensor ranges = at::zeros({2, n_rays}, ray_indices.options());
  int64_t* begin = ranges.data_ptr<int64_t>();
  if (sigmas.is_cuda()) {
#ifdef NERF_WITH_CUDA
    const c10::cuda::CUDAGuard guard(sigmas.device());
    composite_backward_cuda(s, begin, begin + n_rays, grads, weights.data_ptr<float>(),
                            transmittance.data_ptr<float>(), grad_sigmas.data_ptr<float>(),
                            grad_rgbs.data_ptr<float>(), c10::cuda::getCurrentCUDAStream().stream());
#endif
  } else {
    try {
      composite_backward_cpu(s, begin, begin + n_rays, grads, weights.data_ptr<float>(),
                             transmittance.data_ptr<float>(), grad_sigmas.data_ptr<float>(),
                             grad_rgbs.data_ptr<float>());
    } catch (const std::invalid_argument& err) {
      TORCH_CHECK(false, "nerf_native: ", err.what());
    }
  }
  return {grad_sigmas, grad_rgbs};
}

// A (2, 3) box as lo and extent = hi - lo in float32 (6 numbers, read on the host).
Box read_box(const at::Tensor& aabb, const char* what) {
  TORCH_CHECK(aabb.sizes() == at::IntArrayRef({2, 3}), "nerf_native: ", what, " must be (2, 3)");
  const at::Tensor box = aabb.to(at::kCPU, at::kFloat);
  Box b{};
  for (int a = 0; a < 3; ++a) {
    b.lo[a] = box[0][a].item<float>();
    b.extent[a] = box[1][a].item<float>() - b.lo[a];
  }
  return b;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> march_samples_impl(
    const at::Tensor& o_in, const at::Tensor& d_in, const at::Tensor& t0_in, const at::Tensor& t_far_in,
    const at::Tensor& counts_in, const std::optional<at::Tensor>& mask_in, const at::Tensor& grid_aabb_in,
    bool grid_contracted, double step_size, double cone_angle, double max_step,
    const std::optional<at::Tensor>& contract_aabb, int64_t first_ray) {
  const int64_t n = o_in.size(0);
  TORCH_CHECK(o_in.dim() == 2 && o_in.size(1) == 3 && d_in.sizes() == o_in.sizes(),
              "nerf_native: ray origins and directions must both be (N, 3)");
  TORCH_CHECK(t0_in.sizes() == at::IntArrayRef({n}) && t_far_in.sizes() == at::IntArrayRef({n}) &&
                  counts_in.sizes() == at::IntArrayRef({n}),
              "nerf_native: t0, t_far and counts must be (N,)");
  for (const at::Tensor* t : {&o_in, &d_in, &t0_in, &t_far_in}) {
    TORCH_CHECK(t->scalar_type() == at::kFloat && t->device() == o_in.device(),
                "nerf_native: march takes float32 rays on one device");
  }
  TORCH_CHECK(counts_in.scalar_type() == at::kLong && counts_in.device() == o_in.device(),
              "nerf_native: counts must be int64 on the rays' device");
  TORCH_CHECK(step_size > 0.0, "nerf_native: step_size must be > 0");
  TORCH_CHECK(cone_angle >= 0.0 && max_step >= step_size, "nerf_native: need cone_angle >= 0, max_step >= step");
  const at::Tensor o = o_in.contiguous(), d = d_in.contiguous(), t0 = t0_in.contiguous(),
                   t_far = t_far_in.contiguous(), counts = counts_in.contiguous();
  GridView grid{nullptr, 0, read_box(grid_aabb_in, "the grid's aabb"), grid_contracted};
  at::Tensor mask;
  if (mask_in.has_value() && mask_in->defined()) {
    mask = mask_in->contiguous();
    const int64_t r = mask.size(0);
    TORCH_CHECK(mask.scalar_type() == at::kBool && mask.dim() == 3 && mask.size(1) == r && mask.size(2) == r &&
                    r >= 1,
                "nerf_native: the occupancy mask must be bool (R, R, R)");
    TORCH_CHECK(mask.device() == o.device(), "nerf_native: the occupancy mask must be on the rays' device");
    grid.mask = mask.data_ptr<bool>();
    grid.resolution = r;
  }
  const bool contract = contract_aabb.has_value() && contract_aabb->defined();
  const StepRule rule{static_cast<float>(step_size), static_cast<float>(cone_angle), static_cast<float>(max_step),
                      contract, contract ? read_box(*contract_aabb, "the contraction's aabb") : Box{}};
  const MarchRays rays{o.data_ptr<float>(),     d.data_ptr<float>(),       t0.data_ptr<float>(),
                       t_far.data_ptr<float>(), counts.data_ptr<int64_t>(), n,
                       rule};
  at::Tensor ray_indices, t_starts, t_ends;
  const auto allocate = [&](int64_t total) {
    ray_indices = at::empty({total}, counts.options());
    t_starts = at::empty({total}, o.options());
    t_ends = at::empty({total}, o.options());
    return MarchOutput{ray_indices.data_ptr<int64_t>(), t_starts.data_ptr<float>(), t_ends.data_ptr<float>()};
  };
  if (!o.is_cuda()) {
    march_cpu(rays, grid, first_ray, allocate);
    return {ray_indices, t_starts, t_ends};
  }
#ifdef NERF_WITH_CUDA
  c10::cuda::OptionalCUDAGuard guard;  // both passes and the scan between them run on the rays' device
  guard.set_device(o.device());
  at::Tensor kept = at::empty({n}, counts.options());
  march_count_cuda(rays, grid, kept.data_ptr<int64_t>(), c10::cuda::getCurrentCUDAStream().stream());
  const at::Tensor offsets = at::cumsum(kept, 0) - kept;  // exclusive scan, on the rays' device
  const MarchOutput out = allocate(n == 0 ? 0 : (offsets[n - 1] + kept[n - 1]).item<int64_t>());
  march_fill_cuda(rays, grid, offsets.data_ptr<int64_t>(), first_ray, out.ray_indices, out.t_starts, out.t_ends,
                  c10::cuda::getCurrentCUDAStream().stream());
#endif
  return {ray_indices, t_starts, t_ends};
}

}  // namespace

#ifndef NERF_WITH_CUDA
TORCH_LIBRARY(nerf_native, m) {
  m.def("hash_encode_forward(Tensor x, Tensor table, Tensor offsets, Tensor scales, int table_size) -> Tensor");
  m.def(
      "hash_encode_forward_dx(Tensor x, Tensor table, Tensor offsets, Tensor scales, int table_size) -> "
      "(Tensor, Tensor)");
  m.def(
      "hash_encode_backward(Tensor grad_out, Tensor x, Tensor table, Tensor offsets, Tensor scales, int table_size, "
      "bool input_grad) -> (Tensor, Tensor)");
  m.def(
      "march_samples(Tensor o, Tensor d, Tensor t0, Tensor t_far, Tensor counts, Tensor? mask, Tensor grid_aabb, "
      "bool grid_contracted, float step_size, float cone_angle, float max_step, Tensor? contract_aabb, "
      "int first_ray) -> (Tensor ray_indices, Tensor t_starts, Tensor t_ends)");
  m.def(
      "composite_forward(Tensor sigmas, Tensor rgbs, Tensor t_starts, Tensor t_ends, Tensor ray_indices, "
      "int n_rays) -> (Tensor weights, Tensor transmittance, Tensor rgb, Tensor depth_sum, Tensor opacity)");
  m.def(
      "composite_backward(Tensor? grad_weights, Tensor grad_rgb, Tensor grad_depth_sum, Tensor grad_opacity, "
      "Tensor sigmas, Tensor rgbs, Tensor t_starts, Tensor t_ends, Tensor ray_indices, Tensor weights, "
      "Tensor transmittance) -> (Tensor grad_sigmas, Tensor grad_rgbs)");
}

TORCH_LIBRARY_IMPL(nerf_native, CPU, m) {
  m.impl("hash_encode_forward", &forward_impl);
  m.impl("hash_encode_forward_dx", &forward_dx_impl);
  m.impl("hash_encode_backward", &backward_impl);
  m.impl("composite_forward", &composite_forward_impl);
  m.impl("composite_backward", &composite_backward_impl);
  m.impl("march_samples", &march_samples_impl);
}

TORCH_LIBRARY_IMPL(nerf_native, Meta, m) {
  m.impl("hash_encode_forward", &forward_meta);
  m.impl("hash_encode_forward_dx", &forward_dx_meta);
  m.impl("hash_encode_backward", &backward_meta);
}

#else

TORCH_LIBRARY_IMPL(nerf_native, CUDA, m) {
  m.impl("hash_encode_forward", &forward_impl);
  m.impl("hash_encode_backward", &backward_impl);
  m.impl("composite_forward", &composite_forward_impl);
  m.impl("composite_backward", &composite_backward_impl);
  m.impl("march_samples", &march_samples_impl);
}

#endif

}  // namespace nerf_native
