// Portable scalar kernels. They define the results; the AVX2 set must match.
#include "kernels.h"

namespace djinn {
namespace {

template <typename T>
inline T load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));  // little-endian hosts only (checked in addon.cc)
  return v;
}

void decode_scalar(DType t, const uint8_t* src, float* dst, size_t n) {
  switch (t) {
    case DType::BF16:
      for (size_t i = 0; i < n; ++i) {
        const uint32_t b = static_cast<uint32_t>(load<uint16_t>(src + 2 * i)) << 16;
        std::memcpy(dst + i, &b, 4);
      }
      break;
    case DType::F16:
      for (size_t i = 0; i < n; ++i) {
        const uint32_t b = half_to_float_bits(load<uint16_t>(src + 2 * i));
        std::memcpy(dst + i, &b, 4);
      }
      break;
    case DType::F32:
      if (n) std::memcpy(dst, src, 4 * n);
      break;
    case DType::I8:
      for (size_t i = 0; i < n; ++i) dst[i] = static_cast<float>(static_cast<int8_t>(src[i]));
      break;
    case DType::I32:
      for (size_t i = 0; i < n; ++i) dst[i] = static_cast<float>(load<int32_t>(src + 4 * i));
      break;
    case DType::I64:
      // int64 -> nearest double -> nearest float (what the TypeScript codec computes).
      for (size_t i = 0; i < n; ++i) dst[i] = static_cast<float>(static_cast<double>(load<int64_t>(src + 8 * i)));
      break;
  }
}

void stats_scalar(const float* x, size_t n, float K, StatsAcc* acc) {
  StatsAcc a = *acc;
  const double Kd = K;
  for (size_t i = 0; i < n; ++i) {
    const uint32_t b = f32_bits(x[i]);
    const uint32_t ab = b & kAbsMask;
    if (ab >= kInfBits) {
      if (ab > kInfBits) {
        ++a.nan;
      } else if (b & 0x80000000u) {
        ++a.neginf;
      } else {
        ++a.posinf;
      }
      continue;
    }
    ++a.finite;
    if (ab == 0) ++a.zero;
    const int32_t k = order_key(b);
    if (k < a.min_key) a.min_key = k;
    if (k > a.max_key) a.max_key = k;
    if (ab > a.absmax_bits) a.absmax_bits = ab;
    const double xd = x[i];
    const double d = xd - Kd;
    a.s1 += d;
    a.s2 += d * d;
    a.sq += xd * xd;
  }
  *acc = a;
}

void histogram_scalar(const float* x, size_t n, const HistParams& p, uint32_t* counts, unsigned /*copies*/) {
  for (size_t i = 0; i < n; ++i) {
    const uint32_t ab = f32_bits(x[i]) & kAbsMask;
    uint32_t slot;
    if (ab > kInfBits) {
      slot = p.nan_slot();
    } else if (ab == kInfBits) {
      slot = p.inf_slot();
    } else {
      const double xd = x[i];
      if (xd < p.lo) {
        slot = p.below_slot();
      } else if (xd > p.hi) {
        slot = p.above_slot();
      } else {
        const double t = (xd - p.lo) * p.scale;  // >= 0
        slot = t >= p.bins_m1 ? p.bins - 1 : static_cast<uint32_t>(t);
      }
    }
    ++counts[slot];
  }
}

void col_sum_scalar(const float* x, size_t n, double* acc, uint32_t* cnt) {
  for (size_t c = 0; c < n; ++c) {
    const float v = x[c];
    if (v == v) {
      acc[c] += static_cast<double>(v);
      ++cnt[c];
    }
  }
}

void col_max_scalar(const float* x, size_t n, int32_t* key) {
  for (size_t c = 0; c < n; ++c) {
    const uint32_t b = f32_bits(x[c]);
    if ((b & kAbsMask) > kInfBits) continue;
    const int32_t k = order_key(b);
    if (k > key[c]) key[c] = k;
  }
}

}  // namespace

const Kernels kScalarKernels = {
    "scalar", decode_scalar, stats_scalar, histogram_scalar, col_sum_scalar, col_max_scalar,
};

}  // namespace djinn
