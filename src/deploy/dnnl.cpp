// The onednn runtime's direct path: the same compiled chain (onednn_plan.cpp) run through oneDNN's
// own C++ API, on the libdnnl rmnet links where the build found it (RMNET_WITH_DNNL; Debian's
// libdnnl-dev). LibTorch bundles oneDNN but exports none of its symbols, and its registered
// operators (mkldnn::_convolution_pointwise, used by onednn.cpp) build a primitive descriptor on
// every call: ~80 µs of set-up per convolution on the reference machine, more than the kernel itself
// on a 7x7 map (docs/data/profiles/mobilenet_v2_rm_224_b1_f32.md). Here every convolution,
// tiny-map GEMM and the Linear head become oneDNN primitives once per input shape (weights
// reordered into the layout the primitive chose, cached with it, least recently used evicted); a
// forward only wraps its tensors in memory objects and executes. A per-channel clamp after a conv
// (ReLU6 on a block's own channels, nothing on the reserved ones: the RM MobileNetV2) becomes two
// binary post-ops (max with the lower, min with the upper bounds) of that conv.
// Activations stay LibTorch tensors (channels-last, the activation buffer cache serves them), so
// the steps that are not convolutions run as in onednn.cpp. Scratchpads are per call (user mode):
// one DeployedNet may run on several threads at once.
//
// One OpenMP runtime: the torch wheel ships libgomp.so.1 and Debian's libdnnl needs libgomp.so.1;
// the dynamic loader maps that soname once, so both share one thread pool and at::set_num_threads
// (tests/test_deploy.cpp checks the process maps one libgomp).
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include "onednn_steps.h"

#if RMNET_WITH_DNNL
#include "oneapi/dnnl/dnnl.hpp"  // libdnnl's (2.x), through -iquote: LibTorch's include folder has oneDNN 3's
static_assert(DNNL_VERSION_MAJOR == 2, "src/deploy/dnnl.cpp is written against oneDNN 2.x");
#endif

namespace rmnet {

bool onednn_direct_available() { return RMNET_WITH_DNNL != 0; }

namespace detail {
bool dnnl_native_bf16() {
#if RMNET_WITH_DNNL
  const auto isa = dnnl::get_effective_cpu_isa();
  return isa == dnnl::cpu_isa::avx512_core_bf16 || isa == dnnl::cpu_isa::avx512_core_amx;
#else
  return false;
#endif
}

torch::Tensor U8Primitive::run_add(const torch::Tensor&, const torch::Tensor&) const {
  TORCH_CHECK(false, "internal: INT8 runtime: run_add on a primitive without a shortcut add");
}
}  // namespace detail

bool onednn_direct_default() {
  const char* v = std::getenv("RMNET_ONEDNN_DIRECT");
  return !(v && std::string(v) == "0");
}

bool batch_tiling_default() {
  const char* v = std::getenv("RMNET_BATCH_TILING");
  return !(v && std::string(v) == "0");
}

std::string onednn_direct_version() {
#if RMNET_WITH_DNNL
  const auto* v = dnnl::version();
  return fmt::format("{}.{}.{}", v->major, v->minor, v->patch);
#else
  return "";
#endif
}

namespace detail {

#if RMNET_WITH_DNNL
namespace {

using torch::Tensor;
using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

dnnl::engine& cpu_engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

dnnl::stream& thread_stream() {
  thread_local dnnl::stream s(cpu_engine());
  return s;
}

dt dnnl_type(torch::ScalarType t) {
  if (t == torch::kFloat) return dt::f32;
  if (t == torch::kBFloat16) return dt::bf16;
  if (t == torch::kChar) return dt::s8;  // INT8 weights
  if (t == torch::kByte) return dt::u8;
  TORCH_CHECK(false, "onednn runtime (direct): unsupported dtype ", t);
}

/// A tensor's data as a oneDNN memory of description `md` (no copy; the tensor must outlive it).
dnnl::memory wrap(const dnnl::memory::desc& md, const Tensor& t) { return dnnl::memory(md, cpu_engine(), t.data_ptr()); }

/// Executes `prim` on `args` on this thread's stream and waits, with a scratchpad of `scratch_md`
/// allocated for the call (user mode: one primitive may run on several threads at once). A oneDNN
/// error becomes a c10::Error: what(), " failed: ", oneDNN's message and status (the message is
/// built only then: this runs once per conv of every forward).
template <class What>
void execute_primitive(const dnnl::primitive& prim, std::unordered_map<int, dnnl::memory>& args,
                       const dnnl::memory::desc& scratch_md, const What& what) {
  Tensor scratch;
  if (scratch_md.get_size() > 0) {
    scratch = at::empty({static_cast<int64_t>(scratch_md.get_size())}, torch::TensorOptions().dtype(torch::kByte));
    args.emplace(DNNL_ARG_SCRATCHPAD, wrap(scratch_md, scratch));
  }
  try {
    prim.execute(thread_stream(), args);
    thread_stream().wait();
  } catch (const dnnl::error& e) {
    TORCH_CHECK(false, what(), " failed: ", e.what(), " (status ", static_cast<int>(e.status), ")");
  }
}

/// A max-pool (kernel k, stride s, padding p; dilation 1, floor mode) on NHWC tensors of type `t`
/// and input sizes `in` as a oneDNN pooling primitive descriptor (user scratchpad), or nothing where
/// oneDNN cannot express it. oneDNN checks (H - k + pl + pr) / s + 1 == Ho: the right padding is the
/// one that makes floor mode's output size (none where that would be negative: rows dropped).
std::optional<dnnl::pooling_forward::primitive_desc> max_pool_pd(dt t, at::IntArrayRef in, int64_t k, int64_t s,
                                                                 int64_t p) {
  const int64_t n = in[0], c = in[1], h = in[2], w = in[3];
  const int64_t ho = (h + 2 * p - k) / s + 1, wo = (w + 2 * p - k) / s + 1;
  const dnnl::memory::dims pl{p, p}, pr{(ho - 1) * s + k - h - p, (wo - 1) * s + k - w - p};
  if (ho <= 0 || wo <= 0 || pr[0] < 0 || pr[1] < 0) return std::nullopt;
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  try {
    return dnnl::pooling_forward::primitive_desc(
        dnnl::pooling_forward::desc(dnnl::prop_kind::forward_inference, dnnl::algorithm::pooling_max,
                                    dnnl::memory::desc({n, c, h, w}, t, tag::nhwc),
                                    dnnl::memory::desc({n, c, ho, wo}, t, tag::nhwc), {s, s}, {k, k}, pl, pr),
        attr, cpu_engine());
  } catch (const dnnl::error&) {
    return std::nullopt;
  }
}

/// One primitive of a shape's plan: a convolution (NHWC in and out) or a matmul (the tiny-map GEMM
/// on the channels-last rows of the map, or the Linear head); steps_[step] says which.
struct Node {
  size_t step = 0;
  enum class Kind { Conv, Gemm, Linear, Pool } kind = Kind::Conv;  // Pool: a max-pool (no weights)
  torch::Tensor matrix, matrix_bias;  // bfloat16 Gemm: the dense matrix for at::linear (see make_plan)
  torch::Tensor libtorch_weight;      // Conv measured faster on LibTorch's operator: its packed weights
  dnnl::primitive prim;
  dnnl::memory::desc src_md, dst_md, scratch_md;
  dnnl::memory weights, bias;                           // in the primitive's layout, owned
  std::vector<std::pair<int, dnnl::memory>> post_args;  // binary post-ops' operands, owned
  std::vector<int64_t> out;                             // output sizes: NCHW (conv), [N, M] (matmul)
  int64_t ho = 0, wo = 0;                               // gemm: the output map
  bool fused_clamp = false;                             // the next step (a per-channel clamp) is a post-op
};

struct Plan {
  std::vector<Node> nodes;
  std::vector<int> node_of_step;  // steps_[i] -> its node, -1: an ATen step, -2: fused into the previous node
  std::vector<std::vector<int64_t>> in_sizes;  // steps_[i]'s input sizes (NCHW), i in [begin, end], on maps
};

/// How a shape's forward runs: steps [0, cut) on `front`, one image at a time, the rest on `whole`
/// (DeployOptions::batch_tiling); no front: `whole` throughout.
struct Schedule {
  std::shared_ptr<const Plan> whole, front;
  size_t cut = 0;
};

/// An owned memory in `md` holding `src` (a dense tensor in layout `user_tag`), reordered.
dnnl::memory reordered(const Tensor& src, const dnnl::memory::dims& dims, tag user_tag, const dnnl::memory::desc& md) {
  const Tensor s = src.contiguous();
  dnnl::memory user(dnnl::memory::desc(dims, dnnl_type(s.scalar_type()), user_tag), cpu_engine(), s.data_ptr());
  dnnl::memory out(md, cpu_engine());
  dnnl::reorder(user, out).execute(thread_stream(), user, out);
  thread_stream().wait();
  return out;
}

/// A primitive of `pd` that executes: run once on zeroed scratch buffers (plus `extra` arguments,
/// the binary post-ops' operands), moving to oneDNN's next implementation while execution is
/// refused. oneDNN 2.6 creates some primitives it then cannot execute ("unimplemented" at execute:
/// a depthwise 3x3 conv on a 1x1 map at batch 1). Call before reordering weights into
/// pd.weights_desc(), which may change with the implementation.
template <class Prim, class PD>
Prim first_runnable(PD& pd, const std::vector<std::pair<int, dnnl::memory>>& extra) {
  for (;;) {
    try {
      Prim prim(pd);
      std::unordered_map<int, dnnl::memory> args;
      const auto zeros = [](const dnnl::memory::desc& md) {
        dnnl::memory m(md, cpu_engine());
        if (md.get_size() > 0) std::memset(m.get_data_handle(), 0, md.get_size());
        return m;
      };
      args.emplace(DNNL_ARG_SRC, zeros(pd.src_desc()));
      args.emplace(DNNL_ARG_WEIGHTS, zeros(pd.weights_desc()));
      if (pd.bias_desc().get_size() > 0) args.emplace(DNNL_ARG_BIAS, zeros(pd.bias_desc()));
      args.emplace(DNNL_ARG_DST, zeros(pd.dst_desc()));
      if (pd.scratchpad_desc().get_size() > 0) args.emplace(DNNL_ARG_SCRATCHPAD, zeros(pd.scratchpad_desc()));
      for (const auto& [k, m] : extra) args.emplace(k, m);
      prim.execute(thread_stream(), args);
      thread_stream().wait();
      return prim;
    } catch (const dnnl::error&) {
      if (!pd.next_impl()) throw;
    }
  }
}

/// Post-ops for a step's attr ("relu", "hardtanh", "none") and, when `clamp` is given, its
/// per-channel bounds as binary max/min operands [1, C, 1, 1] (float32) appended to `node`; with
/// `sum`, first the sum of what dst holds (a Dirac shortcut's merge conv).
dnnl::primitive_attr make_attr(const Step& s, const Step* clamp, Node& node, int64_t channels, bool map,
                               bool sum = false) {
  dnnl::post_ops po;
  if (sum) po.append_sum(1.f);  // dst = conv + dst (the shortcut), then the activation
  if (s.attr == "relu") {
    po.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
  } else if (s.attr == "hardtanh") {
    po.append_eltwise(1.f, dnnl::algorithm::eltwise_clip, static_cast<float>(s.scalars[0]),
                      static_cast<float>(s.scalars[1]));
  }
  if (clamp) {
    const dnnl::memory::dims d = map ? dnnl::memory::dims{1, channels, 1, 1} : dnnl::memory::dims{1, channels};
    const dnnl::memory::desc md(d, dt::f32, map ? tag::abcd : tag::ab);
    const std::pair<dnnl::algorithm, const Tensor*> ops[] = {{dnnl::algorithm::binary_max, &clamp->lo_t},
                                                             {dnnl::algorithm::binary_min, &clamp->hi_t}};
    for (const auto& [alg, bound] : ops) {
      const int idx = po.len();
      po.append_binary(alg, md);
      dnnl::memory m(md, cpu_engine());
      const Tensor b = bound->to(torch::kFloat).contiguous();
      std::memcpy(m.get_data_handle(), b.data_ptr(), b.numel() * sizeof(float));
      node.post_args.emplace_back(DNNL_ARG_ATTR_MULTIPLE_POST_OP(idx) | DNNL_ARG_SRC_1, std::move(m));
    }
  }
  dnnl::primitive_attr attr;
  attr.set_post_ops(po);
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

/// A matmul node: y[N, M] = x[N, K] W^T + b with W [M, K] row-major (`w`), bias `b` [M] or undefined.
void make_matmul(Node& node, const Step& s, const Tensor& w, const Tensor& b, int64_t n, torch::ScalarType type) {
  const int64_t m = w.size(0), k = w.size(1);
  const dt t = dnnl_type(type);
  node.src_md = dnnl::memory::desc({n, k}, t, tag::ab);
  node.dst_md = dnnl::memory::desc({n, m}, t, tag::ab);
  const dnnl::memory::desc wany({k, m}, t, tag::any), bias_md({1, m}, dt::f32, tag::ab);
  auto attr = make_attr(s, nullptr, node, m, false);
  auto pd = b.defined() ? dnnl::matmul::primitive_desc(dnnl::matmul::desc(node.src_md, wany, bias_md, node.dst_md),
                                                              attr, cpu_engine())
                              : dnnl::matmul::primitive_desc(dnnl::matmul::desc(node.src_md, wany, node.dst_md), attr,
                                                              cpu_engine());
  node.prim = first_runnable<dnnl::matmul>(pd, node.post_args);
  node.scratch_md = pd.scratchpad_desc();
  node.weights = reordered(w, {k, m}, tag::ba, pd.weights_desc());
  if (b.defined()) node.bias = reordered(b.to(torch::kFloat).reshape({1, m}), {1, m}, tag::ab, bias_md);
  node.out = {n, m};
}

class DnnlExecutor : public Executor {
 public:
  DnnlExecutor(const PlainNetImpl& net, const DeployOptions& o) : options_(o), dtype_(o.dtype()) {
    dnnl_type(dtype_);  // float32 or bfloat16 (onednn_available checked it)
    steps_ = compile_chain(net, dtype_);
    if (o.dirac_shortcuts()) shortcuts_ = find_dirac_shortcuts(steps_);
    for (const auto& s : steps_) num_convs_ += s.kind == StepKind::Conv;
    // where the chain may be cut for batch tiling: between steps on maps, no Dirac shortcut live
    // (a block input kept or a projection made for a later merge), not between a conv and its
    // fused clamp
    bool live = false;
    for (size_t i = 0; i < steps_.size(); ++i) {
      const auto& s = steps_[i];
      if (i > 0 && !live && !fuses_clamp(i - 1)) cuts_.push_back(i);
      if (s.kind == StepKind::MeanFlatten || s.kind == StepKind::AvgPool || s.kind == StepKind::Flatten ||
          s.kind == StepKind::Linear)
        break;
      if (s.keeps_input) live = true;
      if (s.shortcut_from >= 0) live = false;
    }
  }

  Tensor run(const Tensor& x0, std::vector<StepTiming>* timings) override {
    const auto sch = schedule_for(x0.sizes());
    Tensor x = x0.contiguous(torch::MemoryFormat::ChannelsLast);
    bool owned = x.data_ptr() != x0.data_ptr();  // in-place steps never write into the caller's tensor
    if (sch->front) {
      x = run_tiled(*sch->front, x, sch->cut, timings);
      owned = true;
    }
    run_steps(*sch->whole, x, owned, sch->cut, steps_.size(), timings);
    return x;
  }

  std::string plan() const override {
    std::ostringstream os;
    os << "onednn runtime (" << c10::toString(dtype_) << ", channels-last, " << steps_.size() << " steps, "
       << num_convs_ << " oneDNN " << onednn_direct_version()
       << " convolution primitives made once per input shape, a per-channel clamp after a conv fused as its post-ops"
       << (options_.small_map_gemm() ? "; a conv on a map hardly larger than its kernel runs as one GEMM" : "")
       << "; " << shortcuts_ << " Dirac shortcut" << (shortcuts_ == 1 ? "" : "s")
       << (options_.dirac_shortcuts() ? "" : " (off)")
       << (options_.batch_tiling() ? "; batches of several images may run their first layers one image at a time, where "
                                     "timed faster per input shape"
                                   : "")
       << ")\n";
    for (size_t i = 0; i < steps_.size(); ++i) {
      const auto& s = steps_[i];
      const bool fused = fuses_clamp(i);
      const size_t last = fused ? steps_[i + 1].last : s.last;
      os << fmt::format("  [{}{}] {}{}\n", s.first, last != s.first ? fmt::format("-{}", last) : "", s.name,
                        fused ? " + " + fused_name(steps_[i + 1]) : "");
      if (fused) ++i;
    }
    return os.str();
  }

 private:
  /// Runs steps [begin, end) of `plan` on x (replaced by their output; in place where `owned`).
  /// No Dirac shortcut is live at `begin` or `end` (a cut: see cuts_).
  void run_steps(const Plan& plan, Tensor& x, bool& owned, size_t begin, size_t end,
                 std::vector<StepTiming>* timings) const {
    Tensor kept;  // a Dirac shortcut's block input, from its first conv to its merge conv
    bool kept_owned = false;
    Tensor projected;  // a projection shortcut's output, which the merge conv sums into
    for (size_t i = begin; i < end; ++i) {
      const int ni = plan.node_of_step[i];
      if (ni == -2) continue;  // a post-op of the previous node
      const auto& s = steps_[i];
      if (s.keeps_input) {
        kept = x;
        kept_owned = owned;
      }
      const auto t0 = timings ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point();
      int64_t macs = 0;
      std::string name = s.name;
      if (ni >= 0) {
        const Node& node = plan.nodes[ni];
        if (s.on_kept) {  // a projection shortcut: its 1x1 conv of the block input, x untouched
          Tensor k = s.shortcut_act == "relu" ? kept.relu() : kept;
          execute(node, k);
          projected = k.contiguous(torch::MemoryFormat::ChannelsLast);
          if (timings)
            timings->push_back(step_timing(s.name, s.first, s.last, t0, projected.numel() * s.in, projected));
          continue;
        }
        if (s.shortcut_from >= 0) {  // the merge conv sums into the projection or a buffer holding the block input
          Tensor dst = std::move(projected);
          projected = Tensor();
          if (!dst.defined()) {
            dst = kept.contiguous(torch::MemoryFormat::ChannelsLast);
            if (!kept_owned && dst.data_ptr() == kept.data_ptr()) dst = dst.clone(torch::MemoryFormat::ChannelsLast);
            if (s.shortcut_act == "relu") dst.relu_();
            if (s.shortcut_scale.defined()) dst.mul_(s.shortcut_scale);
          }
          kept = Tensor();
          execute(node, x, &dst);
        } else {
          execute(node, x);
        }
        owned = true;
        if (timings) {
          macs = node.kind == Node::Kind::Pool     ? 0
                 : node.kind == Node::Kind::Linear ? x.numel() * s.in
                                                   : x.numel() * (s.in / s.groups) * s.kernel * s.kernel;
          if (node.kind == Node::Kind::Gemm) name += " (as one GEMM)";
          if (node.libtorch_weight.defined()) name += " (LibTorch's operator: measured faster)";
          if (node.fused_clamp) name += " + " + fused_name(steps_[i + 1]);
        }
      } else {
        run_aten_step(s, x, owned, timings ? &macs : nullptr);
      }
      if (timings) timings->push_back(step_timing(name, s.first, node_last(plan, i), t0, macs, x));
    }
  }

  /// Steps [0, cut) of `front` (a plan for one image) on x, one image at a time (run_per_image).
  Tensor run_tiled(const Plan& front, const Tensor& x, size_t cut, std::vector<StepTiming>* timings) const {
    return run_per_image(
        x,
        [&](Tensor& y, std::vector<StepTiming>* t) {
          bool owned = false;  // a view of the caller's batch
          run_steps(front, y, owned, 0, cut, t);
        },
        timings);
  }

  /// Whether steps_[i] is a conv whose next step, a per-channel clamp, becomes its post-ops.
  bool fuses_clamp(size_t i) const {
    return steps_[i].kind == StepKind::Conv && i + 1 < steps_.size() && steps_[i + 1].kind == StepKind::ClampChannels;
  }

  /// A per-channel clamp's name as a conv's post-ops ("..., in place)" -> "..., as post-ops)").
  static std::string fused_name(const Step& clamp) {
    std::string n = clamp.name;
    const auto at = n.rfind(", in place)");
    return at == std::string::npos ? n : n.substr(0, at) + ", as post-ops)";
  }

  size_t node_last(const Plan& p, size_t i) const {
    return i + 1 < steps_.size() && p.node_of_step[i + 1] == -2 ? steps_[i + 1].last : steps_[i].last;
  }

  /// Runs `node` on x (replaced by its output). `sum_into`: a Dirac shortcut's merge conv, whose
  /// output is written over (and adds) that buffer.
  void execute(const Node& node, Tensor& x, Tensor* sum_into = nullptr) const {
    std::unordered_map<int, dnnl::memory> args;
    if (node.kind == Node::Kind::Pool) {
      const Tensor src = x.contiguous(torch::MemoryFormat::ChannelsLast);
      Tensor y = at::empty(node.out, x.options().memory_format(torch::MemoryFormat::ChannelsLast));
      args.emplace(DNNL_ARG_SRC, wrap(node.src_md, src));
      args.emplace(DNNL_ARG_DST, wrap(node.dst_md, y));
      execute_primitive(node.prim, args, node.scratch_md, [&] {
        return c10::str("onednn runtime (direct): ", steps_[node.step].name, " on input ", x.sizes());
      });
      x = std::move(y);
      return;
    }
    Tensor src, y;
    const int64_t n = x.size(0);
    if (sum_into) {
      TORCH_CHECK(node.kind == Node::Kind::Conv && !node.libtorch_weight.defined() && sum_into->sizes() == node.out &&
                      sum_into->is_contiguous(torch::MemoryFormat::ChannelsLast),
                  "onednn runtime (direct): a shortcut's buffer ", sum_into->sizes(), " does not fit ",
                  steps_[node.step].name);
      src = x.contiguous(torch::MemoryFormat::ChannelsLast);
      y = *sum_into;
    } else if (node.kind == Node::Kind::Conv) {
      src = x.contiguous(torch::MemoryFormat::ChannelsLast);
      y = at::empty(node.out, x.options().memory_format(torch::MemoryFormat::ChannelsLast));
    } else if (node.kind == Node::Kind::Gemm) {  // the whole map as one row per image
      src = x.contiguous(torch::MemoryFormat::ChannelsLast).permute({0, 2, 3, 1}).reshape({n, -1});
      y = at::empty(node.out, x.options());
    } else {
      src = x.contiguous();
      y = at::empty(node.out, x.options());
    }
    if (node.libtorch_weight.defined()) {  // measured faster on LibTorch's operator (make_plan)
      x = libtorch_conv(steps_[node.step], x, node.libtorch_weight);
      return;
    }
    if (node.matrix.defined()) {  // bfloat16 tiny-map GEMM through ATen, the activation after it
      const auto& st = steps_[node.step];
      y = at::linear(src, node.matrix, node.matrix_bias.defined() ? std::optional<Tensor>(node.matrix_bias) : std::nullopt);
      if (st.attr == "relu") y.relu_();
      if (st.attr == "hardtanh") y.clamp_(st.scalars[0], st.scalars[1]);
      x = y.view({n, node.ho, node.wo, -1}).permute({0, 3, 1, 2});
      return;
    }
    args.emplace(DNNL_ARG_SRC, wrap(node.src_md, src));
    args.emplace(DNNL_ARG_WEIGHTS, node.weights);
    if (node.bias) args.emplace(DNNL_ARG_BIAS, node.bias);
    args.emplace(DNNL_ARG_DST, wrap(node.dst_md, y));
    for (const auto& [k, m] : node.post_args) args.emplace(k, m);
    execute_primitive(node.prim, args, node.scratch_md, [&] {
      return c10::str("onednn runtime (direct): ", steps_[node.step].name, " on input ", x.sizes());
    });
    if (node.kind == Node::Kind::Gemm) y = y.view({n, node.ho, node.wo, -1}).permute({0, 3, 1, 2});
    x = std::move(y);
  }

  std::shared_ptr<const Schedule> schedule_for(at::IntArrayRef sizes) {
    std::vector<int64_t> key = sizes.vec();
    std::lock_guard<std::mutex> lock(mutex_);
    if (auto* cached = lru_find(cache_, key)) return *cached;
    auto p = make_schedule(key);
    lru_put(cache_, std::move(key), p, options_.packed_shapes());
    return p;
  }

  /// The whole batch at every step, or (DeployOptions::batch_tiling) a prefix one image at a time.
  /// The candidates: the cuts up to the first one after the last step whose input holds at least
  /// kTileBytes per image (smaller maps fit the caches at any batch here). Both ways are timed
  /// chained over all candidates, per step (the mean of 3 forwards after a warm-up: layers timed
  /// alone, on an input fresh in the cache, show little of it: the gain is one image's maps staying
  /// in the caches from one layer to the next), the cut with the largest saving taken, and kept if
  /// its prefix then runs at least 3% faster tiled (best of 2 after a warm-up, the copy into the
  /// whole batch's tensor included). Under mutex_.
  std::shared_ptr<const Schedule> make_schedule(const std::vector<int64_t>& shape) const {
    auto sch = std::make_shared<Schedule>();
    sch->whole = std::make_shared<Plan>(make_plan(shape, 0, steps_.size()));
    const int64_t n = shape[0];
    if (!options_.batch_tiling() || shape.size() != 4 || n < 2 || cuts_.empty()) return sch;
    const auto& whole = *sch->whole;
    std::vector<int64_t> one = shape;
    one[0] = 1;
    const auto take = [&](size_t cut, std::shared_ptr<const Plan> front) {  // steps [0, cut) one image at a time
      sch->front = front ? std::move(front) : std::make_shared<Plan>(make_plan(one, 0, cut));
      sch->cut = cut;
      return sch;
    };
    if (!options_.batch_tiling_timed()) return take(cuts_.back(), nullptr);
    // decided once per input shape for the executor's life (a schedule evicted and made again runs
    // the same kernels: results stay bit for bit the same)
    if (const auto it = tiling_cuts_.find(shape); it != tiling_cuts_.end())
      return it->second > 0 ? take(it->second, nullptr) : sch;
    tiling_cuts_[shape] = 0;  // changed below where tiling is kept
    const int64_t elem = static_cast<int64_t>(c10::elementSize(dtype_));
    const auto candidates = tiling_candidates(cuts_, [&](size_t i) {
      const auto& in = whole.in_sizes[i];
      return in.empty() ? int64_t{0} : in[1] * in[2] * in[3] * elem;
    });
    if (candidates.empty()) return sch;
    const size_t end = candidates.back();
    auto front = std::make_shared<Plan>(make_plan(one, 0, end));
    const Tensor x = torch::randn(shape, torch::TensorOptions().dtype(dtype_)).contiguous(torch::MemoryFormat::ChannelsLast);
    const auto run_whole = [&](size_t cut, std::vector<StepTiming>* t) {
      Tensor y = x;
      bool owned = false;
      run_steps(whole, y, owned, 0, cut, t);
    };
    const auto run_front = [&](const Plan& p, size_t cut, std::vector<StepTiming>* t) { run_tiled(p, x, cut, t); };
    const auto t_whole = average_profile([&](std::vector<StepTiming>* t) { run_whole(end, t); }, 1, 3);
    const auto t_tiled = average_profile([&](std::vector<StepTiming>* t) { run_front(*front, end, t); }, 1, 3);
    const auto before = [&](const std::vector<StepTiming>& t, size_t cut) {  // ms of the steps before the cut
      double ms = 0;
      for (const auto& st : t) ms += st.first_layer < steps_[cut].first ? st.ms : 0.0;
      return ms;
    };
    const size_t cut = best_tiling_cut(
        candidates, [&](size_t c) { return before(t_whole, c); }, [&](size_t c) { return before(t_tiled, c); },
        fmt::format("batch tiling {}", fmt::join(shape, "x")));
    if (cut == 0) return sch;
    if (cut < end) front = std::make_shared<Plan>(make_plan(one, 0, cut));
    const double w = best_ms([&] { run_whole(cut, nullptr); }), t = best_ms([&] { run_front(*front, cut, nullptr); });
    if (debug_tiling()) fmt::print(stderr, "batch tiling {}: cut {} chained whole {:.3f} ms tiled {:.3f} ms\n", fmt::join(shape, "x"), cut, w, t);
    if (t >= 0.97 * w) return sch;
    tiling_cuts_[shape] = cut;
    return take(cut, std::move(front));
  }

  /// Whether LibTorch's operator (oneDNN 3, newer kernels) runs conv `node` (with its per-channel
  /// `clamp`, if fused, as a separate in-place step there) faster than the direct primitive on an
  /// input of `sizes`: both timed on random data, the best of 2 after a warm-up each. On big convs
  /// oneDNN 2.6's kernels can lose (the RM resnet50 at 224x224: 0.93x LibTorch's on the whole net).
  bool libtorch_faster(const Node& node, const Step* clamp, const std::vector<int64_t>& sizes) const {
    const auto& s = steps_[node.step];
    const Tensor x = torch::randn(sizes, torch::TensorOptions().dtype(dtype_))
                         .contiguous(torch::MemoryFormat::ChannelsLast);
    const Tensor packed = libtorch_pack_conv(s, sizes);
    const double direct = best_ms([&] {
      Tensor y = x;
      execute(node, y);
    });
    const double ops = best_ms([&] {
      Tensor y = libtorch_conv(s, x, packed);
      if (clamp) y.clamp_(clamp->lo_t, clamp->hi_t);
    });
    return ops < direct;
  }

  /// libtorch_faster, decided once per conv and input shape for the executor's life (a plan evicted
  /// and made again runs the same kernels: results stay bit for bit the same). Under mutex_.
  bool choose_libtorch(const Node& node, const Step* clamp, const std::vector<int64_t>& sizes) const {
    std::vector<int64_t> key = sizes;
    key.push_back(static_cast<int64_t>(node.step));
    if (const auto it = choices_.find(key); it != choices_.end()) return it->second;
    const bool faster = libtorch_faster(node, clamp, sizes);
    choices_.emplace(std::move(key), faster);
    return faster;
  }

  /// Shape inference through steps [begin, end) (no Dirac shortcut live at `begin`) from `shape`,
  /// their input there; a primitive for every conv and Linear at its input shape.
  Plan make_plan(const std::vector<int64_t>& shape, size_t begin, size_t end) const {
    Plan plan;
    plan.node_of_step.assign(steps_.size(), -1);
    plan.in_sizes.resize(steps_.size() + 1);
    int64_t n = shape[0], c = shape[1], h = shape[2], w = shape[3];
    const dt t = dnnl_type(dtype_);
    auto spatial = [&](const Step& s, const char* what) {
      const int64_t ho = (h + 2 * s.padding - s.kernel) / s.stride + 1, wo = (w + 2 * s.padding - s.kernel) / s.stride + 1;
      TORCH_CHECK(h + 2 * s.padding >= s.kernel && w + 2 * s.padding >= s.kernel && ho > 0 && wo > 0,
                  "deployed network: input ", shape, " is too small: plain layer ", s.first, " (", what, " ",
                  s.kernel, "x", s.kernel, ") gets ", h, "x", w);
      h = ho;
      w = wo;
    };
    bool flat = false;  // after the global pool: [N, C]
    int64_t kept_c = 0, kept_h = 0, kept_w = 0;  // a Dirac shortcut's kept input
    for (size_t i = begin; i < end; ++i) {
      const auto& s = steps_[i];
      if (!flat) plan.in_sizes[i] = {n, c, h, w};
      if (s.keeps_input) std::tie(kept_c, kept_h, kept_w) = std::make_tuple(c, h, w);
      if (s.kind == StepKind::Conv) {
        const auto chain_shape = std::make_tuple(c, h, w);
        if (s.on_kept) std::tie(c, h, w) = std::make_tuple(kept_c, kept_h, kept_w);
        Node node;
        node.step = i;
        const int64_t h_in = h, w_in = w;
        spatial(s, "conv");
        const bool shortcut = s.shortcut_from >= 0;  // a merge conv: a convolution with the sum post-op
        const bool gemm =
            !shortcut && options_.small_map_gemm() && s.groups == 1 && tiny_map(h_in, w_in, h, w, s.kernel);
        const Step* clamp = fuses_clamp(i) && i + 1 < end && !gemm ? &steps_[i + 1] : nullptr;  // a GEMM's clamp runs after it
        if (gemm) {
          node.kind = Node::Kind::Gemm;
          node.ho = h;
          node.wo = w;
          const Tensor m = conv_as_matrix(s.weight, h_in, w_in, s.stride, s.padding);
          const Tensor b = s.bias.defined() ? s.bias.repeat({h * w}) : Tensor();
          if (dtype_ == torch::kFloat) {
            make_matmul(node, s, m, b, n, dtype_);
          } else {  // oneDNN 2.6's bf16 matmul is not implemented on every CPU it runs bf16 convs on
            node.matrix = m.contiguous();
            node.matrix_bias = b;
            node.out = {n, m.size(0)};
          }
        } else {
          node.kind = Node::Kind::Conv;
          node.src_md = dnnl::memory::desc({n, c, h_in, w_in}, t, tag::nhwc);
          node.dst_md = dnnl::memory::desc({n, s.out, h, w}, t, tag::nhwc);
          const dnnl::memory::dims wd = s.groups > 1
                                            ? dnnl::memory::dims{s.groups, s.out / s.groups, s.in / s.groups, s.kernel, s.kernel}
                                            : dnnl::memory::dims{s.out, s.in, s.kernel, s.kernel};
          const dnnl::memory::desc wany(wd, t, tag::any), bias_md({s.out}, dt::f32, tag::x);
          const dnnl::memory::dims strides{s.stride, s.stride}, pad{s.padding, s.padding};
          auto attr = make_attr(s, clamp, node, s.out, true, shortcut);
          auto pd =
              s.bias.defined()
                  ? dnnl::convolution_forward::primitive_desc(
                        dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
                                                        node.src_md, wany, bias_md, node.dst_md, strides, pad, pad),
                        attr, cpu_engine())
                  : dnnl::convolution_forward::primitive_desc(
                        dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
                                                        node.src_md, wany, node.dst_md, strides, pad, pad),
                        attr, cpu_engine());
          node.prim = first_runnable<dnnl::convolution_forward>(pd, node.post_args);
          node.scratch_md = pd.scratchpad_desc();
          node.weights = reordered(s.weight, wd, s.groups > 1 ? tag::goihw : tag::oihw, pd.weights_desc());
          if (s.bias.defined()) node.bias = reordered(s.bias.to(torch::kFloat), {s.out}, tag::x, bias_md);
          node.out = {n, s.out, h, w};
          node.fused_clamp = clamp != nullptr;
          if (!shortcut && n * h * w * s.out * (s.in / s.groups) * s.kernel * s.kernel >= kTimedConvMacs &&
              choose_libtorch(node, clamp, {n, c, h_in, w_in})) {
            node.libtorch_weight = libtorch_pack_conv(s, {n, c, h_in, w_in});
            node.fused_clamp = false;  // the clamp runs as its own step after LibTorch's conv
            clamp = nullptr;
          }
        }
        plan.node_of_step[i] = static_cast<int>(plan.nodes.size());
        plan.nodes.push_back(std::move(node));
        if (clamp) plan.node_of_step[++i] = -2;
        c = s.out;
        if (s.on_kept) std::tie(c, h, w) = chain_shape;  // the chain goes on from the branch
      } else if (s.kind == StepKind::Linear && flat && dtype_ == torch::kFloat) {  // bf16: at::linear (as above)
        Node node;
        node.step = i;
        node.kind = Node::Kind::Linear;
        make_matmul(node, s, s.weight, s.bias, n, dtype_);
        plan.node_of_step[i] = static_cast<int>(plan.nodes.size());
        plan.nodes.push_back(std::move(node));
        c = s.out;
      } else if (s.kind == StepKind::MaxPool) {
        // a oneDNN pooling primitive (ATen's channels-last max-pool took 0.39 ms on the RM resnet50's
        // stem map at 224 b1, OpenVINO's 0.16); ATen's kernel (run_aten_step) where it cannot be one
        const auto pd = flat ? std::nullopt : max_pool_pd(t, {n, c, h, w}, s.kernel, s.stride, s.padding);
        spatial(s, "maxpool");
        if (pd) {
          Node node;
          node.step = i;
          node.kind = Node::Kind::Pool;
          node.src_md = pd->src_desc();
          node.dst_md = pd->dst_desc();
          node.prim = dnnl::pooling_forward(*pd);
          node.scratch_md = pd->scratchpad_desc();
          node.out = {n, c, h, w};
          plan.node_of_step[i] = static_cast<int>(plan.nodes.size());
          plan.nodes.push_back(std::move(node));
        }
      } else if (s.kind == StepKind::MeanFlatten) {
        h = w = 1;
        flat = true;
      } else if (s.kind == StepKind::AvgPool) {
        h = w = 1;
      } else if (s.kind == StepKind::Flatten) {
        flat = true;
      }
    }
    if (!flat) plan.in_sizes[end] = {n, c, h, w};
    return plan;
  }

  DeployOptions options_;
  torch::ScalarType dtype_;
  std::vector<Step> steps_;
  size_t num_convs_ = 0;
  size_t shortcuts_ = 0;  // Dirac shortcuts found (find_dirac_shortcuts)
  std::mutex mutex_;
  std::vector<size_t> cuts_;  // where batch tiling may cut the chain (see the constructor)
  std::list<std::pair<std::vector<int64_t>, std::shared_ptr<const Schedule>>> cache_;
  mutable std::map<std::vector<int64_t>, size_t> tiling_cuts_;  // make_schedule: input sizes -> cut (0: none)
  mutable std::map<std::vector<int64_t>, bool> choices_;  // choose_libtorch: [input sizes..., step] -> LibTorch's
};

/// An INT8 convolution (see QConvParams). oneDNN 2.x's INT8 semantics: dst = oscale * (acc + bias)
/// with acc = sum (x - x_zp) * w in int32, then the post-ops, then + the dst zero point, rounded and
/// saturated. LibTorch's (and rmnet's QuantizedNet's) is (acc * x_scale * w_scale + bias) /
/// out_scale + out_zp; so oscale = x_scale * w_scale / out_scale and the bias is passed in the
/// accumulator's units, bias / (x_scale * w_scale).
class DnnlQConv final : public U8Primitive {
 public:
  DnnlQConv(const QConvParams& p, at::IntArrayRef sizes)
      : float_out_(p.float_out), add_(p.add_factor.defined() || p.add_float), add_dtype_(p.add_float ? torch::kFloat : torch::kByte) {
    const int64_t n = sizes[0], c = sizes[1], h = sizes[2], w = sizes[3];
    const int64_t oc = p.weight_s8.size(0), k = p.weight_s8.size(2);
    const int64_t ho = (h + 2 * p.padding - k) / p.stride + 1, wo = (w + 2 * p.padding - k) / p.stride + 1;
    src_md_ = dnnl::memory::desc({n, c, h, w}, dt::u8, tag::nhwc);
    dst_md_ = dnnl::memory::desc({n, oc, ho, wo}, p.float_out ? dt::f32 : dt::u8, tag::nhwc);
    const dnnl::memory::dims wd = p.groups > 1 ? dnnl::memory::dims{p.groups, oc / p.groups, c / p.groups, k, k}
                                               : dnnl::memory::dims{oc, c, k, k};
    const dnnl::memory::desc wany(wd, dt::s8, tag::any), bias_md({oc}, dt::f32, tag::x);
    const Tensor acc_scale = p.w_scale.to(torch::kDouble) * p.x_scale;  // one accumulator unit, per channel
    Tensor oscale = p.float_out ? acc_scale : acc_scale / p.out_scale;
    Tensor bias_acc = p.bias.to(torch::kDouble) / acc_scale;
    dnnl::post_ops po;
    if (p.add_float) {  // the operand is already in output code units
      add_md_ = dnnl::memory::desc({n, oc, ho, wo}, dt::f32, tag::nhwc);
      po.append_binary(dnnl::algorithm::binary_add, add_md_);
    } else if (add_) {
      // out code = y / s_out + h (a - add_zp) with h = add_factor / s_out, add_zp folded into the
      // bias. Every h > 0: h (y / (s_out h) + a), a binary add of the u8 tensor and a per-channel
      // binary mul. Some h == 0 (rows that add nothing): v (y / (s_out v) + a) - a with v = 1 + h,
      // the same sum, a binary sub of the u8 tensor after the mul.
      const Tensor hf = p.add_factor.to(torch::kDouble) / p.out_scale;
      subtract_ = !(hf > 0).all().item<bool>();
      const Tensor mul = subtract_ ? hf + 1.0 : hf;
      oscale = oscale / mul;
      bias_acc = bias_acc - hf * static_cast<double>(p.add_zp) * p.out_scale / acc_scale;
      add_md_ = dnnl::memory::desc({n, oc, ho, wo}, dt::u8, tag::nhwc);
      po.append_binary(dnnl::algorithm::binary_add, add_md_);
      const dnnl::memory::desc h_md({1, oc, 1, 1}, dt::f32, tag::abcd);
      po.append_binary(dnnl::algorithm::binary_mul, h_md);
      if (subtract_) po.append_binary(dnnl::algorithm::binary_sub, add_md_);
      h_ = dnnl::memory(h_md, cpu_engine());
      const Tensor hc = mul.to(torch::kFloat).contiguous();
      std::memcpy(h_.get_data_handle(), hc.data_ptr(), oc * sizeof(float));
    }
    oscale = oscale.to(torch::kFloat).contiguous();
    dnnl::primitive_attr attr;
    attr.set_output_scales(1 << 1, std::vector<float>(oscale.data_ptr<float>(), oscale.data_ptr<float>() + oc));
    if (p.x_zp != 0) attr.set_zero_points(DNNL_ARG_SRC, 0, {static_cast<int32_t>(p.x_zp)});
    if (!p.float_out && p.out_zp != 0) attr.set_zero_points(DNNL_ARG_DST, 0, {static_cast<int32_t>(p.out_zp)});
    if (p.relu) po.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
    if (po.len() > 0) attr.set_post_ops(po);
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    const dnnl::memory::dims strides{p.stride, p.stride}, pad{p.padding, p.padding};
    dnnl::convolution_forward::primitive_desc pd(
        dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
                                        src_md_, wany, bias_md, dst_md_, strides, pad, pad),
        attr, cpu_engine());
    std::vector<std::pair<int, dnnl::memory>> extra;
    if (add_) {
      dnnl::memory zeros(add_md_, cpu_engine());  // the operand of first_runnable's trial run
      std::memset(zeros.get_data_handle(), 0, add_md_.get_size());
      extra = {{DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1, zeros}};
      if (!p.add_float) extra.emplace_back(DNNL_ARG_ATTR_MULTIPLE_POST_OP(1) | DNNL_ARG_SRC_1, h_);
      if (subtract_) extra.emplace_back(DNNL_ARG_ATTR_MULTIPLE_POST_OP(2) | DNNL_ARG_SRC_1, zeros);
    }
    prim_ = first_runnable<dnnl::convolution_forward>(pd, extra);
    scratch_md_ = pd.scratchpad_desc();
    weights_ = reordered(p.weight_s8, wd, p.groups > 1 ? tag::goihw : tag::oihw, pd.weights_desc());
    bias_ = reordered(bias_acc.to(torch::kFloat), {oc}, tag::x, bias_md);
    out_ = {n, oc, ho, wo};
  }

  Tensor run(const Tensor& x) const override {
    TORCH_CHECK(!add_, "internal: INT8 runtime (direct): a qconv with a shortcut add run without its operand");
    return execute(x, Tensor());
  }

  Tensor run_add(const Tensor& x, const Tensor& a) const override {
    TORCH_CHECK(add_, "internal: INT8 runtime (direct): run_add on a qconv without a shortcut add");
    TORCH_CHECK(a.scalar_type() == add_dtype_ && a.sizes() == at::IntArrayRef(out_),
                "internal: INT8 runtime (direct): the shortcut operand is ", a.sizes(), " ", a.scalar_type(),
                ", the qconv's output ", at::IntArrayRef(out_), " ", add_dtype_);
    return execute(x, a.contiguous(torch::MemoryFormat::ChannelsLast));
  }

 private:
  Tensor execute(const Tensor& x, const Tensor& a) const {
    const Tensor src = x.contiguous(torch::MemoryFormat::ChannelsLast);
    Tensor y = at::empty(out_, src.options()
                                   .dtype(float_out_ ? torch::kFloat : torch::kByte)
                                   .memory_format(torch::MemoryFormat::ChannelsLast));
    std::unordered_map<int, dnnl::memory> args{{DNNL_ARG_SRC, wrap(src_md_, src)},
                                               {DNNL_ARG_WEIGHTS, weights_},
                                               {DNNL_ARG_BIAS, bias_},
                                               {DNNL_ARG_DST, wrap(dst_md_, y)}};
    if (add_) {
      const dnnl::memory operand = wrap(add_md_, a);
      args.emplace(DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1, operand);
      if (add_dtype_ == torch::kByte) args.emplace(DNNL_ARG_ATTR_MULTIPLE_POST_OP(1) | DNNL_ARG_SRC_1, h_);
      if (subtract_) args.emplace(DNNL_ARG_ATTR_MULTIPLE_POST_OP(2) | DNNL_ARG_SRC_1, operand);
    }
    execute_primitive(prim_, args, scratch_md_, [&] { return c10::str("INT8 runtime (direct): a qconv on input ", x.sizes()); });
    return y;
  }

  bool float_out_, add_;
  torch::ScalarType add_dtype_;
  dnnl::convolution_forward prim_;
  dnnl::memory::desc src_md_, dst_md_, scratch_md_, add_md_;
  dnnl::memory weights_, bias_, h_;
  bool subtract_ = false;  // some add_factor 0: the u8 operand is subtracted again (see the constructor)
  std::vector<int64_t> out_;
};

/// A u8 max-pool as a oneDNN pooling primitive (see make_dnnl_u8_maxpool).
class DnnlU8MaxPool final : public U8Primitive {
 public:
  DnnlU8MaxPool(int64_t k, int64_t s, int64_t p, at::IntArrayRef sizes) {
    const auto pd = max_pool_pd(dt::u8, sizes, k, s, p);
    TORCH_CHECK(pd, "u8 max-pool: oneDNN cannot express it (floor mode drops input rows, or refused)");
    src_md_ = pd->src_desc();
    dst_md_ = pd->dst_desc();
    scratch_md_ = pd->scratchpad_desc();
    prim_ = dnnl::pooling_forward(*pd);
    const auto d = dst_md_.dims();
    out_ = {d.begin(), d.end()};
  }

  Tensor run(const Tensor& x) const override {
    const Tensor src = x.contiguous(torch::MemoryFormat::ChannelsLast);
    Tensor y = at::empty(out_, src.options().memory_format(torch::MemoryFormat::ChannelsLast));
    std::unordered_map<int, dnnl::memory> args{{DNNL_ARG_SRC, wrap(src_md_, src)}, {DNNL_ARG_DST, wrap(dst_md_, y)}};
    execute_primitive(prim_, args, scratch_md_,
                      [&] { return c10::str("INT8 runtime (direct): a u8 max-pool on input ", x.sizes()); });
    return y;
  }

 private:
  dnnl::pooling_forward prim_;
  dnnl::memory::desc src_md_, dst_md_, scratch_md_;
  std::vector<int64_t> out_;
};

}  // namespace

std::shared_ptr<const U8Primitive> make_dnnl_u8_maxpool(int64_t kernel, int64_t stride, int64_t padding,
                                                        at::IntArrayRef sizes) {
  const int64_t h = sizes[2], w = sizes[3];
  if (h + 2 * padding < kernel || w + 2 * padding < kernel || 2 * padding > kernel) return nullptr;
  try {
    return std::make_shared<DnnlU8MaxPool>(kernel, stride, padding, sizes);
  } catch (const std::exception&) {  // not expressible (oneDNN refused the descriptor): LibTorch's kernel
    return nullptr;
  }
}

std::shared_ptr<const U8Primitive> make_dnnl_qconv(const QConvParams& p, at::IntArrayRef sizes) {
  if (!(p.w_scale > 0).all().item<bool>() || !(p.x_scale > 0) || (!p.float_out && !(p.out_scale > 0))) return nullptr;
  if (p.add_factor.defined() && (p.float_out || p.add_float || p.add_factor.numel() != p.weight_s8.size(0) ||
                                 !(p.add_factor >= 0).all().item<bool>()))
    return nullptr;
  if (p.add_float && p.float_out) return nullptr;
  try {
    return std::make_shared<DnnlQConv>(p, sizes);
  } catch (const dnnl::error&) {  // oneDNN 2.6 has no implementation for it: the caller's other path
    return nullptr;
  }
}

std::shared_ptr<Executor> make_dnnl_executor(const PlainNetImpl& net, const DeployOptions& options) {
  return std::make_shared<DnnlExecutor>(net, options);
}
#else
std::shared_ptr<const U8Primitive> make_dnnl_qconv(const QConvParams&, at::IntArrayRef) { return nullptr; }
std::shared_ptr<const U8Primitive> make_dnnl_u8_maxpool(int64_t, int64_t, int64_t, at::IntArrayRef) { return nullptr; }

std::shared_ptr<Executor> make_dnnl_executor(const PlainNetImpl&, const DeployOptions&) {
  TORCH_CHECK(false, "onednn runtime: this build of rmnet has no direct oneDNN path (libdnnl was not found)");
}
#endif

}  // namespace detail
}  // namespace rmnet
