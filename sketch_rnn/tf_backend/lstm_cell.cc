// One LSTM step's element-wise work, forward and backward, as two TensorFlow ops.
//
// seq2seqVAE.lstm_recurrence runs the LSTM as a loop over time whose only matmul per step is
// h @ U (forward) or d_gates @ U^T (backward), done by TensorFlow (oneDNN, bf16 where the CPU has it).
// Everything else in a step (the add of the input projection, four activations, the cell
// update, recurrent dropout on the candidate, the padding mask, the casts for the next matmul,
// saving what the backward pass needs) is about twenty small TensorFlow ops, each a pass over
// memory with its own dispatch; here it is one pass per row. The math is that of
// `_make_tf_recurrence` in seq2seqVAE.py, which the tests compare these ops with.
//
// The ops read step k of whole-sequence tensors by index and write step k of the sequences
// they build (h for every step, what the backward pass needs, the gradients) into buffers
// that are loop variables: TensorFlow hands a buffer to the op in place when nothing else
// holds it, which is always the case in the loops of fused_lstm.py; otherwise the op copies it
// (correct, slow) and counts the copy (`SketchLstmCopies`, checked by the tests). The
// (T, B, 4H) `gates` buffer changes meaning step by step: it comes in holding the input
// projection x_k W + b, the forward op replaces step k's by the activated gates, and the
// backward op replaces those by d_gates, the gradient of the projection; one buffer, read
// and written in place, where separate ones would triple the memory traffic of the largest
// tensor (these ops are bound by memory bandwidth, not arithmetic).
//
// Built on first use by fused_lstm.py with the compiler flags TensorFlow reports
// (tf.sysconfig), for the CPU it runs on; where it does not build, the model uses the
// TensorFlow-op recurrence instead.
//
// Layouts: T steps, B rows (sketches), H units, gates in the Keras order i, f, c (the
// candidate), o. `inside` is (T, B) or (T, B, 1) bool, or empty for "every row is inside the
// sketch"; `dropout` is (T, B, H), already divided by the keep probability, or empty for none.
//
// Padding costs no matmul rows: with `active` (T,), step k multiplies only its first
// active[k] rows (the recurrence sorts the sketches longest first, so these are the rows
// still inside a sketch there); the forward op hands on h as a view of the next step's active
// rows, the backward op step k's d_gates as a view of its active rows, and rows past those
// pass their state (or gradient) through unchanged, as padding rows do. With `packed`, the
// buffers that dU = sum_k h_{k-1}^T d_gates_k is computed from (h_prevs, d_gates_matmul)
// hold the active rows only, step 0's first, then step 1's, and so on (step k's start at row
// active[0] + ... + active[k-1]), so that one matmul over their first sum(active) rows skips
// the padding too.

#include <atomic>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "Eigen/Core"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace sketch_rnn {

using tensorflow::DataTypeToEnum;
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

std::atomic<int64_t> copies{0};  // buffers that could not be updated in place

REGISTER_OP("SketchLstmForwardStep")
    .Input("step: int32")       // k: the time step this call computes
    .Input("recurrent: T")      // (B, 4H): h_{k-1} U, in the matmul's dtype
    .Input("h_prev: float")     // (B, H)
    .Input("c_prev: float")     // (B, H)
    .Input("inside: bool")
    .Input("dropout: float")
    .Input("active: int32")     // (T,): rows that may be inside at each step, or empty
    .Input("hs: float")         // (T, B, H): h after each step; step k is written
    .Input("c_prevs: float")    // (T, B, H): c before each step; step k is written
    .Input("gates: float")      // (T, B, 4H): x_t W + b; step k's becomes i, f, tanh(candidate), o
    .Input("h_prevs: T")        // (T, B, H): h before each step, in the matmul's dtype (see `packed`)
    .Output("h: float")         // (B, H)
    .Output("h_matmul: T")      // h in the matmul's dtype, the next step's active rows
    .Output("c: float")         // (B, H)
    .Output("hs_out: float")
    .Output("c_prevs_out: float")
    .Output("gates_out: float")
    .Output("h_prevs_out: T")
    .Attr("T: {float, bfloat16}")
    .Attr("reverse: bool = false")  // the loop runs k = T-1 .. 0: the next step is k - 1
    .Attr("packed: bool = false")   // h_prevs holds only active rows, step after step
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(2));
      c->set_output(1, c->Matrix(c->UnknownDim(), c->Dim(c->input(2), 1)));
      c->set_output(2, c->input(2));
      for (int i = 0; i < 4; ++i) c->set_output(3 + i, c->input(7 + i));
      return absl::OkStatus();
    });

REGISTER_OP("SketchLstmBackwardStep")
    .Input("c_prevs: float")          // (T, B, H): the forward pass's `c_prevs`
    .Input("step: int32")             // k
    .Input("dh_matmul: T")            // (m, H), m <= B: d_gates of the step after k, times U^T
    .Input("dh_pass: float")          // (B, H): dh passed through padding from that step
    .Input("d_hs: float")             // (T, B, H): gradient of every step's h, or empty
    .Input("dc: float")               // (B, H): gradient of c after step k
    .Input("inside: bool")
    .Input("dropout: float")
    .Input("active: int32")           // (T,) or empty, as in the forward op
    .Input("gates: float")            // (T, B, 4H): the forward pass's; step k's becomes its d_gates
    .Input("d_gates_matmul: T")       // the same in the matmul's dtype (bf16; see `packed`), or empty
    .Output("d_gates_k: T")           // (active[k], 4H): step k's d_gates in the matmul's dtype
    .Output("dh_pass_prev: float")    // (B, H): dh passed through step k (padding rows)
    .Output("dc_prev: float")         // (B, H): gradient of c before step k
    .Output("gates_out: float")
    .Output("d_gates_matmul_out: T")
    .Attr("T: {float, bfloat16}")
    .Attr("packed: bool = false")  // d_gates_matmul holds only active rows, step after step
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->Matrix(c->UnknownDim(), c->Dim(c->input(9), 2)));
      c->set_output(1, c->input(3));
      c->set_output(2, c->input(3));
      c->set_output(3, c->input(9));
      c->set_output(4, c->input(10));
      return absl::OkStatus();
    });

REGISTER_OP("SketchLstmCopies").Output("copies: int64").SetIsStateful().SetShapeFn(
    [](InferenceContext* c) {
      c->set_output(0, c->Scalar());
      return absl::OkStatus();
    });

namespace {

absl::Status ShapeError(const std::string& what, const Tensor& got) {
  return absl::InvalidArgumentError("lstm step: expected " + what + ", got " +
                                    got.shape().DebugString());
}

// Checks the shapes shared by both ops; sets the op's error if they are wrong.
void CheckShapes(OpKernelContext* ctx, int64_t steps, int64_t rows, int64_t units, const Tensor& inside,
                 const Tensor& dropout, const Tensor& active,
                 const std::vector<const Tensor*>& state) {
  for (const Tensor* t : state) {
    OP_REQUIRES(ctx, t->dims() == 2 && t->dim_size(0) == rows && t->dim_size(1) == units,
                ShapeError("a state (B, H) = (" + std::to_string(rows) + ", " + std::to_string(units) + ")",
                           *t));
  }
  OP_REQUIRES(ctx, inside.NumElements() == 0 || inside.NumElements() == steps * rows,
              ShapeError("`inside` with T * B elements or none", inside));
  OP_REQUIRES(ctx, dropout.NumElements() == 0 || dropout.NumElements() == steps * rows * units,
              ShapeError("`dropout` (T, B, H) or empty", dropout));
  // A batch of no rows (a replica's share of a small last batch) has an empty `inside`.
  OP_REQUIRES(ctx, active.NumElements() == 0 ||
                       (active.NumElements() == steps && (inside.NumElements() > 0 || rows == 0)),
              ShapeError("`active` (T,) with `inside`, or empty", active));
}

// The sequence buffer at `input` as output `output`, in place where TensorFlow allows it.
template <typename T>
T* InPlace(OpKernelContext* ctx, int input, int output) {
  const Tensor& buffer = ctx->input(input);
  Tensor* out = nullptr;
  if (ctx->forward_input_to_output_with_shape(input, output, buffer.shape(), &out)) {
    return out->flat<T>().data();
  }
  copies.fetch_add(1, std::memory_order_relaxed);
  absl::Status status = ctx->allocate_output(output, buffer.shape(), &out);
  if (!status.ok()) {
    ctx->SetStatus(status);
    return nullptr;
  }
  std::memcpy(out->data(), buffer.data(), buffer.TotalBytes());
  return out->flat<T>().data();
}

void ForEachRow(OpKernelContext* ctx, int64_t rows, int64_t cost_per_row,
                const std::function<void(int64_t, int64_t)>& work) {
  auto* workers = ctx->device()->tensorflow_cpu_worker_threads()->workers;
  workers->ParallelFor(rows, cost_per_row, work);
}

int64_t CheckedStep(OpKernelContext* ctx, int input, int64_t steps) {
  const Tensor& step = ctx->input(input);
  if (step.NumElements() != 1) {
    ctx->SetStatus(ShapeError("a scalar step", step));
    return -1;
  }
  const int64_t k = step.flat<int32_t>()(0);
  if (k < 0 || k >= steps) {
    ctx->SetStatus(absl::InvalidArgumentError("lstm step: step " + std::to_string(k) +
                                              " is outside 0.." + std::to_string(steps - 1)));
    return -1;
  }
  return k;
}

// How many leading rows step k computes: active[k], or every row. Rows from there on must be
// padding at step k; the recurrence sorts sketches longest first so that they are.
int64_t ActiveRows(OpKernelContext* ctx, const Tensor& active, int64_t k, int64_t rows) {
  if (active.NumElements() == 0 || k < 0 || k >= active.NumElements()) return rows;
  const int64_t n = active.flat<int32_t>()(k);
  if (n < 0 || n > rows) {
    ctx->SetStatus(absl::InvalidArgumentError("lstm step: active[" + std::to_string(k) + "] = " +
                                              std::to_string(n) + " is outside 0.." + std::to_string(rows)));
    return 0;
  }
  return n;
}

// The first row of step k in a packed buffer: the active rows of the steps before it.
int64_t PackedOffset(const Tensor& active, int64_t k) {
  const int32_t* counts = active.flat<int32_t>().data();
  int64_t offset = 0;
  for (int64_t j = 0; j < k; ++j) offset += counts[j];
  return offset;
}

absl::Status InsideBeyondActive(int64_t k, int64_t m) {
  return absl::InvalidArgumentError("lstm step: a row from " + std::to_string(m) + " on is inside the "
                                    "sequence at step " + std::to_string(k) + ", but only " +
                                    std::to_string(m) + " rows are active there");
}

}  // namespace

template <typename T>
class SketchLstmForwardStepOp : public OpKernel {
 public:
  explicit SketchLstmForwardStepOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("reverse", &reverse_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("packed", &packed_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& recurrent = ctx->input(1);
    const Tensor& h_prev = ctx->input(2);
    const Tensor& c_prev = ctx->input(3);
    const Tensor& inside = ctx->input(4);
    const Tensor& dropout = ctx->input(5);
    const Tensor& active = ctx->input(6);
    const Tensor& gates_in = ctx->input(9);
    OP_REQUIRES(ctx, gates_in.dims() == 3 && gates_in.dim_size(2) % 4 == 0,
                ShapeError("`gates` (T, B, 4H)", gates_in));
    const int64_t steps = gates_in.dim_size(0), rows = gates_in.dim_size(1);
    const int64_t n = gates_in.dim_size(2) / 4;
    CheckShapes(ctx, steps, rows, n, inside, dropout, active, {&h_prev, &c_prev});
    if (!ctx->status().ok()) return;
    // h_{k-1} U for the step's active rows (all of them without `active`).
    const bool rows_ok = recurrent.dims() == 2 && (active.NumElements() ? recurrent.dim_size(0) <= rows
                                                                        : recurrent.dim_size(0) == rows);
    OP_REQUIRES(ctx, rows_ok && recurrent.dim_size(1) == 4 * n,
                ShapeError("`recurrent` (B, 4H), or (m <= B, 4H) with `active`", recurrent));
    const TensorShape sequence({steps, rows, n});
    for (int i : {7, 8, 10}) {
      OP_REQUIRES(ctx, ctx->input(i).shape() == sequence, ShapeError("(T, B, H)", ctx->input(i)));
    }
    const int64_t k = CheckedStep(ctx, 0, steps);
    if (!ctx->status().ok()) return;
    const int64_t m = recurrent.dim_size(0);
    const int64_t next_rows = ActiveRows(ctx, active, reverse_ ? k - 1 : k + 1, rows);
    if (!ctx->status().ok()) return;
    OP_REQUIRES(ctx, !packed_ || (active.NumElements() > 0 && m == ActiveRows(ctx, active, k, rows)),
                absl::InvalidArgumentError("lstm step: `packed` needs `active`, and active[k] rows "
                                           "of `recurrent`"));

    Tensor *h = nullptr, *c = nullptr, h_matmul_tensor;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, h_prev.shape(), &h));
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(DataTypeToEnum<T>::value, h_prev.shape(), &h_matmul_tensor));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, h_prev.shape(), &c));
    float* hs = InPlace<float>(ctx, 7, 3);
    float* c_prevs = InPlace<float>(ctx, 8, 4);
    float* gates = InPlace<float>(ctx, 9, 5);
    T* h_prevs = InPlace<T>(ctx, 10, 6);
    if (!ctx->status().ok()) return;

    const T* r_data = recurrent.flat<T>().data();
    const float* h_prev_data = h_prev.flat<float>().data();
    const float* c_prev_data = c_prev.flat<float>().data();
    const bool* inside_data = inside.NumElements() ? inside.flat<bool>().data() + k * rows : nullptr;
    const float* drop_data = dropout.NumElements() ? dropout.flat<float>().data() + k * rows * n : nullptr;
    float* h_data = h->flat<float>().data();
    T* h_matmul = h_matmul_tensor.flat<T>().data();
    float* c_data = c->flat<float>().data();
    hs += k * rows * n;
    c_prevs += k * rows * n;
    gates += k * rows * 4 * n;
    h_prevs += (packed_ ? PackedOffset(active, k) : k * rows) * n;
    std::atomic<bool> misplaced{false};

    ForEachRow(ctx, rows, 40 * 4 * n, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        Vec<float> h_row(h_data + b * n, n), c_row(c_data + b * n, n);
        ConstVec<float> c_old(c_prev_data + b * n, n), h_old(h_prev_data + b * n, n);
        // h_{k-1} for dU = sum_k h_{k-1}^T d_gates_k; on padding d_gates is 0, h must be finite.
        if (b < m || !packed_) Vec<T>(h_prevs + b * n, n) = h_old.template cast<T>();
        const bool is_inside = !inside_data || inside_data[b];
        if (is_inside && b >= m) misplaced = true;
        if (!is_inside || b >= m) {  // padding: the state passes through; the backward pass
          h_row = h_old;             // reads neither the gates nor c_prev of this row
          c_row = c_old;
        } else {
          Vec<float> g(gates + b * 4 * n, 4 * n);  // holds x_k W + b: the gates replace it
          Vec<float>(c_prevs + b * n, n) = c_old;
          g += ConstVec<T>(r_data + b * 4 * n, 4 * n).template cast<float>();
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
        Vec<float>(hs + b * n, n) = h_row;
        if (b < next_rows) Vec<T>(h_matmul + b * n, n) = h_row.template cast<T>();
      }
    });
    OP_REQUIRES(ctx, !misplaced, InsideBeyondActive(k, m));
    // The next step multiplies only its active rows: the leading rows of h, a view.
    ctx->set_output(1, h_matmul_tensor.Slice(0, next_rows));
  }

 private:
  bool reverse_ = false;
  bool packed_ = false;
};

template <typename T>
class SketchLstmBackwardStepOp : public OpKernel {
 public:
  explicit SketchLstmBackwardStepOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("packed", &packed_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& c_prevs = ctx->input(0);
    const Tensor& dh_matmul = ctx->input(2);
    const Tensor& dh_pass = ctx->input(3);
    const Tensor& d_hs = ctx->input(4);
    const Tensor& dc = ctx->input(5);
    const Tensor& inside = ctx->input(6);
    const Tensor& dropout = ctx->input(7);
    const Tensor& active = ctx->input(8);
    const Tensor& gates_all = ctx->input(9);
    OP_REQUIRES(ctx, gates_all.dims() == 3 && gates_all.dim_size(2) % 4 == 0,
                ShapeError("`gates` (T, B, 4H)", gates_all));
    const int64_t steps = gates_all.dim_size(0), rows = gates_all.dim_size(1);
    const int64_t n = gates_all.dim_size(2) / 4;
    CheckShapes(ctx, steps, rows, n, inside, dropout, active, {&dh_pass, &dc});
    if (!ctx->status().ok()) return;
    OP_REQUIRES(ctx, dh_matmul.dims() == 2 && dh_matmul.dim_size(0) <= rows && dh_matmul.dim_size(1) == n,
                ShapeError("`dh_matmul` (m <= B, H)", dh_matmul));
    const TensorShape sequence({steps, rows, n}), wide({steps, rows, 4 * n});
    OP_REQUIRES(ctx, c_prevs.shape() == sequence, ShapeError("`c_prevs` (T, B, H)", c_prevs));
    OP_REQUIRES(ctx, d_hs.NumElements() == 0 || d_hs.shape() == sequence,
                ShapeError("`d_hs` (T, B, H) or empty", d_hs));
    constexpr bool kSeparate = !std::is_same_v<T, float>;  // bf16 needs its own copy of d_gates
    OP_REQUIRES(ctx, kSeparate ? ctx->input(10).shape() == wide : ctx->input(10).NumElements() == 0,
                ShapeError(kSeparate ? "`d_gates_matmul` (T, B, 4H)" : "empty `d_gates_matmul`",
                           ctx->input(10)));
    const int64_t k = CheckedStep(ctx, 1, steps);
    if (!ctx->status().ok()) return;
    const int64_t m = dh_matmul.dim_size(0);  // rows from m on get no gradient through U
    const int64_t active_rows = ActiveRows(ctx, active, k, rows);
    if (!ctx->status().ok()) return;
    OP_REQUIRES(ctx, !packed_ || (kSeparate && active.NumElements() > 0),
                absl::InvalidArgumentError("lstm step: `packed` needs `active` and bf16 d_gates_matmul"));
    const int64_t mm_row = packed_ ? PackedOffset(active, k) : k * rows;  // step k's first row there

    Tensor *dh_pass_prev = nullptr, *dc_prev = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, dh_pass.shape(), &dh_pass_prev));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, dc.shape(), &dc_prev));
    float* gates = InPlace<float>(ctx, 9, 3);
    T* d_gates_matmul = nullptr;
    if constexpr (kSeparate) {
      d_gates_matmul = InPlace<T>(ctx, 10, 4);
    } else {
      ctx->set_output(4, ctx->input(10));
    }
    if (!ctx->status().ok()) return;
    const float* c_prev_data = c_prevs.flat<float>().data() + k * rows * n;
    const T* dh_mm_data = dh_matmul.flat<T>().data();
    const float* dh_pass_data = dh_pass.flat<float>().data();
    const float* d_hs_data = d_hs.NumElements() ? d_hs.flat<float>().data() + k * rows * n : nullptr;
    const float* dc_data = dc.flat<float>().data();
    const bool* inside_data = inside.NumElements() ? inside.flat<bool>().data() + k * rows : nullptr;
    const float* drop_data = dropout.NumElements() ? dropout.flat<float>().data() + k * rows * n : nullptr;
    float* dg_data = gates + k * rows * 4 * n;  // step k's gates, replaced by their gradient
    T* dg_mm_data = d_gates_matmul ? d_gates_matmul + mm_row * 4 * n : nullptr;
    float* dh_pass_prev_data = dh_pass_prev->flat<float>().data();
    float* dc_prev_data = dc_prev->flat<float>().data();
    std::atomic<bool> misplaced{false};

    ForEachRow(ctx, rows, 60 * 4 * n, [&](int64_t begin, int64_t end) {
      std::vector<float> scratch(7 * n);
      Vec<float> dh(scratch.data(), n), c(scratch.data() + n, n), tanh_c(scratch.data() + 2 * n, n);
      Vec<float> g(scratch.data() + 3 * n, 4 * n);  // the row's gates, read before d_gates replaces them
      for (int64_t b = begin; b < end; ++b) {
        Vec<float> dg(dg_data + b * 4 * n, 4 * n);
        Vec<float> pass_row(dh_pass_prev_data + b * n, n), dc_row(dc_prev_data + b * n, n);
        ConstVec<float> dc_in(dc_data + b * n, n);
        dh = ConstVec<float>(dh_pass_data + b * n, n);
        if (b < m) dh += ConstVec<T>(dh_mm_data + b * n, n).template cast<float>();
        if (d_hs_data) dh += ConstVec<float>(d_hs_data + b * n, n);
        const bool is_inside = !inside_data || inside_data[b];
        if (is_inside && b >= active_rows) misplaced = true;
        if (!is_inside || b >= active_rows) {  // padding: dh and dc pass through to the step before
          dg.setZero();
          pass_row = dh;
          dc_row = dc_in;
        } else {
          ConstVec<float> c_old(c_prev_data + b * n, n);
          g = dg;
          auto i = g.segment(0, n), f = g.segment(n, n), cand = g.segment(2 * n, n),
               o = g.segment(3 * n, n);
          const float* drop_row = drop_data ? drop_data + b * n : nullptr;
          // c after the step, recomputed as the forward op computed it.
          if (drop_row) {
            ConstVec<float> drop(drop_row, n);
            c = f * c_old + i * (cand * drop);
          } else {
            c = f * c_old + i * cand;
          }
          tanh_c = c.tanh();
          // dc_row holds the gradient of c after the step until the last line.
          dc_row = dc_in + dh * o * (1 - tanh_c.square());
          if (drop_row) {
            ConstVec<float> drop(drop_row, n);
            dg.segment(0, n) = dc_row * (cand * drop) * i * (1 - i);
            dg.segment(2 * n, n) = dc_row * i * drop * (1 - cand.square());
          } else {
            dg.segment(0, n) = dc_row * cand * i * (1 - i);
            dg.segment(2 * n, n) = dc_row * i * (1 - cand.square());
          }
          dg.segment(n, n) = dc_row * c_old * f * (1 - f);
          dg.segment(3 * n, n) = dh * tanh_c * o * (1 - o);
          pass_row.setZero();
          dc_row *= f;
        }
        if (dg_mm_data && (b < active_rows || !packed_)) {
          Vec<T>(dg_mm_data + b * 4 * n, 4 * n) = dg.template cast<T>();
        }
      }
    });
    OP_REQUIRES(ctx, !misplaced, InsideBeyondActive(k, active_rows));
    // Step k's d_gates of the active rows for the next matmul (the rows after them are zero):
    // a view of the buffer they were written to, or a copy where that view would not be
    // aligned as TensorFlow's kernels require.
    Tensor rows_of_buffer;  // the buffer as (T * B, 4H)
    OP_REQUIRES(ctx, rows_of_buffer.CopyFrom(*ctx->mutable_output(kSeparate ? 4 : 3),
                                             TensorShape({steps * rows, 4 * n})),
                absl::InternalError("lstm step: could not view the d_gates buffer"));
    const int64_t first = kSeparate ? mm_row : k * rows;
    const Tensor source = rows_of_buffer.Slice(first, first + active_rows);
    if (reinterpret_cast<uintptr_t>(source.data()) % EIGEN_MAX_ALIGN_BYTES == 0) {
      Tensor d_gates_k;
      OP_REQUIRES(ctx, d_gates_k.CopyFrom(source, TensorShape({active_rows, 4 * n})),
                  absl::InternalError("lstm step: could not view step k's d_gates"));
      ctx->set_output(0, d_gates_k);
    } else {
      Tensor* d_gates_k = nullptr;
      OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({active_rows, 4 * n}), &d_gates_k));
      std::memcpy(d_gates_k->data(), source.data(), source.TotalBytes());
    }
  }

 private:
  bool packed_ = false;
};

class SketchLstmCopiesOp : public OpKernel {
 public:
  explicit SketchLstmCopiesOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({}), &out));
    out->scalar<int64_t>()() = copies.load();
  }
};

#define REGISTER(T)                                                                              \
  REGISTER_KERNEL_BUILDER(                                                                       \
      Name("SketchLstmForwardStep").Device(DEVICE_CPU).TypeConstraint<T>("T").HostMemory("step"), \
      SketchLstmForwardStepOp<T>);                                                               \
  REGISTER_KERNEL_BUILDER(                                                                       \
      Name("SketchLstmBackwardStep").Device(DEVICE_CPU).TypeConstraint<T>("T").HostMemory("step"), \
      SketchLstmBackwardStepOp<T>);
REGISTER(float)
REGISTER(Eigen::bfloat16)
#undef REGISTER
REGISTER_KERNEL_BUILDER(Name("SketchLstmCopies").Device(DEVICE_CPU), SketchLstmCopiesOp);

}  // namespace sketch_rnn
