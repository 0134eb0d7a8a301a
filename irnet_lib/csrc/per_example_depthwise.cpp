// A depthwise convolution with one kernel per example, on channels_last (NHWC) CPU tensors.
//
// CondConv mixes a kernel for every example, so its depthwise layer is B depthwise convolutions
// with B different kernels. PyTorch has no operator for that: the batch has to be folded into the
// channel axis, which on a channels_last tensor is a transposing copy of the whole feature map,
// four per training step (input and output, forward and backward). This file does the
// convolution in place instead, reading and writing the NHWC tensors as they lie.
//
// Layouts (all dense, row-major):
//   x   (B, H,  W,  C)   input
//   k   (B, F,  F,  C)   one kernel per example, tap-major so that the channel loop is contiguous
//   y   (B, Ho, Wo, C)   output; padding is F / 2 on every side, stride S
// Every function works on a slice of the batch (or of the rows) so that the caller can run
// slices on several threads; each output element is written by exactly one call, in a fixed
// order, so the results do not depend on the number of threads.
//
// Plain C++ with no dependencies: it builds in about a second (irnet_lib/depthwise_cpu.py).
#include <algorithm>
#include <cstdint>
#include <cstring>

using idx = std::int64_t;  // 64-bit everywhere (a C long is 32-bit on Windows)

namespace {

// The output columns wo whose input column wo * S + j - P lies inside [0, W).
inline void col_range(idx j, idx P, idx S, idx W, idx Wo, idx* lo, idx* hi) {
  idx first = P - j;  // wo * S >= P - j
  *lo = first <= 0 ? 0 : (first + S - 1) / S;
  idx last = W - 1 + P - j;  // wo * S <= W - 1 + P - j
  *hi = last < 0 ? 0 : std::min(Wo, last / S + 1);
}

// y rows [row0, row1) of the flattened (B * Ho) output rows.
template <typename T>
void forward(const T* x, const T* k, T* y, idx B, idx H, idx W, idx C, idx F, idx S,
             idx Ho, idx Wo, idx row0, idx row1) {
  const idx P = F / 2;
  for (idx row = row0; row < row1; ++row) {
    const idx b = row / Ho, ho = row % Ho;
    T* yr = y + row * Wo * C;
    std::memset(yr, 0, sizeof(T) * Wo * C);
    const T* kb = k + b * F * F * C;
    for (idx i = 0; i < F; ++i) {
      const idx hi = ho * S + i - P;
      if (hi < 0 || hi >= H) continue;
      const T* xr = x + (b * H + hi) * W * C;
      for (idx j = 0; j < F; ++j) {
        const T* kt = kb + (i * F + j) * C;
        idx lo, hi_w;
        col_range(j, P, S, W, Wo, &lo, &hi_w);
        for (idx wo = lo; wo < hi_w; ++wo) {
          const T* xp = xr + (wo * S + j - P) * C;
          T* yp = yr + wo * C;
#pragma omp simd
          for (idx c = 0; c < C; ++c) yp[c] += kt[c] * xp[c];
        }
      }
    }
  }
  (void)B;
}

// Examples [b0, b1): the input gradient gx (if not null) and the kernel gradient gk (if not
// null), both from the output gradient gy. One example at a time, so that its x, gy and gx
// stay in cache between the two.
template <typename T>
void backward(const T* x, const T* k, const T* gy, T* gx, T* gk, idx B, idx H, idx W, idx C,
              idx F, idx S, idx Ho, idx Wo, idx b0, idx b1) {
  const idx P = F / 2;
  for (idx b = b0; b < b1; ++b) {
    const T* kb = k + b * F * F * C;
    const T* xb = x + b * H * W * C;
    const T* gyb = gy + b * Ho * Wo * C;
    if (gx) {
      // gx[h, w] = sum over taps (i, j) and the output pixels (ho, wo) that read (h, w) through
      // them, ho * S + i - P = h: gathered per input row, scattered along it (one owner per row).
      T* gxb = gx + b * H * W * C;
      for (idx h = 0; h < H; ++h) {
        T* gxr = gxb + h * W * C;
        std::memset(gxr, 0, sizeof(T) * W * C);
        for (idx i = 0; i < F; ++i) {
          const idx num = h + P - i;
          if (num < 0 || num % S) continue;
          const idx ho = num / S;
          if (ho >= Ho) continue;
          const T* gyr = gyb + ho * Wo * C;
          for (idx j = 0; j < F; ++j) {
            const T* kt = kb + (i * F + j) * C;
            idx lo, hi_w;
            col_range(j, P, S, W, Wo, &lo, &hi_w);
            for (idx wo = lo; wo < hi_w; ++wo) {
              T* gp = gxr + (wo * S + j - P) * C;
              const T* gyp = gyr + wo * C;
#pragma omp simd
              for (idx c = 0; c < C; ++c) gp[c] += kt[c] * gyp[c];
            }
          }
        }
      }
    }
    if (gk) {
      // gk[i, j] = sum over output pixels of gy[ho, wo] * x[ho * S + i - P, wo * S + j - P]
      T* gkb = gk + b * F * F * C;
      std::memset(gkb, 0, sizeof(T) * F * F * C);
      for (idx ho = 0; ho < Ho; ++ho) {
        const T* gyr = gyb + ho * Wo * C;
        for (idx i = 0; i < F; ++i) {
          const idx hi = ho * S + i - P;
          if (hi < 0 || hi >= H) continue;
          const T* xr = xb + hi * W * C;
          for (idx j = 0; j < F; ++j) {
            T* acc = gkb + (i * F + j) * C;
            idx lo, hi_w;
            col_range(j, P, S, W, Wo, &lo, &hi_w);
            for (idx wo = lo; wo < hi_w; ++wo) {
              const T* xp = xr + (wo * S + j - P) * C;
              const T* gyp = gyr + wo * C;
#pragma omp simd
              for (idx c = 0; c < C; ++c) acc[c] += gyp[c] * xp[c];
            }
          }
        }
      }
    }
  }
  (void)B;
}

}  // namespace

extern "C" {

void dw_forward_f32(const float* x, const float* k, float* y, idx B, idx H, idx W, idx C,
                    idx F, idx S, idx Ho, idx Wo, idx row0, idx row1) {
  forward<float>(x, k, y, B, H, W, C, F, S, Ho, Wo, row0, row1);
}
void dw_forward_f64(const double* x, const double* k, double* y, idx B, idx H, idx W, idx C,
                    idx F, idx S, idx Ho, idx Wo, idx row0, idx row1) {
  forward<double>(x, k, y, B, H, W, C, F, S, Ho, Wo, row0, row1);
}
void dw_backward_f32(const float* x, const float* k, const float* gy, float* gx, float* gk,
                     idx B, idx H, idx W, idx C, idx F, idx S, idx Ho, idx Wo, idx b0,
                     idx b1) {
  backward<float>(x, k, gy, gx, gk, B, H, W, C, F, S, Ho, Wo, b0, b1);
}
void dw_backward_f64(const double* x, const double* k, const double* gy, double* gx, double* gk,
                     idx B, idx H, idx W, idx C, idx F, idx S, idx Ho, idx Wo, idx b0,
                     idx b1) {
  backward<double>(x, k, gy, gx, gk, B, H, W, C, F, S, Ho, Wo, b0, b1);
}

}  // extern "C"
