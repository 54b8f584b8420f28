// AVX2 + F16C kernels, compiled with function target attributes so that the
// rest of the addon stays baseline x86-64. They are only called after a run
// time check (__builtin_cpu_supports), see cpu_has_avx2_f16c().
//
// Every load and store is unaligned (loadu/storeu) and every tail is handled
// by the scalar code, so any length and any element offset are fine.
#include "kernels.h"

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define DJINN_HAVE_AVX2_KERNELS 1
#include <cpuid.h>
#include <immintrin.h>
#else
#define DJINN_HAVE_AVX2_KERNELS 0
#endif

namespace djinn {

#if DJINN_HAVE_AVX2_KERNELS

bool cpu_has_avx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2");  // also checks that the OS saves YMM state
}
bool cpu_has_f16c() {
  // CPUID leaf 1, ECX bit 29 (not every compiler knows the "f16c" name for
  // __builtin_cpu_supports). The OS YMM-state check is done by cpu_has_avx2().
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return false;
  return (ecx & bit_F16C) != 0;
}
bool cpu_has_avx2_f16c() { return cpu_has_avx2() && cpu_has_f16c(); }

#define DJINN_TARGET __attribute__((target("avx2,f16c")))

namespace {

DJINN_TARGET void decode_avx2(DType t, const uint8_t* src, float* dst, size_t n) {
  size_t i = 0;
  switch (t) {
    case DType::BF16:
      for (; i + 16 <= n; i += 16) {
        const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 2 * i));
        const __m256i lo = _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_castsi256_si128(h)), 16);
        const __m256i hi = _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_extracti128_si256(h, 1)), 16);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), lo);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i + 8), hi);
      }
      break;
    case DType::F16:
      for (; i + 16 <= n; i += 16) {
        const __m128i h0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2 * i));
        const __m128i h1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2 * i + 16));
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h0));
        _mm256_storeu_ps(dst + i + 8, _mm256_cvtph_ps(h1));
      }
      break;
    case DType::I8:
      for (; i + 8 <= n; i += 8) {
        __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(src + i));
        _mm256_storeu_ps(dst + i, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b)));
      }
      break;
    case DType::I32:
      for (; i + 8 <= n; i += 8) {
        const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 4 * i));
        _mm256_storeu_ps(dst + i, _mm256_cvtepi32_ps(v));
      }
      break;
    case DType::F32:
    case DType::I64:
      break;  // memcpy / no vector int64 -> double conversion in AVX2
  }
  kScalarKernels.decode(t, src + i * dtype_size(t), dst + i, n - i);
}

DJINN_TARGET inline __m256i order_key_v(__m256i bits) {
  return _mm256_xor_si256(bits, _mm256_and_si256(_mm256_srai_epi32(bits, 31), _mm256_set1_epi32(0x7fffffff)));
}

DJINN_TARGET inline uint64_t hsum_epi32(__m256i v) {
  alignas(32) uint32_t t[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(t), v);
  uint64_t s = 0;
  for (uint32_t x : t) s += x;
  return s;
}

DJINN_TARGET inline double hsum_pd(__m256d v) {
  alignas(32) double t[4];
  _mm256_store_pd(t, v);
  return (t[0] + t[1]) + (t[2] + t[3]);
}

DJINN_TARGET void stats_avx2(const float* x, size_t n, float K, StatsAcc* acc) {
  const __m256i absmask = _mm256_set1_epi32(0x7fffffff);
  const __m256i inf = _mm256_set1_epi32(static_cast<int>(kInfBits));
  const __m256i ninf = _mm256_set1_epi32(static_cast<int>(0xff800000u));
  const __m256i zero = _mm256_setzero_si256();
  const __m256i keymax = _mm256_set1_epi32(kNoKeyMax);
  const __m256i keymin = _mm256_set1_epi32(kNoKeyMin);
  const __m256 Kf = _mm256_set1_ps(K);
  const __m256d Kd = _mm256_set1_pd(static_cast<double>(K));

  __m256i vmin = keymax, vmax = keymin, vabs = zero;
  __m256d s1a = _mm256_setzero_pd(), s1b = s1a, s2a = s1a, s2b = s1a, sqa = s1a, sqb = s1a;
  uint64_t c_nan = 0, c_pinf = 0, c_ninf = 0, c_zero = 0, c_fin = 0;

  size_t i = 0;
  while (i + 8 <= n) {
    // Per-lane int32 counters, flushed before they could overflow.
    __m256i cn = zero, cp = zero, cm = zero, cz = zero, cf = zero;
    const size_t block_end = i + (size_t{1} << 28) < n ? i + (size_t{1} << 28) : n;
    for (; i + 8 <= block_end; i += 8) {
      const __m256 v = _mm256_loadu_ps(x + i);
      const __m256i b = _mm256_castps_si256(v);
      const __m256i ab = _mm256_and_si256(b, absmask);
      const __m256i fin = _mm256_cmpgt_epi32(inf, ab);
      cf = _mm256_sub_epi32(cf, fin);
      cn = _mm256_sub_epi32(cn, _mm256_cmpgt_epi32(ab, inf));
      cp = _mm256_sub_epi32(cp, _mm256_cmpeq_epi32(b, inf));
      cm = _mm256_sub_epi32(cm, _mm256_cmpeq_epi32(b, ninf));
      cz = _mm256_sub_epi32(cz, _mm256_cmpeq_epi32(ab, zero));

      const __m256i key = order_key_v(b);
      vmin = _mm256_min_epi32(vmin, _mm256_blendv_epi8(keymax, key, fin));
      vmax = _mm256_max_epi32(vmax, _mm256_blendv_epi8(keymin, key, fin));
      vabs = _mm256_max_epi32(vabs, _mm256_and_si256(ab, fin));

      const __m256 finps = _mm256_castsi256_ps(fin);
      const __m256 xk = _mm256_blendv_ps(Kf, v, finps);  // non-finite -> K, so x - K = 0
      const __m256 xz = _mm256_and_ps(v, finps);  // non-finite -> 0
      const __m256d dlo = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(xk)), Kd);
      const __m256d dhi = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(xk, 1)), Kd);
      const __m256d zlo = _mm256_cvtps_pd(_mm256_castps256_ps128(xz));
      const __m256d zhi = _mm256_cvtps_pd(_mm256_extractf128_ps(xz, 1));
      s1a = _mm256_add_pd(s1a, dlo);
      s1b = _mm256_add_pd(s1b, dhi);
      s2a = _mm256_add_pd(s2a, _mm256_mul_pd(dlo, dlo));
      s2b = _mm256_add_pd(s2b, _mm256_mul_pd(dhi, dhi));
      sqa = _mm256_add_pd(sqa, _mm256_mul_pd(zlo, zlo));
      sqb = _mm256_add_pd(sqb, _mm256_mul_pd(zhi, zhi));
    }
    c_nan += hsum_epi32(cn);
    c_pinf += hsum_epi32(cp);
    c_ninf += hsum_epi32(cm);
    c_zero += hsum_epi32(cz);
    c_fin += hsum_epi32(cf);
  }

  StatsAcc a;
  a.nan = c_nan;
  a.posinf = c_pinf;
  a.neginf = c_ninf;
  a.zero = c_zero;
  a.finite = c_fin;
  alignas(32) int32_t t[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(t), vmin);
  for (int32_t k : t) a.min_key = k < a.min_key ? k : a.min_key;
  _mm256_store_si256(reinterpret_cast<__m256i*>(t), vmax);
  for (int32_t k : t) a.max_key = k > a.max_key ? k : a.max_key;
  _mm256_store_si256(reinterpret_cast<__m256i*>(t), vabs);
  for (int32_t k : t) a.absmax_bits = static_cast<uint32_t>(k) > a.absmax_bits ? static_cast<uint32_t>(k) : a.absmax_bits;
  a.s1 = hsum_pd(_mm256_add_pd(s1a, s1b));
  a.s2 = hsum_pd(_mm256_add_pd(s2a, s2b));
  a.sq = hsum_pd(_mm256_add_pd(sqa, sqb));
  kScalarKernels.stats(x + i, n - i, K, &a);  // tail
  acc->merge(a);
}

DJINN_TARGET void histogram_avx2(const float* x, size_t n, const HistParams& p, uint32_t* counts, unsigned copies) {
  const __m256i absmask = _mm256_set1_epi32(0x7fffffff);
  const __m256i inf = _mm256_set1_epi32(static_cast<int>(kInfBits));
  const __m256 lo_f = _mm256_set1_ps(p.lo_f);
  const __m256 hi_f = _mm256_set1_ps(p.hi_f);
  const __m256d lo_d = _mm256_set1_pd(p.lo);
  const __m256d scale = _mm256_set1_pd(p.scale);
  const __m256d top = _mm256_set1_pd(p.bins_m1);
  const __m256i below_slot = _mm256_set1_epi32(static_cast<int>(p.below_slot()));
  const __m256i above_slot = _mm256_set1_epi32(static_cast<int>(p.above_slot()));
  const __m256i nan_slot = _mm256_set1_epi32(static_cast<int>(p.nan_slot()));
  const __m256i inf_slot = _mm256_set1_epi32(static_cast<int>(p.inf_slot()));
  const size_t stride = p.slots();
  // Interleaved sub-histograms: consecutive elements hitting the same bin do
  // not wait on each other's read-modify-write.
  uint32_t* c0 = counts;
  uint32_t* c1 = copies >= 2 ? counts + stride : counts;
  uint32_t* c2 = copies >= 4 ? counts + 2 * stride : c0;
  uint32_t* c3 = copies >= 4 ? counts + 3 * stride : c1;

  size_t i = 0;
  alignas(32) uint32_t slot[8];
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    const __m256i ab = _mm256_and_si256(_mm256_castps_si256(v), absmask);
    const __m256d dlo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
    const __m256d dhi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
    // Same double arithmetic as the scalar code; min() clamps to the last bin
    // (and turns NaN lanes into a harmless value, overwritten below).
    const __m256d tlo = _mm256_min_pd(_mm256_mul_pd(_mm256_sub_pd(dlo, lo_d), scale), top);
    const __m256d thi = _mm256_min_pd(_mm256_mul_pd(_mm256_sub_pd(dhi, lo_d), scale), top);
    __m256i s = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm256_cvttpd_epi32(tlo)), _mm256_cvttpd_epi32(thi), 1);
    // x < lo (as doubles) <=> x < lo_f, and x > hi <=> x > hi_f, for float x.
    s = _mm256_blendv_epi8(s, below_slot, _mm256_castps_si256(_mm256_cmp_ps(v, lo_f, _CMP_LT_OQ)));
    s = _mm256_blendv_epi8(s, above_slot, _mm256_castps_si256(_mm256_cmp_ps(v, hi_f, _CMP_GT_OQ)));
    s = _mm256_blendv_epi8(s, nan_slot, _mm256_cmpgt_epi32(ab, inf));
    s = _mm256_blendv_epi8(s, inf_slot, _mm256_cmpeq_epi32(ab, inf));
    _mm256_store_si256(reinterpret_cast<__m256i*>(slot), s);
    ++c0[slot[0]];
    ++c1[slot[1]];
    ++c2[slot[2]];
    ++c3[slot[3]];
    ++c0[slot[4]];
    ++c1[slot[5]];
    ++c2[slot[6]];
    ++c3[slot[7]];
  }
  kScalarKernels.histogram(x + i, n - i, p, counts, copies);
}

DJINN_TARGET void col_sum_avx2(const float* x, size_t n, double* acc, uint32_t* cnt) {
  size_t c = 0;
  for (; c + 8 <= n; c += 8) {
    const __m256 v = _mm256_loadu_ps(x + c);
    const __m256 ok = _mm256_cmp_ps(v, v, _CMP_ORD_Q);
    const __m256 vz = _mm256_and_ps(v, ok);  // NaN -> +0, and acc + 0 == acc (acc is never -0)
    _mm256_storeu_pd(acc + c, _mm256_add_pd(_mm256_loadu_pd(acc + c), _mm256_cvtps_pd(_mm256_castps256_ps128(vz))));
    _mm256_storeu_pd(acc + c + 4,
                     _mm256_add_pd(_mm256_loadu_pd(acc + c + 4), _mm256_cvtps_pd(_mm256_extractf128_ps(vz, 1))));
    __m256i* cp = reinterpret_cast<__m256i*>(cnt + c);
    _mm256_storeu_si256(cp, _mm256_sub_epi32(_mm256_loadu_si256(cp), _mm256_castps_si256(ok)));
  }
  kScalarKernels.col_sum(x + c, n - c, acc + c, cnt + c);
}

DJINN_TARGET void col_max_avx2(const float* x, size_t n, int32_t* key) {
  const __m256i absmask = _mm256_set1_epi32(0x7fffffff);
  const __m256i inf = _mm256_set1_epi32(static_cast<int>(kInfBits));
  const __m256i none = _mm256_set1_epi32(kNoKeyMin);
  size_t c = 0;
  for (; c + 8 <= n; c += 8) {
    const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + c));
    const __m256i isnan = _mm256_cmpgt_epi32(_mm256_and_si256(b, absmask), inf);
    const __m256i k = _mm256_blendv_epi8(order_key_v(b), none, isnan);
    __m256i* kp = reinterpret_cast<__m256i*>(key + c);
    _mm256_storeu_si256(kp, _mm256_max_epi32(_mm256_loadu_si256(kp), k));
  }
  kScalarKernels.col_max(x + c, n - c, key + c);
}

const Kernels kAvx2 = {
    "avx2+f16c", decode_avx2, stats_avx2, histogram_avx2, col_sum_avx2, col_max_avx2,
};

}  // namespace

const Kernels* const kAvx2Kernels = &kAvx2;

#else  // no AVX2 kernels on this target

bool cpu_has_avx2() { return false; }
bool cpu_has_f16c() { return false; }
bool cpu_has_avx2_f16c() { return false; }
const Kernels* const kAvx2Kernels = nullptr;

#endif

}  // namespace djinn
