// Shared by thin_linear.cpp (the products) and decode_step.cpp (attention, a whole layer):
// 16-lane vectors, loading 16 weights or activations as floats, storing 16 results as float32
// or bfloat16, and the two functions one file calls in the other.

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

typedef float f32x16 __attribute__((vector_size(64), aligned(4)));
typedef int32_t i32x16 __attribute__((vector_size(64)));
typedef uint32_t u32x16 __attribute__((vector_size(64)));
typedef int16_t i16x16 __attribute__((vector_size(32)));
typedef uint16_t u16x16 __attribute__((vector_size(32), aligned(2)));
typedef int8_t i8x16 __attribute__((vector_size(16), aligned(1)));

constexpr int kLanes = 16;   // floats per vector

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

// 16 results to memory: float32, or bfloat16 rounded to nearest-even as torch rounds, so a
// kernel that writes bf16 gives the bits of float32 output then .to(bf16) (a NaN stays a NaN:
// 0x7FC0 as torch's scalar conversion; its vectorised one may write another NaN pattern).
static inline void put16(float* y, f32x16 v) { *(f32x16*)y = v; }
static inline void put16(uint16_t* y, f32x16 v) {
  const u32x16 b = (u32x16)v;
  const u32x16 r = (b + 0x7FFFu + ((b >> 16) & 1u)) >> 16;
  const u32x16 nan = (u32x16)(v != v);                  // all ones where v is a NaN
  *(u16x16*)y = __builtin_convertvector((r & ~nan) | (0x7FC0u & nan), u16x16);
}

// thin_linear.cpp
torch::Tensor thin_linear(torch::Tensor x, torch::Tensor weight, torch::Tensor scale);
// decode_step.cpp
torch::Tensor decode_attention(torch::Tensor q, torch::Tensor k_cache, torch::Tensor v_cache,
                               int64_t length, const std::optional<torch::Tensor>& mask);
