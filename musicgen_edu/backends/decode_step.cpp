// The attention and the whole decoder layer of a one-token decode step on a CPU, built with
// thin_linear.cpp (the same extension, thin.py): decode_attention reads the filled part of
// the KV cache once, decode_block runs native.py's Block.forward for one token in one call.
// Registered as torch.ops.musicgen_edu.decode_attention and .decode_block (end of the file).

#include "thin_vectors.h"

// ---- Attention of one query per head over the cache (a one-token decode step) -------------
//
// softmax(q . k[p] / sqrt(D)) over the positions p < L, then the weighted sum of v[p]: the
// same as torch's scaled_dot_product_attention, reading each cached key and value once, in
// float32 or bfloat16 (the cache's dtype), with the sums in float32.

static inline float hsum(const fvec (&v)[kParts]) {     // the 16 lanes' sum, by halves
  float f[kLanes], h[8];                                // (the same order whatever kVec)
  std::memcpy(f, v, sizeof f);
  for (int l = 0; l < 8; ++l) h[l] = f[l] + f[l + 8];
  for (int l = 0; l < 4; ++l) h[l] += h[l + 4];
  return (h[0] + h[2]) + (h[1] + h[3]);
}

// e^x for x <= 0 (scores minus their maximum), kVec at a time: 2^n e^r with |r| <= ln(2)/2 and
// Cephes' expf polynomial for e^r (relative error ~1e-7, like expf); exactly 0 below -87, so
// masked positions (and padding) add nothing at all.
static inline fvec vexp(fvec in) {
  const fvec x = in < -87.0f ? splat(-87.0f) : in;
  const ivec n = __builtin_convertvector(x * 1.44269504f - 0.5f, ivec);      // round(x / ln 2)
  const fvec nf = __builtin_convertvector(n, fvec);
  const fvec r = madd(nf, splat(2.12194440e-4f), madd(nf, splat(-0.693359375f), x));  // - n ln 2
  fvec p = madd(r, splat(1.9875691500e-4f), splat(1.3981999507e-3f));
  p = madd(p, r, splat(8.3334519073e-3f));
  p = madd(p, r, splat(4.1665795894e-2f));
  p = madd(p, r, splat(1.6666665459e-1f));
  p = madd(p, r, splat(5.0000001201e-1f));
  p = madd(p, r * r, r) + 1.0f;
  const fvec e = p * (fvec)((n + 127) << 23);          // times 2^n, built from its bits
  return in < -87.0f ? fvec{} : e;
}

// q [NH, D] and out [NH, D] float32 or bf16 (Q); k, v [NH, Lmax, D] (first L positions used);
// mask [NH / H, L] added to the scores (or null); scores [NH, L16] scratch. D a multiple of 16,
// <= 128.
template <typename T, typename Q>
static void attend(const Q* q, const T* k, const T* v, const float* mask, float* scores,
                   Q* out, int64_t NH, int64_t H, int64_t Lmax, int64_t L, int64_t L16,
                   int64_t D) {
  const float scale = 1.0f / std::sqrt(float(D));
  const int64_t V = D / kVec;                           // vectors per head, <= 128 / kVec
  at::parallel_for(0, NH, 1, [&](int64_t h0, int64_t h1) {
    for (int64_t h = h0; h < h1; ++h) {
      const T* kh = k + h * Lmax * D;
      const T* vh = v + h * Lmax * D;
      float* s = scores + h * L16;
      fvec qv[128 / kVec];
      for (int64_t j = 0; j < V; ++j) qv[j] = widen(q + h * D + j * kVec) * scale;
      float top = -INFINITY;                            // 1. scores and their maximum
      for (int64_t p = 0; p < L; ++p) {
        fvec acc[kParts] = {};                          // 16 lanes: the sum of q . k per
        for (int64_t j = 0; j < V; ++j)                 // lane over the head's 16-float
          acc[j % kParts] = madd(widen(kh + p * D + j * kVec), qv[j], acc[j % kParts]);
        s[p] = hsum(acc) + (mask ? mask[h / H * L + p] : 0.0f);
        top = std::max(top, s[p]);
      }
      for (int64_t p = L; p < L16; ++p) s[p] = -INFINITY;   // padding: e^-inf = 0 below
      fvec total[kParts] = {};                          // 2. e^(s - max) and their sum, in
      for (int64_t p = 0; p < L16; p += kVec) {         //    whole vectors: masked text and
        const fvec e = vexp(*(fvec*)(s + p) - top);     //    padding add exact zeros, so a
        *(fvec*)(s + p) = e;                            //    prompt padded in a batch sums
        total[p / kVec % kParts] += e;                  //    the same bits as alone
      }
      const float sum = hsum(total);
      fvec o[128 / kVec] = {};                          // 3. the weighted sum of values
      for (int64_t p = 0; p < L; ++p)
        for (int64_t j = 0; j < V; ++j)
          o[j] = madd(widen(vh + p * D + j * kVec), splat(s[p]), o[j]);
      for (int64_t j = 0; j < V; ++j) put(out + h * D + j * kVec, o[j] / sum);
    }
  });
}

// q [N, H, 1, D] float32 or bfloat16; k_cache, v_cache [N, H, Lmax, D] float32 or bfloat16,
// contiguous; attends to the first `length` positions; mask: None or [N, 1, 1, length] added
// to the scores (0 attend, a large negative number not). Returns [N, H, 1, D] in q's dtype.
torch::Tensor decode_attention(torch::Tensor q, torch::Tensor k_cache, torch::Tensor v_cache,
                               int64_t length, const std::optional<torch::Tensor>& mask) {
  TORCH_CHECK(q.dim() == 4 && q.size(2) == 1 && k_cache.dim() == 4 &&
              k_cache.sizes() == v_cache.sizes() && q.size(0) == k_cache.size(0) &&
              q.size(1) == k_cache.size(1) && q.size(3) == k_cache.size(3),
              "decode_attention: q [N, H, 1, D] and caches [N, H, Lmax, D] expected, got ",
              q.sizes(), " and ", k_cache.sizes());
  const int64_t N = q.size(0), H = q.size(1), D = q.size(3), Lmax = k_cache.size(2);
  TORCH_CHECK(D % kLanes == 0 && D <= 8 * kLanes, "decode_attention: head size must be a "
              "multiple of 16 up to 128, got ", D);
  TORCH_CHECK(length >= 1 && length <= Lmax, "decode_attention: length must be in [1, ",
              Lmax, "], got ", length);
  TORCH_CHECK(k_cache.is_contiguous() && v_cache.is_contiguous() &&
              k_cache.scalar_type() == v_cache.scalar_type() && k_cache.device().is_cpu(),
              "decode_attention: contiguous CPU caches of one dtype expected");
  TORCH_CHECK(q.scalar_type() == torch::kFloat || q.scalar_type() == torch::kBFloat16,
              "decode_attention: q must be float32 or bfloat16, got ", q.scalar_type());
  const auto qc = q.contiguous();
  torch::Tensor mf;                                     // [N, length] float32, or undefined
  if (mask.has_value()) {
    TORCH_CHECK(mask->numel() == N * length, "decode_attention: mask [N, 1, 1, length] = [",
                N, ", 1, 1, ", length, "] expected, got ", mask->sizes());
    TORCH_CHECK(mask->is_floating_point(), "decode_attention: an additive float mask expected "
                "(0 attend, a large negative number not), got ", mask->scalar_type());
    mf = mask->to(torch::kFloat).contiguous();
  }
  const float* mp = mf.defined() ? mf.data_ptr<float>() : nullptr;
  const int64_t L16 = (length + kLanes - 1) / kLanes * kLanes;
  static thread_local std::vector<float> scores;       // [N H, L16] scratch
  scores.resize(N * H * L16);
  auto out = torch::empty({N, H, 1, D}, q.options());
  auto run = [&](auto* qp, auto* kp, auto* vp) {
    attend(qp, kp, vp, mp, scores.data(), decltype(qp)(out.data_ptr()), N * H, H, Lmax,
           length, L16, D);
  };
  const bool bf16_q = q.scalar_type() == torch::kBFloat16;
  switch (k_cache.scalar_type()) {
    case torch::kFloat: {
      const float* kp = k_cache.data_ptr<float>();
      const float* vp = v_cache.data_ptr<float>();
      if (bf16_q) run(reinterpret_cast<uint16_t*>(qc.data_ptr()), kp, vp);
      else run(qc.data_ptr<float>(), kp, vp);
      break;
    }
    case torch::kBFloat16: {
      const uint16_t* kp = reinterpret_cast<const uint16_t*>(k_cache.data_ptr());
      const uint16_t* vp = reinterpret_cast<const uint16_t*>(v_cache.data_ptr());
      if (bf16_q) run(reinterpret_cast<uint16_t*>(qc.data_ptr()), kp, vp);
      else run(qc.data_ptr<float>(), kp, vp);
      break;
    }
    default: TORCH_CHECK(false, "decode_attention: caches must be float32 or bfloat16");
  }
  return out;
}

// ---- One decoder layer for one token, in one call ------------------------------------------
//
// native.py's Block.forward for a one-token step (pos an int), the same operations in the same
// order and dtypes, so the same bits: pre-norm self-attention (keys and values written into the
// cache at pos), cross-attention to the text (text models), then the GELU feed-forward. What it
// saves is Python: the dispatch of ~40 operator calls per layer and step (what that costs:
// bench/README.md, section "Linear layers for thin products").
//
// x [N, 1, D]; weights (thin_pack'ed) and scales (int8; else empty) in the order q, k, v, out,
// [cross q, cross out,] fc1, fc2; norms: weight and bias of each layer norm in order.
torch::Tensor decode_block(torch::Tensor x, std::vector<torch::Tensor> weights,
                           std::vector<torch::Tensor> scales, std::vector<torch::Tensor> norms,
                           torch::Tensor k_cache, torch::Tensor v_cache, int64_t pos,
                           const std::optional<torch::Tensor>& cross_k,
                           const std::optional<torch::Tensor>& cross_v,
                           const std::optional<torch::Tensor>& cross_mask, int64_t heads,
                           double eps) {
  const bool cross = cross_k.has_value();
  TORCH_CHECK(x.dim() == 3 && x.size(1) == 1, "decode_block: x [N, 1, D] expected, got ",
              x.sizes());
  TORCH_CHECK(weights.size() == (cross ? 8u : 6u) && scales.size() == weights.size() &&
              norms.size() == (cross ? 6u : 4u), "decode_block: 6 (8 with cross-attention) "
              "weights and scales and 4 (6) norm tensors expected, got ", weights.size(), ", ",
              scales.size(), " and ", norms.size());
  const int64_t N = x.size(0), D = x.size(2);
  auto linear = [&](const torch::Tensor& h, size_t j) {          // [N, 1, I] -> [N, 1, O]
    return thin_linear(h.reshape({N, -1}), weights[j], scales[j]).view({N, 1, -1});
  };
  auto split = [&](const torch::Tensor& h) {                     // [N, 1, D] -> [N, H, 1, D/H]
    return h.view({N, 1, heads, D / heads}).transpose(1, 2);
  };
  auto merge = [&](const torch::Tensor& out) {                   // heads back, in x's dtype
    return out.to(x.scalar_type()).transpose(1, 2).reshape({N, 1, D});
  };
  size_t n = 0;                                                  // next norm
  auto norm = [&](const torch::Tensor& h) {
    n += 2;
    return at::layer_norm(h, {D}, norms[n - 2], norms[n - 1], eps);
  };
  auto h = norm(x);                                              // self-attention
  k_cache.narrow(2, pos, 1).copy_(split(linear(h, 1)));
  v_cache.narrow(2, pos, 1).copy_(split(linear(h, 2)));
  x = x + linear(merge(decode_attention(split(linear(h, 0)), k_cache, v_cache, pos + 1,
                                        std::nullopt)), 3);
  size_t j = 4;
  if (cross) {                                                   // cross-attention
    h = norm(x);
    x = x + linear(merge(decode_attention(split(linear(h, 4)), *cross_k, *cross_v,
                                          cross_k->size(2), cross_mask)), 5);
    j = 6;
  }
  return x + linear(at::gelu(linear(norm(x), j)), j + 1);       // feed-forward
}

TORCH_LIBRARY_IMPL(musicgen_edu, CPU, m) {
  m.impl("decode_attention", &decode_attention);
  m.impl("decode_block", &decode_block);
}
