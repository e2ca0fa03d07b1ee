// Thin products for the decode step on a CPU: the linear layers, y[m, o] = sum_i x[m, i] w[o, i]
// for few rows m (attention and a whole layer: decode_step.cpp, built with it).
//
// One decode step multiplies 2 rows (one prompt with CFG) by every weight matrix, so it is
// as fast as the weights stream from memory. General GEMM kernels (oneDNN, MKL) are built for
// many rows and read the weights of such a thin product at a fraction of the bandwidth
// (bench/README.md, section "Our own kernels for thin products"); this file reads each weight
// row once, straight through, and keeps one accumulator per input row in registers (a GEMV,
// as llama.cpp's ggml_vec_dot kernels do).
//
// Written in portable C++ with GCC/Clang vector extensions, vectors as wide as the CPU's
// (16 floats with AVX-512, 8 with AVX2, 4 with SSE2 or NEON: thin_vectors.h). It is
// compiled on the user's machine at first use (-march=native, thin.py), so it uses what
// that CPU has, and it is threaded with at::parallel_for (torch's own OpenMP pool).
// It registers its operators as torch.ops.musicgen_edu.thin_pack and .thin_linear (end of
// the file; the library's four operators are declared there).
//
// Weights: float32, bfloat16 (stored as uint16: a bf16 is the top half of a float32) or int8
// with one float scale per output row (y = scale[o] * sum_i x[m, i] * q[o, i]). Activations
// x: float32 or bfloat16, read as they are; y comes back in x's dtype (no conversions around
// the call: a step makes ~200 of them). Each output is summed in the same order whatever the
// number of rows, so an item's result does not depend on its batch (tests/test_thin.py
// checks the bits).

#include "thin_vectors.h"

// Input rows per pass over a weight row: 4 with AVX-512, 2 with AVX2, 1 with SSE2 or NEON, so
// that the running sums of 2 column groups take 8 registers whatever the vector width.
constexpr int kRows = 4 / kParts;

// Output columns [16 c, 16 c + 16 B) for input rows [m0, m0 + R): x [M, I] float32,
// wb [O / 16, I, 16] (16 output rows interleaved, see ThinLinear), y [M, O]. Vectors of
// weights times one input value broadcast: no sums across lanes, and each output is one
// running sum over i in order, whatever R and B are (so whatever the batch).
template <int R, int B, typename W, typename Y>
static inline void block_rows(const float* x, const W* wb, const float* scale, Y* y,
                              int64_t I, int64_t O, int64_t m0, int64_t c) {
  fvec acc[B][R][kParts] = {};                           // [B][R] x 16 running sums
  const W* w = wb + c * I * kLanes;
  const float* xs = x + m0 * I;
  for (int64_t i = 0; i < I; ++i) {
    for (int b = 0; b < B; ++b) {
      for (int p = 0; p < kParts; ++p) {
        const fvec wv = widen(w + (b * I + i) * kLanes + p * kVec);
        for (int r = 0; r < R; ++r) acc[b][r][p] = madd(wv, splat(xs[r * I + i]), acc[b][r][p]);
      }
    }
  }
  for (int b = 0; b < B; ++b) {
    for (int p = 0; p < kParts; ++p) {
      const int64_t o = (c + b) * kLanes + p * kVec;     // first output column
      const fvec s = scale ? *(const fvec*)(scale + o) : splat(1.0f);
      for (int r = 0; r < R; ++r) put(y + (m0 + r) * O + o, acc[b][r][p] * s);
    }
  }
}

// Constants as values: blocks of B column groups and R rows are template arguments (so the
// accumulators stay in registers), chosen at run time by over_blocks.
template <int N> using Int = std::integral_constant<int, N>;

// Every block of y [M, O]: kernel(m0, c, Int<R>{}, Int<B>{}) for rows [m0, m0 + R) (R <= kRows)
// and columns [16 c, 16 c + 16 B), B = G column groups per pass (1 for each group left over).
// Threads split the column blocks into contiguous ranges; each block's weights are read from
// memory once, and from the cache again for each further kRows input rows.
template <int G = 2, typename K>
static inline void over_blocks(int64_t M, int64_t O, K kernel) {
  auto rows = [&](int64_t c, auto B) {
    for (int64_t m0 = 0; m0 < M; m0 += kRows) {
      switch (std::min<int64_t>(M - m0, kRows)) {
        case 1: kernel(m0, c, Int<1>{}, B); break;
        case 2: kernel(m0, c, Int<std::min(2, kRows)>{}, B); break;   // (cases above kRows
        case 3: kernel(m0, c, Int<std::min(3, kRows)>{}, B); break;   // never run)
        default: kernel(m0, c, Int<kRows>{}, B); break;
      }
    }
  };
  const int64_t groups = O / (G * kLanes);
  at::parallel_for(0, groups, 1, [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g) rows(G * g, Int<G>{});
  });
  for (int64_t c = groups * G; c < O / kLanes; ++c) rows(c, Int<1>{});
}

template <typename W, typename Y>
static void thin(const float* x, const W* wb, const float* scale, Y* y,
                 int64_t M, int64_t I, int64_t O) {
  over_blocks(M, O, [&](int64_t m0, int64_t c, auto R, auto B) {
    block_rows<decltype(R)::value, decltype(B)::value>(x, wb, scale, y, I, O, m0, c);
  });
}

// bf16 weights where the CPU has AVX512-BF16 (vdpbf16ps): two inputs per instruction, no
// widening, twice the multiply-adds of float32 FMAs; what keeps batches of 4-8 prompts as fast
// as oneDNN's bf16 kernels. Layout [O / 16, I / 2, 16, 2]: for each pair of inputs, 16 outputs'
// two weights side by side; x in bf16 (a bf16 model's activations are), read as pairs.
#if defined(__AVX512BF16__)
constexpr bool kBf16Pairs = true;
static_assert(kVec == kLanes, "AVX-512: one 16-float vector per block");

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
    for (int r = 0; r < R; ++r) put(y + (m0 + r) * O + (c + b) * kLanes, (fvec)acc[b][r]);
}
#else
constexpr bool kBf16Pairs = false;
#endif

// int8 weights on 16-bit integer dot products: where the CPU has AVX2 or AVX-512BW, vpmaddwd
// multiplies 16-bit pairs and adds each pair into a 32-bit integer (with AVX512-VNNI, vpdpwssd
// also adds that into the running sum: one instruction instead of two). Widening each int8
// weight to a float costs more than reading it (bench/README.md, "Our own kernels for thin
// products"), so instead each row of x is quantized to int16 with its own scale
// (x ≈ sx[m] * qx[m, i], |qx| <= 32767: an error of at most max|x[m]| / 65534 per input, far
// below the int8 weights' own), and the products run on integers: one sign extension per
// 2 kVec weights and one or two instructions per pair of inputs and row. Layout [O / 16, I / 2, 16, 2] as for bf16. The
// 32-bit sums are moved into float ones every kFlush pairs, before they could overflow
// (kFlush * 2 * 127 * 32767 < 2^31). A row's scale depends on that row alone, so results stay
// batch-invariant bit for bit; integer sums are exact, so every build with these pairs (AVX2,
// AVX-512BW, VNNI) gives the same bits. (AVX-512F without BW has no 512-bit vpmaddwd and
// does not use AVX2's: it widens.) THIN_INT8_PAIRS names that choice for the call site.
#if defined(__AVX512BW__) || (defined(__AVX2__) && !defined(__AVX512F__))
#define THIN_INT8_PAIRS 1
#endif
#if defined(THIN_INT8_PAIRS)
constexpr bool kInt8Pairs = true;
constexpr int64_t kFlush = 128;                         // input pairs per 32-bit sum

// kVec outputs' two int8 weights, as 2 kVec int16 (weights of one input pair side by side).
// acc + the products of those pairs with x's pair (two int16 in one int32), per output.
#if defined(__AVX512BW__)
typedef __m512i pairs16;
static inline pairs16 load_pairs(const int8_t* w) {
  return _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i*)w));
}
static inline ivec dot_pairs(ivec acc, pairs16 w, uint32_t x2) {
#if defined(__AVX512VNNI__)
  return (ivec)_mm512_dpwssd_epi32((__m512i)acc, w, _mm512_set1_epi32(int(x2)));
#else
  return acc + (ivec)_mm512_madd_epi16(w, _mm512_set1_epi32(int(x2)));
#endif
}
#else
typedef __m256i pairs16;
static inline pairs16 load_pairs(const int8_t* w) {
  return _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)w));
}
static inline ivec dot_pairs(ivec acc, pairs16 w, uint32_t x2) {
  return acc + (ivec)_mm256_madd_epi16(w, _mm256_set1_epi32(int(x2)));
}
#endif

// 32-bit sums over input pairs [i0, i1) (at most kFlush of them), added into acc as floats.
template <int R, int B>
static inline void pair_span(const uint32_t* x2, const int8_t* w, fvec (&acc)[B][R][kParts],
                             int64_t I2, int64_t i0, int64_t i1, int64_t m0) {
  ivec part[B][R][kParts] = {};
  for (int64_t i = i0; i < i1; ++i) {
    for (int b = 0; b < B; ++b) {
      for (int p = 0; p < kParts; ++p) {
        const pairs16 wv = load_pairs(w + (b * I2 + i) * 2 * kLanes + p * 2 * kVec);
        for (int r = 0; r < R; ++r)
          part[b][r][p] = dot_pairs(part[b][r][p], wv, x2[(m0 + r) * I2 + i]);
      }
    }
  }
  for (int b = 0; b < B; ++b)
    for (int r = 0; r < R; ++r)
      for (int p = 0; p < kParts; ++p)
        acc[b][r][p] += __builtin_convertvector(part[b][r][p], fvec);
}

template <int R, int B, typename Y>
static inline void pair_int_rows(const uint32_t* x2, const float* sx, const int8_t* wb,
                                 const float* scale, Y* y, int64_t I2, int64_t O, int64_t m0,
                                 int64_t c) {
  fvec acc[B][R][kParts] = {};                          // [B][R] x 16 running float sums
  const int8_t* w = wb + c * I2 * 2 * kLanes;
  for (int64_t i0 = 0; i0 < I2; i0 += kFlush)
    pair_span<R, B>(x2, w, acc, I2, i0, std::min(I2, i0 + kFlush), m0);
  for (int b = 0; b < B; ++b) {
    for (int p = 0; p < kParts; ++p) {
      const int64_t o = (c + b) * kLanes + p * kVec;    // first output column
      const fvec s = *(const fvec*)(scale + o);
      for (int r = 0; r < R; ++r) put(y + (m0 + r) * O + o, acc[b][r][p] * s * sx[m0 + r]);
    }
  }
}

// x [M, I] -> qx [M, I] int16 (read as pairs) and sx [M]: qx = round(x / sx), sx = max|x| / 32767.
// A row holding a NaN or an infinity gets sx = NaN, so all its outputs are NaN (a float
// product's would be NaN or infinite); one whose largest |x| is below 1e-30 counts as zeros
// (a margin above ≈ 1e-34, where 32767 / max|x| would overflow).
template <typename X>
static void quantize_rows(const X* x, int64_t M, int64_t I, std::vector<int16_t>& qx,
                          std::vector<float>& sx) {
  qx.resize(M * I);
  sx.resize(M);
  const int64_t IV = I / kVec * kVec;
  for (int64_t m = 0; m < M; ++m) {
    const X* xm = x + m * I;
    fvec tops = {};
    ivec nans = {};                                     // (a max would drop a NaN)
    for (int64_t i = 0; i < IV; i += kVec) {
      const fvec v = widen(xm + i);
      const fvec a = v < 0.0f ? -v : v;
      nans |= v != v;
      tops = a > tops ? a : tops;
    }
    float top = 0.0f;
    bool nan = false;
    for (int l = 0; l < kVec; ++l) top = std::max(top, tops[l]), nan |= nans[l] != 0;
    for (int64_t i = IV; i < I; ++i) {
      nan |= std::isnan(scalar(xm[i]));
      top = std::max(top, std::fabs(scalar(xm[i])));
    }
    const bool finite = !nan && std::isfinite(top), tiny = top < 1e-30f;
    sx[m] = !finite ? std::numeric_limits<float>::quiet_NaN() : tiny ? 1.0f : top / 32767.0f;
    const float inv = finite && !tiny ? 32767.0f / top : 0.0f;
    int16_t* q = qx.data() + m * I;
    if (inv == 0.0f) {                                  // zeros (or NaN outputs: sx)
      std::fill(q, q + I, int16_t(0));
      continue;
    }
    // rounded to nearest, ties to even (as nearbyint below): adding and taking away 1.5 * 2^23
    // leaves no bits below 1 in a float, and |x * inv| <= 32767 is far below 2^22
    const float round = 12582912.0f;
    for (int64_t i = 0; i < IV; i += kVec) {
      const fvec r = (widen(xm + i) * inv + round) - round;
      *(i16vec*)(q + i) = __builtin_convertvector(__builtin_convertvector(r, ivec), i16vec);
    }
    for (int64_t i = IV; i < I; ++i) q[i] = int16_t(std::nearbyint(scalar(xm[i]) * inv));
  }
}
#else
constexpr bool kInt8Pairs = false;
#endif

// weight [O, I] -> the layout thin_linear reads: [O / 16, I, 16], or for bf16 weights on a
// CPU with AVX512-BF16 and int8 weights on one with AVX2 or AVX-512BW (I even)
// [O / 16, I / 2, 16, 2].
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
  static thread_local std::vector<int16_t> qx;          // x as int16 (int8 pairs)
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
        over_blocks(M, O, [&](int64_t m0, int64_t c, auto R, auto B) {
          pair_rows<decltype(R)::value, decltype(B)::value>(x2, wp, yp, I / 2, O, m0, c);
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
#if defined(THIN_INT8_PAIRS)
      if (pairs) {
        quantize_rows(xp, M, I, qx, sx);
        // (pointers taken here: inside the threads' lambdas, qx and sx name their own copies)
        const uint32_t* x2 = reinterpret_cast<const uint32_t*>(qx.data());
        const float* sxp = sx.data();
        auto kernel = [&](int64_t m0, int64_t c, auto R, auto B) {
          pair_int_rows<decltype(R)::value, decltype(B)::value>(x2, sxp, wp, sp, yp, I / 2, O,
                                                                m0, c);
        };
        // one prompt with CFG (2 rows): 4 column groups per pass, more weight streams in
        // flight (faster than 2 with AVX-512 and AVX2, though AVX2's 16 sums then fill every
        // register: bench/README.md, "Our own kernels for thin products"); more rows keep 2,
        // so that the sums stay in registers
        if (M <= 2 && kParts <= 2) over_blocks<4>(M, O, kernel);
        else over_blocks<2>(M, O, kernel);
        break;
      }
#endif
      TORCH_CHECK(!pairs, "thin_linear: paired int8 weights need AVX2 or AVX-512BW");
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

// Operators torch knows (torch.ops.musicgen_edu.*, all four declared here; decode_step.cpp
// registers its two), so torch.compile can trace through them (thin.py gives thin_linear,
// decode_attention and decode_block shape functions); the Python module itself is empty.
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
}
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {}
