// Shared by thin_linear.cpp (the products) and decode_step.cpp (attention, a whole layer):
// vectors as wide as the CPU's, loading weights or activations as floats, storing results as
// float32 or bfloat16, and the two functions one file calls in the other.

#pragma once

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <cstdint>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

// Vectors as wide as this build's CPU has: 16 floats (AVX-512), 8 (AVX, AVX2) or 4 (SSE2,
// NEON). The kernels work on blocks of kLanes = 16 outputs (the weight layout's block), held
// in kParts such vectors, lane for lane the same sums whatever the width (so the same bits on
// every build whose madd below is one fused instruction: AVX2, AVX-512 and ARM's AArch64 NEON;
// SSE2-only x86 builds round a * b + c twice).
// No vector is wider than the CPU's registers: GCC has no machine mode for one, keeps it in
// memory and builds each broadcast there, which makes an AVX2 build of 16-float vectors several
// times slower than torch's own kernels (bench/README.md, "Every x86 CPU, not only this one").
#if defined(__AVX512F__)
constexpr int kVec = 16;
#elif defined(__AVX__)
constexpr int kVec = 8;
#else
constexpr int kVec = 4;
#endif
constexpr int kLanes = 16;             // outputs per block of the weight layout
constexpr int kParts = kLanes / kVec;  // vectors per block

typedef float fvec __attribute__((vector_size(kVec * 4), aligned(4)));
typedef int32_t ivec __attribute__((vector_size(kVec * 4)));
typedef uint32_t uvec __attribute__((vector_size(kVec * 4)));
typedef int16_t i16vec __attribute__((vector_size(kVec * 2), aligned(2)));
typedef uint16_t u16vec __attribute__((vector_size(kVec * 2), aligned(2)));
typedef int8_t i8vec __attribute__((vector_size(kVec), aligned(1)));

#if defined(__AVX__)
#include <immintrin.h>
#elif defined(__ARM_NEON) && defined(__ARM_FEATURE_FMA)
#include <arm_neon.h>
#endif

// a * b + c. Fused (one rounding) where the CPU has FMA, as every AVX2, AVX-512 and AArch64
// CPU does (the ARM build is checked under qemu: tests/arm/);
// the library is compiled with -ffp-contract=off and fuses only here, so every copy of a loop
// (unrolled, vectorised, its remainder) rounds alike: with GCC fusing as it sees fit, an AVX2
// build's attention can give a prompt other bits when its text is padded in a batch.
static inline fvec madd(fvec a, fvec b, fvec c) {
#if defined(__AVX512F__)
  return (fvec)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c);
#elif defined(__FMA__)
  return (fvec)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
#elif defined(__ARM_NEON) && defined(__ARM_FEATURE_FMA)
  return (fvec)vfmaq_f32((float32x4_t)c, (float32x4_t)a, (float32x4_t)b);   // c + a * b
#else
  return a * b + c;
#endif
}
static inline fvec splat(float v) { return fvec{} + v; }   // v in every lane

// kVec weights or activations from memory as floats. Where the compiler targets AVX-512, one
// widening instruction each (GCC 12 builds the portable 16-lane versions out of 256-bit
// halves and shuffles).
static inline fvec widen(const float* p) { return *(const fvec*)p; }
#if defined(__AVX512F__)
static inline fvec widen(const uint16_t* p) {            // bf16 -> the top half of a float32
  return (fvec)_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)p)), 16);
}
static inline fvec widen(const int8_t* p) {
  return (fvec)_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)p)));
}
#else
static inline fvec widen(const uint16_t* p) {            // bf16 -> the top half of a float32
  return (fvec)(__builtin_convertvector(*(const u16vec*)p, uvec) << 16);
}
static inline fvec widen(const int8_t* p) {              // via int16: vectorised by GCC 12
  return __builtin_convertvector(
      __builtin_convertvector(__builtin_convertvector(*(const i8vec*)p, i16vec), ivec), fvec);
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

// kVec results to memory: float32, or bfloat16 rounded to nearest-even as torch rounds, so a
// kernel that writes bf16 gives the bits of float32 output then .to(bf16) (a NaN stays a NaN:
// 0x7FC0 as torch's scalar conversion; its vectorised one may write another NaN pattern).
static inline void put(float* y, fvec v) { *(fvec*)y = v; }
static inline void put(uint16_t* y, fvec v) {
  const uvec b = (uvec)v;
  const uvec r = (b + 0x7FFFu + ((b >> 16) & 1u)) >> 16;
  const uvec nan = (uvec)(v != v);                       // all ones where v is a NaN
  *(u16vec*)y = __builtin_convertvector((r & ~nan) | (0x7FC0u & nan), u16vec);
}

// thin_linear.cpp
torch::Tensor thin_linear(torch::Tensor x, torch::Tensor weight, torch::Tensor scale);
// decode_step.cpp
torch::Tensor decode_attention(torch::Tensor q, torch::Tensor k_cache, torch::Tensor v_cache,
                               int64_t length, const std::optional<torch::Tensor>& mask);
