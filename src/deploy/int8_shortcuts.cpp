// Dirac shortcuts in the INT8 executor: see int8_shortcuts.h.
#include "int8_shortcuts.h"
#include "onednn_steps.h"  // index_of

#include <cmath>

#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include <cstdio>
#include <cstdlib>

#include <ATen/Parallel.h>
#include <torch/torch.h>

namespace rmnet::detail {
namespace {

using torch::Tensor;

/// Whether layer i is a conv the pass can work with: INT8, an odd kernel padded by half of it (a
/// copy through the centre tap at stride s reads x[s i, s j]). A merge conv must also have no
/// float32 layer (PReLU) in its run: the executor adds the term to its output and quantizes.
bool eligible(const QuantizedNetImpl& net, size_t i) {
  const auto& p = net.plan();
  if (i >= p.head) return false;
  const auto& s = net.spec(i);
  return s.kind == LayerKind::Conv && p.role[i] == QuantRole::Int8 && s.kernel % 2 == 1 && s.padding == s.kernel / 2;
}


/// Per line of `nz` [L, n] (bool): the position of its only non-zero, or -1 (none or several).
std::vector<int64_t> lone(const Tensor& nz) {
  const Tensor count = nz.sum(1);
  const Tensor at = nz.to(torch::kInt).argmax(1);
  const auto c = count.accessor<int64_t, 1>();
  const auto a = at.accessor<int64_t, 1>();
  std::vector<int64_t> out(nz.size(0), -1);
  for (int64_t l = 0; l < nz.size(0); ++l)
    if (c[l] == 1) out[l] = a[l];
  return out;
}

struct ConvView {
  Tensor nz;    // [O, I/g, k*k] bool: the s8 weight's non-zeros
  Tensor wdeq;  // [O, I/g, k*k] float32: the weight as the reference computes with it (s8 * scale)
  int64_t kk = 1, centre = 0;
};

ConvView view_of(const QuantizedNetImpl& net, size_t i) {
  const auto& s = net.spec(i);
  ConvView v;
  const Tensor& w = net.tensor(i, "weight");
  v.nz = w.ne(0).reshape({s.out_channels, s.in_channels / s.groups, -1});
  v.wdeq = (w.to(torch::kFloat) * net.tensor(i, "weight_scale").to(torch::kFloat).view({-1, 1, 1, 1}))
               .reshape({s.out_channels, s.in_channels / s.groups, -1});
  v.kk = s.kernel * s.kernel;
  v.centre = (s.kernel / 2) * s.kernel + s.kernel / 2;
  return v;
}

/// The codes at conv i's quantization point of its copy rows `rows`, each reading input codes `in`
/// [R, 256] (u8 at s_in, zp_in) through its one weight `w` [R]: the reference's float arithmetic
/// (w x + bias, the run's ReLU / clamp, quantize) applied to each code.
Tensor copy_codes(const QuantizedNetImpl& net, size_t i, const std::vector<int64_t>& rows, const Tensor& in,
                  const Tensor& w, double s_in, int64_t zp_in) {
  const Tensor r = index_of(rows);
  Tensor v = dequantize_u8(in, s_in, zp_in) * w.view({-1, 1}) +
             net.tensor(i, "bias").to(torch::kFloat).index_select(0, r).view({-1, 1});
  const size_t k = net.plan().point_of(i);
  for (size_t j = i + 1; j <= k; ++j) {
    if (net.spec(j).kind == LayerKind::ReLU) {
      v = torch::relu(v);
    } else if (net.spec(j).kind == LayerKind::PReLU) {  // as torch::prelu: max(0, v) + w min(0, v)
      const Tensor w = net.tensor(j, "weight").to(torch::kFloat).index_select(0, r).view({-1, 1});
      v = torch::where(v >= 0, v, w * v);
    } else {  // Clamp
      v = torch::clamp(v, net.tensor(j, "min").to(torch::kFloat).index_select(0, r).view({-1, 1}),
                       net.tensor(j, "max").to(torch::kFloat).index_select(0, r).view({-1, 1}));
    }
  }
  return quantize_u8(v, net.out_scale(k), net.out_zero_point(k));
}

/// The branch rows (no copy source) of a conv's output.
std::vector<int64_t> branch(const std::vector<int64_t>& src) {
  std::vector<int64_t> rows;
  for (size_t r = 0; r < src.size(); ++r)
    if (src[r] < 0) rows.push_back(static_cast<int64_t>(r));
  return rows;
}

}  // namespace

std::vector<std::shared_ptr<const Int8Shortcut>> find_int8_shortcuts(const QuantizedNetImpl& net) {
  torch::NoGradGuard no_grad;
  const auto& plan = net.plan();
  const size_t n = plan.head;
  // the u8 scale and zero point entering each layer
  std::vector<double> s_in(n);
  std::vector<int64_t> zp_in(n);
  {
    double s = net.input_scale();
    int64_t z = net.input_zero_point();
    for (size_t i = 0; i < n; ++i) {
      s_in[i] = s;
      zp_in[i] = z;
      if (plan.point[i]) {
        s = net.out_scale(i);
        z = net.out_zero_point(i);
      }
    }
  }
  // the conv after conv i's run, or n where the next layer is none the pass can use
  const auto next_conv = [&](size_t i) {
    const size_t k = plan.point_of(i) + 1;
    return k < n && eligible(net, k) ? k : n;
  };
  std::vector<std::shared_ptr<const Int8Shortcut>> found;
  for (size_t a = 0; a < n; ++a) {
    if (!eligible(net, a) || net.spec(a).groups != 1) continue;
    const auto& sa = net.spec(a);
    const ConvView va = view_of(net, a);
    // A's copy rows: one non-zero weight, at a centre tap; cur[c]: the block-input channel that
    // channel c of the current conv's output copies (-1: a branch channel)
    const auto pos = lone(va.nz.reshape({sa.out_channels, -1}));
    std::vector<int64_t> cur(sa.out_channels, -1), rows;
    for (int64_t r = 0; r < sa.out_channels; ++r)
      if (pos[r] >= 0 && pos[r] % va.kk == va.centre) {
        cur[r] = pos[r] / va.kk;
        rows.push_back(r);
      }
    const int64_t copies = static_cast<int64_t>(rows.size());
    if (copies == 0 || copies == sa.out_channels || next_conv(a) == n) continue;
    auto sc = std::make_shared<Int8Shortcut>();
    sc->a = a;
    sc->copies = copies;
    sc->convs.push_back(a);
    sc->rows.push_back(branch(cur));
    sc->stride = sa.stride;
    // codes[c]: channel c's code for each block-input code [C, 256] (rows of branch channels unused)
    Tensor codes = torch::zeros({sa.out_channels, 256}, torch::kByte);
    {
      std::vector<int64_t> src_of_rows, flat;
      for (int64_t r : rows) {
        src_of_rows.push_back(cur[r]);
        flat.push_back(pos[r]);
      }
      const Tensor in = torch::arange(256, torch::kLong).to(torch::kByte).expand({copies, 256});
      const Tensor w = va.wdeq.reshape({sa.out_channels, -1}).index_select(0, index_of(rows))
                           .gather(1, index_of(flat).view({-1, 1}))
                           .view({-1});
      codes.index_copy_(0, index_of(rows), copy_codes(net, a, rows, in, w, s_in[a], zp_in[a]));
    }
    size_t b = next_conv(a);
    bool merged = false;
    while (b < n) {
      const auto& sb = net.spec(b);
      const ConvView vb = view_of(net, b);
      // an M: every copy column is read by one row only, at its centre tap, and that row reads
      // nothing else (it passes the copy on); its branch rows go on to another conv
      std::vector<int64_t> next(sb.out_channels, -1), m_rows, m_cols;
      const int64_t g = sb.groups, og = sb.out_channels / g, ig = sb.in_channels / g;
      bool is_m = true;
      {
        const auto row_pos = lone(vb.nz.reshape({sb.out_channels, -1}));
        // per input channel j (group j / ig): its only non-zero among its group's rows, (row in group) * kk + tap
        const auto col_pos = lone(vb.nz.reshape({g, og, ig, vb.kk}).permute({0, 2, 1, 3}).reshape({g * ig, og * vb.kk}));
        for (int64_t j = 0; j < sb.in_channels && is_m; ++j) {
          if (cur[j] < 0) continue;
          const int64_t p = col_pos[j];
          const int64_t r = p < 0 ? -1 : j / ig * og + p / vb.kk;
          if (p < 0 || p % vb.kk != vb.centre || row_pos[r] < 0) {
            is_m = false;
            break;
          }
          next[r] = cur[j];
          m_rows.push_back(r);
          m_cols.push_back(j);
        }
        // grouped: every group all copies (rows and columns) or all branch, so whole groups go
        for (int64_t q = 0; q < g && is_m && g > 1; ++q) {
          int64_t cr = 0, cc = 0;
          for (int64_t r = q * og; r < (q + 1) * og; ++r) cr += next[r] >= 0;
          for (int64_t j = q * ig; j < (q + 1) * ig; ++j) cc += cur[j] >= 0;
          is_m = (cr == 0 && cc == 0) || (cr == og && cc == ig);
        }
        is_m = is_m && !m_rows.empty() && static_cast<int64_t>(m_rows.size()) < sb.out_channels && next_conv(b) < n;
      }
      if (is_m) {
        std::vector<int64_t> flat;
        for (size_t t = 0; t < m_rows.size(); ++t)
          flat.push_back(m_cols[t] % ig * vb.kk + vb.centre);
        const Tensor w = vb.wdeq.reshape({sb.out_channels, -1}).index_select(0, index_of(m_rows))
                             .gather(1, index_of(flat).view({-1, 1}))
                             .view({-1});
        Tensor next_codes = torch::zeros({sb.out_channels, 256}, torch::kByte);
        next_codes.index_copy_(0, index_of(m_rows),
                               copy_codes(net, b, m_rows, codes.index_select(0, index_of(m_cols)), w, s_in[b], zp_in[b]));
        sc->convs.push_back(b);
        sc->rows.push_back(branch(next));
        sc->stride *= sb.stride;
        cur = std::move(next);
        codes = std::move(next_codes);
        b = next_conv(b);
        continue;
      }
      // the merge B: dense, no float32 layer in its run, its copy columns with weights at the centre tap only
      if (sb.groups != 1 || plan.run_has_fallback(b)) break;
      std::vector<int64_t> cols, xs;
      for (int64_t j = 0; j < sb.in_channels; ++j)
        if (cur[j] >= 0) {
          cols.push_back(j);
          xs.push_back(cur[j]);
        }
      const Tensor ci = index_of(cols);
      const Tensor nzc = vb.nz.index_select(1, ci);  // [O, copies, kk]
      if (nzc.narrow(2, 0, vb.centre).any().item<bool>() ||
          nzc.narrow(2, vb.centre + 1, vb.kk - vb.centre - 1).any().item<bool>())
        break;
      sc->b = b;
      sc->b_cols = branch(cur);
      if (sc->b_cols.empty()) break;
      sc->stride *= sb.stride;
      const Tensor centre_nz = nzc.select(2, vb.centre);  // [O, copies]
      sc->identity = centre_nz.sum(1).le(1).all().item<bool>();
      sc->code_scale = s_in[b];
      sc->code_zp = zp_in[b];
      const Tensor lut = codes.index_select(0, ci);  // [copies, 256]
      // per copy: whether it reaches B as the block input's code itself (the quantizer's exact
      // copies) or as one code whatever the input (a dead reserve)
      const Tensor ident = lut.eq(torch::arange(256, torch::kLong).to(torch::kByte).view({1, -1})).all(1);
      const Tensor constant = lut.eq(lut.narrow(1, 0, 1)).all(1);
      const auto ia = ident.accessor<bool, 1>();
      const auto ca = constant.accessor<bool, 1>();
      if (sc->identity) {
        // term[o][q] = w[o, j] * dequantize(code of copy j for block-input code q), j: row o's copy
        const Tensor w = vb.wdeq.index_select(1, ci).select(2, vb.centre);  // [O, copies]
        const Tensor j = centre_nz.to(torch::kInt).argmax(1);                // [O] (int64)
        const Tensor has = centre_nz.any(1);
        const Tensor wj = w.gather(1, j.view({-1, 1}));      // [O, 1]
        sc->table = (dequantize_u8(lut.index_select(0, j), sc->code_scale, sc->code_zp) * wj)
                        .masked_fill(has.logical_not().view({-1, 1}), 0.0)
                        .contiguous();
        const auto ja = j.accessor<int64_t, 1>();
        const auto ha = has.accessor<bool, 1>();
        sc->src.assign(sb.out_channels, -1);
        for (int64_t o = 0; o < sb.out_channels; ++o)
          if (ha[o]) sc->src[o] = xs[ja[o]];
        // the linear case B adds itself: per row o, a term add_factor[o] * (code of channel o -
        // zp) (its copy passed the block input's codes unchanged, weight > 0), or a constant (a copy
        // whose table gives one code whatever the input: a dead reserve) or no term at all (its copy
        // was pruned): factor 0 and the constant in B's bias (add_bias)
        bool linear = sc->stride == 1 && sb.out_channels == sa.in_channels;
        if (linear) {
          const auto wa = wj.accessor<float, 2>();
          const auto ta = sc->table.accessor<float, 2>();
          std::vector<float> factor(sb.out_channels, 0.f), bias(sb.out_channels, 0.f);
          for (int64_t o = 0; o < sb.out_channels && linear; ++o) {
            if (!ha[o]) continue;
            const int64_t c = ja[o];
            if (ca[c]) {
              bias[o] = ta[o][0];
            } else if (ia[c] && sc->src[o] == o && wa[o][0] > 0) {
              factor[o] = static_cast<float>(wa[o][0] * sc->code_scale);
            } else {
              linear = false;
            }
          }
          if (linear) {
            sc->add_factor = torch::tensor(factor, torch::kFloat);
            sc->add_bias = torch::tensor(bias, torch::kFloat);
            sc->add_zp = sc->code_zp;
          }
        }
      } else {
        sc->xs = xs;
        sc->lut = lut.contiguous();
        sc->lut32 = lut.to(torch::kInt).contiguous();
        sc->straight = true;
        for (size_t t = 0; t < xs.size(); ++t) sc->straight = sc->straight && xs[t] == static_cast<int64_t>(t);
        const auto k = sb.kernel;
        sc->weight_s8 = net.tensor(b, "weight").index_select(1, ci).narrow(2, k / 2, 1).narrow(3, k / 2, 1).contiguous();
        sc->w_scale = net.tensor(b, "weight_scale").to(torch::kFloat).contiguous();
        // codes_pass: every copy passes its block-input channel's code unchanged (one copy per
        // channel at most) or is a constant; the projection is then a 1x1 conv of the kept input
        // (zero columns where a channel has no copy) plus the constants' term as its bias
        std::vector<bool> taken(sa.in_channels, false);
        bool pass = true;
        for (size_t t = 0; t < xs.size() && pass; ++t) {
          pass = ca[t] || (ia[t] && !taken[xs[t]]);
          if (!ca[t]) taken[xs[t]] = true;
        }
        if (pass) {
          sc->codes_pass = true;
          const int64_t o = sb.out_channels;
          std::vector<int64_t> passing, channels, constants;
          for (size_t t = 0; t < xs.size(); ++t) {
            if (ca[t]) {
              constants.push_back(static_cast<int64_t>(t));
            } else {
              passing.push_back(static_cast<int64_t>(t));
              channels.push_back(xs[t]);
            }
          }
          sc->kept_weight_s8 = torch::zeros({o, sa.in_channels, 1, 1}, torch::kChar)
                                   .index_copy_(1, index_of(channels), sc->weight_s8.index_select(1, index_of(passing)))
                                   .contiguous();
          // the constants' term: B's dequantized copy-column weights times their copies' values
          const Tensor ck = index_of(constants);
          const Tensor wdeq = sc->weight_s8.index_select(1, ck).to(torch::kDouble).view({o, -1}) *
                              sc->w_scale.to(torch::kDouble).view({-1, 1});
          const Tensor value = (lut.index_select(0, ck).select(1, 0).to(torch::kDouble) - sc->code_zp) * sc->code_scale;
          sc->kept_bias = wdeq.matmul(value).to(torch::kFloat).contiguous();
        }
      }
      merged = true;
      break;
    }
    if (!merged) continue;
    found.push_back(sc);
    a = sc->b;  // blocks do not overlap: the next A starts after B
  }
  return found;
}


namespace {

/// The reference's quantization of B's float sum: clamp(round(v / scale) + zp, lo, 255) (lo: 0, or
/// zp after a ReLU), rounded half to even as torch::round by the 1.5 * 2^23 trick (exact for
/// |t| < 2^22; t is clamped to +-512 first, which saturates the same). Written so that the loops
/// below vectorize (std::nearbyint is a library call per element).
inline uint8_t quantize_sum(float v, float scale, int32_t zp, int32_t lo) {
  constexpr float magic = 12582912.f;
  float t = v / scale;
  t = t > 512.f ? 512.f : t;
  t = t < -512.f ? -512.f : t;
  int32_t q = static_cast<int32_t>((t + magic) - magic) + zp;
  q = q < lo ? lo : q;
  q = q > 255 ? 255 : q;
  return static_cast<uint8_t>(q);
}

/// `len` elements of an identity block whose output channel k reads block-input channel k, as
/// channels-last arrays (one pixel, or at stride 1 the whole map flat): element e's table offset is
/// pattern[e], (e % o) * 256 (the caller starts each call on a multiple of o).
void add_table(const float* y, const uint8_t* x, const int32_t* pattern, const float* table, int64_t len, float scale,
               int32_t zp, int32_t lo, uint8_t* out) {
  for (int64_t e = 0; e < len; ++e) out[e] = quantize_sum(y[e] + table[pattern[e] + x[e]], scale, zp, lo);
}

/// The same where output channel k reads block-input channel src[k].
void add_table_row_src(const float* y, const uint8_t* x, const int32_t* src, const float* table, int64_t o,
                       float scale, int32_t zp, int32_t lo, uint8_t* out) {
  for (int64_t k = 0; k < o; ++k) out[k] = quantize_sum(y[k] + table[k * 256 + x[src[k]]], scale, zp, lo);
}

/// A projection's term, already a float32 tensor of the output's shape.
void add_term(const float* y, const float* t, int64_t n, float scale, int32_t zp, int32_t lo, uint8_t* out) {
  for (int64_t e = 0; e < n; ++e) out[e] = quantize_sum(y[e] + t[e], scale, zp, lo);
}

// The same two hot loops with AVX-512 (the library is built for baseline x86-64, where the compiler
// does not vectorize them): 16 channels at a time, the table read by a gather; rounding half to
// even as above (the instruction's nearest-even mode), the same clamps.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define RMNET_HAVE_AVX512_EPILOGUE 1
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12's AVX-512 headers (_mm512_undefined_*)
#endif
__attribute__((target("avx512f"))) __m512i quantize16(__m512 v, __m512 scale, __m512i zp, __m512i lo) {
  __m512 t = _mm512_div_ps(v, scale);
  t = _mm512_min_ps(_mm512_max_ps(t, _mm512_set1_ps(-512.f)), _mm512_set1_ps(512.f));
  const __m512i q = _mm512_add_epi32(_mm512_cvt_roundps_epi32(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), zp);
  return _mm512_min_epi32(_mm512_max_epi32(q, lo), _mm512_set1_epi32(255));
}

/// The lanes [0, r) of a 16-lane step (r <= 16).
__attribute__((target("avx512f"))) __mmask16 lanes_mask(int64_t r) {
  return static_cast<__mmask16>(r >= 16 ? 0xffffu : (1u << r) - 1);
}

/// r <= 16 u8 codes from x, zero-extended to int32 lanes (lanes r.. are 0; nothing read past x + r).
__attribute__((target("avx512f"))) __m512i load_codes16(const uint8_t* x, int64_t r) {
  if (r >= 16) return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x)));
  alignas(16) uint8_t tail[16] = {};
  for (int64_t t = 0; t < r; ++t) tail[t] = x[t];
  return _mm512_cvtepu8_epi32(_mm_load_si128(reinterpret_cast<const __m128i*>(tail)));
}

/// add_table, 16 elements at a time, the table read by a gather.
__attribute__((target("avx512f"))) void add_table_avx512(const float* y, const uint8_t* x, const int32_t* pattern,
                                                         const float* table, int64_t len, float scale, int32_t zp,
                                                         int32_t lo, uint8_t* out) {
  const __m512 vs = _mm512_set1_ps(scale);
  const __m512i vzp = _mm512_set1_epi32(zp), vlo = _mm512_set1_epi32(lo);
  for (int64_t e = 0; e < len; e += 16) {
    const int64_t r = std::min<int64_t>(16, len - e);
    const __mmask16 m = lanes_mask(r);
    const __m512i idx = _mm512_add_epi32(load_codes16(x + e, r), _mm512_maskz_loadu_epi32(m, pattern + e));
    const __m512 v = _mm512_add_ps(_mm512_maskz_loadu_ps(m, y + e),
                                   _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, idx, table, 4));
    _mm512_mask_cvtepi32_storeu_epi8(out + e, m, quantize16(v, vs, vzp, vlo));
  }
}

/// One output pixel of a projection's copy codes where copy t reads block-input channel t: out[t] =
/// lut[t][x[t]], 16 copies at a time through a gather from the int32 table.
__attribute__((target("avx512f"))) void copy_codes_avx512(const uint8_t* x, const int32_t* lut, int64_t k, uint8_t* out) {
  const __m512i lanes = _mm512_slli_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), 8);
  for (int64_t t = 0; t < k; t += 16) {
    const int64_t r = std::min<int64_t>(16, k - t);
    const __mmask16 m = lanes_mask(r);
    const __m512i idx = _mm512_add_epi32(load_codes16(x + t, r),
                                         _mm512_add_epi32(lanes, _mm512_set1_epi32(static_cast<int32_t>(t * 256))));
    _mm512_mask_cvtepi32_storeu_epi8(out + t, m, _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), m, idx, lut, 4));
  }
}

__attribute__((target("avx512f"))) void add_term_avx512(const float* y, const float* t, int64_t n, float scale,
                                                        int32_t zp, int32_t lo, uint8_t* out) {
  const __m512 vs = _mm512_set1_ps(scale);
  const __m512i vzp = _mm512_set1_epi32(zp), vlo = _mm512_set1_epi32(lo);
  int64_t e = 0;
  for (; e + 16 <= n; e += 16) {
    const __m512 v = _mm512_add_ps(_mm512_loadu_ps(y + e), _mm512_loadu_ps(t + e));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + e), _mm512_cvtepi32_epi8(quantize16(v, vs, vzp, vlo)));
  }
  for (; e < n; ++e) out[e] = quantize_sum(y[e] + t[e], scale, zp, lo);
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

bool avx512() {
  static const bool yes = __builtin_cpu_supports("avx512f");
  return yes;
}
#endif

}  // namespace

Tensor int8_shortcut_codes(const Int8Shortcut& sc, const Tensor& x_in) {
  const Tensor x = x_in.contiguous(torch::MemoryFormat::ChannelsLast);
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3), s = sc.stride;
  const int64_t ho = (h - 1) / s + 1, wo = (w - 1) / s + 1, k = static_cast<int64_t>(sc.xs.size());
  Tensor out = at::empty({n, k, ho, wo}, x.options().memory_format(torch::MemoryFormat::ChannelsLast));
  const uint8_t* xp = x.data_ptr<uint8_t>();
  const uint8_t* lut = sc.lut.data_ptr<uint8_t>();
  uint8_t* op = out.data_ptr<uint8_t>();
  const int64_t* xs = sc.xs.data();
  const int32_t* lut32 = sc.lut32.data_ptr<int32_t>();
  const bool straight = sc.straight;
  at::parallel_for(0, n * ho, 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / ho, i = row % ho;
      for (int64_t jj = 0; jj < wo; ++jj) {
        const uint8_t* px = xp + ((b * h + i * s) * w + jj * s) * c;
        uint8_t* po = op + (row * wo + jj) * k;
#ifdef RMNET_HAVE_AVX512_EPILOGUE
        if (straight && avx512()) {
          copy_codes_avx512(px, lut32, k, po);
          continue;
        }
#endif
        for (int64_t t = 0; t < k; ++t) po[t] = lut[t * 256 + px[xs[t]]];
      }
    }
  });
  return out;
}

Tensor add_int8_shortcut(const Int8Shortcut& sc, const Tensor& y_in, const Tensor& x_in, double out_scale,
                         int64_t out_zp, bool relu) {
  const Tensor y = y_in.contiguous(torch::MemoryFormat::ChannelsLast);
  const Tensor x = x_in.contiguous(torch::MemoryFormat::ChannelsLast);
  const int64_t n = y.size(0), o = y.size(1), ho = y.size(2), wo = y.size(3);
  Tensor out = at::empty(y.sizes(), y.options().dtype(torch::kByte).memory_format(torch::MemoryFormat::ChannelsLast));
  const float* yp = y.data_ptr<float>();
  uint8_t* op = out.data_ptr<uint8_t>();
  const float scale = static_cast<float>(out_scale);
  const int32_t zp = static_cast<int32_t>(out_zp), lo = relu ? zp : 0;
  if (sc.identity) {
    const int64_t c = x.size(1), h = x.size(2), w = x.size(3), s = sc.stride;
    const uint8_t* xp = x.data_ptr<uint8_t>();
    const float* table = sc.table.data_ptr<float>();
    // per output channel the block-input channel its table reads (a row without a copy has a
    // table of zeros: any channel will do); the usual case reads channel k for output k
    std::vector<int32_t> src_v(sc.src.size());
    bool straight = c == o;
    for (size_t k = 0; k < src_v.size(); ++k) {
      src_v[k] = static_cast<int32_t>(std::max<int64_t>(sc.src[k], 0));
      straight = straight && (sc.src[k] < 0 || sc.src[k] == static_cast<int64_t>(k));
    }
    const int32_t* src = src_v.data();
    // straight: element e of a pixel, or of 16 pixels in a row at stride 1, reads table (e % o)
    const int64_t block = 16 * o;
    std::vector<int32_t> pattern(straight ? block : 0);
    for (size_t t = 0; t < pattern.size(); ++t) pattern[t] = static_cast<int32_t>(static_cast<int64_t>(t) % o * 256);
    const auto straight_run = [&](int64_t e0, int64_t len) {
#ifdef RMNET_HAVE_AVX512_EPILOGUE
      if (avx512()) return add_table_avx512(yp + e0, xp + e0, pattern.data(), table, len, scale, zp, lo, op + e0);
#endif
      add_table(yp + e0, xp + e0, pattern.data(), table, len, scale, zp, lo, op + e0);
    };
    if (straight && s == 1) {  // x and y alike are [pixels, o]: one flat pass, 16 o elements a block
      const int64_t total = n * ho * wo * o;
      at::parallel_for(0, (total + block - 1) / block, std::max<int64_t>(1, 16384 / block), [&](int64_t b0, int64_t b1) {
        for (int64_t blk = b0; blk < b1; ++blk) straight_run(blk * block, std::min(block, total - blk * block));
      });
      return out;
    }
    at::parallel_for(0, n * ho, 1, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t b = row / ho, i = row % ho;
        for (int64_t jj = 0; jj < wo; ++jj) {
          const int64_t p = row * wo + jj;
          const uint8_t* px = xp + ((b * h + i * s) * w + jj * s) * c;
          if (straight) {  // one pixel; its block input px is not at p * o (stride > 1)
#ifdef RMNET_HAVE_AVX512_EPILOGUE
            if (avx512()) {
              add_table_avx512(yp + p * o, px, pattern.data(), table, o, scale, zp, lo, op + p * o);
              continue;
            }
#endif
            add_table(yp + p * o, px, pattern.data(), table, o, scale, zp, lo, op + p * o);
          } else {
            add_table_row_src(yp + p * o, px, src, table, o, scale, zp, lo, op + p * o);
          }
        }
      }
    });
  } else {
    TORCH_CHECK(x.scalar_type() == torch::kFloat && x.sizes() == y.sizes(), "INT8 shortcut: projection term of shape ",
                x.sizes(), " for a conv output of ", y.sizes());
    const float* xp = x.data_ptr<float>();
    at::parallel_for(0, n * ho * wo * o, 16384, [&](int64_t begin, int64_t end) {
#ifdef RMNET_HAVE_AVX512_EPILOGUE
      if (avx512()) return add_term_avx512(yp + begin, xp + begin, end - begin, scale, zp, lo, op + begin);
#endif
      add_term(yp + begin, xp + begin, end - begin, scale, zp, lo, op + begin);
    });
  }
  return out;
}

}  // namespace rmnet::detail
