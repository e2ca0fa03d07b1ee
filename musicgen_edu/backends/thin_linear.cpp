// Thin products for the decode step on a CPU: the linear layers, y[m, o] = sum_i x[m, i] w[o, i]
// for few rows m, and attention of one query over the cached keys and values.
//
// One decode step multiplies 2 rows (one prompt with CFG) by every weight matrix, so it is
// as fast as the weights stream from memory. General GEMM kernels (oneDNN, MKL) are built for
// many rows and read the weights of such a thin product at a fraction of the bandwidth
// (bench/README.md); this file reads each weight row once, straight through, and keeps one
// accumulator per input row in registers (a GEMV, as llama.cpp's ggml_vec_dot kernels do).
//
// Written in portable C++ with GCC/Clang vector extensions: 16 floats per vector, which the
// compiler maps to one AVX-512 register, two AVX2 registers or four NEON ones. It is
// compiled on the user's machine at first use (-march=native, linears.py), so it uses what
// that CPU has, and it is threaded with at::parallel_for (torch's own OpenMP pool).
// It registers its operators as torch.ops.musicgen_edu.thin_pack, .thin_linear and
// .decode_attention (at the end of the file).
//
// Weights: float32, bfloat16 (stored as uint16: a bf16 is the top half of a float32) or int8
// with one float scale per output row (y = scale[o] * sum_i x[m, i] * q[o, i]).
// Each output is summed in the same order whatever the number of rows, so an item's result
// does not depend on its batch (tests/test_linears.py checks the bits).

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <cstdint>
#include <algorithm>
#include <cmath>

typedef float f32x16 __attribute__((vector_size(64), aligned(4)));
typedef int32_t i32x16 __attribute__((vector_size(64)));
typedef uint32_t u32x16 __attribute__((vector_size(64)));
typedef int16_t i16x16 __attribute__((vector_size(32)));
typedef uint16_t u16x16 __attribute__((vector_size(32), aligned(2)));
typedef int8_t i8x16 __attribute__((vector_size(16), aligned(1)));

constexpr int kLanes = 16;   // floats per vector
constexpr int kRows = 4;     // input rows per pass over a weight row (accumulators in registers)

// 16 weights from memory as 16 floats. Where the compiler targets AVX-512, one widening
// instruction each (GCC 12 builds the portable versions out of 256-bit halves and shuffles).
static inline f32x16 widen16(const float* p) { return *(const f32x16*)p; }
#if defined(__AVX512F__)
#include <immintrin.h>
static inline f32x16 widen16(const uint16_t* p) {        // bf16 -> the top half of a float32
  return (f32x16)_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)p)), 16);
}
static inline f32x16 widen16(const int8_t* p) {
  return (f32x16)_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)p)));
}
#else
static inline f32x16 widen16(const uint16_t* p) {        // bf16 -> the top half of a float32
  return (f32x16)(__builtin_convertvector(*(const u16x16*)p, u32x16) << 16);
}
static inline f32x16 widen16(const int8_t* p) {          // via int16: vectorised by GCC 12
  return __builtin_convertvector(
      __builtin_convertvector(__builtin_convertvector(*(const i8x16*)p, i16x16), i32x16), f32x16);
}
#endif
// Output columns [16 c, 16 c + 16 B) for input rows [m0, m0 + R): x [M, I] float32,
// wb [O / 16, I, 16] (16 output rows interleaved, see ThinLinear). One vector of 16 weights
// times one input value broadcast: no sums across lanes, and each output is one running sum
// over i in order, whatever R and B are (so whatever the batch).
template <int R, int B, typename W>
static inline void block_rows(const float* x, const W* wb, const float* scale, float* y,
                              int64_t I, int64_t O, int64_t m0, int64_t c) {
  f32x16 acc[B][R] = {};                                 // [B][R] x 16 running sums
  const W* w = wb + c * I * kLanes;
  const float* xs = x + m0 * I;
  for (int64_t i = 0; i < I; ++i) {
    for (int b = 0; b < B; ++b) {
      const f32x16 wv = widen16(w + (b * I + i) * kLanes);
      for (int r = 0; r < R; ++r) acc[b][r] += wv * xs[r * I + i];
    }
  }
  for (int b = 0; b < B; ++b) {
    const f32x16 s = scale ? *(const f32x16*)(scale + (c + b) * kLanes) : f32x16{} + 1.0f;
    for (int r = 0; r < R; ++r)
      *(f32x16*)(y + (m0 + r) * O + (c + b) * kLanes) = acc[b][r] * s;
  }
}

template <int B, typename W>
static inline void blocks(const float* x, const W* wb, const float* scale, float* y,
                          int64_t M, int64_t I, int64_t O, int64_t c) {
  for (int64_t m0 = 0; m0 < M; m0 += kRows) {
    switch (std::min<int64_t>(M - m0, kRows)) {
      case 1: block_rows<1, B>(x, wb, scale, y, I, O, m0, c); break;
      case 2: block_rows<2, B>(x, wb, scale, y, I, O, m0, c); break;
      case 3: block_rows<3, B>(x, wb, scale, y, I, O, m0, c); break;
      default: block_rows<4, B>(x, wb, scale, y, I, O, m0, c); break;
    }
  }
}

template <typename W>
static void thin(const float* x, const W* wb, const float* scale, float* y,
                 int64_t M, int64_t I, int64_t O) {
  // Each thread takes a contiguous range of 32-column blocks; each block is read from memory
  // once, and from the cache again for each further group of kRows input rows.
  const int64_t pairs = O / (2 * kLanes);
  at::parallel_for(0, pairs, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) blocks<2>(x, wb, scale, y, M, I, O, 2 * p);
  });
  if (O % (2 * kLanes)) blocks<1>(x, wb, scale, y, M, I, O, 2 * pairs);
}

// bf16 weights where the CPU has AVX512-BF16 (vdpbf16ps): two inputs per instruction, no
// widening, twice the multiply-adds of float32 FMAs; what keeps batches of 4-8 prompts as fast
// as oneDNN's bf16 kernels. Layout [O / 16, I / 2, 16, 2]: for each pair of inputs, 16 outputs'
// two weights side by side; x in bf16 (a bf16 model's activations are), read as pairs.
#if defined(__AVX512BF16__)
constexpr bool kBf16Pairs = true;

template <int R, int B>
static inline void pair_rows(const uint32_t* x2, const uint16_t* wb, float* y, int64_t I2,
                             int64_t O, int64_t m0, int64_t c) {
  __m512 acc[B][R];                                     // [B][R] x 16 running sums
  for (int b = 0; b < B; ++b)
    for (int r = 0; r < R; ++r) acc[b][r] = _mm512_setzero_ps();
  const uint16_t* w = wb + c * I2 * 2 * kLanes;
  for (int64_t i = 0; i < I2; ++i) {
    for (int b = 0; b < B; ++b) {
      const __m512bh wv = (__m512bh)_mm512_loadu_si512(w + (b * I2 + i) * 2 * kLanes);
      for (int r = 0; r < R; ++r)
        acc[b][r] = _mm512_dpbf16_ps(acc[b][r], wv,
                                     (__m512bh)_mm512_set1_epi32(int(x2[(m0 + r) * I2 + i])));
    }
  }
  for (int b = 0; b < B; ++b)
    for (int r = 0; r < R; ++r) _mm512_storeu_ps(y + (m0 + r) * O + (c + b) * kLanes, acc[b][r]);
}

template <int B>
static inline void pair_blocks(const uint32_t* x2, const uint16_t* wb, float* y, int64_t M,
                               int64_t I2, int64_t O, int64_t c) {
  for (int64_t m0 = 0; m0 < M; m0 += kRows) {
    switch (std::min<int64_t>(M - m0, kRows)) {
      case 1: pair_rows<1, B>(x2, wb, y, I2, O, m0, c); break;
      case 2: pair_rows<2, B>(x2, wb, y, I2, O, m0, c); break;
      case 3: pair_rows<3, B>(x2, wb, y, I2, O, m0, c); break;
      default: pair_rows<4, B>(x2, wb, y, I2, O, m0, c); break;
    }
  }
}

static void thin_pairs(const uint32_t* x2, const uint16_t* wb, float* y, int64_t M, int64_t I2,
                       int64_t O) {
  const int64_t pairs = O / (2 * kLanes);
  at::parallel_for(0, pairs, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) pair_blocks<2>(x2, wb, y, M, I2, O, 2 * p);
  });
  if (O % (2 * kLanes)) pair_blocks<1>(x2, wb, y, M, I2, O, 2 * pairs);
}
#else
constexpr bool kBf16Pairs = false;
#endif

// weight [O, I] -> the layout thin_linear reads: [O / 16, I, 16], or for bf16 weights on a
// CPU with AVX512-BF16 (and I even) [O / 16, I / 2, 16, 2].
torch::Tensor thin_pack(torch::Tensor weight) {
  TORCH_CHECK(weight.dim() == 2 && weight.size(0) % kLanes == 0, "thin_pack: weight [O, I] "
              "with O a multiple of 16 expected, got ", weight.sizes());
  const int64_t O = weight.size(0), I = weight.size(1);
  if (kBf16Pairs && weight.scalar_type() == torch::kBFloat16 && I % 2 == 0)
    return weight.reshape({O / kLanes, kLanes, I / 2, 2}).permute({0, 2, 1, 3}).contiguous();
  return weight.reshape({O / kLanes, kLanes, I}).transpose(1, 2).contiguous();
}

// x [M, I] (any float dtype); weight from thin_pack (float32 / bfloat16 / int8, O a multiple
// of 16); scale [O] float32 for int8, else an empty tensor. Returns y [M, O] float32.
torch::Tensor thin_linear(torch::Tensor x, torch::Tensor weight, torch::Tensor scale) {
  const bool pairs = weight.dim() == 4;                 // bf16 on AVX512-BF16 (thin_pack)
  const int64_t I = pairs ? weight.size(1) * 2 : weight.dim() == 3 ? weight.size(1) : -1;
  TORCH_CHECK(x.dim() == 2 && weight.size(-1) == (pairs ? 2 : kLanes) && x.size(1) == I &&
              (!pairs || weight.size(2) == kLanes), "thin_linear: x [M, I] and weight "
              "[O / 16, I, 16] (or [O / 16, I / 2, 16, 2]) expected, got ", x.sizes(), " and ",
              weight.sizes());
  TORCH_CHECK(weight.is_contiguous() && x.device().is_cpu() && weight.device().is_cpu(),
              "thin_linear: contiguous CPU tensors expected");
#if defined(__AVX512BF16__)
  if (pairs) {
    TORCH_CHECK(weight.scalar_type() == torch::kBFloat16 && x.scalar_type() == torch::kBFloat16,
                "thin_linear: paired weights are for bf16 weights and activations");
    const auto xb = x.contiguous();
    auto y = torch::empty({x.size(0), weight.size(0) * kLanes}, x.options().dtype(torch::kFloat));
    thin_pairs(reinterpret_cast<const uint32_t*>(xb.data_ptr()),
               reinterpret_cast<const uint16_t*>(weight.data_ptr()), y.data_ptr<float>(),
               x.size(0), I / 2, y.size(1));
    return y;
  }
#else
  TORCH_CHECK(!pairs, "thin_linear: paired bf16 weights need AVX512-BF16");
#endif
  const auto xf = x.to(torch::kFloat).contiguous();
  const int64_t M = xf.size(0), O = weight.size(0) * kLanes;
  auto y = torch::empty({M, O}, xf.options());
  const float* xp = xf.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  switch (weight.scalar_type()) {
    case torch::kFloat: thin(xp, weight.data_ptr<float>(), nullptr, yp, M, I, O); break;
    case torch::kBFloat16:
      thin(xp, reinterpret_cast<const uint16_t*>(weight.data_ptr()), nullptr, yp, M, I, O);
      break;
    case torch::kChar:
      TORCH_CHECK(scale.numel() == O && scale.scalar_type() == torch::kFloat &&
                  scale.is_contiguous(), "thin_linear: int8 weights need a float32 scale [O]");
      thin(xp, weight.data_ptr<int8_t>(), scale.data_ptr<float>(), yp, M, I, O);
      break;
    default: TORCH_CHECK(false, "thin_linear: weights must be float32, bfloat16 or int8");
  }
  return y;
}

// ---- Attention of one query per head over the cache (a one-token decode step) -------------
//
// softmax(q . k[p] / sqrt(D)) over the positions p < L, then the weighted sum of v[p]: the
// same as torch's scaled_dot_product_attention, reading each cached key and value once, in
// float32 or bfloat16 (the cache's dtype), with the sums in float32.

static inline float hsum(f32x16 v) {                    // v[0] + ... + v[15], by halves
  float h[8];                                           // (GCC < 12 has no shufflevector)
  for (int l = 0; l < 8; ++l) h[l] = v[l] + v[l + 8];
  for (int l = 0; l < 4; ++l) h[l] += h[l + 4];
  return (h[0] + h[2]) + (h[1] + h[3]);
}

// e^x for x <= 0 (scores minus their maximum), 16 at a time: 2^n e^r with |r| <= ln(2)/2 and
// Cephes' expf polynomial for e^r (relative error ~1e-7, like expf); exactly 0 below -87, so
// masked positions (and padding) add nothing at all.
static inline f32x16 exp16(f32x16 in) {
  const f32x16 x = in < -87.0f ? f32x16{} - 87.0f : in;
  const i32x16 n = __builtin_convertvector(x * 1.44269504f - 0.5f, i32x16);  // round(x / ln 2)
  const f32x16 nf = __builtin_convertvector(n, f32x16);
  const f32x16 r = x - nf * 0.693359375f + nf * 2.12194440e-4f;               // x - n ln 2
  f32x16 p = r * 1.9875691500e-4f + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const f32x16 e = p * (f32x16)((n + 127) << 23);      // times 2^n, built from its bits
  return in < -87.0f ? f32x16{} : e;
}

// q [NH, D] float32; k, v [NH, Lmax, D] (first L positions used); mask [NH / H, L] added to
// the scores (or null); scores [NH, L16] scratch; out [NH, D]. D a multiple of 16, <= 128.
template <typename T>
static void attend(const float* q, const T* k, const T* v, const float* mask, float* scores,
                   float* out, int64_t NH, int64_t H, int64_t Lmax, int64_t L, int64_t L16,
                   int64_t D) {
  const float scale = 1.0f / std::sqrt(float(D));
  const int64_t V = D / kLanes;                         // vectors per head, <= 8
  at::parallel_for(0, NH, 1, [&](int64_t h0, int64_t h1) {
    for (int64_t h = h0; h < h1; ++h) {
      const T* kh = k + h * Lmax * D;
      const T* vh = v + h * Lmax * D;
      float* s = scores + h * L16;
      f32x16 qv[8];
      for (int64_t j = 0; j < V; ++j) qv[j] = *(const f32x16*)(q + h * D + j * kLanes) * scale;
      float top = -INFINITY;                            // 1. scores and their maximum
      for (int64_t p = 0; p < L; ++p) {
        f32x16 acc = {};
        for (int64_t j = 0; j < V; ++j) acc += widen16(kh + p * D + j * kLanes) * qv[j];
        s[p] = hsum(acc) + (mask ? mask[h / H * L + p] : 0.0f);
        top = std::max(top, s[p]);
      }
      for (int64_t p = L; p < L16; ++p) s[p] = -INFINITY;   // padding: e^-inf = 0 below
      f32x16 total = {};                                // 2. e^(s - max) and their sum, in
      for (int64_t p = 0; p < L16; p += kLanes) {       //    whole vectors: masked text and
        const f32x16 e = exp16(*(f32x16*)(s + p) - top); //    padding add exact zeros, so a
        *(f32x16*)(s + p) = e;                          //    prompt padded in a batch sums
        total += e;                                     //    the same bits as alone
      }
      const float sum = hsum(total);
      f32x16 o[8] = {};                                 // 3. the weighted sum of values
      for (int64_t p = 0; p < L; ++p)
        for (int64_t j = 0; j < V; ++j) o[j] += widen16(vh + p * D + j * kLanes) * s[p];
      for (int64_t j = 0; j < V; ++j) *(f32x16*)(out + h * D + j * kLanes) = o[j] / sum;
    }
  });
}

// q [N, H, 1, D] (any float dtype); k_cache, v_cache [N, H, Lmax, D] float32 or bfloat16,
// contiguous; attends to the first `length` positions; mask: None or [N, 1, 1, length] added
// to the scores (0 attend, a large negative number not). Returns [N, H, 1, D] float32.
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
  const auto qf = q.to(torch::kFloat).contiguous();
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
  auto scores = torch::empty({N * H, L16}, qf.options());
  auto out = torch::empty({N, H, 1, D}, qf.options());
  switch (k_cache.scalar_type()) {
    case torch::kFloat:
      attend(qf.data_ptr<float>(), k_cache.data_ptr<float>(), v_cache.data_ptr<float>(), mp,
             scores.data_ptr<float>(), out.data_ptr<float>(), N * H, H, Lmax, length, L16, D);
      break;
    case torch::kBFloat16:
      attend(qf.data_ptr<float>(), reinterpret_cast<const uint16_t*>(k_cache.data_ptr()),
             reinterpret_cast<const uint16_t*>(v_cache.data_ptr()), mp, scores.data_ptr<float>(),
             out.data_ptr<float>(), N * H, H, Lmax, length, L16, D);
      break;
    default: TORCH_CHECK(false, "decode_attention: caches must be float32 or bfloat16");
  }
  return out;
}

// An operator torch knows (torch.ops.musicgen_edu.thin_linear), so torch.compile can trace
// through it (linears.py gives it a shape function); the Python module itself is empty.
TORCH_LIBRARY(musicgen_edu, m) {
  m.def("thin_pack(Tensor weight) -> Tensor");
  m.def("thin_linear(Tensor x, Tensor weight, Tensor scale) -> Tensor");
  m.def("decode_attention(Tensor q, Tensor k_cache, Tensor v_cache, int length, "
        "Tensor? mask=None) -> Tensor");
}
TORCH_LIBRARY_IMPL(musicgen_edu, CPU, m) {
  m.impl("thin_pack", &thin_pack);
  m.impl("thin_linear", &thin_linear);
  m.impl("decode_attention", &decode_attention);
}
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {}
