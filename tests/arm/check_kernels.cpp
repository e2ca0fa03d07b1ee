// The CPU kernels (musicgen_edu/backends/thin_linear.cpp, decode_step.cpp) against ATen's own
// operators, as a plain C++ program: built for ARM (AArch64 NEON) and run under qemu by
// run.sh, since no ARM machine is at hand (tests/test_thin.py runs it). The same checks as
// tests/test_thin.py makes of the x86 builds: products of 1-17 rows in fp32, bf16 and int8;
// one-token attention over caches of many lengths, masked or not; and a whole decoder layer in
// one call (decode_block) against the layer written with ATen's operators. Every reference
// product is an elementwise multiply and sum in float64, not ATen's GEMM: under qemu 7.2 the
// GEMM of PyTorch's ARM build gave wrong results for 16 rows or more.
#include <ATen/ATen.h>
#include <cmath>
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

// |got - want| <= tol * max|want| everywhere (and no NaN)
static void check(const std::string& what, const at::Tensor& got, const at::Tensor& want,
                  double tol) {
  const double err = (got.to(at::kFloat) - want.to(at::kFloat)).abs().max().item<double>();
  const double top = want.to(at::kFloat).abs().max().item<double>();
  const bool ok = err <= tol * top;                      // false for a NaN error
  ++checks;
  failures += !ok;
  if (!ok) std::printf("FAIL %s: max error %.3g, %.3g of max|want| (allowed %.3g)\n",
                       what.c_str(), err, err / top, tol);
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
      check("fp32" + shape, thin_linear(x, thin_pack(w), at::empty({0})), product(x, w), 1e-5);
      const auto xb = x.to(at::kBFloat16), wb = w.to(at::kBFloat16);
      check("bf16" + shape, thin_linear(xb, thin_pack(wb), at::empty({0})),
            product(xb, wb), 1e-2);                                        // bf16 output
      const auto scale = w.abs().amax(1) / 127;
      const auto q = (w / scale.unsqueeze(1)).round().to(at::kChar);
      const auto want = product(x, q) * scale;
      check("int8" + shape, thin_linear(x, thin_pack(q), scale), want, 1e-4);
      check("int8, bf16 rows" + shape, thin_linear(xb, thin_pack(q), scale),
            product(xb, q) * scale, 1e-2);
    }
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
        const auto got = decode_attention(q, k, v, length, mask);
        const auto want = attention(q, k.narrow(2, 0, length), v.narrow(2, 0, length), mask);
        check(std::string("attention ") + (dtype == at::kFloat ? "fp32" : "bf16") + " L=" +
              std::to_string(length) + (masked ? " masked" : ""), got, want, 1e-5);
      }
}

static void layers() {
  const int64_t N = 2, D = 64, H = 4, F = 128, Lmax = 40, L = 7, pos = 9;
  const double eps = 1e-5;
  for (bool cross : {false, true}) {
    std::vector<at::Tensor> w, packed, scales, norms;
    const int64_t outs[] = {D, D, D, D, D, D, F, D}, ins[] = {D, D, D, D, D, D, D, F};
    for (int j = 0; j < 8; ++j) {
      if (!cross && (j == 4 || j == 5)) continue;
      w.push_back(at::randn({outs[j], ins[j]}) / std::sqrt(double(ins[j])));
      packed.push_back(thin_pack(w.back()));
      scales.push_back(at::empty({0}));
    }
    for (int n = 0; n < (cross ? 3 : 2); ++n)
      norms.insert(norms.end(), {1 + 0.1 * at::randn({D}), 0.1 * at::randn({D})});
    const auto x = at::randn({N, 1, D});
    const auto k0 = at::randn({N, H, Lmax, D / H}), v0 = at::randn({N, H, Lmax, D / H});
    const auto ck = at::randn({N, H, L, D / H}), cv = at::randn({N, H, L, D / H});
    auto cmask = at::zeros({N, 1, 1, L});
    cmask.select(0, 1).narrow(2, 4, 3).fill_(-1e30);      // item 1: a padded text
    auto kc = k0.clone(), vc = v0.clone();
    const auto got = decode_block(x, packed, scales, norms, kc, vc, pos,
                                  cross ? std::optional<at::Tensor>(ck) : std::nullopt,
                                  cross ? std::optional<at::Tensor>(cv) : std::nullopt,
                                  cross ? std::optional<at::Tensor>(cmask) : std::nullopt, H, eps);
    // the layer with ATen's operators (musicgen_edu/backends/native.py, Block.forward)
    auto split = [&](const at::Tensor& h) { return h.view({N, 1, H, D / H}).transpose(1, 2); };
    auto merge = [&](const at::Tensor& o) { return o.transpose(1, 2).reshape({N, 1, D}); };
    size_t n = 0;
    auto norm = [&](const at::Tensor& h) {
      n += 2;
      return at::layer_norm(h, {D}, norms[n - 2], norms[n - 1], eps);
    };
    auto rk = k0.clone(), rv = v0.clone();
    auto h = norm(x);
    rk.narrow(2, pos, 1).copy_(split(product(h, w[1])));
    rv.narrow(2, pos, 1).copy_(split(product(h, w[2])));
    auto y = x + product(merge(attention(split(product(h, w[0])), rk.narrow(2, 0, pos + 1),
                                            rv.narrow(2, 0, pos + 1), std::nullopt)), w[3]);
    size_t j = 4;
    if (cross) {
      h = norm(y);
      y = y + product(merge(attention(split(product(h, w[4])), ck, cv, cmask)), w[5]);
      j = 6;
    }
    y = y + product(at::gelu(product(norm(y), w[j])), w[j + 1]);
    const std::string name = cross ? "decode_block, cross-attention" : "decode_block";
    check(name, got, y, 1e-5);
    check(name + ": key cache", kc, rk, 1e-5);
    check(name + ": value cache", vc, rv, 1e-5);
  }
}

int main() {
  at::manual_seed(0);
  products();
  attentions();
  layers();
  std::printf("%d of %d checks passed\n", checks - failures, checks);
  return failures != 0;
}
