// djinn_codec: N-API (node-addon-api) bindings for the tensor codec.
//
// Exports: decode, decodeStats, stats, histogram, downsample2d, info, configure.
// Argument checking mirrors native/fallback.ts exactly (same error classes,
// same messages), so the two backends are interchangeable.
#include <napi.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "downsample.h"
#include "kernels.h"

namespace djinn {
namespace {

// ---------------------------------------------------------------------------
// Configuration (process-wide; the addon may be loaded by several isolates).

std::atomic<bool> g_simd_enabled{true};
std::atomic<unsigned> g_threads{1};
bool g_cpu_avx2 = false, g_cpu_f16c = false, g_cpu_fma = false;

const Kernels& kernels() {
  if (g_simd_enabled.load(std::memory_order_relaxed) && kAvx2Kernels && g_cpu_avx2 && g_cpu_f16c && g_cpu_fma)
    return *kAvx2Kernels;
  return kScalarKernels;
}

unsigned default_threads() {
  if (const char* e = std::getenv("DJINN_CODEC_THREADS")) {
    const long v = std::strtol(e, nullptr, 10);
    if (v >= 1 && v <= 64) return static_cast<unsigned>(v);
  }
  const unsigned hc = std::thread::hardware_concurrency();
  return hc == 0 ? 1 : std::min(hc, 8u);
}

void init_config() {
  g_cpu_avx2 = cpu_has_avx2();
  g_cpu_f16c = cpu_has_f16c();
  g_cpu_fma = cpu_has_fma();
  const char* nosimd = std::getenv("DJINN_CODEC_NO_SIMD");
  g_simd_enabled = !(nosimd && nosimd[0] == '1');
  g_threads = default_threads();
}

// ---------------------------------------------------------------------------
// Work splitting. The calling thread does the first part; parts run on
// std::threads only for large inputs. If a thread cannot be started the part
// runs on the calling thread instead.

constexpr size_t kMinPerThread = size_t{1} << 18;
constexpr size_t kMaxElements = 0xffffffffu;  // counts are Uint32; 4 Gi elements is far beyond any slice

unsigned parts_for(size_t work) {
  const unsigned t = g_threads.load(std::memory_order_relaxed);
  if (t <= 1 || work < 2 * kMinPerThread) return 1;
  return static_cast<unsigned>(std::min<size_t>(t, work / kMinPerThread));
}

template <typename F>
void run_parts(unsigned parts, F&& fn) {
  if (parts <= 1) {
    fn(0u);
    return;
  }
  std::vector<std::thread> workers;
  std::vector<unsigned> inline_parts;
  workers.reserve(parts - 1);
  for (unsigned p = 1; p < parts; ++p) {
    try {
      workers.emplace_back([&fn, p] { fn(p); });
    } catch (...) {
      inline_parts.push_back(p);
    }
  }
  fn(0u);
  for (unsigned p : inline_parts) fn(p);
  for (auto& w : workers) w.join();
}

inline size_t part_begin(size_t n, unsigned parts, unsigned p) {
  // Multiple of 64 elements so parts start on cache lines of the output.
  const size_t b = static_cast<size_t>(static_cast<double>(n) * p / parts);
  return p == 0 ? 0 : std::min(n, b & ~size_t{63});
}

// ---------------------------------------------------------------------------
// Argument checking.

[[noreturn]] void throw_type(Napi::Env env, const std::string& msg) { throw Napi::TypeError::New(env, msg); }
[[noreturn]] void throw_range(Napi::Env env, const std::string& msg) { throw Napi::RangeError::New(env, msg); }

bool is_typed(const Napi::Value& v, napi_typedarray_type t) {
  return v.IsTypedArray() && v.As<Napi::TypedArray>().TypedArrayType() == t;
}

Napi::Float32Array float32_arg(const Napi::CallbackInfo& info, size_t i, const char* fn) {
  if (!is_typed(info[i], napi_float32_array)) throw_type(info.Env(), std::string(fn) + ": values must be a Float32Array");
  Napi::Float32Array a = info[i].As<Napi::Float32Array>();
  if (a.ElementLength() > kMaxElements) throw_range(info.Env(), std::string(fn) + ": values has more than 2^32-1 elements");
  return a;
}

double number_arg(const Napi::CallbackInfo& info, size_t i, const char* fn, const char* name) {
  if (!info[i].IsNumber()) throw_type(info.Env(), std::string(fn) + ": " + name + " must be a number");
  return info[i].As<Napi::Number>().DoubleValue();
}

bool is_integer(double d) { return std::isfinite(d) && std::floor(d) == d; }

std::string int_str(double d) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.0f", d);
  return buf;
}

const char* const kDTypeNames[] = {"bfloat16", "float16", "float32", "int8", "int32", "int64"};
const char* const kDTypeList = "bfloat16, float16, float32, int8, int32, int64";

Napi::Float32Array new_float32(Napi::Env env, size_t n) {
  Napi::ArrayBuffer buf = Napi::ArrayBuffer::New(env, n * sizeof(float));
  return Napi::Float32Array::New(env, n, buf, 0);
}

bool overlaps(const void* a, size_t na, const void* b, size_t nb) {
  if (na == 0 || nb == 0) return false;
  const uintptr_t x = reinterpret_cast<uintptr_t>(a), y = reinterpret_cast<uintptr_t>(b);
  return x < y + nb && y < x + na;
}

// The optional `out` argument: a caller-owned Float32Array of exactly n
// elements that must not share memory with the input (it is reused to avoid
// allocating, and on many machines first-touch page faults of a fresh 40 MB
// array cost more than the decoding itself). Without it, a new array.
Napi::Float32Array output_arg(const Napi::CallbackInfo& info, size_t i, const char* fn, size_t n, const void* in,
                              size_t in_bytes) {
  Napi::Env env = info.Env();
  if (info[i].IsUndefined()) return new_float32(env, n);
  if (!is_typed(info[i], napi_float32_array)) throw_type(env, std::string(fn) + ": out must be a Float32Array");
  Napi::Float32Array out = info[i].As<Napi::Float32Array>();
  if (out.ElementLength() != n) {
    throw_range(env, std::string(fn) + ": out.length = " + std::to_string(out.ElementLength()) + ", expected " +
                         std::to_string(n));
  }
  if (overlaps(out.Data(), n * sizeof(float), in, in_bytes))
    throw_range(env, std::string(fn) + ": out must not share memory with the input");
  return out;
}

// ---------------------------------------------------------------------------
// decode(bytes: Uint8Array, dtype, out?): Float32Array

struct DecodeArgs {
  DType dt;
  const uint8_t* src;  // first element, any alignment
  size_t n, esize;
  Napi::Float32Array out;
};

DecodeArgs decode_args(const Napi::CallbackInfo& info, const char* fn) {
  Napi::Env env = info.Env();
  const std::string f(fn);
  if (!is_typed(info[0], napi_uint8_array)) throw_type(env, f + ": bytes must be a Uint8Array");
  if (!info[1].IsString()) throw_type(env, f + ": dtype must be a string, one of " + kDTypeList);
  const std::string name = info[1].As<Napi::String>().Utf8Value();
  int t = -1;
  for (int k = 0; k < 6; ++k)
    if (name == kDTypeNames[k]) t = k;
  if (t < 0) throw_range(env, f + ": unknown dtype '" + name + "' (expected one of " + kDTypeList + ")");
  const DType dt = static_cast<DType>(t);
  const size_t esize = dtype_size(dt);
  Napi::Uint8Array bytes = info[0].As<Napi::Uint8Array>();
  const size_t nbytes = bytes.ByteLength();
  if (nbytes % esize != 0) {
    throw_range(env, f + ": byte length " + std::to_string(nbytes) + " is not a multiple of " + std::to_string(esize) +
                         " (the size of one " + name + " element)");
  }
  const size_t n = nbytes / esize;
  if (n > kMaxElements) throw_range(env, f + ": more than 2^32-1 elements");
  Napi::Float32Array out = output_arg(info, 2, fn, n, bytes.Data(), nbytes);
  return {dt, bytes.Data(), n, esize, out};
}

Napi::Value Decode(const Napi::CallbackInfo& info) {
  DecodeArgs a = decode_args(info, "decode");
  if (a.n == 0) return a.out;
  float* dst = a.out.Data();
  const Kernels& k = kernels();
  const unsigned parts = parts_for(a.n);
  run_parts(parts, [&](unsigned p) {
    const size_t b = part_begin(a.n, parts, p);
    const size_t e = p + 1 == parts ? a.n : part_begin(a.n, parts, p + 1);
    if (e > b) k.decode(a.dt, a.src + b * a.esize, dst + b, e - b);
  });
  return a.out;
}

// ---------------------------------------------------------------------------
// stats(values: Float32Array)

Napi::Object stats_object(Napi::Env env, const StatsAcc& a, float K) {
  const double nan = std::nan("");
  Napi::Object r = Napi::Object::New(env);
  const double cnt = static_cast<double>(a.finite);
  if (a.finite > 0) {
    const double m1 = a.s1 / cnt;
    double var = a.s2 / cnt - m1 * m1;
    if (var < 0) var = 0;
    r.Set("min", static_cast<double>(bits_f32(key_bits(a.min_key))));
    r.Set("max", static_cast<double>(bits_f32(key_bits(a.max_key))));
    r.Set("mean", static_cast<double>(K) + m1);
    r.Set("std", std::sqrt(var));
  } else {
    r.Set("min", nan);
    r.Set("max", nan);
    r.Set("mean", nan);
    r.Set("std", nan);
  }
  r.Set("l2Norm", std::sqrt(a.sq));
  r.Set("absMax", static_cast<double>(bits_f32(a.absmax_bits)));
  r.Set("nanCount", static_cast<double>(a.nan));
  r.Set("posInfCount", static_cast<double>(a.posinf));
  r.Set("negInfCount", static_cast<double>(a.neginf));
  r.Set("zeroCount", static_cast<double>(a.zero));
  r.Set("count", cnt);
  return r;
}

inline bool is_finite_bits(float v) { return (f32_bits(v) & kAbsMask) < kInfBits; }

Napi::Value Stats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Float32Array values = float32_arg(info, 0, "stats");
  const size_t n = values.ElementLength();
  const float* x = values.Data();

  // Shift for the variance sums: the first finite value.
  float K = 0.0f;
  for (size_t i = 0; i < n; ++i) {
    if (is_finite_bits(x[i])) {
      K = x[i];
      break;
    }
  }
  const Kernels& k = kernels();
  const unsigned parts = parts_for(n);
  std::vector<StatsAcc> partial(parts);
  run_parts(parts, [&](unsigned p) {
    const size_t b = part_begin(n, parts, p);
    const size_t e = p + 1 == parts ? n : part_begin(n, parts, p + 1);
    if (e > b) k.stats(x + b, e - b, K, &partial[p]);
  });
  StatsAcc a;
  for (const StatsAcc& s : partial) a.merge(s);
  return stats_object(env, a, K);
}

// ---------------------------------------------------------------------------
// decodeStats(bytes, dtype, out?): { values, stats } in one pass

Napi::Value DecodeStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  DecodeArgs a = decode_args(info, "decodeStats");
  float* dst = a.out.Data();
  const Kernels& k = kernels();
  // The shift K: the first finite value, found by decoding the head.
  float K = 0.0f;
  for (size_t i = 0; i < a.n; ++i) {
    float v;
    kScalarKernels.decode(a.dt, a.src + i * a.esize, &v, 1);
    if (is_finite_bits(v)) {
      K = v;
      break;
    }
  }
  const unsigned parts = parts_for(a.n);
  std::vector<StatsAcc> partial(parts);
  run_parts(parts, [&](unsigned p) {
    const size_t b = part_begin(a.n, parts, p);
    const size_t e = p + 1 == parts ? a.n : part_begin(a.n, parts, p + 1);
    if (e > b) k.decode_stats(a.dt, a.src + b * a.esize, dst + b, e - b, K, &partial[p]);
  });
  StatsAcc acc;
  for (const StatsAcc& s : partial) acc.merge(s);
  Napi::Object r = Napi::Object::New(env);
  r.Set("values", a.out);
  r.Set("stats", stats_object(env, acc, K));
  return r;
}

// ---------------------------------------------------------------------------
// histogram(values, bins, lo, hi)

constexpr double kMaxBins = 16777216.0;  // 2^24

Napi::Value Histogram(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Float32Array values = float32_arg(info, 0, "histogram");
  const double binsd = number_arg(info, 1, "histogram", "bins");
  const double lo = number_arg(info, 2, "histogram", "lo");
  const double hi = number_arg(info, 3, "histogram", "hi");
  if (!is_integer(binsd) || binsd < 1 || binsd > kMaxBins)
    throw_range(env, "histogram: bins must be an integer from 1 to 16777216");
  if (!std::isfinite(lo) || !std::isfinite(hi)) throw_range(env, "histogram: lo and hi must be finite");
  if (!(lo < hi)) throw_range(env, "histogram: lo must be less than hi");
  HistParams p;
  p.bins = static_cast<uint32_t>(binsd);
  p.lo = lo;
  p.hi = hi;
  p.scale = binsd / (hi - lo);
  p.bins_m1 = binsd - 1;
  if (!std::isfinite(p.scale) || !std::isfinite(hi - lo))
    throw_range(env, "histogram: the range [lo, hi] is too wide or too narrow for the number of bins");
  // Float thresholds equivalent to the double comparisons x < lo, x > hi.
  if (lo <= -static_cast<double>(FLT_MAX)) {
    p.lo_f = -FLT_MAX;
  } else if (lo > static_cast<double>(FLT_MAX)) {
    p.lo_f = bits_f32(kInfBits);
  } else {
    p.lo_f = static_cast<float>(lo);
    if (static_cast<double>(p.lo_f) < lo) p.lo_f = std::nextafter(p.lo_f, bits_f32(kInfBits));
  }
  if (hi >= static_cast<double>(FLT_MAX)) {
    p.hi_f = FLT_MAX;
  } else if (hi < -static_cast<double>(FLT_MAX)) {
    p.hi_f = -bits_f32(kInfBits);
  } else {
    p.hi_f = static_cast<float>(hi);
    if (static_cast<double>(p.hi_f) > hi) p.hi_f = std::nextafter(p.hi_f, -bits_f32(kInfBits));
  }

  const size_t n = values.ElementLength();
  Napi::ArrayBuffer cbuf = Napi::ArrayBuffer::New(env, size_t{p.bins} * 4);
  Napi::Uint32Array counts = Napi::Uint32Array::New(env, p.bins, cbuf, 0);
  const float* x = values.Data();

  const size_t slots = p.slots();
  // Sub-histograms: 4 interleaved copies per thread for the usual small bin
  // counts, fewer for many bins; one thread when the bins outnumber the values.
  const unsigned copies = slots <= 16384 ? 4 : slots <= 65536 ? 2 : 1;
  const unsigned parts = slots > (size_t{1} << 20) || slots > n ? 1 : parts_for(n);
  std::vector<uint32_t> work(size_t{parts} * copies * slots, 0);
  const Kernels& k = kernels();
  run_parts(parts, [&](unsigned q) {
    const size_t b = part_begin(n, parts, q);
    const size_t e = q + 1 == parts ? n : part_begin(n, parts, q + 1);
    if (e > b) k.histogram(x + b, e - b, p, work.data() + size_t{q} * copies * slots, copies);
  });
  // Totals cannot overflow: at most n < 2^32 values are counted.
  uint32_t* out = counts.Data();
  uint64_t extra[4] = {0, 0, 0, 0};  // below, above, NaN, Inf
  for (size_t c = 0; c < size_t{parts} * copies; ++c) {
    const uint32_t* w = work.data() + c * slots;
    if (c == 0) {
      std::memcpy(out, w, size_t{p.bins} * 4);
    } else {
      for (uint32_t b = 0; b < p.bins; ++b) out[b] += w[b];
    }
    for (int j = 0; j < 4; ++j) extra[j] += w[p.bins + j];
  }

  Napi::Object r = Napi::Object::New(env);
  r.Set("counts", counts);
  r.Set("below", static_cast<double>(extra[0]));
  r.Set("above", static_cast<double>(extra[1]));
  r.Set("nanCount", static_cast<double>(extra[2]));
  r.Set("infCount", static_cast<double>(extra[3]));
  return r;
}

// ---------------------------------------------------------------------------
// downsample2d(values, rows, cols, outRows, outCols, mode)

// floor(j * total / parts) without overflow (total, parts < 2^32).
inline size_t block_start(size_t j, size_t total, size_t parts) {
  const uint64_t q = total / parts, r = total % parts;
  return static_cast<size_t>(uint64_t{j} * q + (uint64_t{j} * r) / parts);
}

Napi::Value Downsample2d(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* fn = "downsample2d";
  Napi::Float32Array values = float32_arg(info, 0, fn);
  const double rowsd = number_arg(info, 1, fn, "rows");
  const double colsd = number_arg(info, 2, fn, "cols");
  const double outRowsd = number_arg(info, 3, fn, "outRows");
  const double outColsd = number_arg(info, 4, fn, "outCols");
  if (!info[5].IsString()) throw_type(env, "downsample2d: mode must be the string 'mean' or 'max'");
  const std::string mode = info[5].As<Napi::String>().Utf8Value();
  if (mode != "mean" && mode != "max") throw_range(env, "downsample2d: mode must be 'mean' or 'max', got '" + mode + "'");
  if (!is_integer(rowsd) || !is_integer(colsd) || rowsd < 0 || colsd < 0)
    throw_range(env, "downsample2d: rows and cols must be non-negative integers");
  if (!is_integer(outRowsd) || !is_integer(outColsd) || outRowsd < 1 || outColsd < 1)
    throw_range(env, "downsample2d: outRows and outCols must be integers >= 1");
  const size_t n = values.ElementLength();
  if (rowsd * colsd != static_cast<double>(n))
    throw_range(env, "downsample2d: rows * cols = " + int_str(rowsd * colsd) + " does not match values.length = " +
                         std::to_string(n));
  const size_t rows = static_cast<size_t>(rowsd), cols = static_cast<size_t>(colsd);
  const size_t R = outRowsd >= rowsd ? rows : static_cast<size_t>(outRowsd);
  const size_t C = outColsd >= colsd ? cols : static_cast<size_t>(outColsd);
  Napi::Float32Array out = output_arg(info, 6, fn, R * C, values.Data(), n * sizeof(float));
  if (R == 0 || C == 0) return out;
  const float* x = values.Data();
  float* y = out.Data();
  const bool use_max = mode == "max";

  std::vector<size_t> col_start(C + 1);
  for (size_t j = 0; j <= C; ++j) col_start[j] = block_start(j, cols, C);
  std::vector<size_t> row_start(R + 1);
  for (size_t j = 0; j <= R; ++j) row_start[j] = block_start(j, rows, R);
  const size_t wlo = cols / C;  // every column block is wlo or wlo + 1 wide
  std::vector<double> widths(use_max ? 0 : C);
  for (size_t j = 0; j < widths.size(); ++j) widths[j] = static_cast<double>(col_start[j + 1] - col_start[j]);

  const Kernels& k = kernels();
  const unsigned parts = static_cast<unsigned>(std::min<size_t>(parts_for(n), R));
  // Per-part scratch, allocated here so that worker threads never allocate.
  // Column accumulators carry one padding element (see downsample.h).
  const size_t W = cols + 1;
  std::vector<double> acc(use_max ? 0 : size_t{parts} * W);
  std::vector<uint32_t> cnt(use_max ? 0 : size_t{parts} * W);
  std::vector<double> sums(use_max ? 0 : size_t{parts} * C * 2);
  std::vector<int32_t> key(use_max ? size_t{parts} * W : 0);

  run_parts(parts, [&](unsigned p) {
    const size_t r0 = block_start(p, R, parts), r1 = block_start(p + 1, R, parts);
    for (size_t r = r0; r < r1; ++r) {
      float* yr = y + r * C;
      const size_t i0 = row_start[r], i1 = row_start[r + 1];
      if (use_max) {
        int32_t* kk = key.data() + size_t{p} * W;
        kk[cols] = kNoKeyMin;  // padding
        for (size_t i = i0; i < i1; ++i) k.col_max(x + i * cols, cols, kk, i == i0);
        block_max(kk, col_start.data(), C, wlo, yr);
      } else {
        double* a = acc.data() + size_t{p} * W;
        double* s = sums.data() + size_t{p} * C * 2;
        double* m = s + C;
        a[cols] = 0.0;  // padding
        bool any_nan = false;
        for (size_t i = i0; i < i1; ++i) any_nan |= k.col_sum(x + i * cols, cols, a, i == i0);
        block_sums(a, col_start.data(), C, wlo, s);
        if (any_nan) {  // rare: count the non-NaN values of each column
          uint32_t* cn = cnt.data() + size_t{p} * W;
          std::fill(cn, cn + W, 0u);
          for (size_t i = i0; i < i1; ++i) k.col_count(x + i * cols, cols, cn);
          block_counts(cn, col_start.data(), C, m);
          k.finish_mean(s, m, 1.0, C, yr);
        } else {  // every value counted: width * rows
          k.finish_mean(s, widths.data(), static_cast<double>(i1 - i0), C, yr);
        }
      }
    }
  });
  return out;
}

// ---------------------------------------------------------------------------
// info() / configure({ simd?, threads? })

Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object r = Napi::Object::New(env);
  r.Set("kernels", kernels().name);
  r.Set("cpuAvx2", g_cpu_avx2);
  r.Set("cpuF16c", g_cpu_f16c);
  r.Set("cpuFma", g_cpu_fma);
  r.Set("avx2Compiled", kAvx2Kernels != nullptr);
  r.Set("simdEnabled", g_simd_enabled.load());
  r.Set("threads", static_cast<double>(g_threads.load()));
  r.Set("napiVersion", static_cast<double>(NAPI_VERSION));
  return r;
}

Napi::Value Configure(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsObject()) throw_type(env, "configure: options must be an object");
  Napi::Object o = info[0].As<Napi::Object>();
  Napi::Value simd = o.Get("simd");
  if (!simd.IsUndefined()) {
    if (!simd.IsBoolean()) throw_type(env, "configure: simd must be a boolean");
    g_simd_enabled = simd.As<Napi::Boolean>().Value();
  }
  Napi::Value threads = o.Get("threads");
  if (!threads.IsUndefined()) {
    if (!threads.IsNumber()) throw_type(env, "configure: threads must be a number");
    const double t = threads.As<Napi::Number>().DoubleValue();
    if (!is_integer(t) || t < 1 || t > 64) throw_range(env, "configure: threads must be an integer from 1 to 64");
    g_threads = static_cast<unsigned>(t);
  }
  return Info(info);
}

// Turns C++ exceptions other than Napi::Error (e.g. std::bad_alloc) into JS errors.
template <Napi::Value (*F)(const Napi::CallbackInfo&)>
Napi::Value Guard(const Napi::CallbackInfo& info) {
  try {
    return F(info);
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::bad_alloc&) {
    throw Napi::RangeError::New(info.Env(), "djinn_codec: out of memory");
  } catch (const std::exception& e) {
    throw Napi::Error::New(info.Env(), std::string("djinn_codec: ") + e.what());
  }
}

bool little_endian() {
  const uint16_t one = 1;
  uint8_t b;
  std::memcpy(&b, &one, 1);
  return b == 1;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  if (!little_endian()) throw Napi::Error::New(env, "djinn_codec: big-endian hosts are not supported");
  static std::once_flag once;  // the addon may be loaded by several worker threads
  std::call_once(once, init_config);
  exports.Set("decode", Napi::Function::New<Guard<Decode>>(env, "decode"));
  exports.Set("stats", Napi::Function::New<Guard<Stats>>(env, "stats"));
  exports.Set("decodeStats", Napi::Function::New<Guard<DecodeStats>>(env, "decodeStats"));
  exports.Set("histogram", Napi::Function::New<Guard<Histogram>>(env, "histogram"));
  exports.Set("downsample2d", Napi::Function::New<Guard<Downsample2d>>(env, "downsample2d"));
  exports.Set("info", Napi::Function::New<Guard<Info>>(env, "info"));
  exports.Set("configure", Napi::Function::New<Guard<Configure>>(env, "configure"));
  return exports;
}

}  // namespace
}  // namespace djinn

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return djinn::Init(env, exports); }

NODE_API_MODULE(djinn_codec, InitModule)
