// The CPU kernels (musicgen_edu/backends/thin_linear.cpp, decode_step.cpp) as a plain C++
// program, built for ARM (AArch64 NEON, and SVE) and run under qemu by run.sh, since no ARM
// machine is at hand (tests/test_thin.py runs it). What tests/test_thin.py checks of the x86
// builds: products of 1-17 rows in fp32, bf16 and int8 close to the exact ones, and these bit
// for bit — a row's result whatever else shares the call, bf16 results rounded as torch rounds
// (ties to even), one fused multiply-add per input (as AVX2 and AVX-512 builds), a padded text
// attending as alone; one-token attention over caches of many lengths, masked or not, with
// fp32 and bf16 queries; a whole decoder layer in one call (decode_block) in fp32, bf16 and
// with int8 weights against the layer written with ATen's operators. Every reference product
// is an elementwise multiply and sum in float64, not ATen's GEMM: under qemu 7.2 the GEMM of
// PyTorch's ARM build gave wrong results for 16 rows or more.
#include <ATen/ATen.h>
#include <cmath>
#include <limits>
#include <cstdio>
#include <optional>
#include <vector>

at::Tensor thin_pack(at::Tensor weight);
at::Tensor thin_linear(at::Tensor x, at::Tensor weight, at::Tensor scale);
at::Tensor decode_attention(at::Tensor q, at::Tensor k_cache, at::Tensor v_cache,
                            int64_t length, const std::optional<at::Tensor>& mask);
at::Tensor decode_block(at::Tensor x, std::vector<at::Tensor> weights,
                        std::vector<at::Tensor> scales, std::vector<at::Tensor> norms,
                        at::Tensor k_cache, at::Tensor v_cache, int64_t pos,
                        const std::optional<at::Tensor>& cross_k,
                        const std::optional<at::Tensor>& cross_v,
                        const std::optional<at::Tensor>& cross_mask, int64_t heads, double eps);

static int checks = 0, failures = 0;

static void result(const std::string& what, bool ok, const std::string& detail) {
  ++checks;
  failures += !ok;
  if (!ok) std::printf("FAIL %s: %s\n", what.c_str(), detail.c_str());
}

// same shape, the dtype expected, and |got - want| <= tol * max|want| everywhere (no NaN)
static void check(const std::string& what, const at::Tensor& got, const at::Tensor& want,
                  double tol, at::ScalarType dtype = at::kFloat) {
  if (got.sizes() != want.sizes() || got.scalar_type() != dtype)
    return result(what, false, "shape or dtype differs");
  const double err = (got.to(at::kDouble) - want.to(at::kDouble)).abs().max().item<double>();
  const double top = want.to(at::kDouble).abs().max().item<double>();
  char detail[160];
  std::snprintf(detail, sizeof detail, "max error %.3g, %.3g of max|want| (allowed %.3g)",
                err, err / top, tol);
  result(what, err <= tol * top, detail);                // false for a NaN error
}

// the same bits
static void check_equal(const std::string& what, const at::Tensor& got, const at::Tensor& want) {
  result(what, got.sizes() == want.sizes() && got.scalar_type() == want.scalar_type() &&
                   at::equal(got, want), "not bit for bit equal");
}

// x [..., M, I] times w [..., O, I] transposed -> [..., M, O]: the reference (float64, no GEMM)
static at::Tensor product(const at::Tensor& x, const at::Tensor& w) {
  return (x.to(at::kDouble).unsqueeze(-2) * w.to(at::kDouble).unsqueeze(-3)).sum(-1).to(at::kFloat);
}

static void products() {
  for (int64_t M : {1, 2, 3, 5, 16, 17})
    for (int64_t I : {72, 73, 1024}) {
      const int64_t O = 48;
      const auto x = at::randn({M, I}), w = at::randn({O, I}) / std::sqrt(double(I));
      const std::string shape = " M=" + std::to_string(M) + " I=" + std::to_string(I);
      const auto none = at::empty({0});
      check("fp32" + shape, thin_linear(x, thin_pack(w), none), product(x, w), 1e-5);
      const auto xb = x.to(at::kBFloat16), wb = w.to(at::kBFloat16);
      const auto yb = thin_linear(xb, thin_pack(wb), none);              // bf16 results
      check("bf16" + shape, yb, product(xb, wb), 1e-2, at::kBFloat16);
      check_equal("bf16 rounded as torch rounds" + shape, yb,
                  thin_linear(xb.to(at::kFloat), thin_pack(wb), none).to(at::kBFloat16));
      const auto scale = w.abs().amax(1) / 127;
      const auto q = (w / scale.unsqueeze(1)).round().to(at::kChar);
      const auto yq = thin_linear(x, thin_pack(q), scale);
      check("int8" + shape, yq, product(x, q) * scale, 1e-4);
      check("int8, bf16 rows" + shape, thin_linear(xb, thin_pack(q), scale),
            product(xb, q) * scale, 1e-2, at::kBFloat16);
      for (int64_t m = 0; m < M; m += 3)                 // a row alone: the bits it had
        check_equal("int8 row alone" + shape, thin_linear(x.narrow(0, m, 1), thin_pack(q), scale),
                    yq.narrow(0, m, 1));
      if (M > 2)
        check_equal("fp32 rows 1-2 alone" + shape,
                    thin_linear(x.narrow(0, 1, 2), thin_pack(w), none),
                    thin_linear(x, thin_pack(w), none).narrow(0, 1, 2));
    }
}

// Exact cases: bf16 ties round to even (1 + 2^-8 -> 1, 1 + 2^-7 + 2^-8 -> 1 + 2^-6), and one
// fused multiply-add per input, in input order: 1 * -1 + (1 + 2^-23)(1 - 2^-23) is -2^-46 when
// the second product is not rounded first (it would round to 1, and the sum to 0).
static void exact_cases() {
  const auto ones = at::ones({16, 2}, at::kBFloat16);
  const auto x = at::tensor({1.0, std::ldexp(1.0, -8), 1 + std::ldexp(1.0, -7), std::ldexp(1.0, -8),
                             -1.0, -std::ldexp(1.0, -8)}, at::kFloat).view({3, 2});
  const auto ties = thin_linear(x.to(at::kBFloat16), thin_pack(ones), at::empty({0}));
  check_equal("bf16 ties to even", ties.select(1, 0).to(at::kFloat),
              at::tensor({1.0, 1 + std::ldexp(1.0, -6), -1.0}, at::kFloat));
  const double e = std::ldexp(1.0, -23);
  const auto xf = at::tensor({1.0, 1 + e}, at::kFloat).view({1, 2});
  const auto wf = at::tensor({-1.0, 1 - e}, at::kFloat).view({1, 2}).expand({16, 2}).contiguous();
  check_equal("one fused multiply-add per input", thin_linear(xf, thin_pack(wf), at::empty({0})),
              at::full({1, 16}, -std::ldexp(1.0, -46), at::kFloat));
}

static at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const std::optional<at::Tensor>& mask) {     // float32 reference
  auto scores = product(q, k) / std::sqrt(double(q.size(3)));        // [N, H, 1, L]
  if (mask) scores = scores + *mask;
  return product(at::softmax(scores, -1), v.transpose(2, 3));
}

static void attentions() {
  for (auto dtype : {at::kFloat, at::kBFloat16})
    for (int64_t length : {1, 7, 16, 33, 300})
      for (bool masked : {false, true}) {
        const int64_t N = 2, H = 4, D = 64, Lmax = 320;
        const auto q = at::randn({N, H, 1, D});
        const auto k = at::randn({N, H, Lmax, D}).to(dtype), v = at::randn({N, H, Lmax, D}).to(dtype);
        std::optional<at::Tensor> mask;
        if (masked) {                                    // item 0 attends to its second half
          mask = at::zeros({N, 1, 1, length});
          mask->narrow(3, 0, length / 2).select(0, 0).fill_(-1e30);
        }
        const auto want = attention(q, k.narrow(2, 0, length), v.narrow(2, 0, length), mask);
        const std::string name = std::string("attention ") + (dtype == at::kFloat ? "fp32" : "bf16") +
                                 " L=" + std::to_string(length) + (masked ? " masked" : "");
        check(name, decode_attention(q, k, v, length, mask), want, 1e-5);
        const auto qb = q.to(at::kBFloat16);                 // a bf16 model's queries
        check(name + ", bf16 q", decode_attention(qb, k, v, length, mask),
              attention(qb, k.narrow(2, 0, length), v.narrow(2, 0, length), mask), 1e-2,
              at::kBFloat16);
      }
  // a text padded in a batch attends with the bits it has alone (e^-inf = 0, whole vectors)
  const auto q = at::randn({1, 4, 1, 16}), k = at::randn({1, 4, 10, 16}), v = at::randn({1, 4, 10, 16});
  const auto alone = decode_attention(q, k, v, 10, at::zeros({1, 1, 1, 10}));
  for (int64_t padded : {11, 16, 17, 40}) {
    const auto pad = at::randn({1, 4, padded - 10, 16});
    auto mask = at::zeros({1, 1, 1, padded});
    mask.narrow(3, 10, padded - 10).fill_(std::numeric_limits<float>::lowest());
    check_equal("a padded text attends as alone, L=" + std::to_string(padded),
                decode_attention(q, at::cat({k, pad}, 2), at::cat({v, pad}, 2), padded, mask), alone);
  }
}

// decode_block (a layer of a one-token step in one call) in fp32, in bf16 (activations, weights
// and norms; caches fp32), and with int8 weights, against the same layer written with ATen's
// operators on the weights as the kernel sees them (musicgen_edu/backends/native.py, Block)
static void layers() {
  const int64_t N = 2, D = 64, H = 4, F = 128, Lmax = 40, L = 7, pos = 9;
  const double eps = 1e-5;
  const char* kinds[] = {"fp32", "bf16", "int8 weights"};
  const double tols[] = {1e-5, 5e-2, 1e-4};
  for (int kind = 0; kind < 3; ++kind)
    for (bool cross : {false, true}) {
      const auto dtype = kind == 1 ? at::kBFloat16 : at::kFloat;
      std::vector<at::Tensor> w, packed, scales, norms;            // w: as the kernel sees them
      const int64_t outs[] = {D, D, D, D, D, D, F, D}, ins[] = {D, D, D, D, D, D, D, F};
      for (int j = 0; j < 8; ++j) {
        if (!cross && (j == 4 || j == 5)) continue;
        const auto full = at::randn({outs[j], ins[j]}) / std::sqrt(double(ins[j]));
        if (kind == 2) {                                 // one scale per output row
          const auto scale = full.abs().amax(1) / 127;
          const auto q = (full / scale.unsqueeze(1)).round().to(at::kChar);
          packed.push_back(thin_pack(q));
          scales.push_back(scale);
          w.push_back(q.to(at::kFloat) * scale.unsqueeze(1));
        } else {
          packed.push_back(thin_pack(full.to(dtype)));
          scales.push_back(at::empty({0}));
          w.push_back(full.to(dtype).to(at::kFloat));
        }
      }
      for (int n = 0; n < (cross ? 3 : 2); ++n)
        norms.insert(norms.end(), {(1 + 0.1 * at::randn({D})).to(dtype), (0.1 * at::randn({D})).to(dtype)});
      const auto x = at::randn({N, 1, D}).to(dtype);
      const auto k0 = at::randn({N, H, Lmax, D / H}), v0 = at::randn({N, H, Lmax, D / H});
      const auto ck = at::randn({N, H, L, D / H}), cv = at::randn({N, H, L, D / H});
      auto cmask = at::zeros({N, 1, 1, L});
      cmask.select(0, 1).narrow(2, 4, 3).fill_(-1e30);    // item 1: a padded text
      auto kc = k0.clone(), vc = v0.clone();
      const auto got = decode_block(x, packed, scales, norms, kc, vc, pos,
                                    cross ? std::optional<at::Tensor>(ck) : std::nullopt,
                                    cross ? std::optional<at::Tensor>(cv) : std::nullopt,
                                    cross ? std::optional<at::Tensor>(cmask) : std::nullopt, H, eps);
      // the reference, in float32/float64 throughout
      auto split = [&](const at::Tensor& h) { return h.view({N, 1, H, D / H}).transpose(1, 2); };
      auto merge = [&](const at::Tensor& o) { return o.transpose(1, 2).reshape({N, 1, D}); };
      size_t n = 0;
      auto norm = [&](const at::Tensor& h) {
        n += 2;
        return at::layer_norm(h, {D}, norms[n - 2].to(at::kFloat), norms[n - 1].to(at::kFloat), eps);
      };
      auto rk = k0.clone(), rv = v0.clone();
      const auto xf = x.to(at::kFloat);
      auto h = norm(xf);
      rk.narrow(2, pos, 1).copy_(split(product(h, w[1])));
      rv.narrow(2, pos, 1).copy_(split(product(h, w[2])));
      auto y = xf + product(merge(attention(split(product(h, w[0])), rk.narrow(2, 0, pos + 1),
                                             rv.narrow(2, 0, pos + 1), std::nullopt)), w[3]);
      size_t j = 4;
      if (cross) {
        h = norm(y);
        y = y + product(merge(attention(split(product(h, w[4])), ck, cv, cmask)), w[5]);
        j = 6;
      }
      y = y + product(at::gelu(product(norm(y), w[j])), w[j + 1]);
      const std::string name = std::string("decode_block ") + kinds[kind] +
                               (cross ? ", cross-attention" : "");
      check(name, got, y, tols[kind], dtype);
      check(name + ": key cache", kc, rk, tols[kind]);
      check(name + ": value cache", vc, rv, tols[kind]);
    }
}

int main() {
  at::manual_seed(0);
  exact_cases();
  products();
  attentions();
  layers();
  std::printf("%d of %d checks passed\n", checks - failures, checks);
  return failures != 0;
}
