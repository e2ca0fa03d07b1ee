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
// It registers its operators as torch.ops.musicgen_edu.thin_pack, .thin_linear,
// .decode_attention and .decode_block (a whole decoder layer for one token; end of the file).
//
// Weights: float32, bfloat16 (stored as uint16: a bf16 is the top half of a float32) or int8
// with one float scale per output row (y = scale[o] * sum_i x[m, i] * q[o, i]). Activations
// x: float32 or bfloat16, read as they are; y comes back in x's dtype (no conversions around
// the call: a step makes ~200 of them). Each output is summed in the same order whatever the
// number of rows, so an item's result does not depend on its batch (tests/test_linears.py
// checks the bits).

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <cstdint>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

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
// One activation as a float (bf16: the top half of a float32).
static inline float scalar(float v) { return v; }
static inline float scalar(uint16_t b) {
  const uint32_t bits = uint32_t(b) << 16;
  float v;
  std::memcpy(&v, &bits, 4);
  return v;
}

// 16 results to memory: float32, or bfloat16 rounded to nearest-even as torch rounds (NaN
// stays a NaN), so a kernel that writes bf16 gives the bits of float32 output then .to(bf16).
static inline void put16(float* y, f32x16 v) { *(f32x16*)y = v; }
static inline void put16(uint16_t* y, f32x16 v) {
  const u32x16 b = (u32x16)v;
  const u32x16 r = (b + 0x7FFFu + ((b >> 16) & 1u)) >> 16;
  const u32x16 nan = (u32x16)(v != v);                  // all ones where v is a NaN
  *(u16x16*)y = __builtin_convertvector((r & ~nan) | (0x7FC0u & nan), u16x16);
}

// Output columns [16 c, 16 c + 16 B) for input rows [m0, m0 + R): x [M, I] float32,
// wb [O / 16, I, 16] (16 output rows interleaved, see ThinLinear), y [M, O]. One vector of 16
// weights times one input value broadcast: no sums across lanes, and each output is one
// running sum over i in order, whatever R and B are (so whatever the batch).
template <int R, int B, typename W, typename Y>
static inline void block_rows(const float* x, const W* wb, const float* scale, Y* y,
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
    for (int r = 0; r < R; ++r) put16(y + (m0 + r) * O + (c + b) * kLanes, acc[b][r] * s);
  }
}

// Constants as values: blocks of B column groups and R rows are template arguments (so the
// accumulators stay in registers), chosen at run time by the two loops below.
template <int N> using Int = std::integral_constant<int, N>;

// Rows [m0, m0 + R) in groups of up to kRows: run(m0, Int<R>{}).
template <typename F>
static inline void over_rows(int64_t M, F run) {
  for (int64_t m0 = 0; m0 < M; m0 += kRows) {
    switch (std::min<int64_t>(M - m0, kRows)) {
      case 1: run(m0, Int<1>{}); break;
      case 2: run(m0, Int<2>{}); break;
      case 3: run(m0, Int<3>{}); break;
      default: run(m0, Int<4>{}); break;
    }
  }
}

// Output columns in blocks of G 16-wide groups, split over threads: run(c, Int<G>{}) for
// columns [16 c, 16 c + 16 G), and Int<1> for each group left over. Each thread takes a
// contiguous range; each block's weights are read from memory once, and from the cache again
// for each further kRows input rows.
template <int G = 2, typename F>
static inline void over_columns(int64_t O, F run) {
  const int64_t groups = O / (G * kLanes);
  at::parallel_for(0, groups, 1, [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g) run(G * g, Int<G>{});
  });
  for (int64_t c = groups * G; c < O / kLanes; ++c) run(c, Int<1>{});
}

template <typename W, typename Y>
static void thin(const float* x, const W* wb, const float* scale, Y* y,
                 int64_t M, int64_t I, int64_t O) {
  over_columns(O, [&](int64_t c, auto B) {
    over_rows(M, [&](int64_t m0, auto R) {
      block_rows<decltype(R)::value, decltype(B)::value>(x, wb, scale, y, I, O, m0, c);
    });
  });
}

// bf16 weights where the CPU has AVX512-BF16 (vdpbf16ps): two inputs per instruction, no
// widening, twice the multiply-adds of float32 FMAs; what keeps batches of 4-8 prompts as fast
// as oneDNN's bf16 kernels. Layout [O / 16, I / 2, 16, 2]: for each pair of inputs, 16 outputs'
// two weights side by side; x in bf16 (a bf16 model's activations are), read as pairs.
#if defined(__AVX512BF16__)
constexpr bool kBf16Pairs = true;

template <int R, int B, typename Y>
static inline void pair_rows(const uint32_t* x2, const uint16_t* wb, Y* y, int64_t I2,
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
    for (int r = 0; r < R; ++r) put16(y + (m0 + r) * O + (c + b) * kLanes, (f32x16)acc[b][r]);
}
#else
constexpr bool kBf16Pairs = false;
#endif

// int8 weights where the CPU has AVX512-VNNI (vpdpwssd: 16-bit pairs multiplied and added
// into 32-bit integers). Widening each int8 weight to a float costs more than reading it
// (≈ 20 G weights/s on 2 cores: bench/README.md), so instead each row of x is quantized to
// int16 with its own scale (x ≈ sx[m] * qx[m, i], |qx| <= 32767: an error of at most
// max|x[m]| / 65534 per input, far below the int8 weights' own), and the products run on
// integers: one sign extension per 32 weights and one instruction per pair of inputs and row.
// Layout [O / 16, I / 2, 16, 2] as for bf16. The 32-bit sums are moved into float ones every
// kFlush pairs, before they could overflow (kFlush * 2 * 127 * 32767 < 2^31). A row's scale
// depends on that row alone, so results stay batch-invariant bit for bit.
#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
constexpr bool kInt8Pairs = true;
constexpr int64_t kFlush = 128;                         // input pairs per 32-bit sum

// 32-bit sums over input pairs [i0, i1) (at most kFlush of them), added into acc as floats.
template <int R, int B>
static inline void vnni_span(const uint32_t* x2, const int8_t* w, f32x16 (&acc)[B][R],
                             int64_t I2, int64_t i0, int64_t i1, int64_t m0) {
  i32x16 part[B][R] = {};
  for (int64_t i = i0; i < i1; ++i) {
    for (int b = 0; b < B; ++b) {
      const __m512i wv = _mm512_cvtepi8_epi16(                 // 16 outputs x 2 inputs
          _mm256_loadu_si256((const __m256i*)(w + (b * I2 + i) * 2 * kLanes)));
      for (int r = 0; r < R; ++r)
        part[b][r] = (i32x16)_mm512_dpwssd_epi32(
            (__m512i)part[b][r], wv, _mm512_set1_epi32(int(x2[(m0 + r) * I2 + i])));
    }
  }
  for (int b = 0; b < B; ++b)
    for (int r = 0; r < R; ++r) acc[b][r] += __builtin_convertvector(part[b][r], f32x16);
}

template <int R, int B, typename Y>
static inline void vnni_rows(const uint32_t* x2, const float* sx, const int8_t* wb,
                             const float* scale, Y* y, int64_t I2, int64_t O, int64_t m0,
                             int64_t c) {
  f32x16 acc[B][R] = {};                                // [B][R] x 16 running float sums
  const int8_t* w = wb + c * I2 * 2 * kLanes;
  for (int64_t i0 = 0; i0 < I2; i0 += kFlush)
    vnni_span<R, B>(x2, w, acc, I2, i0, std::min(I2, i0 + kFlush), m0);
  for (int b = 0; b < B; ++b) {
    const f32x16 s = *(const f32x16*)(scale + (c + b) * kLanes);
    for (int r = 0; r < R; ++r)
      put16(y + (m0 + r) * O + (c + b) * kLanes, acc[b][r] * s * sx[m0 + r]);
  }
}

// x [M, I] -> qx [M, I] int16 (read as pairs) and sx [M]: qx = round(x / sx), sx = max|x| / 32767.
template <typename X>
static void quantize_rows(const X* x, int64_t M, int64_t I, std::vector<int16_t>& qx,
                          std::vector<float>& sx) {
  qx.resize(M * I);
  sx.resize(M);
  const int64_t I16 = I / kLanes * kLanes;
  for (int64_t m = 0; m < M; ++m) {
    const X* xm = x + m * I;
    __m512 top16 = _mm512_setzero_ps();
    for (int64_t i = 0; i < I16; i += kLanes)
      top16 = _mm512_max_ps(top16, _mm512_abs_ps((__m512)widen16(xm + i)));
    float top = _mm512_reduce_max_ps(top16);
    for (int64_t i = I16; i < I; ++i) top = std::max(top, std::fabs(scalar(xm[i])));
    sx[m] = top > 0.0f ? top / 32767.0f : 1.0f;
    const float inv = top > 0.0f ? 32767.0f / top : 0.0f;
    int16_t* q = qx.data() + m * I;
    for (int64_t i = 0; i < I16; i += kLanes)          // rounded to nearest (even), as below
      _mm256_storeu_si256((__m256i*)(q + i), _mm512_cvtepi32_epi16(
          _mm512_cvtps_epi32(_mm512_mul_ps((__m512)widen16(xm + i), _mm512_set1_ps(inv)))));
    for (int64_t i = I16; i < I; ++i) q[i] = int16_t(std::nearbyint(scalar(xm[i]) * inv));
  }
}
#else
constexpr bool kInt8Pairs = false;
#endif

// weight [O, I] -> the layout thin_linear reads: [O / 16, I, 16], or for bf16 weights on a
// CPU with AVX512-BF16 and int8 weights on one with AVX512-VNNI (I even) [O / 16, I / 2, 16, 2].
torch::Tensor thin_pack(torch::Tensor weight) {
  TORCH_CHECK(weight.dim() == 2 && weight.size(0) % kLanes == 0, "thin_pack: weight [O, I] "
              "with O a multiple of 16 expected, got ", weight.sizes());
  const int64_t O = weight.size(0), I = weight.size(1);
  const auto type = weight.scalar_type();
  if (I % 2 == 0 && ((kBf16Pairs && type == torch::kBFloat16) ||
                     (kInt8Pairs && type == torch::kChar)))
    return weight.reshape({O / kLanes, kLanes, I / 2, 2}).permute({0, 2, 1, 3}).contiguous();
  return weight.reshape({O / kLanes, kLanes, I}).transpose(1, 2).contiguous();
}

// x as float32 rows: its own data, or (bf16) converted into this thread's scratch buffer.
static const float* float_rows(const torch::Tensor& x, std::vector<float>& scratch) {
  if (x.scalar_type() == torch::kFloat) return x.data_ptr<float>();
  const uint16_t* xb = reinterpret_cast<const uint16_t*>(x.data_ptr());
  scratch.resize(x.numel());
  for (int64_t i = 0; i < x.numel(); ++i) scratch[i] = scalar(xb[i]);
  return scratch.data();
}

// y = x w^T for one weight layout and x's dtype (X: float or uint16_t for bf16; y likewise).
template <typename X>
static void thin_linear_as(const torch::Tensor& x, const torch::Tensor& weight,
                           const torch::Tensor& scale, torch::Tensor& y) {
  const int64_t M = x.size(0), I = x.size(1), O = y.size(1);
  const X* xp = reinterpret_cast<const X*>(x.data_ptr());
  X* yp = reinterpret_cast<X*>(y.data_ptr());
  const bool pairs = weight.dim() == 4;
  static thread_local std::vector<float> xf;            // x as floats (blocked layouts)
  static thread_local std::vector<int16_t> qx;          // x as int16 (VNNI)
  static thread_local std::vector<float> sx;
  switch (weight.scalar_type()) {
    case torch::kFloat: thin(float_rows(x, xf), weight.data_ptr<float>(), nullptr, yp, M, I, O);
      break;
    case torch::kBFloat16: {
      const uint16_t* wp = reinterpret_cast<const uint16_t*>(weight.data_ptr());
#if defined(__AVX512BF16__)
      if (pairs) {
        TORCH_CHECK(x.scalar_type() == torch::kBFloat16, "thin_linear: paired bf16 weights "
                    "are for bf16 activations, got ", x.scalar_type());
        const uint32_t* x2 = reinterpret_cast<const uint32_t*>(xp);
        over_columns(O, [&](int64_t c, auto B) {
          over_rows(M, [&](int64_t m0, auto R) {
            pair_rows<decltype(R)::value, decltype(B)::value>(x2, wp, yp, I / 2, O, m0, c);
          });
        });
        break;
      }
#endif
      TORCH_CHECK(!pairs, "thin_linear: paired bf16 weights need AVX512-BF16");
      thin(float_rows(x, xf), wp, nullptr, yp, M, I, O);
      break;
    }
    case torch::kChar: {
      TORCH_CHECK(scale.numel() == O && scale.scalar_type() == torch::kFloat &&
                  scale.is_contiguous(), "thin_linear: int8 weights need a float32 scale [O]");
      const int8_t* wp = weight.data_ptr<int8_t>();
      const float* sp = scale.data_ptr<float>();
#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
      if (pairs) {
        quantize_rows(xp, M, I, qx, sx);
        // (pointers taken here: inside the threads' lambdas, qx and sx name their own copies)
        const uint32_t* x2 = reinterpret_cast<const uint32_t*>(qx.data());
        const float* sxp = sx.data();
        auto body = [&](int64_t c, auto B) {
          over_rows(M, [&](int64_t m0, auto R) {
            vnni_rows<decltype(R)::value, decltype(B)::value>(x2, sxp, wp, sp, yp, I / 2, O,
                                                              m0, c);
          });
        };
        // one prompt with CFG (2 rows): 4 column groups per pass, 7 % faster than 2 here (more
        // weight streams in flight); more rows keep 2, so that the sums stay in registers
        if (M <= 2) over_columns<4>(O, body);
        else over_columns<2>(O, body);
        break;
      }
#endif
      TORCH_CHECK(!pairs, "thin_linear: paired int8 weights need AVX512-VNNI");
      thin(float_rows(x, xf), wp, sp, yp, M, I, O);
      break;
    }
    default: TORCH_CHECK(false, "thin_linear: weights must be float32, bfloat16 or int8");
  }
}

// x [M, I] float32 or bfloat16; weight from thin_pack (float32 / bfloat16 / int8, O a multiple
// of 16); scale [O] float32 for int8, else an empty tensor. Returns y [M, O] in x's dtype.
torch::Tensor thin_linear(torch::Tensor x, torch::Tensor weight, torch::Tensor scale) {
  const bool pairs = weight.dim() == 4;                 // thin_pack's paired layout
  const int64_t I = pairs ? weight.size(1) * 2 : weight.dim() == 3 ? weight.size(1) : -1;
  TORCH_CHECK(x.dim() == 2 && weight.size(-1) == (pairs ? 2 : kLanes) && x.size(1) == I &&
              (!pairs || weight.size(2) == kLanes), "thin_linear: x [M, I] and weight "
              "[O / 16, I, 16] (or [O / 16, I / 2, 16, 2]) expected, got ", x.sizes(), " and ",
              weight.sizes());
  TORCH_CHECK(weight.is_contiguous() && x.device().is_cpu() && weight.device().is_cpu(),
              "thin_linear: contiguous CPU tensors expected");
  TORCH_CHECK(x.scalar_type() == torch::kFloat || x.scalar_type() == torch::kBFloat16,
              "thin_linear: x must be float32 or bfloat16, got ", x.scalar_type());
  const auto xc = x.contiguous();
  auto y = torch::empty({x.size(0), weight.size(0) * kLanes}, x.options());
  if (x.scalar_type() == torch::kFloat) thin_linear_as<float>(xc, weight, scale, y);
  else thin_linear_as<uint16_t>(xc, weight, scale, y);
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

// q [NH, D] and out [NH, D] float32 or bf16 (Q); k, v [NH, Lmax, D] (first L positions used);
// mask [NH / H, L] added to the scores (or null); scores [NH, L16] scratch. D a multiple of 16,
// <= 128.
template <typename T, typename Q>
static void attend(const Q* q, const T* k, const T* v, const float* mask, float* scores,
                   Q* out, int64_t NH, int64_t H, int64_t Lmax, int64_t L, int64_t L16,
                   int64_t D) {
  const float scale = 1.0f / std::sqrt(float(D));
  const int64_t V = D / kLanes;                         // vectors per head, <= 8
  at::parallel_for(0, NH, 1, [&](int64_t h0, int64_t h1) {
    for (int64_t h = h0; h < h1; ++h) {
      const T* kh = k + h * Lmax * D;
      const T* vh = v + h * Lmax * D;
      float* s = scores + h * L16;
      f32x16 qv[8];
      for (int64_t j = 0; j < V; ++j) qv[j] = widen16(q + h * D + j * kLanes) * scale;
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
      for (int64_t j = 0; j < V; ++j) put16(out + h * D + j * kLanes, o[j] / sum);
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
// saves is Python: ~40 operator calls of ~4 us per layer and step (≈ 4 ms per step of
// MusicGen-small on the project's 2-core EPYC, bench/README.md).
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

// An operator torch knows (torch.ops.musicgen_edu.thin_linear), so torch.compile can trace
// through it (linears.py gives it a shape function); the Python module itself is empty.
TORCH_LIBRARY(musicgen_edu, m) {
  m.def("thin_pack(Tensor weight) -> Tensor");
  m.def("thin_linear(Tensor x, Tensor weight, Tensor scale) -> Tensor");
  m.def("decode_attention(Tensor q, Tensor k_cache, Tensor v_cache, int length, "
        "Tensor? mask=None) -> Tensor");
  m.def("decode_block(Tensor x, Tensor[] weights, Tensor[] scales, Tensor[] norms, "
        "Tensor(a!) k_cache, Tensor(b!) v_cache, int pos, Tensor? cross_k, Tensor? cross_v, "
        "Tensor? cross_mask, int heads, float eps) -> Tensor");
}
TORCH_LIBRARY_IMPL(musicgen_edu, CPU, m) {
  m.impl("thin_pack", &thin_pack);
  m.impl("thin_linear", &thin_linear);
  m.impl("decode_attention", &decode_attention);
  m.impl("decode_block", &decode_block);
}
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {}
