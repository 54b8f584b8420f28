// AVX2 + F16C kernels, compiled with function target attributes so that the
// rest of the addon stays baseline x86-64. They are only called after a run
// time check (AVX2, F16C and FMA; see cpu_has_* and kernels() in addon.cc).
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
bool cpu_has_fma() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("fma");
}

#define DJINN_TARGET __attribute__((target("avx2,f16c,fma")))

namespace {

// Large outputs are written with non-temporal stores: they bypass the cache,
// which they would not fit in anyway, and skip reading the destination first.
constexpr size_t kStreamMin = size_t{1} << 18;

template <bool kStream>
DJINN_TARGET inline void store8(float* p, __m256i v) {
  if (kStream) {
    _mm256_stream_si256(reinterpret_cast<__m256i*>(p), v);
  } else {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v);
  }
}

template <bool kStream>
DJINN_TARGET size_t decode_avx2_body(DType t, const uint8_t* src, float* dst, size_t i, size_t n) {
  switch (t) {
    case DType::BF16:
      for (; i + 16 <= n; i += 16) {
        const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 2 * i));
        store8<kStream>(dst + i, _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_castsi256_si128(h)), 16));
        store8<kStream>(dst + i + 8, _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_extracti128_si256(h, 1)), 16));
      }
      break;
    case DType::F16:
      for (; i + 16 <= n; i += 16) {
        const __m128i h0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2 * i));
        const __m128i h1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2 * i + 16));
        store8<kStream>(dst + i, _mm256_castps_si256(_mm256_cvtph_ps(h0)));
        store8<kStream>(dst + i + 8, _mm256_castps_si256(_mm256_cvtph_ps(h1)));
      }
      break;
    case DType::I8:
      for (; i + 8 <= n; i += 8) {
        const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(src + i));
        store8<kStream>(dst + i, _mm256_castps_si256(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b))));
      }
      break;
    case DType::I32:
      for (; i + 8 <= n; i += 8) {
        const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 4 * i));
        store8<kStream>(dst + i, _mm256_castps_si256(_mm256_cvtepi32_ps(v)));
      }
      break;
    case DType::F32:
    case DType::I64:
      break;  // memcpy / no vector int64 -> double conversion in AVX2
  }
  if (kStream) _mm_sfence();
  return i;
}

DJINN_TARGET void decode_avx2(DType t, const uint8_t* src, float* dst, size_t n) {
  size_t i = 0;
  const size_t es = dtype_size(t);
  if (n >= kStreamMin && t != DType::F32 && t != DType::I64) {
    const uintptr_t addr = reinterpret_cast<uintptr_t>(dst);
    if ((addr & 3u) == 0) {
      // Peel to a 32-byte aligned destination for the streaming stores.
      const size_t head = ((32u - (addr & 31u)) & 31u) / 4u;
      kScalarKernels.decode(t, src, dst, head);
      i = decode_avx2_body<true>(t, src, dst, head, n);
    }
  }
  i = decode_avx2_body<false>(t, src, dst, i, n);
  kScalarKernels.decode(t, src + i * es, dst + i, n - i);
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

// Statistics of 8 floats at a time. Vectors with NaN or Inf (rare) go
// through the scalar code; the fast path needs no masking. Per-lane int32
// zero counts cannot overflow: the addon limits inputs to 2^32 - 1 elements.
// Callers hand vectors that add() refuses (NaN or Inf) to add_rare(), with
// a separate StatsAcc: taking the address of anything inside the StatsVec
// would keep its accumulators out of registers.
struct StatsVec {
  __m256i vmin, vmax, vabs, cz;
  __m256d Kd, s1a, s1b, s2a, s2b, sqa, sqb;
  float K;
  uint64_t vectors = 0;  // fast-path vectors

  DJINN_TARGET explicit StatsVec(float k) : K(k) {
    vmin = _mm256_set1_epi32(kNoKeyMax);
    vmax = _mm256_set1_epi32(kNoKeyMin);
    vabs = cz = _mm256_setzero_si256();
    Kd = _mm256_set1_pd(static_cast<double>(k));
    s1a = s1b = s2a = s2b = sqa = sqb = _mm256_setzero_pd();
  }

  DJINN_TARGET inline bool add(__m256 v) {
    const __m256i b = _mm256_castps_si256(v);
    const __m256i ab = _mm256_and_si256(b, _mm256_set1_epi32(0x7fffffff));
    const __m256i nonfinite = _mm256_cmpgt_epi32(ab, _mm256_set1_epi32(0x7f7fffff));
    if (__builtin_expect(!_mm256_testz_si256(nonfinite, nonfinite), 0)) return false;
    ++vectors;
    cz = _mm256_sub_epi32(cz, _mm256_cmpeq_epi32(ab, _mm256_setzero_si256()));
    const __m256i key = order_key_v(b);
    vmin = _mm256_min_epi32(vmin, key);
    vmax = _mm256_max_epi32(vmax, key);
    vabs = _mm256_max_epi32(vabs, ab);
    const __m256d zlo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
    const __m256d zhi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
    const __m256d dlo = _mm256_sub_pd(zlo, Kd);
    const __m256d dhi = _mm256_sub_pd(zhi, Kd);
    s1a = _mm256_add_pd(s1a, dlo);
    s1b = _mm256_add_pd(s1b, dhi);
    s2a = _mm256_fmadd_pd(dlo, dlo, s2a);
    s2b = _mm256_fmadd_pd(dhi, dhi, s2b);
    sqa = _mm256_fmadd_pd(zlo, zlo, sqa);
    sqb = _mm256_fmadd_pd(zhi, zhi, sqb);
    return true;
  }

  DJINN_TARGET static void add_rare(__m256 v, float K, StatsAcc* rare) {
    alignas(32) float t[8];
    _mm256_store_ps(t, v);
    kScalarKernels.stats(t, 8, K, rare);
  }

  DJINN_TARGET void finish(StatsAcc* acc) const {
    StatsAcc a;
    a.zero = hsum_epi32(cz);
    a.finite = 8 * vectors;
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
    acc->merge(a);
  }
};

DJINN_TARGET void stats_avx2(const float* x, size_t n, float K, StatsAcc* acc) {
  StatsVec sv(K);
  StatsAcc rare;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    if (!sv.add(v)) StatsVec::add_rare(v, K, &rare);
  }
  sv.finish(acc);
  acc->merge(rare);
  kScalarKernels.stats(x + i, n - i, K, acc);  // tail
}

// decode + stats in one pass: the decoded vectors feed the statistics
// straight from registers (bfloat16, float16); other types go chunk by chunk
// through the cache.
template <bool kStream>
DJINN_TARGET size_t decode_stats_avx2_body(DType t, const uint8_t* src, float* dst, size_t i, size_t n, StatsVec& out,
                                           StatsAcc* rare) {
  // A local copy keeps the accumulators in registers: the vector stores below
  // may alias anything, which would force reloading a by-reference struct.
  StatsVec sv = out;
  if (t == DType::BF16) {
    for (; i + 16 <= n; i += 16) {
      const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 2 * i));
      const __m256i lo = _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_castsi256_si128(h)), 16);
      const __m256i hi = _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_extracti128_si256(h, 1)), 16);
      store8<kStream>(dst + i, lo);
      store8<kStream>(dst + i + 8, hi);
      if (!sv.add(_mm256_castsi256_ps(lo))) StatsVec::add_rare(_mm256_castsi256_ps(lo), sv.K, rare);
      if (!sv.add(_mm256_castsi256_ps(hi))) StatsVec::add_rare(_mm256_castsi256_ps(hi), sv.K, rare);
    }
  } else if (t == DType::F16) {
    for (; i + 16 <= n; i += 16) {
      const __m256 lo = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2 * i)));
      const __m256 hi = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2 * i + 16)));
      store8<kStream>(dst + i, _mm256_castps_si256(lo));
      store8<kStream>(dst + i + 8, _mm256_castps_si256(hi));
      if (!sv.add(lo)) StatsVec::add_rare(lo, sv.K, rare);
      if (!sv.add(hi)) StatsVec::add_rare(hi, sv.K, rare);
    }
  }
  if (kStream) _mm_sfence();
  out = sv;
  return i;
}

DJINN_TARGET void decode_stats_avx2(DType t, const uint8_t* src, float* dst, size_t n, float K, StatsAcc* acc) {
  const size_t es = dtype_size(t);
  if (t != DType::BF16 && t != DType::F16) {
    constexpr size_t kChunk = 4096;
    for (size_t i = 0; i < n; i += kChunk) {
      const size_t m = n - i < kChunk ? n - i : kChunk;
      decode_avx2(t, src + i * es, dst + i, m);
      stats_avx2(dst + i, m, K, acc);
    }
    return;
  }
  StatsVec sv(K);
  StatsAcc rare;
  size_t i = 0;
  const uintptr_t addr = reinterpret_cast<uintptr_t>(dst);
  if (n >= kStreamMin && (addr & 3u) == 0) {
    const size_t head = ((32u - (addr & 31u)) & 31u) / 4u;
    kScalarKernels.decode(t, src, dst, head);
    kScalarKernels.stats(dst, head, K, acc);
    i = decode_stats_avx2_body<true>(t, src, dst, head, n, sv, &rare);
  }
  i = decode_stats_avx2_body<false>(t, src, dst, i, n, sv, &rare);
  sv.finish(acc);
  acc->merge(rare);
  kScalarKernels.decode(t, src + i * es, dst + i, n - i);
  kScalarKernels.stats(dst + i, n - i, K, acc);
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
  uint32_t* c[8];
  for (unsigned k = 0; k < 8; ++k) c[k] = counts + (k % (copies ? copies : 1)) * stride;  // 4 copies measured best

  size_t i = 0;
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
    alignas(32) uint32_t slot[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(slot), s);
    for (unsigned k = 0; k < 8; ++k) ++c[k][slot[k]];
  }
  kScalarKernels.histogram(x + i, n - i, p, counts, copies);
}

DJINN_TARGET bool col_sum_avx2(const float* x, size_t n, double* acc, bool first) {
  size_t c = 0;
  __m256 all_ok = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
  const __m256d zero = _mm256_setzero_pd();
  for (; c + 8 <= n; c += 8) {
    const __m256 v = _mm256_loadu_ps(x + c);
    const __m256 ok = _mm256_cmp_ps(v, v, _CMP_ORD_Q);
    all_ok = _mm256_and_ps(all_ok, ok);
    const __m256 vz = _mm256_and_ps(v, ok);  // NaN -> +0; acc + 0 == acc (acc is never -0)
    const __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(vz));
    const __m256d hi = _mm256_cvtps_pd(_mm256_extractf128_ps(vz, 1));
    // first row: 0.0 + x, which also turns -0 into +0 as the TypeScript sum does
    const __m256d a0 = first ? zero : _mm256_loadu_pd(acc + c);
    const __m256d a1 = first ? zero : _mm256_loadu_pd(acc + c + 4);
    _mm256_storeu_pd(acc + c, _mm256_add_pd(a0, lo));
    _mm256_storeu_pd(acc + c + 4, _mm256_add_pd(a1, hi));
  }
  const bool tail_nan = kScalarKernels.col_sum(x + c, n - c, acc + c, first);
  return tail_nan || _mm256_movemask_ps(all_ok) != 0xff;
}

DJINN_TARGET void col_max_avx2(const float* x, size_t n, int32_t* key, bool first) {
  const __m256i absmask = _mm256_set1_epi32(0x7fffffff);
  const __m256i inf = _mm256_set1_epi32(static_cast<int>(kInfBits));
  const __m256i none = _mm256_set1_epi32(kNoKeyMin);
  size_t c = 0;
  for (; c + 8 <= n; c += 8) {
    const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + c));
    const __m256i isnan = _mm256_cmpgt_epi32(_mm256_and_si256(b, absmask), inf);
    const __m256i k = _mm256_blendv_epi8(order_key_v(b), none, isnan);
    __m256i* kp = reinterpret_cast<__m256i*>(key + c);
    _mm256_storeu_si256(kp, first ? k : _mm256_max_epi32(_mm256_loadu_si256(kp), k));
  }
  kScalarKernels.col_max(x + c, n - c, key + c, first);
}

DJINN_TARGET void finish_mean_avx2(const double* s, const double* m, double mscale, size_t n, float* out) {
  const __m128 qnan = _mm_castsi128_ps(_mm_set1_epi32(static_cast<int>(kQuietNaNBits)));
  const __m256d sc = _mm256_set1_pd(mscale);
  size_t j = 0;
  for (; j + 4 <= n; j += 4) {
    const __m256d mv = _mm256_mul_pd(_mm256_loadu_pd(m + j), sc);
    const __m256d q = _mm256_div_pd(_mm256_loadu_pd(s + j), mv);
    // vcvtpd2ps rounds to nearest and overflows to +-inf, like narrow()
    const __m128 f = _mm256_cvtpd_ps(q);
    const __m128 none = _mm_cmp_ps(_mm256_cvtpd_ps(mv), _mm_setzero_ps(), _CMP_EQ_OQ);  // counts are integers
    _mm_storeu_ps(out + j, _mm_blendv_ps(f, qnan, none));
  }
  kScalarKernels.finish_mean(s + j, m + j, mscale, n - j, out + j);
}

const Kernels kAvx2 = {
    "avx2+f16c+fma", decode_avx2, decode_stats_avx2,       stats_avx2,  histogram_avx2, col_sum_avx2, col_count_portable,
    col_max_avx2, finish_mean_avx2,
};

}  // namespace

const Kernels* const kAvx2Kernels = &kAvx2;

#else  // no AVX2 kernels on this target

bool cpu_has_avx2() { return false; }
bool cpu_has_f16c() { return false; }
bool cpu_has_fma() { return false; }
const Kernels* const kAvx2Kernels = nullptr;

#endif

}  // namespace djinn
