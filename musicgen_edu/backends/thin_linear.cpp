// Thin matrix products for the decode step: y[m, o] = sum_i x[m, i] * w[o, i], few rows m.
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
// It registers one operator, torch.ops.musicgen_edu.thin_linear (at the end of the file).
//
// Weights: float32, bfloat16 (stored as uint16: a bf16 is the top half of a float32) or int8
// with one float scale per output row (y = scale[o] * sum_i x[m, i] * q[o, i]).
// Each output is summed in the same order whatever the number of rows, so an item's result
// does not depend on its batch (tests/test_native.py checks it).

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <cstdint>
#include <algorithm>

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

// x [M, I] (any float dtype); weight [O / 16, I, 16] float32 / bfloat16 / int8 (O a multiple
// of 16); scale [O] float32 for int8, else an empty tensor. Returns y [M, O] float32.
torch::Tensor thin_linear(torch::Tensor x, torch::Tensor weight, torch::Tensor scale) {
  TORCH_CHECK(x.dim() == 2 && weight.dim() == 3 && weight.size(2) == kLanes &&
              x.size(1) == weight.size(1), "thin_linear: x [M, I] and weight [O / 16, I, 16] "
              "expected, got ", x.sizes(), " and ", weight.sizes());
  TORCH_CHECK(weight.is_contiguous() && x.device().is_cpu() && weight.device().is_cpu(),
              "thin_linear: contiguous CPU tensors expected");
  const auto xf = x.to(torch::kFloat).contiguous();
  const int64_t M = xf.size(0), I = xf.size(1), O = weight.size(0) * kLanes;
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

// An operator torch knows (torch.ops.musicgen_edu.thin_linear), so torch.compile can trace
// through it (linears.py gives it a shape function); the Python module itself is empty.
TORCH_LIBRARY(musicgen_edu, m) {
  m.def("thin_linear(Tensor x, Tensor weight, Tensor scale) -> Tensor");
}
TORCH_LIBRARY_IMPL(musicgen_edu, CPU, m) { m.impl("thin_linear", &thin_linear); }
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {}
