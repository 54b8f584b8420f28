// The horizontal half of downsample2d: reduce each output row's column
// accumulators (one per input column) over the output column blocks.
//
// Summation order is the TypeScript codec's: for each block, its columns
// from left to right. Every block is wlo or wlo + 1 columns wide (wlo =
// cols / C); for small wlo the loop has a fixed trip count and the optional
// last column is selected without a branch (the accumulator arrays carry one
// padding element so that the unused read stays in bounds).
#pragma once

#include <algorithm>

#include "kernels.h"

namespace djinn {

// `v` when `keep`, else +0.0, without a branch (the block widths follow no
// pattern a branch predictor could learn in general).
inline double keep_or_zero(double v, bool keep) {
  uint64_t b;
  std::memcpy(&b, &v, 8);
  b &= ~uint64_t{0} * static_cast<uint64_t>(keep);
  std::memcpy(&v, &b, 8);
  return v;
}

template <int W>
inline void block_sums_fixed(const double* a, const size_t* st, size_t C, double* s) {
  for (size_t j = 0; j < C; ++j) {
    const size_t b = st[j];
    double x = a[b];  // == 0 + a[b]: accumulators are never -0
    for (int k = 1; k < W; ++k) x += a[b + k];
    // x + 0.0 == x here (x is never -0), so the narrow blocks add nothing
    s[j] = x + keep_or_zero(a[b + W], st[j + 1] - b > static_cast<size_t>(W));
  }
}

inline void block_sums(const double* a, const size_t* st, size_t C, size_t wlo, double* s) {
  switch (wlo) {
    case 1: return block_sums_fixed<1>(a, st, C, s);
    case 2: return block_sums_fixed<2>(a, st, C, s);
    case 3: return block_sums_fixed<3>(a, st, C, s);
    case 4: return block_sums_fixed<4>(a, st, C, s);
    default:
      for (size_t j = 0; j < C; ++j) {
        double x = 0;
        for (size_t c = st[j]; c < st[j + 1]; ++c) x += a[c];
        s[j] = x;
      }
  }
}

// m[j] = number of non-NaN values in block j.
inline void block_counts(const uint32_t* cnt, const size_t* st, size_t C, double* m) {
  for (size_t j = 0; j < C; ++j) {
    uint64_t x = 0;
    for (size_t c = st[j]; c < st[j + 1]; ++c) x += cnt[c];
    m[j] = static_cast<double>(x);
  }
}

template <int W>
inline void block_max_fixed(const int32_t* k, const size_t* st, size_t C, float* out) {
  for (size_t j = 0; j < C; ++j) {
    const size_t b = st[j];
    int32_t x = k[b];
    for (int i = 1; i < W; ++i) x = std::max(x, k[b + i]);
    const int32_t y = std::max(x, k[b + W]);
    const int32_t m = st[j + 1] - b > static_cast<size_t>(W) ? y : x;
    out[j] = bits_f32(m == kNoKeyMin ? kQuietNaNBits : key_bits(m));
  }
}

// Maximum of each block under the float total order; NaN for blocks with no
// non-NaN value.
inline void block_max(const int32_t* k, const size_t* st, size_t C, size_t wlo, float* out) {
  switch (wlo) {
    case 1: return block_max_fixed<1>(k, st, C, out);
    case 2: return block_max_fixed<2>(k, st, C, out);
    case 3: return block_max_fixed<3>(k, st, C, out);
    case 4: return block_max_fixed<4>(k, st, C, out);
    default:
      for (size_t j = 0; j < C; ++j) {
        int32_t m = kNoKeyMin;
        for (size_t c = st[j]; c < st[j + 1]; ++c) m = std::max(m, k[c]);
        out[j] = bits_f32(m == kNoKeyMin ? kQuietNaNBits : key_bits(m));
      }
  }
}

}  // namespace djinn
