// CPU kernels of the contrastive engine (math: regops/contrastive_math.h).
//
// The similarity S = A Cᵀ/τ is computed tile by tile (BLAS on BS×BS tiles) and consumed at once: the
// forward folds each tile into online row statistics, the backward recomputes it, turns it into dS and
// accumulates dA += dS·C/τ, dC += dSᵀ·A/τ. Nothing N×N is ever stored; per thread a few BS×BS tiles.
//
// One process (candidates None): S is symmetric, so only the tiles (I, J ≤ I) are computed and each one
// serves the rows of I and, transposed, the rows of J. The backward forms E = dS + dSᵀ on the same tiles and
// adds E·Z_J to dZ_I and Eᵀ·Z_I to dZ_J. To let threads write rows without locks or per-thread copies, the
// tiles run in rounds (the circle method of round-robin tournaments): within a round no two tiles share a
// row block. Across ranks (candidates given) the rectangular grid runs in rounds of tiles (I, I + k mod BJ),
// which also keeps both the row and the column blocks of a round disjoint.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "regops/checks.h"
#include "regops/contrastive_checks.h"
#include "regops/contrastive_math.h"
#include "simd_exp.h"
#include "tile_blas.h"

namespace regops {
namespace {

using namespace contrastive;
using namespace tile_blas;

template <typename T>
struct Problem {
  int64_t n, m, d, len;  // anchors, candidates, feature dim, label length (ConR)
  const T* a;            // anchors (n, d)
  const T* c;            // candidates (m, d); the anchors when symmetric
  const T *ya, *yc, *pa, *pc, *wa;
  const int64_t *la, *lc;
  const int32_t *la32, *lc32;  // SupCon labels as dense ids (equal labels, equal ids), for 8-lane compares
  int kind;
  int64_t offset;
  T inv_tau, p;
  ConrParams<T> conr;
  bool symmetric;

  // Element (r, col): r an anchor, col a candidate.
  Element<T> element(int64_t r, int64_t col, T s) const {
    const bool diag = col == offset + r;
    if (is_conr(kind)) {
      const T ld = label_distance(ya + r * len, yc + col * len, len, p);
      const T pd = label_distance(pa + r * len, pc + col * len, len, p);
      return conr_element(kind, s, ld, pd, wa[r], diag, conr);
    }
    return supcon_element(s, la[r] == lc[col], diag);
  }
};

template <typename T>
void transpose(const T* src, int64_t rows, int64_t cols, T* dst) {
  constexpr int64_t B = 16;
  for (int64_t i0 = 0; i0 < rows; i0 += B)
    for (int64_t j0 = 0; j0 < cols; j0 += B)
      for (int64_t i = i0; i < std::min(rows, i0 + B); ++i)
        for (int64_t j = j0; j < std::min(cols, j0 + B); ++j) dst[j * rows + i] = src[i * cols + j];
}

template <typename T>
struct Scratch {
  std::vector<T> s, st, d1, d2, terms, pos;
  explicit Scratch(int64_t bs) : s(bs * bs), st(bs * bs), d1(bs * bs), d2(bs * bs), terms(bs), pos(bs) {}
};

// What a run of elements of one row adds, besides the exponents written to terms[] (−inf: nothing).
template <typename T>
struct RunSums {
  T bmax, ones, n_pos, pos_s;
  bool has_neg;
};

// Generic path: any kind, any label length, through the header's element functions.
template <typename T>
RunSums<T> elements_generic(const Problem<T>& P, int64_t r, int64_t col0, int64_t nc, const T* s, T* terms,
                            T* pos) {
  RunSums<T> o{neg_inf<T>(), 0, 0, 0, false};
  for (int64_t j = 0; j < nc; ++j) {
    const Element<T> e = P.element(r, col0 + j, s[j]);
    terms[j] = e.active ? e.term : neg_inf<T>();
    pos[j] = e.positive ? T(1) : T(0);
    o.ones += e.one ? T(1) : T(0);
    o.bmax = std::max(o.bmax, element_max(e));
    if (e.positive) {
      o.n_pos += T(1);
      o.pos_s += s[j];
    }
    o.has_neg = o.has_neg || e.negative;
  }
  return o;
}

// Fast paths for the common cases, ConR agedb with scalar labels and SupCon/focal: the header's conr_element /
// supcon_element written out for a whole run (the tests hold them to the reference, with and without AVX2).
// pos[] holds 0/1 in the compute dtype, so later passes use it arithmetically.
template <typename T>
RunSums<T> elements_conr_scalar(const T* s, int64_t nc, const T* yc, const T* pc, T y, T pr, T log_w, T thr, T push,
                                int64_t diag, T* terms, T* pos) {
  RunSums<T> o{neg_inf<T>(), 0, 0, 0, false};
  for (int64_t j = 0; j < nc; ++j) {
    const T ld = std::fabs(y - yc[j]);
    const T pd = std::fabs(pr - pc[j]);
    const bool is_pos = ld <= thr && j != diag;
    const bool is_neg = ld > thr && pd <= thr;
    const T t = is_pos ? s[j] : (is_neg ? s[j] + (log_w + push * ld) : neg_inf<T>());
    terms[j] = t;
    pos[j] = is_pos ? T(1) : T(0);
    o.ones += is_pos ? T(0) : T(1);
    o.n_pos += is_pos ? T(1) : T(0);
    o.pos_s += is_pos ? s[j] : T(0);
    o.has_neg = o.has_neg || is_neg;
    o.bmax = std::max(o.bmax, is_pos ? t : std::max(t, T(0)));
  }
  return o;
}

template <typename T>
RunSums<T> elements_supcon(const T* s, int64_t nc, const int32_t* lc, int32_t label, int64_t diag, T* terms, T* pos) {
  RunSums<T> o{neg_inf<T>(), 0, 0, 0, false};
  for (int64_t j = 0; j < nc; ++j) {
    const bool is_diag = j == diag;
    const bool is_pos = lc[j] == label && !is_diag;
    const T t = is_diag ? neg_inf<T>() : s[j];
    terms[j] = t;
    pos[j] = is_pos ? T(1) : T(0);
    o.n_pos += is_pos ? T(1) : T(0);
    o.pos_s += is_pos ? s[j] : T(0);
    o.bmax = std::max(o.bmax, t);
  }
  return o;
}

template <typename T>
void merge_sums(RunSums<T>& a, const RunSums<T>& b) {
  a.bmax = std::max(a.bmax, b.bmax);
  a.ones += b.ones;
  a.n_pos += b.n_pos;
  a.pos_s += b.pos_s;
  a.has_neg = a.has_neg || b.has_neg;
}

#ifdef REGOPS_HAVE_X86_SIMD
// Lanes j .. j+7 equal to `diag` (a run index; −1 when the diagonal is outside the run).
REGOPS_AVX2 inline __m256 diag_mask(int64_t j, int32_t diag) {
  const __m256i idx = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int32_t>(j)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  return _mm256_castsi256_ps(_mm256_cmpeq_epi32(idx, _mm256_set1_epi32(diag)));
}

REGOPS_AVX2 inline float hmax8(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

REGOPS_AVX2 RunSums<float> elements_conr_scalar_avx2(const float* s, int64_t nc, const float* yc, const float* pc,
                                                     float y, float pr, float log_w, float thr, float push, int64_t diag,
                                                     float* terms, float* pos) {
  const __m256 vy = _mm256_set1_ps(y), vp = _mm256_set1_ps(pr), vthr = _mm256_set1_ps(thr);
  const __m256 vpush = _mm256_set1_ps(push), vlogw = _mm256_set1_ps(log_w), one = _mm256_set1_ps(1.0f);
  const __m256 zero = _mm256_setzero_ps(), ninf = _mm256_set1_ps(-INFINITY), absmask = _mm256_set1_ps(-0.0f);
  const int32_t d32 = diag >= 0 && diag < nc ? static_cast<int32_t>(diag) : -1;
  __m256 bmax = ninf, ones = zero, npos = zero, poss = zero, anyneg = zero;
  int64_t j = 0;
  for (; j + 8 <= nc; j += 8) {
    const __m256 sv = _mm256_loadu_ps(s + j);
    const __m256 ld = _mm256_andnot_ps(absmask, _mm256_sub_ps(vy, _mm256_loadu_ps(yc + j)));
    const __m256 pd = _mm256_andnot_ps(absmask, _mm256_sub_ps(vp, _mm256_loadu_ps(pc + j)));
    const __m256 is_pos = _mm256_andnot_ps(diag_mask(j, d32), _mm256_cmp_ps(ld, vthr, _CMP_LE_OQ));
    const __m256 is_neg = _mm256_and_ps(_mm256_cmp_ps(ld, vthr, _CMP_GT_OQ), _mm256_cmp_ps(pd, vthr, _CMP_LE_OQ));
    // s + (log w + push·ld), rounded as the reference rounds it: no fused multiply-add
    const __m256 tneg = _mm256_add_ps(sv, _mm256_add_ps(vlogw, _mm256_mul_ps(vpush, ld)));
    const __m256 t = _mm256_blendv_ps(_mm256_blendv_ps(ninf, tneg, is_neg), sv, is_pos);
    _mm256_storeu_ps(terms + j, t);
    const __m256 posf = _mm256_and_ps(is_pos, one);
    _mm256_storeu_ps(pos + j, posf);
    ones = _mm256_add_ps(ones, _mm256_andnot_ps(is_pos, one));
    npos = _mm256_add_ps(npos, posf);
    poss = _mm256_add_ps(poss, _mm256_and_ps(is_pos, sv));
    anyneg = _mm256_or_ps(anyneg, is_neg);
    bmax = _mm256_max_ps(bmax, _mm256_blendv_ps(_mm256_max_ps(t, zero), t, is_pos));
  }
  RunSums<float> o{hmax8(bmax), simd::Vec<float>::sum(ones), simd::Vec<float>::sum(npos), simd::Vec<float>::sum(poss),
                   _mm256_movemask_ps(anyneg) != 0};
  if (j < nc)
    merge_sums(o, elements_conr_scalar(s + j, nc - j, yc + j, pc + j, y, pr, log_w, thr, push, diag - j, terms + j,
                                       pos + j));
  return o;
}

REGOPS_AVX2 RunSums<float> elements_supcon_avx2(const float* s, int64_t nc, const int32_t* lc, int32_t label,
                                                int64_t diag, float* terms, float* pos) {
  const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps(), ninf = _mm256_set1_ps(-INFINITY);
  const __m256i vlab = _mm256_set1_epi32(label);
  const int32_t d32 = diag >= 0 && diag < nc ? static_cast<int32_t>(diag) : -1;
  __m256 bmax = ninf, npos = zero, poss = zero;
  int64_t j = 0;
  for (; j + 8 <= nc; j += 8) {
    const __m256 sv = _mm256_loadu_ps(s + j);
    const __m256 is_diag = diag_mask(j, d32);
    const __m256 same = _mm256_castsi256_ps(
        _mm256_cmpeq_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(lc + j)), vlab));
    const __m256 is_pos = _mm256_andnot_ps(is_diag, same);
    const __m256 t = _mm256_blendv_ps(sv, ninf, is_diag);
    _mm256_storeu_ps(terms + j, t);
    const __m256 posf = _mm256_and_ps(is_pos, one);
    _mm256_storeu_ps(pos + j, posf);
    npos = _mm256_add_ps(npos, posf);
    poss = _mm256_add_ps(poss, _mm256_and_ps(is_pos, sv));
    bmax = _mm256_max_ps(bmax, t);
  }
  RunSums<float> o{hmax8(bmax), 0.0f, simd::Vec<float>::sum(npos), simd::Vec<float>::sum(poss), false};
  if (j < nc) merge_sums(o, elements_supcon(s + j, nc - j, lc + j, label, diag - j, terms + j, pos + j));
  return o;
}
#endif

// Fills terms[] and pos[] for the elements (r, col0 .. col0 + nc) and returns their sums.
template <typename T>
RunSums<T> row_elements(const Problem<T>& P, int64_t r, int64_t col0, int64_t nc, const T* s, T* terms, T* pos) {
  const int64_t diag = P.offset + r - col0;  // index of the diagonal within the run (maybe outside it)
  if (P.kind == kConrAgedb && P.len == 1) {
    const T log_w = log_(P.wa[r]);
#ifdef REGOPS_HAVE_X86_SIMD
    if constexpr (std::is_same_v<T, float>) {
      if (simd::has_avx2_fma())
        return elements_conr_scalar_avx2(s, nc, P.yc + col0, P.pc + col0, P.ya[r], P.pa[r], log_w, P.conr.threshold,
                                         P.conr.push, diag, terms, pos);
    }
#endif
    return elements_conr_scalar(s, nc, P.yc + col0, P.pc + col0, P.ya[r], P.pa[r], log_w, P.conr.threshold,
                                P.conr.push, diag, terms, pos);
  }
  if (!is_conr(P.kind)) {
#ifdef REGOPS_HAVE_X86_SIMD
    if constexpr (std::is_same_v<T, float>) {
      if (simd::has_avx2_fma()) return elements_supcon_avx2(s, nc, P.lc32 + col0, P.la32[r], diag, terms, pos);
    }
#endif
    return elements_supcon(s, nc, P.lc32 + col0, P.la32[r], diag, terms, pos);
  }
  return elements_generic(P, r, col0, nc, s, terms, pos);
}

// Folds the elements (r, col0 .. col0 + ncols) with similarities s[] into the row statistics of r.
template <typename T>
void row_forward(const Problem<T>& P, int64_t r, int64_t col0, int64_t ncols, const T* s, RowAcc<T>& acc,
                 Scratch<T>& w) {
  const RunSums<T> o = row_elements(P, r, col0, ncols, s, w.terms.data(), w.pos.data());
  if (o.bmax > acc.m) row_rescale(acc, o.bmax);
  if (acc.m != neg_inf<T>()) {
    acc.sum += simd::exp_shift_sum(w.terms.data(), ncols, acc.m) + (o.ones > 0 ? o.ones * exp_(-acc.m) : T(0));
    if (P.kind == kFocal && o.n_pos > 0) {
      for (int64_t j = 0; j < ncols; ++j) {
        if (w.pos[j] == T(0)) continue;
        const T x = exp_(s[j] - acc.m);
        acc.pos_e += x;
        acc.pos_es += x * (s[j] - acc.m);
      }
    }
  }
  acc.n_pos += o.n_pos;
  acc.pos_s += o.pos_s;
  acc.has_neg = acc.has_neg || o.has_neg;
}

// out[j] = g · dℓ_r/ds_{r, col0 + j}  (dloss_ds_exp of the header, with e^{term − L} from one vector pass).
template <typename T>
void row_backward(const Problem<T>& P, int64_t r, int64_t col0, int64_t ncols, const T* s, const T* stats, T g,
                  T* out, Scratch<T>& w) {
  const T L = stats[0], alpha = stats[1], beta = stats[2];
  const bool focal = P.kind == kFocal;
  if (g == T(0) || (alpha == T(0) && beta == T(0) && (!focal || stats[3] == T(0)))) {
    std::fill(out, out + ncols, T(0));
    return;
  }
  row_elements(P, r, col0, ncols, s, w.terms.data(), w.pos.data());
  simd::exp_shift(w.terms.data(), out, ncols, L);  // e^{term − L}; 0 where inactive
  const T* pos = w.pos.data();
  if (focal) {  // active = not the diagonal and term = s there, so e^{s − L} is out[j] itself
#pragma omp simd
    for (int64_t j = 0; j < ncols; ++j) {
      const T ex = out[j], x = s[j] - L;
      out[j] = g * (alpha * ex + pos[j] * ((T(1) - ex) - x * ex));
    }
  } else {
#pragma omp simd
    for (int64_t j = 0; j < ncols; ++j) out[j] = g * (alpha * out[j] - pos[j] * beta);
  }
}

// Tile edge: large tiles make the tile GEMMs efficient (K = bs in E·Z), but every thread needs tiles of a round.
// The edge depends on the shape only, never on the thread count: tile edges fix the summation order of the row
// statistics, so any number of threads (a DataLoader worker, the main process) gives the same bits.
constexpr int64_t kMinRowBlocks = 8;  // 4+ tiles per round; at 2 threads as fast as 4 or 16 blocks
std::tuple<int64_t, int64_t, int64_t> tile_grid(int64_t rows, int64_t cols) {
  int64_t bs = rows >= 2048 ? 256 : 128;
  while (bs > 16 && (rows + bs - 1) / bs < kMinRowBlocks) bs /= 2;
  return {bs, (rows + bs - 1) / bs, (cols + bs - 1) / bs};  // (edge, row blocks, column blocks)
}

// Rounds of the circle method over B blocks: every unordered pair {I, J}, I ≠ J, exactly once, and no block
// twice within a round. Round 0 holds the diagonal tiles.
std::vector<std::vector<std::pair<int64_t, int64_t>>> symmetric_rounds(int64_t B) {
  std::vector<std::vector<std::pair<int64_t, int64_t>>> rounds(1);
  for (int64_t i = 0; i < B; ++i) rounds[0].emplace_back(i, i);
  const int64_t P = B % 2 == 0 ? B : B + 1;  // with odd B, block B is a bye
  for (int64_t r = 0; r + 1 < P; ++r) {
    std::vector<std::pair<int64_t, int64_t>> round;
    for (int64_t k = 0; k < P / 2; ++k) {
      const int64_t x = k == 0 ? P - 1 : (r + k) % (P - 1);
      const int64_t y = k == 0 ? r : (r - k + (P - 1)) % (P - 1);
      if (x < B && y < B) round.emplace_back(std::max(x, y), std::min(x, y));
    }
    if (!round.empty()) rounds.push_back(std::move(round));
  }
  return rounds;
}

// Rounds over the rectangular grid BI × BJ with disjoint row blocks and disjoint column blocks per round.
std::vector<std::vector<std::pair<int64_t, int64_t>>> rectangular_rounds(int64_t BI, int64_t BJ) {
  std::vector<std::vector<std::pair<int64_t, int64_t>>> rounds;
  const int64_t big = std::max(BI, BJ), small = std::min(BI, BJ);
  for (int64_t k = 0; k < big; ++k) {
    std::vector<std::pair<int64_t, int64_t>> round;
    for (int64_t x = 0; x < small; ++x)
      round.emplace_back(BI <= BJ ? std::make_pair(x, (x + k) % BJ) : std::make_pair((x + k) % BI, x));
    rounds.push_back(std::move(round));
  }
  return rounds;
}

template <typename T, typename F>
void run_rounds(const std::vector<std::vector<std::pair<int64_t, int64_t>>>& rounds, int threads, int64_t bs,
                const F& tile) {
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    Scratch<T> w(bs);
    for (const auto& round : rounds) {
      const int64_t count = static_cast<int64_t>(round.size());
#pragma omp for schedule(dynamic, 1)
      for (int64_t t = 0; t < count; ++t) tile(round[t].first, round[t].second, w);
    }
  }
}

template <typename T>
struct ForwardTile {
  const Problem<T>& P;
  int64_t bs;
  RowAcc<T>* acc;
  void operator()(int64_t I, int64_t J, Scratch<T>& w) const {
    const int64_t i0 = I * bs, i1 = std::min(P.n, i0 + bs), j0 = J * bs, j1 = std::min(P.m, j0 + bs);
    const int64_t bi = i1 - i0, bj = j1 - j0;
    gemm_xyt(bi, bj, P.d, P.inv_tau, P.a + i0 * P.d, P.c + j0 * P.d, w.s.data());
    for (int64_t r = i0; r < i1; ++r) row_forward(P, r, j0, bj, w.s.data() + (r - i0) * bj, acc[r], w);
    if (P.symmetric && I != J) {  // the same tile, transposed, for the rows of J
      transpose(w.s.data(), bi, bj, w.st.data());
      for (int64_t r = j0; r < j1; ++r) row_forward(P, r, i0, bi, w.st.data() + (r - j0) * bi, acc[r], w);
    }
  }
};

// The forward over all column blocks of one row block (the rectangular grid needs no rounds).
template <typename T>
struct WholeRows {
  const ForwardTile<T>& tile;
  int64_t BJ;
  void operator()(int64_t I, int64_t, Scratch<T>& w) const {
    for (int64_t J = 0; J < BJ; ++J) tile(I, J, w);
  }
};

template <typename T>
struct BackwardTile {
  const Problem<T>& P;
  int64_t bs;
  const T* stats;
  const T* g;
  T* grad_a;
  T* grad_c;
  void operator()(int64_t I, int64_t J, Scratch<T>& w) const {
    const int64_t i0 = I * bs, i1 = std::min(P.n, i0 + bs), j0 = J * bs, j1 = std::min(P.m, j0 + bs);
    const int64_t bi = i1 - i0, bj = j1 - j0, d = P.d;
    T* S = w.s.data();
    T* E = w.d1.data();
    gemm_xyt(bi, bj, d, P.inv_tau, P.a + i0 * d, P.c + j0 * d, S);
    for (int64_t r = i0; r < i1; ++r)
      row_backward(P, r, j0, bj, S + (r - i0) * bj, stats + r * kRowStats, g[r], E + (r - i0) * bj, w);
    if (!P.symmetric) {
      gemm_acc_ey(bi, bj, d, P.inv_tau, E, P.c + j0 * d, grad_a + i0 * d);
      gemm_acc_ety(bj, bi, d, P.inv_tau, E, P.a + i0 * d, grad_c + j0 * d);
      return;
    }
    if (I == J) {  // E = dS + dSᵀ inside the diagonal tile
      for (int64_t i = 0; i < bi; ++i) {
        E[i * bi + i] *= T(2);
        for (int64_t j = 0; j < i; ++j) {
          const T v = E[i * bi + j] + E[j * bi + i];
          E[i * bi + j] = v;
          E[j * bi + i] = v;
        }
      }
      gemm_acc_ey(bi, bi, d, P.inv_tau, E, P.a + i0 * d, grad_a + i0 * d);
      return;
    }
    // dS of the rows of J against the columns of I, from the transposed tile; E = dS_IJ + (dS_JI)ᵀ.
    transpose(S, bi, bj, w.st.data());
    T* EJ = w.d2.data();
    for (int64_t r = j0; r < j1; ++r)
      row_backward(P, r, i0, bi, w.st.data() + (r - j0) * bi, stats + r * kRowStats, g[r], EJ + (r - j0) * bi, w);
    for (int64_t i = 0; i < bi; ++i)
      for (int64_t j = 0; j < bj; ++j) E[i * bj + j] += EJ[j * bi + i];
    gemm_acc_ey(bi, bj, d, P.inv_tau, E, P.a + j0 * d, grad_a + i0 * d);
    gemm_acc_ety(bj, bi, d, P.inv_tau, E, P.a + i0 * d, grad_a + j0 * d);
  }
};

// ---- the L2 normalization of the rows (F.normalize's, eps 1e-12), fused into the ops ----

constexpr double kNormEps = 1e-12;
constexpr int64_t kRowsGrain = int64_t(1) << 19;  // elements per task of the row passes: small batches stay serial

struct UnitRows {
  at::Tensor z, norm;  // z = x / max(‖x‖, eps); norm = ‖x‖ per row
};

template <typename T>
double row_sumsq(const T* row, int64_t d) {
  double ss = 0;
#pragma omp simd reduction(+ : ss)
  for (int64_t k = 0; k < d; ++k) ss += static_cast<double>(row[k]) * static_cast<double>(row[k]);
  return ss;
}

template <typename T>
void scale_row(T* out, const T* row, int64_t d, T inv) {
#pragma omp simd
  for (int64_t k = 0; k < d; ++k) out[k] = row[k] * inv;
}

// g ← (g − z⟨z, g⟩)·inv for one row.
template <typename T>
void project_row(T* g, const T* z, int64_t d, T inv) {
  T dot = 0;
#pragma omp simd reduction(+ : dot)
  for (int64_t k = 0; k < d; ++k) dot += z[k] * g[k];
#pragma omp simd
  for (int64_t k = 0; k < d; ++k) g[k] = (g[k] - z[k] * dot) * inv;
}

// Sums of squares in double (finite rows of any magnitude); a non-finite element raises with its index.
UnitRows unit_rows(const at::Tensor& x, const char* op, const char* arg) {
  const int64_t n = x.size(0), d = x.size(1);
  UnitRows u{at::empty_like(x), at::empty({n}, x.options())};
  std::atomic<int64_t> bad{n};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "unit_rows", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    scalar_t* zp = u.z.data_ptr<scalar_t>();
    scalar_t* np = u.norm.data_ptr<scalar_t>();
    at::parallel_for(0, n, std::max<int64_t>(1, kRowsGrain / d), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        const scalar_t* row = xp + r * d;
        const double ss = row_sumsq(row, d);
        if (!std::isfinite(ss)) {
          int64_t cur = bad.load();
          while (r < cur && !bad.compare_exchange_weak(cur, r)) {}
          continue;
        }
        const scalar_t norm = static_cast<scalar_t>(std::sqrt(ss));
        const scalar_t denom = std::max(norm, static_cast<scalar_t>(kNormEps));
        np[r] = norm;
        scale_row(zp + r * d, row, d, scalar_t(1) / denom);  // 1 ulp from F.normalize's division, 3x faster
      }
    });
    if (bad.load() < n) {
      const int64_t r = bad.load();
      for (int64_t k = 0; k < d; ++k) {
        const scalar_t v = xp[r * d + k];
        REGOPS_CHECK_VALUE(std::isfinite(static_cast<double>(v)), op, arg, "finite values",
                           c10::str(v, " at index (", r, ", ", k, ")"));
      }
      // Finite but beyond double's squares (|x| > 1e154): the norm of the scaled row.
      scalar_t big = 0;
      for (int64_t k = 0; k < d; ++k) big = std::max<scalar_t>(big, std::fabs(xp[r * d + k]));
      double ss = 0;
      for (int64_t k = 0; k < d; ++k) ss += std::pow(static_cast<double>(xp[r * d + k] / big), 2);
      const scalar_t norm = static_cast<scalar_t>(big * std::sqrt(ss));
      np[r] = norm;
      for (int64_t k = 0; k < d; ++k) zp[r * d + k] = xp[r * d + k] / norm;
      if (r + 1 < n) {  // later rows were skipped only if they were also bad: redo them the same way
        const auto rest = unit_rows(x.narrow(0, r + 1, n - r - 1), op, arg);
        u.z.narrow(0, r + 1, n - r - 1).copy_(rest.z);
        u.norm.narrow(0, r + 1, n - r - 1).copy_(rest.norm);
      }
    }
  });
  return u;
}

// g ← ∂/∂x of ⟨g, x/max(‖x‖, eps)⟩ in place: (g − z·⟨z, g⟩)/‖x‖, or g/eps where ‖x‖ ≤ eps.
void unit_rows_backward_(at::Tensor& g, const UnitRows& u) {
  const int64_t n = g.size(0), d = g.size(1);
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "unit_rows_backward", [&] {
    scalar_t* gp = g.data_ptr<scalar_t>();
    const scalar_t* zp = u.z.data_ptr<scalar_t>();
    const scalar_t* np = u.norm.data_ptr<scalar_t>();
    at::parallel_for(0, n, std::max<int64_t>(1, kRowsGrain / d), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        scalar_t* gr = gp + r * d;
        const scalar_t* zr = zp + r * d;
        if (!(np[r] > static_cast<scalar_t>(kNormEps))) {
          for (int64_t k = 0; k < d; ++k) gr[k] /= static_cast<scalar_t>(kNormEps);
          continue;
        }
        project_row(gr, zr, d, scalar_t(1) / np[r]);
      }
    });
  });
}

// ---- argument checks and the torch-facing ops ----

using Inputs = ContrastiveInputs;

template <typename T>
Problem<T> make_problem(const Inputs& in, bool symmetric, int64_t kind, int64_t offset, double temperature,
                        double threshold, double push, double label_norm, std::vector<int32_t>& label_ids) {
  Problem<T> P;
  P.n = in.a.size(0);
  P.m = in.c.size(0);
  P.d = in.a.size(1);
  P.a = in.a.data_ptr<T>();
  P.c = in.c.data_ptr<T>();
  P.kind = static_cast<int>(kind);
  P.offset = offset;
  P.inv_tau = static_cast<T>(1.0 / temperature);
  P.p = static_cast<T>(label_norm);
  P.conr = ConrParams<T>{static_cast<T>(threshold), static_cast<T>(push)};
  P.symmetric = symmetric;
  P.ya = P.yc = P.pa = P.pc = P.wa = nullptr;
  P.la = P.lc = nullptr;
  P.la32 = P.lc32 = nullptr;
  if (is_conr(P.kind)) {
    P.len = in.ya.size(1);
    P.ya = in.ya.data_ptr<T>();
    P.yc = in.yc.data_ptr<T>();
    P.pa = in.pa.data_ptr<T>();
    P.pc = in.pc.data_ptr<T>();
    P.wa = in.wa.data_ptr<T>();
  } else {
    P.len = 1;
    P.la = in.ya.data_ptr<int64_t>();
    P.lc = in.yc.data_ptr<int64_t>();
    // Dense ids: rank of each label among the distinct labels of anchors and candidates.
    const int64_t na = in.ya.size(0), nc = symmetric ? 0 : in.yc.size(0);
    std::vector<int64_t> values(P.la, P.la + na);
    values.insert(values.end(), P.lc, P.lc + nc);
    std::vector<int64_t> sorted = values;
    std::sort(sorted.begin(), sorted.end());
    sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
    label_ids.resize(values.size());
    for (size_t k = 0; k < values.size(); ++k)
      label_ids[k] = static_cast<int32_t>(std::lower_bound(sorted.begin(), sorted.end(), values[k]) - sorted.begin());
    P.la32 = label_ids.data();
    P.lc32 = symmetric ? label_ids.data() : label_ids.data() + na;
  }
  return P;
}

std::tuple<at::Tensor, at::Tensor> contrastive_fwd_cpu(
    const at::Tensor& anchors, const std::optional<at::Tensor>& candidates, const at::Tensor& labels,
    const std::optional<at::Tensor>& cand_labels, const std::optional<at::Tensor>& preds,
    const std::optional<at::Tensor>& cand_preds, const std::optional<at::Tensor>& weights, int64_t kind, int64_t offset,
    double temperature, double threshold, double push, double label_norm) {
  Inputs in = check_contrastive("contrastive_fwd", anchors, candidates, labels, cand_labels, preds, cand_preds, weights,
                                kind, offset, temperature, threshold, push, label_norm, c10::DeviceType::CPU);
  const int64_t n = in.a.size(0);
  in.a = unit_rows(in.a, "contrastive_fwd", "anchors").z;
  in.c = !in.symmetric ? unit_rows(in.c, "contrastive_fwd", "candidates").z : in.a;
  auto row_loss = at::empty({n}, in.a.options());
  auto row_stats = at::empty({n, kRowStats}, in.a.options());
  if (n == 0) return {row_loss, row_stats};
  AT_DISPATCH_FLOATING_TYPES(in.a.scalar_type(), "contrastive_fwd_cpu", [&] {
    std::vector<int32_t> label_ids;
    const auto P = make_problem<scalar_t>(in, in.symmetric, kind, offset, temperature, threshold, push, label_norm,
                                          label_ids);
    const int threads = at::get_num_threads();
    const auto [bs, BI, BJ] = tile_grid(P.n, P.m);
    std::vector<RowAcc<scalar_t>> acc(P.n, row_init<scalar_t>());
    const ForwardTile<scalar_t> tile{P, bs, acc.data()};
    if (P.symmetric) {  // rounds keep the row blocks of concurrent tiles disjoint: no locks on the statistics
      run_rounds<scalar_t>(symmetric_rounds(BI), threads, bs, tile);
    } else {  // each task owns whole anchor rows and walks every column block
      std::vector<std::vector<std::pair<int64_t, int64_t>>> row_blocks(1);
      for (int64_t I = 0; I < BI; ++I) row_blocks[0].emplace_back(I, 0);
      const WholeRows<scalar_t> rows{tile, BJ};
      run_rounds<scalar_t>(row_blocks, threads, bs, rows);
    }
    auto* loss = row_loss.data_ptr<scalar_t>();
    auto* stats = row_stats.data_ptr<scalar_t>();
    for (int64_t r = 0; r < P.n; ++r) loss[r] = row_finish(P.kind, acc[r], stats + r * kRowStats);
  });
  return {row_loss, row_stats};
}

std::tuple<at::Tensor, at::Tensor> contrastive_bwd_cpu(
    const at::Tensor& grad_row_loss, const at::Tensor& anchors, const std::optional<at::Tensor>& candidates,
    const at::Tensor& labels, const std::optional<at::Tensor>& cand_labels, const std::optional<at::Tensor>& preds,
    const std::optional<at::Tensor>& cand_preds, const std::optional<at::Tensor>& weights, const at::Tensor& row_stats,
    int64_t kind, int64_t offset, double temperature, double threshold, double push, double label_norm) {
  Inputs in = check_contrastive("contrastive_bwd", anchors, candidates, labels, cand_labels, preds, cand_preds, weights,
                                kind, offset, temperature, threshold, push, label_norm, c10::DeviceType::CPU);
  check_contrastive_grads("contrastive_bwd", anchors, grad_row_loss, row_stats);
  const int64_t n = in.a.size(0), d = in.a.size(1);
  const UnitRows ua = unit_rows(in.a, "contrastive_bwd", "anchors");
  const UnitRows uc = !in.symmetric ? unit_rows(in.c, "contrastive_bwd", "candidates") : ua;
  in.a = ua.z;
  in.c = uc.z;
  const auto g = grad_row_loss.to(anchors.scalar_type()).contiguous();
  const auto stats_c = row_stats.contiguous();
  auto grad_a = at::zeros_like(in.a);
  auto grad_c = !in.symmetric ? at::zeros_like(in.c) : at::empty({0, d}, in.a.options());
  if (n == 0) return {grad_a, grad_c};
  AT_DISPATCH_FLOATING_TYPES(in.a.scalar_type(), "contrastive_bwd_cpu", [&] {
    std::vector<int32_t> label_ids;
    const auto P = make_problem<scalar_t>(in, in.symmetric, kind, offset, temperature, threshold, push, label_norm,
                                          label_ids);
    const int threads = at::get_num_threads();
    const auto [bs, BI, BJ] = tile_grid(P.n, P.m);
    const BackwardTile<scalar_t> tile{P, bs, stats_c.data_ptr<scalar_t>(), g.data_ptr<scalar_t>(),
                                      grad_a.data_ptr<scalar_t>(),
                                      P.symmetric ? nullptr : grad_c.data_ptr<scalar_t>()};
    // Rounds keep both the row and the column blocks of concurrent tiles disjoint: lock-free accumulation.
    run_rounds<scalar_t>(P.symmetric ? symmetric_rounds(BI) : rectangular_rounds(BI, BJ), threads, bs, tile);
  });
  unit_rows_backward_(grad_a, ua);  // from d/dz to d/d(features)
  if (!in.symmetric) unit_rows_backward_(grad_c, uc);
  return {grad_a, grad_c};
}

}  // namespace
}  // namespace regops

TORCH_LIBRARY_IMPL(regops, CPU, m) {
  m.impl("contrastive_fwd", &regops::contrastive_fwd_cpu);
  m.impl("contrastive_bwd", &regops::contrastive_bwd_cpu);
}
