// Tensor codec kernels: the scalar reference set and an AVX2+F16C set with the
// same results (bit-exact for decode/histogram/downsample; statistics differ
// only in the order of double-precision additions).
//
// All kernels work on [begin, end) ranges so that the addon can split work
// across threads. Inputs may be unaligned; every load is memcpy or an
// unaligned SIMD load, so there is no undefined behaviour on odd offsets.
#pragma once

#include <cfloat>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace djinn {

enum class DType : int { BF16 = 0, F16 = 1, F32 = 2, I8 = 3, I32 = 4, I64 = 5 };

inline size_t dtype_size(DType t) {
  switch (t) {
    case DType::BF16:
    case DType::F16:
      return 2;
    case DType::F32:
    case DType::I32:
      return 4;
    case DType::I8:
      return 1;
    case DType::I64:
      return 8;
  }
  return 1;
}

constexpr uint32_t kAbsMask = 0x7fffffffu;
constexpr uint32_t kInfBits = 0x7f800000u;
constexpr uint32_t kQuietNaNBits = 0x7fc00000u;

inline uint32_t f32_bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}
inline float bits_f32(uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

// Total-order key of a non-NaN float: an int32 that orders like the float,
// with -0 < +0. The mapping is an involution on the bit pattern.
inline int32_t order_key(uint32_t b) {
  uint32_t k = (b & 0x80000000u) ? (b ^ 0x7fffffffu) : b;
  int32_t out;
  std::memcpy(&out, &k, 4);
  return out;
}
inline uint32_t key_bits(int32_t key) {
  uint32_t k;
  std::memcpy(&k, &key, 4);
  return (k & 0x80000000u) ? (k ^ 0x7fffffffu) : k;
}
// No finite or infinite float has this key (it is the key of a NaN pattern),
// so it marks "nothing seen" for maxima.
constexpr int32_t kNoKeyMin = INT32_MIN;
constexpr int32_t kNoKeyMax = INT32_MAX;

// IEEE round-to-nearest narrowing of a double to float without relying on the
// out-of-range conversion (undefined behaviour in C++).
inline float narrow(double d) {
  constexpr double kMax = static_cast<double>(FLT_MAX);
  constexpr double kOverflow = kMax + 0x1p103;  // FLT_MAX + half an ulp: rounds to inf
  if (d > kMax) return d >= kOverflow ? bits_f32(kInfBits) : FLT_MAX;
  if (d < -kMax) return d <= -kOverflow ? bits_f32(kInfBits | 0x80000000u) : -FLT_MAX;
  return static_cast<float>(d);  // NaN and in-range values
}

// IEEE binary16 -> binary32, exact. NaNs keep sign and payload and come out
// quiet, exactly as the F16C instruction VCVTPH2PS does.
inline uint32_t half_to_float_bits(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  if (exp == 0) {
    if (mant == 0) return sign;
    // Subnormal half: mant * 2^-24, renormalised.
    uint32_t e = 113;  // exponent of 2^-14 in float bias terms, minus adjustments below
    uint32_t m = mant;
    while ((m & 0x400u) == 0) {
      m <<= 1;
      --e;
    }
    return sign | (e << 23) | ((m & 0x3ffu) << 13);
  }
  if (exp == 31) {
    if (mant == 0) return sign | kInfBits;
    return sign | kInfBits | 0x00400000u | (mant << 13);
  }
  return sign | ((exp + 112u) << 23) | (mant << 13);
}

struct StatsAcc {
  uint64_t nan = 0, posinf = 0, neginf = 0, zero = 0, finite = 0;
  int32_t min_key = kNoKeyMax;  // over finite values
  int32_t max_key = kNoKeyMin;
  uint32_t absmax_bits = 0;  // |x| bits over finite values
  double s1 = 0, s2 = 0, sq = 0;  // sum(x-K), sum((x-K)^2), sum(x^2) over finite values

  void merge(const StatsAcc& o) {
    nan += o.nan;
    posinf += o.posinf;
    neginf += o.neginf;
    zero += o.zero;
    finite += o.finite;
    if (o.min_key < min_key) min_key = o.min_key;
    if (o.max_key > max_key) max_key = o.max_key;
    if (o.absmax_bits > absmax_bits) absmax_bits = o.absmax_bits;
    s1 += o.s1;
    s2 += o.s2;
    sq += o.sq;
  }
};

struct HistParams {
  uint32_t bins;
  double lo, hi, scale, bins_m1;  // scale = bins / (hi - lo)
  float lo_f, hi_f;  // smallest float >= lo, largest float <= hi
  // Slots after the bins in the per-thread count arrays.
  uint32_t below_slot() const { return bins; }
  uint32_t above_slot() const { return bins + 1; }
  uint32_t nan_slot() const { return bins + 2; }
  uint32_t inf_slot() const { return bins + 3; }
  uint32_t slots() const { return bins + 4; }
};

struct Kernels {
  const char* name;
  // dst[i] = decode(src element i), i in [0, n)
  void (*decode)(DType t, const uint8_t* src, float* dst, size_t n);
  // decode, and accumulate the statistics of the decoded values, in one pass
  void (*decode_stats)(DType t, const uint8_t* src, float* dst, size_t n, float K, StatsAcc* acc);
  // Accumulates x[0..n) into acc; K is the shift for the variance sums.
  void (*stats)(const float* x, size_t n, float K, StatsAcc* acc);
  // counts has p.slots() * copies entries (copies interleaved sub-histograms).
  void (*histogram)(const float* x, size_t n, const HistParams& p, uint32_t* counts, unsigned copies);
  // acc[c] = (first ? 0.0 : acc[c]) + x[c] for non-NaN x[c] (NaN adds
  // nothing), c in [0, n). Returns true when some x[c] was NaN.
  bool (*col_sum)(const float* x, size_t n, double* acc, bool first);
  // cnt[c] += 1 for non-NaN x[c] (only needed for blocks that hold NaN)
  void (*col_count)(const float* x, size_t n, uint32_t* cnt);
  // key[c] = max(first ? kNoKeyMin : key[c], order_key(x[c])) for non-NaN x[c]
  void (*col_max)(const float* x, size_t n, int32_t* key, bool first);
  // out[j] = M == 0 ? NaN : narrow(s[j] / M) with M = m[j] * mscale (exact: small integers)
  void (*finish_mean)(const double* s, const double* m, double mscale, size_t n, float* out);
};

extern const Kernels kScalarKernels;
// Shared by both kernel sets (rarely used: only blocks that hold NaN).
void col_count_portable(const float* x, size_t n, uint32_t* cnt);
// nullptr when the AVX2 set was not compiled (non-x86 or non-GCC/Clang).
extern const Kernels* const kAvx2Kernels;
bool cpu_has_avx2();  // includes the OS saving YMM state
bool cpu_has_f16c();
bool cpu_has_fma();

}  // namespace djinn
