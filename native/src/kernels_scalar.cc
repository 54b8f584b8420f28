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

void decode_stats_scalar(DType t, const uint8_t* src, float* dst, size_t n, float K, StatsAcc* acc) {
  constexpr size_t kChunk = 4096;  // decode a chunk, then read it back from the cache
  const size_t es = dtype_size(t);
  for (size_t i = 0; i < n; i += kChunk) {
    const size_t m = n - i < kChunk ? n - i : kChunk;
    decode_scalar(t, src + i * es, dst + i, m);
    stats_scalar(dst + i, m, K, acc);
  }
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

bool col_sum_scalar(const float* x, size_t n, double* acc, bool first) {
  bool any_nan = false;
  for (size_t c = 0; c < n; ++c) {
    const float v = x[c];
    const bool nan = v != v;
    any_nan |= nan;
    const double a = first ? 0.0 : acc[c];
    acc[c] = nan ? a : a + static_cast<double>(v);
  }
  return any_nan;
}


void col_max_scalar(const float* x, size_t n, int32_t* key, bool first) {
  for (size_t c = 0; c < n; ++c) {
    const uint32_t b = f32_bits(x[c]);
    const int32_t k = (b & kAbsMask) > kInfBits ? kNoKeyMin : order_key(b);
    key[c] = first || k > key[c] ? k : key[c];
  }
}

void finish_mean_scalar(const double* s, const double* m, double mscale, size_t n, float* out) {
  for (size_t j = 0; j < n; ++j) {
    const double M = m[j] * mscale;
    out[j] = M == 0 ? bits_f32(kQuietNaNBits) : narrow(s[j] / M);
  }
}

}  // namespace

void col_count_portable(const float* x, size_t n, uint32_t* cnt) {
  for (size_t c = 0; c < n; ++c) cnt[c] += x[c] == x[c];
}

const Kernels kScalarKernels = {
    "scalar",      decode_scalar,  decode_stats_scalar, stats_scalar,   histogram_scalar, col_sum_scalar, col_count_portable,
    col_max_scalar, finish_mean_scalar,
};

}  // namespace djinn
