// The raytracer's CPU kernels (torch.ops.raytrace_native.*), twins of its PyTorch code: the same float32 operations
// in the same order (compiled with -ffp-contract=off), so the two agree to float32 rounding (torch's vectorised
// sqrt, atan2 and acos may differ from the C library's by an ulp).
// - direct_samples (raytrace/render.py _direct, raytrace/lights.py light_samples): for every diffuse hit m and
//   light sample j that lights the front side, the shadow ray and the unshadowed contribution brdf * E * cos; the
//   caller traces the shadow rays; sum_unblocked sums the unblocked contributions per hit.
// - analytic_hit, analytic_occluded (raytrace/geometry.py ray_sphere, ray_plane, AnalyticPrimitive): closest
//   hits of a batch of rays with all the analytic spheres and planes in one pass (merged in place into Embree's
//   hits), and shadow-ray occlusion.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <mutex>
#include <utility>
#include <vector>

namespace raytrace_native {

namespace {

// One light per row of the (L, kLightRow) float32 table that raytrace.lights.light_table writes.
constexpr int64_t kLightRow = 19;
enum LightType { kPoint = 0, kDirectional = 1, kArea = 2 };
constexpr float kDirectionalDistance = 1e6f;  // raytrace.lights.DIRECTIONAL_DISTANCE
constexpr float kPi = 3.14159265358979323846f;

struct V3 {
  float x, y, z;
};
inline V3 load(const float* p) { return {p[0], p[1], p[2]}; }
inline V3 operator+(V3 a, V3 b) { return {a.x + b.x, a.y + b.y, a.z + b.z}; }
inline V3 operator-(V3 a, V3 b) { return {a.x - b.x, a.y - b.y, a.z - b.z}; }
inline V3 operator*(V3 a, V3 b) { return {a.x * b.x, a.y * b.y, a.z * b.z}; }
inline V3 operator*(float s, V3 a) { return {s * a.x, s * a.y, s * a.z}; }
inline V3 operator*(V3 a, float s) { return {a.x * s, a.y * s, a.z * s}; }
inline V3 operator/(V3 a, float s) { return {a.x / s, a.y / s, a.z / s}; }
inline float dot(V3 a, V3 b) { return a.x * b.x + a.y * b.y + a.z * b.z; }  // raytrace.optics.dot's order
inline V3 facing(V3 n, V3 d) { return n * (dot(n, d) > 0.0f ? -1.0f : 1.0f); }  // render._facing

struct Hit {  // one diffuse hit, as _direct sees it
  V3 p, d, ng_f, n, albedo_over_pi;
  float spec, shininess;
};

struct Sample {
  V3 to_light, contrib;
  float dist;
};

// Light sample j of light row `l` seen from hit h (lights.light_samples), and whether it lights the front side.
bool light_sample(const Hit& h, const float* l, const float* rand, int64_t j, bool glossy, Sample& out) {
  const auto type = static_cast<int>(l[0]);
  const V3 colour = load(l + 2);
  V3 e;
  if (type == kDirectional) {
    out.to_light = load(l + 5);
    out.dist = kDirectionalDistance;
    e = colour;
  } else if (type == kPoint) {
    const V3 offset = load(l + 5) - h.p;
    out.dist = std::sqrt(dot(offset, offset));
    out.to_light = offset / out.dist;
    e = colour / (out.dist * out.dist);
  } else {
    const float samples = l[1], grid = l[18];
    float a = rand[0], b = rand[1];
    if (grid > 0.0f) {  // stratified: sample j in cell (j mod s, j div s) of the s x s grid
      const auto s = static_cast<int64_t>(grid);
      a = (static_cast<float>(j % s) + a) / grid;
      b = (static_cast<float>(j / s) + b) / grid;
    }
    const V3 q = load(l + 5) + a * load(l + 8) + b * load(l + 11);
    const V3 offset = q - h.p;
    out.dist = std::sqrt(dot(offset, offset));
    out.to_light = offset / out.dist;
    const float cos_l = std::fabs(dot(out.to_light, load(l + 14)));
    const float area = l[17];
    e = colour * (cos_l * area / (samples * (out.dist * out.dist)));
  }
  const float cos = dot(out.to_light, h.n);
  if (!(cos > 0.0f && dot(out.to_light, h.ng_f) > 0.0f)) return false;
  V3 brdf = h.albedo_over_pi;
  if (glossy) {
    V3 half = out.to_light - h.d;
    half = half / std::max(std::sqrt(dot(half, half)), 1e-12f);
    const float lobe = std::pow(std::max(dot(half, h.n), 0.0f), h.shininess);
    brdf = brdf + V3{1.0f, 1.0f, 1.0f} * (h.spec * lobe);
  }
  out.contrib = brdf * e * cos;
  return true;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> direct_samples_impl(
    const at::Tensor& p_in, const at::Tensor& d_in, const at::Tensor& ng_in, const at::Tensor& ns_in,
    const at::Tensor& albedo_in, const at::Tensor& spec_in, const at::Tensor& shininess_in, const at::Tensor& lights_in,
    const at::Tensor& rand_in, double eps, bool glossy) {
  const int64_t m = p_in.size(0);
  for (const at::Tensor* t : {&p_in, &d_in, &ng_in, &ns_in, &albedo_in}) {
    TORCH_CHECK(t->dim() == 2 && t->size(0) == m && t->size(1) == 3 && t->scalar_type() == at::kFloat &&
                    t->device().is_cpu(),
                "raytrace_native.direct_samples: p, d, ng, ns and albedo must be float32 (M, 3) on the CPU");
  }
  TORCH_CHECK(spec_in.dim() == 1 && spec_in.size(0) == m && shininess_in.dim() == 1 && shininess_in.size(0) == m &&
                  spec_in.scalar_type() == at::kFloat && shininess_in.scalar_type() == at::kFloat,
              "raytrace_native.direct_samples: spec and shininess must be float32 (M,)");
  TORCH_CHECK(lights_in.dim() == 2 && lights_in.size(1) == kLightRow && lights_in.scalar_type() == at::kFloat,
              "raytrace_native.direct_samples: lights must be float32 (L, ", kLightRow, ")");
  const at::Tensor p = p_in.contiguous(), d = d_in.contiguous(), ng = ng_in.contiguous(), ns = ns_in.contiguous();
  const at::Tensor albedo = albedo_in.contiguous(), spec = spec_in.contiguous(), shin = shininess_in.contiguous();
  const at::Tensor lights = lights_in.contiguous().cpu();
  const int64_t n_lights = lights.size(0);
  const float* lt = lights.data_ptr<float>();
  int64_t per_hit = 0, area_samples = 0;
  for (int64_t l = 0; l < n_lights; ++l) {
    const auto samples = static_cast<int64_t>(lt[l * kLightRow + 1]);
    per_hit += samples;
    if (static_cast<int>(lt[l * kLightRow]) == kArea) area_samples += samples;
  }
  TORCH_CHECK(rand_in.dim() == 3 && rand_in.size(0) == m && rand_in.size(1) == area_samples &&
                  rand_in.size(2) == 2 && rand_in.scalar_type() == at::kFloat,
              "raytrace_native.direct_samples: rand must be float32 (M, ", area_samples, ", 2), got ", rand_in.sizes());
  const at::Tensor rand = rand_in.contiguous();
  const float *pp = p.data_ptr<float>(), *dp = d.data_ptr<float>(), *ngp = ng.data_ptr<float>();
  const float *nsp = ns.data_ptr<float>(), *ap = albedo.data_ptr<float>(), *sp = spec.data_ptr<float>();
  const float *shp = shin.data_ptr<float>(), *rp = rand.data_ptr<float>();
  const auto eps_f = static_cast<float>(eps), two_eps = static_cast<float>(2.0 * eps);

  auto hit_at = [&](int64_t i) {
    Hit h;
    h.p = load(pp + 3 * i);
    h.d = load(dp + 3 * i);
    h.ng_f = facing(load(ngp + 3 * i), h.d);
    const V3 n = facing(load(nsp + 3 * i), h.d);
    h.n = dot(n, h.ng_f) < 0.0f ? h.ng_f : n;
    h.albedo_over_pi = load(ap + 3 * i) / kPi;
    h.spec = sp[i];
    h.shininess = shp[i];
    return h;
  };
  // Visits hit i's light samples in order (lights, then their samples): f(sample, lit).
  auto for_samples = [&](int64_t i, const Hit& h, auto&& f) {
    const float* r = rp + i * area_samples * 2;
    for (int64_t l = 0; l < n_lights; ++l) {
      const float* row = lt + l * kLightRow;
      const auto samples = static_cast<int64_t>(row[1]);
      const bool area = static_cast<int>(row[0]) == kArea;
      for (int64_t j = 0; j < samples; ++j) {
        Sample s;
        const bool lit = light_sample(h, row, r, j, glossy, s);
        if (area) r += 2;
        f(s, lit);
      }
    }
  };

  // One pass: each block of hits writes its lit samples from its first hit's slot (hit * per_hit) on; the blocks
  // are then moved together, in order.
  const int64_t capacity = m * per_hit;
  at::Tensor index = at::empty({capacity}, p.options().dtype(at::kLong));
  at::Tensor origin = at::empty({capacity, 3}, p.options()), dir = at::empty({capacity, 3}, p.options());
  at::Tensor t_max = at::empty({capacity}, p.options()), contrib = at::empty({capacity, 3}, p.options());
  int64_t* ip = index.data_ptr<int64_t>();
  float *orp = origin.data_ptr<float>(), *drp = dir.data_ptr<float>(), *tp = t_max.data_ptr<float>();
  float* cbp = contrib.data_ptr<float>();
  std::vector<std::pair<int64_t, int64_t>> blocks;  // (first slot, samples written)
  std::mutex blocks_mutex;
  at::parallel_for(0, m, 1024, [&](int64_t begin, int64_t end) {
    const int64_t first = begin * per_hit;
    int64_t k = first;
    for (int64_t i = begin; i < end; ++i) {
      const Hit h = hit_at(i);
      const V3 o = h.p + h.ng_f * eps_f;
      for_samples(i, h, [&](const Sample& s, bool lit) {
        if (!lit) return;
        ip[k] = i;
        orp[3 * k] = o.x, orp[3 * k + 1] = o.y, orp[3 * k + 2] = o.z;
        drp[3 * k] = s.to_light.x, drp[3 * k + 1] = s.to_light.y, drp[3 * k + 2] = s.to_light.z;
        tp[k] = s.dist - two_eps;
        cbp[3 * k] = s.contrib.x, cbp[3 * k + 1] = s.contrib.y, cbp[3 * k + 2] = s.contrib.z;
        ++k;
      });
    }
    const std::lock_guard<std::mutex> lock(blocks_mutex);
    blocks.emplace_back(first, k - first);
  });
  std::sort(blocks.begin(), blocks.end());
  int64_t total = 0;
  for (const auto& [first, count] : blocks) {
    if (first != total) {
      std::memmove(ip + total, ip + first, count * sizeof(int64_t));
      std::memmove(tp + total, tp + first, count * sizeof(float));
      for (float* a : {orp, drp, cbp}) std::memmove(a + 3 * total, a + 3 * first, 3 * count * sizeof(float));
    }
    total += count;
  }
  index = index.narrow(0, 0, total), origin = origin.narrow(0, 0, total), dir = dir.narrow(0, 0, total);
  t_max = t_max.narrow(0, 0, total), contrib = contrib.narrow(0, 0, total);
  return {index, origin, dir, t_max, contrib};
}

// The radiance (M, 3) at each hit: the sum, in order, of its samples' contributions (K, 3) that no shadow ray
// blocked (index (K,) names the hit of each sample).
at::Tensor sum_unblocked_impl(const at::Tensor& index_in, const at::Tensor& contrib_in, const at::Tensor& blocked_in,
                              int64_t m) {
  const int64_t k = index_in.size(0);
  TORCH_CHECK(index_in.dim() == 1 && index_in.scalar_type() == at::kLong && contrib_in.dim() == 2 &&
                  contrib_in.size(0) == k && contrib_in.size(1) == 3 && contrib_in.scalar_type() == at::kFloat &&
                  blocked_in.dim() == 1 && blocked_in.size(0) == k && blocked_in.scalar_type() == at::kBool &&
                  index_in.device().is_cpu() && contrib_in.device().is_cpu() && blocked_in.device().is_cpu(),
              "raytrace_native.sum_unblocked: index int64 (K,), contrib float32 (K, 3), blocked bool (K,) on the CPU");
  const at::Tensor index = index_in.contiguous(), contrib = contrib_in.contiguous(), blocked = blocked_in.contiguous();
  at::Tensor out = at::zeros({m, 3}, contrib.options());
  const int64_t* ip = index.data_ptr<int64_t>();
  const float* cp = contrib.data_ptr<float>();
  const bool* bp = blocked.data_ptr<bool>();
  float* op = out.data_ptr<float>();
  for (int64_t j = 0; j < k; ++j) {
    if (bp[j]) continue;
    TORCH_CHECK(ip[j] >= 0 && ip[j] < m, "raytrace_native.sum_unblocked: index ", ip[j], " out of range");
    float* row = op + 3 * ip[j];
    row[0] += cp[3 * j], row[1] += cp[3 * j + 1], row[2] += cp[3 * j + 2];
  }
  return out;
}

// One sphere or plane per row of the (P, kPrimRow) float32 table that raytrace.intersect.primitive_table writes.
constexpr int64_t kPrimRow = 29;
enum PrimType { kSphere = 0, kPlane = 1 };
constexpr float kTMin = 1e-5f;   // raytrace.geometry.T_MIN
constexpr float kTiny = 1e-30f;  // raytrace.geometry._TINY
constexpr float kInf = std::numeric_limits<float>::infinity();

inline V3 rows_times(const float* r, V3 v) {  // r (3, 3) row-major: r v (torch's v @ r.T)
  return {r[0] * v.x + r[1] * v.y + r[2] * v.z, r[3] * v.x + r[4] * v.y + r[5] * v.z,
          r[6] * v.x + r[7] * v.y + r[8] * v.z};
}
inline V3 columns_times(const float* r, V3 v) {  // r^T v (torch's v @ r)
  return {v.x * r[0] + v.y * r[3] + v.z * r[6], v.x * r[1] + v.y * r[4] + v.z * r[7],
          v.x * r[2] + v.y * r[5] + v.z * r[8]};
}
inline V3 to_local(const float* q, V3 p) { return (q[2] != 0.0f ? rows_times(q + 3, p) : p) + load(q + 12); }

// AnalyticPrimitive.hit: distance along the world ray (inf on a miss).
float prim_hit(const float* q, V3 o, V3 d) {
  const V3 ol = to_local(q, o), dl = q[2] != 0.0f ? rows_times(q + 3, d) : d;
  if (static_cast<int>(q[0]) == kSphere) {
    const V3 oc = ol - load(q + 15);
    const float a = dot(dl, dl), b = dot(oc, dl), c = dot(oc, oc) - q[28];
    const float disc = b * b - a * c;
    const float sq = std::sqrt(std::max(disc, 0.0f));
    const float t0 = (-b - sq) / a, t1 = (-b + sq) / a;
    const float t = t0 > kTMin ? t0 : t1;
    return disc >= 0.0f && t > kTMin ? t : kInf;
  }
  const V3 normal = load(q + 19);
  const float denom = dot(dl, normal);
  const float t = dot(load(q + 15) - ol, normal) / (denom == 0.0f ? kTiny : denom);
  return denom != 0.0f && t > kTMin ? t : kInf;
}

void check_rays(const at::Tensor& o, const at::Tensor& d, const at::Tensor& prims, const char* op) {
  TORCH_CHECK(o.dim() == 2 && o.size(1) == 3 && d.sizes() == o.sizes() && o.scalar_type() == at::kFloat &&
                  d.scalar_type() == at::kFloat && o.device().is_cpu() && d.device().is_cpu(),
              "raytrace_native.", op, ": o and d must be float32 (N, 3) on the CPU");
  TORCH_CHECK(prims.dim() == 2 && prims.size(1) == kPrimRow && prims.scalar_type() == at::kFloat &&
                  prims.device().is_cpu(),
              "raytrace_native.", op, ": prims must be float32 (P, ", kPrimRow, ") on the CPU");
}

// Where an analytic shape is hit no farther than the hit already in (t, obj, ng, ns, uv) (Embree's, or a miss:
// inf, -1, zeros), that hit replaces it, in place.
void analytic_hit_impl(const at::Tensor& o_in, const at::Tensor& d_in, const at::Tensor& prims_in, const at::Tensor& t,
                       const at::Tensor& obj, const at::Tensor& ng, const at::Tensor& ns, const at::Tensor& uv) {
  check_rays(o_in, d_in, prims_in, "analytic_hit");
  const int64_t n = o_in.size(0);
  TORCH_CHECK(t.dim() == 1 && t.size(0) == n && t.scalar_type() == at::kFloat && t.is_contiguous() &&
                  obj.dim() == 1 && obj.size(0) == n && obj.scalar_type() == at::kLong && obj.is_contiguous(),
              "raytrace_native.analytic_hit: t must be contiguous float32 (N,), obj int64 (N,)");
  for (const at::Tensor* x : {&ng, &ns, &uv}) {
    TORCH_CHECK(x->dim() == 2 && x->size(0) == n && x->size(1) == (x == &uv ? 2 : 3) &&
                    x->scalar_type() == at::kFloat && x->is_contiguous(),
                "raytrace_native.analytic_hit: ng, ns (N, 3) and uv (N, 2) must be contiguous float32");
  }
  const at::Tensor o = o_in.contiguous(), d = d_in.contiguous(), prims = prims_in.contiguous();
  const int64_t count = prims.size(0);
  const float *op = o.data_ptr<float>(), *dp = d.data_ptr<float>(), *pr = prims.data_ptr<float>();
  float *tp = t.data_ptr<float>(), *ngp = ng.data_ptr<float>(), *nsp = ns.data_ptr<float>();
  float* uvp = uv.data_ptr<float>();
  int64_t* objp = obj.data_ptr<int64_t>();
  constexpr float kTwoPi = static_cast<float>(2.0 * 3.14159265358979323846);
  at::parallel_for(0, n, 2048, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const V3 ro = load(op + 3 * i), rd = load(dp + 3 * i);
      float best = kInf;
      int64_t k = -1;
      for (int64_t j = 0; j < count; ++j) {
        const float tj = prim_hit(pr + j * kPrimRow, ro, rd);
        if (tj < best) best = tj, k = j;
      }
      if (k < 0 || !(best <= tp[i])) continue;
      const float* q = pr + k * kPrimRow;  // AnalyticPrimitive.surface at the hit
      const V3 pl = to_local(q, ro + rd * best);
      V3 nl;
      float u, v;
      if (static_cast<int>(q[0]) == kSphere) {
        nl = (pl - load(q + 15)) / q[18];
        u = 0.5f + std::atan2(nl.y, nl.x) / kTwoPi;
        v = 1.0f - std::acos(std::min(std::max(nl.z, -1.0f), 1.0f)) / kPi;
      } else {
        nl = load(q + 19);
        const V3 rel = pl - load(q + 15);
        u = dot(rel, load(q + 22));
        v = dot(rel, load(q + 25));
      }
      V3 nw = q[2] != 0.0f ? columns_times(q + 3, nl) : nl;
      nw = nw / std::sqrt(std::fma(nw.z, nw.z, std::fma(nw.y, nw.y, nw.x * nw.x)));  // torch's vector norm
      tp[i] = best;
      objp[i] = static_cast<int64_t>(q[1]);
      for (float* a : {ngp, nsp}) a[3 * i] = nw.x, a[3 * i + 1] = nw.y, a[3 * i + 2] = nw.z;
      uvp[2 * i] = u, uvp[2 * i + 1] = v;
    }
  });
}

at::Tensor analytic_occluded_impl(const at::Tensor& o_in, const at::Tensor& d_in, const at::Tensor& t_max_in,
                                  const at::Tensor& prims_in) {
  check_rays(o_in, d_in, prims_in, "analytic_occluded");
  TORCH_CHECK(t_max_in.dim() == 1 && t_max_in.size(0) == o_in.size(0) && t_max_in.scalar_type() == at::kFloat,
              "raytrace_native.analytic_occluded: t_max must be float32 (N,)");
  const at::Tensor o = o_in.contiguous(), d = d_in.contiguous(), t_max = t_max_in.contiguous();
  const at::Tensor prims = prims_in.contiguous();
  const int64_t n = o.size(0), count = prims.size(0);
  at::Tensor blocked = at::empty({n}, o.options().dtype(at::kBool));
  const float *op = o.data_ptr<float>(), *dp = d.data_ptr<float>(), *tm = t_max.data_ptr<float>();
  const float* pr = prims.data_ptr<float>();
  bool* bp = blocked.data_ptr<bool>();
  at::parallel_for(0, n, 2048, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const V3 ro = load(op + 3 * i), rd = load(dp + 3 * i);
      bool b = false;
      for (int64_t j = 0; j < count && !b; ++j) b = prim_hit(pr + j * kPrimRow, ro, rd) < tm[i];
      bp[i] = b;
    }
  });
  return blocked;
}

}  // namespace

TORCH_LIBRARY(raytrace_native, m) {
  m.def(
      "direct_samples(Tensor p, Tensor d, Tensor ng, Tensor ns, Tensor albedo, Tensor spec, Tensor shininess, "
      "Tensor lights, Tensor rand, float eps, bool glossy) -> (Tensor index, Tensor origin, Tensor direction, "
      "Tensor t_max, Tensor contrib)");
  m.def(
      "analytic_hit(Tensor o, Tensor d, Tensor prims, Tensor(a!) t, Tensor(b!) obj, Tensor(c!) ng, Tensor(d!) ns, "
      "Tensor(e!) uv) -> ()");
  m.def("sum_unblocked(Tensor index, Tensor contrib, Tensor blocked, int m) -> Tensor");
  m.def("analytic_occluded(Tensor o, Tensor d, Tensor t_max, Tensor prims) -> Tensor");
}

TORCH_LIBRARY_IMPL(raytrace_native, CPU, m) {
  m.impl("direct_samples", &direct_samples_impl);
  m.impl("sum_unblocked", &sum_unblocked_impl);
  m.impl("analytic_hit", &analytic_hit_impl);
  m.impl("analytic_occluded", &analytic_occluded_impl);
}

}  // namespace raytrace_native
