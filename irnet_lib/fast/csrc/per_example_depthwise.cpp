// A depthwise convolution with one kernel per example, on channels_last (NHWC) CPU tensors:
// the operators irnet::per_example_depthwise and irnet::per_example_depthwise_backward
// (irnet_lib/fast/depthwise.py builds this file with torch.utils.cpp_extension and registers
// their autograd formula and their shapes for torch.compile).
//
// CondConv mixes a kernel for every example, so its depthwise layer is B depthwise convolutions
// with B different kernels. PyTorch has no operator for that: the batch has to be folded into the
// channel axis, which on a channels_last tensor is a transposing copy of the whole feature map,
// four per training step (input and output, forward and backward). This file does the
// convolution in place instead, reading and writing the NHWC tensors as they lie.
//
// Layouts (all dense, row-major):
//   x   (B, H,  W,  C)   input (a channels_last (B, C, H, W) tensor)
//   k   (B, F,  F,  C)   one kernel per example, tap-major so that the channel axis is contiguous
//   y   (B, Ho, Wo, C)   output; padding is F / 2 on every side, stride S
// The rows (forward) or examples (backward) are cut into ranges that run on PyTorch's own
// intra-op threads (at::parallel_for); each output element is written by exactly one range, in a
// fixed order, so the results do not depend on the number of threads.
//
// Why it is shaped as it is (a depthwise conv does ~2 flops per byte it moves, so the work is
// keeping values in registers, not the arithmetic):
// - every output value is summed over its taps in a register and stored once, not read and
//   written back once per tap;
// - UNROLL vectors of channels are summed side by side, so that the adds of one pixel are
//   independent chains and the FMA units do not wait on each other's latency;
// - away from the borders the forward pass holds a vector's F x F kernel taps in registers while
//   it sweeps a row of the image, so that each multiply-add loads only its input value;
// - the kernel gradient keeps one register per tap of a kernel row and per vector while it
//   sweeps a row.
// The last two need F at compile time (3, 5, 7); other sizes, and the borders, take the general
// loops.
// The vectors are GCC/Clang vector extensions of 64 bytes: one AVX-512 register, or two AVX2 or
// four SSE ones where the compiler (-march) has no wider.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

using idx = std::int64_t;  // 64-bit everywhere (a C long is 32-bit on Windows)

namespace {

template <typename T> struct Simd;
template <> struct Simd<float> { typedef float type __attribute__((vector_size(64))); };
template <> struct Simd<double> { typedef double type __attribute__((vector_size(64))); };
template <typename T> using vec = typename Simd<T>::type;
template <typename T> constexpr idx lanes() { return idx(64 / sizeof(T)); }

constexpr int UNROLL = 4;  // vectors summed side by side (64 floats, 32 doubles)

template <typename T> inline vec<T> load(const T* p) {
  vec<T> v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <typename T> inline void store(T* p, const vec<T>& v) { std::memcpy(p, &v, sizeof v); }

// The taps t in [lo, hi) of a kernel whose tap 0 reads coordinate `first`, that land inside [0, n).
inline void valid_taps(idx first, idx F, idx n, idx* lo, idx* hi) {
  *lo = std::max<idx>(0, -first);
  *hi = std::min<idx>(F, n - first);
}

// For each coordinate of an input axis of length n, the (tap, output coordinate) pairs that read
// it: o * S + t - P == coordinate. Used by the input gradient; any stride, no division inside
// the loops. Row p's pairs are at [p * F, p * F + count[p]).
struct Readers {
  std::vector<idx> tap, out, count;
  Readers(idx n, idx n_out, idx F, idx S) : tap(n * F), out(n * F), count(n, 0) {
    const idx P = F / 2;
    for (idx p = 0; p < n; ++p)
      for (idx t = 0; t < F; ++t) {
        const idx num = p + P - t;
        if (num >= 0 && num % S == 0 && num / S < n_out) {
          tap[p * F + count[p]] = t;
          out[p * F + count[p]++] = num / S;
        }
      }
  }
};

// acc[u] += a[u] * b[u] over one block of N = U vectors of channels, the sum kept in registers.
template <typename T, int U> struct Block {
  vec<T> acc[U];
  Block() {
    for (int u = 0; u < U; ++u) acc[u] = vec<T>{};
  }
  void fma(const T* a, const T* b) {
    for (int u = 0; u < U; ++u) acc[u] += load(a + u * lanes<T>()) * load(b + u * lanes<T>());
  }
  void save(T* p) const {
    for (int u = 0; u < U; ++u) store(p + u * lanes<T>(), acc[u]);
  }
};

// Visits the channels [0, C) in blocks of UNROLL vectors, then single vectors, then one channel
// at a time (for C not a multiple of the vector width). `fn(c0, Block<T, U>&)` sums one block
// from channel c0; `fn1(c)` does a single channel.
template <typename T, typename Blocks, typename Single>
inline void over_channels(idx C, Blocks&& fn, Single&& fn1) {
  constexpr idx L = lanes<T>();
  idx c = 0;
  for (; c + UNROLL * L <= C; c += UNROLL * L) fn(c, Block<T, UNROLL>{});
  for (; c + L <= C; c += L) fn(c, Block<T, 1>{});
  for (; c < C; ++c) fn1(c);
}

// One output pixel, all channels: y[b, ho, wo] = sum over the taps inside the image of
// k[i, j] * x[ho * S + i - P, wo * S + j - P].
template <typename T>
inline void forward_pixel(const T* xb, const T* kb, T* yp, idx H, idx W, idx C, idx F, idx S,
                          idx ho, idx wo) {
  const idx P = F / 2;
  const idx h_first = ho * S - P, w_first = wo * S - P;  // input pixel of tap (0, 0)
  idx i0, i1, j0, j1;
  valid_taps(h_first, F, H, &i0, &i1);
  valid_taps(w_first, F, W, &j0, &j1);
  auto blocks = [&](idx c0, auto&& blk) {
    for (idx i = i0; i < i1; ++i) {
      const T* xr = xb + ((h_first + i) * W + w_first) * C + c0;
      const T* kr = kb + i * F * C + c0;
      for (idx j = j0; j < j1; ++j) blk.fma(kr + j * C, xr + j * C);
    }
    blk.save(yp + c0);
  };
  auto single = [&](idx c) {
    T acc = 0;
    for (idx i = i0; i < i1; ++i)
      for (idx j = j0; j < j1; ++j) acc += kb[(i * F + j) * C + c] * xb[((h_first + i) * W + w_first + j) * C + c];
    yp[c] = acc;
  };
  over_channels<T>(C, blocks, single);
}

// The interior pixels [lo, hi) of one output row whose taps all lie inside the image, F known at
// compile time: for each vector of channels its F x F kernel taps are loaded into registers once
// and the row is swept, one load of x per multiply-add. The same sums, in the same order, as
// forward_pixel.
template <typename T, int F>
inline void forward_interior(const T* xr0, const T* kb, T* yr, idx W, idx C, idx S, idx lo, idx hi) {
  constexpr idx L = lanes<T>();
  constexpr idx P = F / 2;
  idx c0 = 0;
  for (; c0 + L <= C; c0 += L) {
    vec<T> kreg[F * F];
    for (int t = 0; t < F * F; ++t) kreg[t] = load(kb + t * C + c0);
    for (idx wo = lo; wo < hi; ++wo) {
      const T* xp = xr0 + (wo * S - P) * C + c0;
      vec<T> acc = vec<T>{};
      for (int i = 0; i < F; ++i)
        for (int j = 0; j < F; ++j) acc += kreg[i * F + j] * load(xp + (i * W + j) * C);
      store(yr + wo * C + c0, acc);
    }
  }
  for (idx c = c0; c < C; ++c)
    for (idx wo = lo; wo < hi; ++wo) {
      const T* xp = xr0 + (wo * S - P) * C + c;
      T acc = 0;
      for (int i = 0; i < F; ++i)
        for (int j = 0; j < F; ++j) acc += kb[(i * F + j) * C + c] * xp[(i * W + j) * C];
      yr[wo * C + c] = acc;
    }
}

// y rows [row0, row1) of the flattened (B * Ho) output rows. FF: F at compile time, or 0.
template <typename T, int FF>
void forward(const T* x, const T* k, T* y, idx H, idx W, idx C, idx F, idx S, idx Ho, idx Wo,
             idx row0, idx row1) {
  const idx P = F / 2;
  // Interior columns (every tap inside the image): wo * S >= P and wo * S - P + F - 1 <= W - 1.
  idx lo = (P + S - 1) / S, hi = W - F + P >= 0 ? std::min(Wo, (W - F + P) / S + 1) : 0;
  if (FF == 0 || hi <= lo) lo = hi = 0;
  for (idx row = row0; row < row1; ++row) {
    const idx b = row / Ho, ho = row % Ho;
    const T* xb = x + b * H * W * C;
    const T* kb = k + b * F * F * C;
    T* yr = y + row * Wo * C;
    const bool inside = ho * S - P >= 0 && ho * S - P + F <= H;  // every tap row in the image
    const idx a = inside ? lo : Wo, e = inside ? hi : Wo;
    for (idx wo = 0; wo < a; ++wo) forward_pixel(xb, kb, yr + wo * C, H, W, C, F, S, ho, wo);
    if (e > a) forward_interior<T, (FF > 0 ? FF : 1)>(xb + (ho * S - P) * W * C, kb, yr, W, C, S, a, e);
    for (idx wo = std::max(a, e); wo < Wo; ++wo) forward_pixel(xb, kb, yr + wo * C, H, W, C, F, S, ho, wo);
  }
}

template <typename T>
void forward_any(const T* x, const T* k, T* y, idx H, idx W, idx C, idx F, idx S, idx Ho, idx Wo,
                 idx row0, idx row1) {
  switch (F) {
    case 3: return forward<T, 3>(x, k, y, H, W, C, F, S, Ho, Wo, row0, row1);
    case 5: return forward<T, 5>(x, k, y, H, W, C, F, S, Ho, Wo, row0, row1);
    case 7: return forward<T, 7>(x, k, y, H, W, C, F, S, Ho, Wo, row0, row1);
    default: return forward<T, 0>(x, k, y, H, W, C, F, S, Ho, Wo, row0, row1);
  }
}

// Input gradient of one example: gx[h, w] = sum of k[i, j] * gy[ho, wo] over the taps and output
// pixels that read (h, w).
template <typename T>
void input_grad(const T* kb, const T* gyb, T* gxb, idx H, idx W, idx C, idx F, idx Wo,
                const Readers& rows, const Readers& cols) {
  for (idx h = 0; h < H; ++h) {
    const idx* ti = &rows.tap[h * F];
    const idx* oi = &rows.out[h * F];
    const idx ni = rows.count[h];
    for (idx w = 0; w < W; ++w) {
      const idx* tj = &cols.tap[w * F];
      const idx* oj = &cols.out[w * F];
      const idx nj = cols.count[w];
      T* gp = gxb + (h * W + w) * C;
      auto blocks = [&](idx c0, auto&& blk) {
        for (idx a = 0; a < ni; ++a)
          for (idx e = 0; e < nj; ++e)
            blk.fma(kb + (ti[a] * F + tj[e]) * C + c0, gyb + (oi[a] * Wo + oj[e]) * C + c0);
        blk.save(gp + c0);
      };
      auto single = [&](idx c) {
        T acc = 0;
        for (idx a = 0; a < ni; ++a)
          for (idx e = 0; e < nj; ++e) acc += kb[(ti[a] * F + tj[e]) * C + c] * gyb[(oi[a] * Wo + oj[e]) * C + c];
        gp[c] = acc;
      };
      over_channels<T>(C, blocks, single);
    }
  }
}

// One block of U vectors of channels from c0 of kernel_grad_row's interior columns [lo, hi):
// its NF x U accumulators stay in registers for the whole sweep and are added to gk once.
template <typename T, int NF, int U>
inline void kernel_grad_block(const T* xr, const T* gyr, T* gkr, idx C, idx S, idx P, idx lo, idx hi,
                              idx c0) {
  constexpr idx L = lanes<T>();
  vec<T> acc[NF][U];
  for (int j = 0; j < NF; ++j)
    for (int u = 0; u < U; ++u) acc[j][u] = vec<T>{};
  for (idx wo = lo; wo < hi; ++wo) {
    const T* xp = xr + (wo * S - P) * C + c0;
    const T* gyp = gyr + wo * C + c0;
    for (int u = 0; u < U; ++u) {
      const vec<T> g = load(gyp + u * L);
      for (int j = 0; j < NF; ++j) acc[j][u] += g * load(xp + j * C + u * L);
    }
  }
  for (int j = 0; j < NF; ++j)
    for (int u = 0; u < U; ++u) {
      T* p = gkr + j * C + c0 + u * L;
      store(p, load(p) + acc[j][u]);
    }
}

// gk[i, j] += gy[ho, wo] * x[hi, wo * S + j - P] over the output columns wo of one row, for one
// tap row i (input row hi). FF > 0 (F known at compile time): over the interior columns, where
// every tap lies inside the image, the accumulators live in registers (kernel_grad_block); the
// edge columns, and every column when FF == 0, add into memory.
template <typename T, int FF>
void kernel_grad_row(const T* xr, const T* gyr, T* gkr, idx W, idx C, idx F, idx S, idx Wo) {
  const idx P = F / 2;
  // Interior: wo * S - P >= 0 and wo * S - P + F - 1 <= W - 1.
  idx lo = (P + S - 1) / S, hi = W - F + P >= 0 ? std::min(Wo, (W - F + P) / S + 1) : 0;
  if (FF == 0 || hi <= lo) lo = hi = 0;
  auto edge = [&](idx wo) {
    const idx w_first = wo * S - P;
    idx j0, j1;
    valid_taps(w_first, F, W, &j0, &j1);
    const T* gyp = gyr + wo * C;
    for (idx j = j0; j < j1; ++j) {
      const T* xp = xr + (w_first + j) * C;
      T* acc = gkr + j * C;
#pragma omp simd
      for (idx c = 0; c < C; ++c) acc[c] += gyp[c] * xp[c];
    }
  };
  for (idx wo = 0; wo < lo; ++wo) edge(wo);
  if (hi > lo) {
    constexpr int NF = FF > 0 ? FF : 1;  // FF == 0 never gets here
    constexpr int U = NF <= 3 ? UNROLL : 2;  // NF * U accumulators must fit 32 registers
    constexpr idx L = lanes<T>();
    idx c0 = 0;
    for (; c0 + U * L <= C; c0 += U * L) kernel_grad_block<T, NF, U>(xr, gyr, gkr, C, S, P, lo, hi, c0);
    for (; c0 + L <= C; c0 += L) kernel_grad_block<T, NF, 1>(xr, gyr, gkr, C, S, P, lo, hi, c0);
    for (idx c = c0; c < C; ++c)
      for (idx wo = lo; wo < hi; ++wo)
        for (idx j = 0; j < NF; ++j) gkr[j * C + c] += gyr[wo * C + c] * xr[(wo * S - P + j) * C + c];
  }
  for (idx wo = std::max(lo, hi); wo < Wo; ++wo) edge(wo);
}

// Examples [b0, b1): the input gradient gx (if not null) and the kernel gradient gk (if not
// null), both from the output gradient gy. One example at a time, so that its x, gy and gx
// stay in cache between the two.
template <typename T, int FF>
void backward(const T* x, const T* k, const T* gy, T* gx, T* gk, idx H, idx W, idx C, idx F,
              idx S, idx Ho, idx Wo, idx b0, idx b1) {
  const idx P = F / 2;
  const Readers rows(H, Ho, F, S), cols(W, Wo, F, S);
  for (idx b = b0; b < b1; ++b) {
    const T* xb = x + b * H * W * C;
    const T* gyb = gy + b * Ho * Wo * C;
    if (gx) input_grad(k + b * F * F * C, gyb, gx + b * H * W * C, H, W, C, F, Wo, rows, cols);
    if (gk) {
      T* gkb = gk + b * F * F * C;
      std::memset(gkb, 0, sizeof(T) * F * F * C);
      for (idx ho = 0; ho < Ho; ++ho) {
        idx i0, i1;
        valid_taps(ho * S - P, F, H, &i0, &i1);
        for (idx i = i0; i < i1; ++i)
          kernel_grad_row<T, FF>(xb + (ho * S - P + i) * W * C, gyb + ho * Wo * C, gkb + i * F * C, W, C, F, S, Wo);
      }
    }
  }
}

template <typename T>
void backward_any(const T* x, const T* k, const T* gy, T* gx, T* gk, idx H, idx W, idx C, idx F,
                  idx S, idx Ho, idx Wo, idx b0, idx b1) {
  switch (F) {
    case 3: return backward<T, 3>(x, k, gy, gx, gk, H, W, C, F, S, Ho, Wo, b0, b1);
    case 5: return backward<T, 5>(x, k, gy, gx, gk, H, W, C, F, S, Ho, Wo, b0, b1);
    case 7: return backward<T, 7>(x, k, gy, gx, gk, H, W, C, F, S, Ho, Wo, b0, b1);
    default: return backward<T, 0>(x, k, gy, gx, gk, H, W, C, F, S, Ho, Wo, b0, b1);
  }
}

}  // namespace

// y = per-example depthwise conv of x with k (see the top of the file for the layouts).
at::Tensor per_example_depthwise(const at::Tensor& x, const at::Tensor& k, int64_t stride) {
  TORCH_CHECK(x.dim() == 4 && x.is_contiguous(at::MemoryFormat::ChannelsLast),
              "per_example_depthwise: x must be a channels_last (B, C, H, W) tensor");
  TORCH_CHECK(k.dim() == 4 && k.is_contiguous() && k.size(0) == x.size(0) && k.size(1) == k.size(2) &&
                  k.size(3) == x.size(1) && k.scalar_type() == x.scalar_type(),
              "per_example_depthwise: k must be a dense (B, F, F, C) tensor of x's dtype");
  const idx B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), F = k.size(1), S = stride;
  const idx Ho = (H + 2 * (F / 2) - F) / S + 1, Wo = (W + 2 * (F / 2) - F) / S + 1;
  at::Tensor y = at::empty({B, C, Ho, Wo}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "per_example_depthwise", [&] {
    const scalar_t *xp = x.data_ptr<scalar_t>(), *kp = k.data_ptr<scalar_t>();
    scalar_t* yp = y.data_ptr<scalar_t>();
    at::parallel_for(0, B * Ho, 1, [&](idx r0, idx r1) { forward_any<scalar_t>(xp, kp, yp, H, W, C, F, S, Ho, Wo, r0, r1); });
  });
  return y;
}

// (grad_x, grad_k) from grad_y; an operand whose gradient is not asked for comes back empty.
std::tuple<at::Tensor, at::Tensor> per_example_depthwise_backward(const at::Tensor& x, const at::Tensor& k,
                                                                   const at::Tensor& grad_y, int64_t stride,
                                                                   bool need_x, bool need_k) {
  const at::Tensor gy = grad_y.contiguous(at::MemoryFormat::ChannelsLast);
  const idx B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), F = k.size(1), S = stride;
  const idx Ho = gy.size(2), Wo = gy.size(3);
  at::Tensor gx = need_x ? at::empty_like(x, at::MemoryFormat::ChannelsLast) : at::empty({0}, x.options());
  at::Tensor gk = need_k ? at::empty_like(k) : at::empty({0}, k.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "per_example_depthwise_backward", [&] {
    const scalar_t *xp = x.data_ptr<scalar_t>(), *kp = k.data_ptr<scalar_t>(), *gyp = gy.data_ptr<scalar_t>();
    scalar_t* gxp = need_x ? gx.data_ptr<scalar_t>() : nullptr;
    scalar_t* gkp = need_k ? gk.data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, B, 1, [&](idx b0, idx b1) { backward_any<scalar_t>(xp, kp, gyp, gxp, gkp, H, W, C, F, S, Ho, Wo, b0, b1); });
  });
  return {gx, gk};
}

TORCH_LIBRARY(irnet, m) {
  m.def("per_example_depthwise(Tensor x, Tensor k, int stride) -> Tensor");
  m.def("per_example_depthwise_backward(Tensor x, Tensor k, Tensor grad_y, int stride, bool need_x, "
        "bool need_k) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(irnet, CPU, m) {
  m.impl("per_example_depthwise", &per_example_depthwise);
  m.impl("per_example_depthwise_backward", &per_example_depthwise_backward);
}
