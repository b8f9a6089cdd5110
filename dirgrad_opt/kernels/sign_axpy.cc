// DirgradSignAxpy: out_k = w + s_k · z for N scalars s_k, where z ∈ {−1, +1}^size is read from
// random int32 words, 32 signs per word: z[32 i + j] = −1 iff bit j of words[offset + i] is set.
//
// This is dirgrad_opt.directions.spread_signs' mapping on a little-endian machine (bit j of byte
// k is bit 8k + j of the word's value); the Python loader only uses the kernel there. One pass
// over w writes every output, and z is never materialised: a zeroth-order step's probe points
// w ± εz come from one read of w and of the words, and its update w − a·z from another.
//
// s·z is ±s exactly, and w + (−s) is w − s in IEEE arithmetic, so every output is bit-identical
// to the stock ops `w + s * z` (tested against them for half, bfloat16, float and double).
// Build flags include -ffp-contract=off for the same reason (no fused multiply-add).

#include <algorithm>
#include <cstdint>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"

namespace {
using ::tensorflow::DEVICE_CPU;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;

REGISTER_OP("DirgradSignAxpy")
    .Input("w: T")
    .Input("words: int32")
    .Input("scales: N * T")
    .Output("out: N * T")
    .Attr("T: {half, bfloat16, float, double}")
    .Attr("N: int >= 1")
    .Attr("offset: int >= 0")
    .SetShapeFn([](::tensorflow::shape_inference::InferenceContext* c) {
      for (int k = 0; k < c->num_outputs(); ++k) c->set_output(k, c->input(0));
      return absl::OkStatus();
    });

// Bit j of a word as a table: `word & kBit[j]` lets the compiler vectorise the loop over j (a
// variable shift `word >> j` does not vectorise without AVX2).
alignas(64) constexpr uint32_t kBit[32] = {
    1u << 0,  1u << 1,  1u << 2,  1u << 3,  1u << 4,  1u << 5,  1u << 6,  1u << 7,
    1u << 8,  1u << 9,  1u << 10, 1u << 11, 1u << 12, 1u << 13, 1u << 14, 1u << 15,
    1u << 16, 1u << 17, 1u << 18, 1u << 19, 1u << 20, 1u << 21, 1u << 22, 1u << 23,
    1u << 24, 1u << 25, 1u << 26, 1u << 27, 1u << 28, 1u << 29, 1u << 30, 1u << 31};

// Below this many entries one thread does the pass: handing work to the pool costs more than
// the pass itself on a model like the MNIST-1D MLP (measured: 2 threads made a 65k-entry pass
// ~3x slower on a 2-core machine).
constexpr int64_t kMinEntriesToShard = int64_t{1} << 20;

// out[32 i + j] = w[32 i + j] + (bit j of words[i] ? minus : plus) for whole words i in
// [begin, end).
template <typename T>
void WholeWords(const T* __restrict w, const uint32_t* __restrict words, T* __restrict out,
                T plus, T minus, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    const uint32_t word = words[i];
    const T* wi = w + 32 * i;
    T* oi = out + 32 * i;
#pragma GCC unroll 1
    for (int j = 0; j < 32; ++j) oi[j] = wi[j] + ((word & kBit[j]) ? minus : plus);
  }
}

template <typename T>
class SignAxpyOp : public OpKernel {
 public:
  explicit SignAxpyOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("offset", &offset_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("N", &n_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& w = ctx->input(0);
    const Tensor& words = ctx->input(1);
    const int64_t size = w.NumElements();
    const int64_t available = words.NumElements() - offset_;
    OP_REQUIRES(ctx, available >= 0 && 32 * available >= size,
                absl::InvalidArgumentError(absl::StrCat(
                    "DirgradSignAxpy: ", words.NumElements(), " words from offset ", offset_,
                    " hold fewer than the ", size, " signs of w")));
    std::vector<T> plus(n_);
    std::vector<T*> out(n_);
    for (int k = 0; k < n_; ++k) {
      const Tensor& s = ctx->input(2 + k);
      OP_REQUIRES(ctx, s.NumElements() == 1,
                  absl::InvalidArgumentError(absl::StrCat(
                      "DirgradSignAxpy: scale ", k, " must be a scalar, got shape ",
                      s.shape().DebugString())));
      plus[k] = s.flat<T>()(0);
      Tensor* o = nullptr;
      OP_REQUIRES_OK(ctx, ctx->allocate_output(k, w.shape(), &o));
      out[k] = o->flat<T>().data();
    }
    const T* wp = w.flat<T>().data();
    const uint32_t* wd = reinterpret_cast<const uint32_t*>(words.flat<int32_t>().data()) + offset_;
    const int64_t whole = size / 32;
    auto pass = [&](int64_t begin, int64_t end) {
      for (int k = 0; k < n_; ++k) WholeWords<T>(wp, wd, out[k], plus[k], -plus[k], begin, end);
    };
    if (size < kMinEntriesToShard) {
      pass(0, whole);
    } else {
      auto* workers = ctx->device()->tensorflow_cpu_worker_threads();
      ::tensorflow::Shard(workers->num_threads, workers->workers, whole, 32 * n_, pass);
    }
    for (int k = 0; k < n_; ++k) {  // the last, partial word
      const T minus = -plus[k];
      for (int64_t e = 32 * whole; e < size; ++e) {
        out[k][e] = wp[e] + ((wd[e / 32] & kBit[e % 32]) ? minus : plus[k]);
      }
    }
  }

 private:
  int64_t offset_;
  int n_;
};

#define DIRGRAD_REGISTER(T)                                                                 \
  REGISTER_KERNEL_BUILDER(Name("DirgradSignAxpy").Device(DEVICE_CPU).TypeConstraint<T>("T"), \
                          SignAxpyOp<T>)
DIRGRAD_REGISTER(Eigen::half);
DIRGRAD_REGISTER(Eigen::bfloat16);
DIRGRAD_REGISTER(float);
DIRGRAD_REGISTER(double);
#undef DIRGRAD_REGISTER

}  // namespace
