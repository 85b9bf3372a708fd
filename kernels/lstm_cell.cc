// The element-wise part of one LSTM step, forward and backward, as two TensorFlow ops.
//
// seq2seqVAE.lstm_recurrence runs the LSTM as a loop over time whose only matmul per step is
// h @ U (forward) or d_gates @ U^T (backward), done by TensorFlow (oneDNN, bf16 on AMX).
// Everything else in a step (the add of the input projection, four activations, the cell
// update, recurrent dropout on the candidate, the padding mask, the casts for the next matmul)
// is about twenty small TensorFlow ops, each a pass over memory with its own dispatch; here it
// is one pass per row. The math is exactly that of `_make_tf_recurrence` in seq2seqVAE.py,
// which the tests compare these ops with.
//
// Built on first use by fused_lstm.py with the compiler flags TensorFlow reports
// (tf.sysconfig), for the CPU it runs on; where it does not build, the model uses the
// TensorFlow-op recurrence instead.
//
// Layouts: B rows (sketches), H units, gates in the Keras order i, f, c (candidate), o.
// `inside` is (B) or (B, 1) bool, or empty for "every row is inside the sketch";
// `dropout` is (B, H), already divided by the keep probability, or empty for none.

#include <algorithm>
#include <vector>

#include "Eigen/Core"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace sketch_rnn {

using tensorflow::DEVICE_CPU;
using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;
using tensorflow::TensorShape;
using tensorflow::shape_inference::InferenceContext;

template <typename T>
using Vec = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>;
template <typename T>
using ConstVec = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;

REGISTER_OP("SketchLstmStep")
    .Input("projected: float")  // (B, 4H): x_t W + b
    .Input("recurrent: T")      // (B, 4H): h_{t-1} U, in the matmul's dtype
    .Input("h_prev: float")     // (B, H)
    .Input("c_prev: float")     // (B, H)
    .Input("inside: bool")
    .Input("dropout: float")
    .Output("h: float")         // (B, H)
    .Output("h_matmul: T")      // h in the matmul's dtype, for the next step
    .Output("c: float")         // (B, H)
    .Output("gates: float")     // (B, 4H): i, f, tanh(candidate), o after activation
    .Attr("T: {float, bfloat16}")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(2));
      c->set_output(1, c->input(2));
      c->set_output(2, c->input(2));
      c->set_output(3, c->input(0));
      return absl::OkStatus();
    });

REGISTER_OP("SketchLstmStepGrad")
    .Input("gates: float")      // (B, 4H): the forward step's `gates`
    .Input("c: float")          // (B, H): the cell state after the step
    .Input("c_prev: float")     // (B, H): the cell state before it
    .Input("dh_matmul: T")      // (B, H): d_gates_{t+1} U^T (zeros after the last step)
    .Input("dh_pass: float")    // (B, H): dh passed through padding from step t+1
    .Input("dh_out: float")     // (B, H): gradient of the step's output h_t, or empty
    .Input("dc: float")         // (B, H): gradient of the cell state after the step
    .Input("inside: bool")
    .Input("dropout: float")
    .Output("d_gates: float")           // (B, 4H): gradient of the pre-activation gates
    .Output("d_gates_matmul: T")        // the same in the matmul's dtype
    .Output("dh_pass_prev: float")      // (B, H): dh passed through this step (padding rows)
    .Output("dc_prev: float")           // (B, H)
    .Attr("T: {float, bfloat16}")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(0));
      c->set_output(1, c->input(0));
      c->set_output(2, c->input(1));
      c->set_output(3, c->input(1));
      return absl::OkStatus();
    });

namespace {

// Checks the shapes shared by both ops; sets the op's error if they are wrong.
void CheckShapes(OpKernelContext* ctx, const Tensor& wide, const Tensor& state, const Tensor& inside,
                 const Tensor& dropout, const std::vector<const Tensor*>& same_as_state) {
  OP_REQUIRES(ctx, state.dims() == 2 && wide.dims() == 2 && wide.dim_size(0) == state.dim_size(0) &&
                       wide.dim_size(1) == 4 * state.dim_size(1),
              absl::InvalidArgumentError("lstm step: expected gates (B, 4H) and state (B, H), got " +
                                         wide.shape().DebugString() + " and " +
                                         state.shape().DebugString()));
  for (const Tensor* t : same_as_state) {
    OP_REQUIRES(ctx, t->shape() == state.shape(),
                absl::InvalidArgumentError("lstm step: expected (B, H) = " + state.shape().DebugString() +
                                           ", got " + t->shape().DebugString()));
  }
  const int64_t rows = state.dim_size(0);
  OP_REQUIRES(ctx, inside.NumElements() == 0 || inside.NumElements() == rows,
              absl::InvalidArgumentError("lstm step: `inside` must have B elements or none"));
  OP_REQUIRES(ctx, dropout.NumElements() == 0 || dropout.shape() == state.shape(),
              absl::InvalidArgumentError("lstm step: `dropout` must be (B, H) or empty"));
}

template <typename T>
T* MatmulOutput(OpKernelContext* ctx, int index, Tensor* same_in_float, const TensorShape& shape) {
  if constexpr (std::is_same_v<T, float>) {
    ctx->set_output(index, *same_in_float);  // one tensor serves both outputs
    return nullptr;
  } else {
    Tensor* out = nullptr;
    absl::Status status = ctx->allocate_output(index, shape, &out);
    if (!status.ok()) {
      ctx->SetStatus(status);
      return nullptr;
    }
    return out->flat<T>().data();
  }
}

void ForEachRow(OpKernelContext* ctx, int64_t rows, int64_t cost_per_row,
                const std::function<void(int64_t, int64_t)>& work) {
  auto* workers = ctx->device()->tensorflow_cpu_worker_threads()->workers;
  workers->ParallelFor(rows, cost_per_row, work);
}

}  // namespace

template <typename T>
class SketchLstmStepOp : public OpKernel {
 public:
  explicit SketchLstmStepOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& projected = ctx->input(0);
    const Tensor& recurrent = ctx->input(1);
    const Tensor& h_prev = ctx->input(2);
    const Tensor& c_prev = ctx->input(3);
    const Tensor& inside = ctx->input(4);
    const Tensor& dropout = ctx->input(5);
    CheckShapes(ctx, projected, h_prev, inside, dropout, {&c_prev});
    if (!ctx->status().ok()) return;
    OP_REQUIRES(ctx, recurrent.shape() == projected.shape(),
                absl::InvalidArgumentError("lstm step: `recurrent` must be shaped like `projected`"));
    const int64_t rows = h_prev.dim_size(0), units = h_prev.dim_size(1);

    Tensor *h = nullptr, *c = nullptr, *gates = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, h_prev.shape(), &h));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, h_prev.shape(), &c));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(3, projected.shape(), &gates));
    T* h_matmul = MatmulOutput<T>(ctx, 1, h, h_prev.shape());
    if (!ctx->status().ok()) return;

    const float* p_data = projected.flat<float>().data();
    const T* r_data = recurrent.flat<T>().data();
    const float* h_prev_data = h_prev.flat<float>().data();
    const float* c_prev_data = c_prev.flat<float>().data();
    const bool* inside_data = inside.NumElements() ? inside.flat<bool>().data() : nullptr;
    const float* drop_data = dropout.NumElements() ? dropout.flat<float>().data() : nullptr;
    float* h_data = h->flat<float>().data();
    float* c_data = c->flat<float>().data();
    float* g_data = gates->flat<float>().data();
    const int64_t n = units;

    ForEachRow(ctx, rows, 40 * 4 * n, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        Vec<float> g(g_data + b * 4 * n, 4 * n);
        Vec<float> h_row(h_data + b * n, n), c_row(c_data + b * n, n);
        ConstVec<float> c_old(c_prev_data + b * n, n);
        if (inside_data && !inside_data[b]) {  // padding: the state passes through
          g.setZero();
          h_row = ConstVec<float>(h_prev_data + b * n, n);
          c_row = c_old;
        } else {
          g = ConstVec<float>(p_data + b * 4 * n, 4 * n) +
              ConstVec<T>(r_data + b * 4 * n, 4 * n).template cast<float>();
          g.segment(0, 2 * n) = g.segment(0, 2 * n).logistic();
          g.segment(2 * n, n) = g.segment(2 * n, n).tanh();
          g.segment(3 * n, n) = g.segment(3 * n, n).logistic();
          if (drop_data) {
            c_row = g.segment(n, n) * c_old +
                    g.segment(0, n) * (g.segment(2 * n, n) * ConstVec<float>(drop_data + b * n, n));
          } else {
            c_row = g.segment(n, n) * c_old + g.segment(0, n) * g.segment(2 * n, n);
          }
          h_row = g.segment(3 * n, n) * c_row.tanh();
        }
        if (h_matmul) Vec<T>(h_matmul + b * n, n) = h_row.template cast<T>();
      }
    });
  }
};

template <typename T>
class SketchLstmStepGradOp : public OpKernel {
 public:
  explicit SketchLstmStepGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& gates = ctx->input(0);
    const Tensor& c = ctx->input(1);
    const Tensor& c_prev = ctx->input(2);
    const Tensor& dh_matmul = ctx->input(3);
    const Tensor& dh_pass = ctx->input(4);
    const Tensor& dh_out = ctx->input(5);
    const Tensor& dc = ctx->input(6);
    const Tensor& inside = ctx->input(7);
    const Tensor& dropout = ctx->input(8);
    CheckShapes(ctx, gates, c, inside, dropout, {&c_prev, &dh_matmul, &dh_pass, &dc});
    if (!ctx->status().ok()) return;
    OP_REQUIRES(ctx, dh_out.NumElements() == 0 || dh_out.shape() == c.shape(),
                absl::InvalidArgumentError("lstm step grad: `dh_out` must be (B, H) or empty"));
    const int64_t rows = c.dim_size(0), n = c.dim_size(1);

    Tensor *d_gates = nullptr, *dh_pass_prev = nullptr, *dc_prev = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, gates.shape(), &d_gates));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, c.shape(), &dh_pass_prev));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(3, c.shape(), &dc_prev));
    T* d_gates_matmul = MatmulOutput<T>(ctx, 1, d_gates, gates.shape());
    if (!ctx->status().ok()) return;

    const float* g_data = gates.flat<float>().data();
    const float* c_data = c.flat<float>().data();
    const float* c_prev_data = c_prev.flat<float>().data();
    const T* dh_mm_data = dh_matmul.flat<T>().data();
    const float* dh_pass_data = dh_pass.flat<float>().data();
    const float* dh_out_data = dh_out.NumElements() ? dh_out.flat<float>().data() : nullptr;
    const float* dc_data = dc.flat<float>().data();
    const bool* inside_data = inside.NumElements() ? inside.flat<bool>().data() : nullptr;
    const float* drop_data = dropout.NumElements() ? dropout.flat<float>().data() : nullptr;
    float* dg_data = d_gates->flat<float>().data();
    float* dh_pass_prev_data = dh_pass_prev->flat<float>().data();
    float* dc_prev_data = dc_prev->flat<float>().data();

    ForEachRow(ctx, rows, 60 * 4 * n, [&](int64_t begin, int64_t end) {
      std::vector<float> scratch(2 * n);
      Vec<float> dh(scratch.data(), n), tanh_c(scratch.data() + n, n);
      for (int64_t b = begin; b < end; ++b) {
        ConstVec<float> g(g_data + b * 4 * n, 4 * n);
        Vec<float> dg(dg_data + b * 4 * n, 4 * n);
        Vec<float> pass_row(dh_pass_prev_data + b * n, n), dc_row(dc_prev_data + b * n, n);
        ConstVec<float> dc_in(dc_data + b * n, n);
        dh = ConstVec<T>(dh_mm_data + b * n, n).template cast<float>() +
             ConstVec<float>(dh_pass_data + b * n, n);
        if (dh_out_data) dh += ConstVec<float>(dh_out_data + b * n, n);
        if (inside_data && !inside_data[b]) {  // padding: dh and dc pass through to the step before
          dg.setZero();
          pass_row = dh;
          dc_row = dc_in;
        } else {
          auto i = g.segment(0, n), f = g.segment(n, n), cand = g.segment(2 * n, n),
               o = g.segment(3 * n, n);
          tanh_c = ConstVec<float>(c_data + b * n, n).tanh();
          // dc_row holds the gradient of c_t (through h_t and directly) until the last line.
          dc_row = dc_in + dh * o * (1 - tanh_c.square());
          if (drop_data) {
            ConstVec<float> drop(drop_data + b * n, n);
            dg.segment(0, n) = dc_row * (cand * drop) * i * (1 - i);
            dg.segment(2 * n, n) = dc_row * i * drop * (1 - cand.square());
          } else {
            dg.segment(0, n) = dc_row * cand * i * (1 - i);
            dg.segment(2 * n, n) = dc_row * i * (1 - cand.square());
          }
          dg.segment(n, n) = dc_row * ConstVec<float>(c_prev_data + b * n, n) * f * (1 - f);
          dg.segment(3 * n, n) = dh * tanh_c * o * (1 - o);
          pass_row.setZero();
          dc_row *= f;
        }
        if (d_gates_matmul) Vec<T>(d_gates_matmul + b * 4 * n, 4 * n) = dg.template cast<T>();
      }
    });
  }
};

REGISTER_KERNEL_BUILDER(Name("SketchLstmStep").Device(DEVICE_CPU).TypeConstraint<float>("T"),
                        SketchLstmStepOp<float>);
REGISTER_KERNEL_BUILDER(
    Name("SketchLstmStep").Device(DEVICE_CPU).TypeConstraint<Eigen::bfloat16>("T"),
    SketchLstmStepOp<Eigen::bfloat16>);
REGISTER_KERNEL_BUILDER(Name("SketchLstmStepGrad").Device(DEVICE_CPU).TypeConstraint<float>("T"),
                        SketchLstmStepGradOp<float>);
REGISTER_KERNEL_BUILDER(
    Name("SketchLstmStepGrad").Device(DEVICE_CPU).TypeConstraint<Eigen::bfloat16>("T"),
    SketchLstmStepGradOp<Eigen::bfloat16>);

}  // namespace sketch_rnn
