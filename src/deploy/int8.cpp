// The INT8 executor (see rmnet/deploy/int8.h).
#include "rmnet/deploy/int8.h"

#include <chrono>
#include <cstdlib>
#include <functional>
#include <map>
#include <list>
#include <mutex>
#include <optional>
#include <utility>
#include <string>

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>
#include <c10/util/ScopeExit.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include "buffer_cache.h"
#include "executors.h"
#include "int8_shortcuts.h"
#include "onednn_steps.h"  // conv_as_matrix, index_of

namespace rmnet {
namespace {

c10::OperatorHandle onednn_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "");
}

torch::Tensor call(const c10::OperatorHandle& op, std::vector<c10::IValue> args) {
  torch::jit::Stack stack(std::move(args));
  op.callBoxed(&stack);
  return stack.at(0).toTensor();
}

std::vector<int64_t> pair(int64_t v) { return {v, v}; }

/// Drops warnings (the quantized-tensor deprecation notice of the max-pool below, printed once per
/// process otherwise).
struct SilentWarnings : c10::WarningHandler {
  void process(const c10::Warning&) override {}
};

/// Max-pool of u8 codes, channels-last. torch::max_pool2d on a uint8 channels-last tensor fails in
/// LibTorch 2.14 for all but tiny maps (a size check in its channels-last kernel overflows: C*H*W
/// of 16x16x16 is refused); the quantized kernel pools the same codes (max commutes with the
/// monotone code -> value map, so the scale does not matter) and keeps the layout.
torch::Tensor u8_max_pool(const torch::Tensor& x, const LayerSpec& s) {
  SilentWarnings silent;
  c10::WarningUtils::WarningHandlerGuard guard(&silent);
  const auto q = at::_make_per_tensor_quantized_tensor(x, 1.0, 0);
  return at::max_pool2d(q, pair(s.kernel), pair(s.stride), pair(s.padding), pair(1)).int_repr();
}

}  // namespace

bool int8_runtime_available() {
  return c10::Dispatcher::singleton().findSchema({"onednn::qconv2d_pointwise", ""}).has_value() &&
         c10::Dispatcher::singleton().findSchema({"onednn::qconv_prepack", ""}).has_value();
}

namespace {

// One step of the chain. The activation flowing between steps is u8 (channels-last) with a
// per-tensor scale / zero point until the head, float32 from there on.
struct Int8Step {
  enum Kind { QConv, U8Relu, U8Clamp, U8MaxPool, Float, Dequantize, DequantizeMean, ShortcutCodes, AddShortcut } kind = Float;
  LayerSpec spec;
  std::map<std::string, torch::Tensor> tensors;  // Float: the layer's tensors
  // QConv
  torch::Tensor w_scale, w_zp, bias;
  double x_scale = 1, out_scale = 1;
  int64_t x_zp = 0, out_zp = 0;
  bool fused_relu = false, float_out = false;
  // U8Clamp: bounds [1, C, 1, 1] as u8
  torch::Tensor qlo, qhi;
  // Float run ending in a quantization (requant) or not
  bool requant = false;
  size_t first = 0, last = 0;  // plain layers this step belongs to (profile)
  // Dirac shortcuts (int8_shortcuts.h): A keeps its input (save_input); a projection's codes
  // (ShortcutCodes) and its 1x1 qconv (on_aux) work beside the branch; B's float32 output gets the
  // term added and is quantized (AddShortcut, ReLU floor: fused_relu)
  bool save_input = false, on_aux = false;
  std::shared_ptr<const detail::Int8Shortcut> shortcut;
  // B of an identity shortcut whose term is linear in the kept codes (Int8Shortcut::add_factor):
  // the conv adds it itself (a binary post-op on the direct path), no AddShortcut step
  bool adds_shortcut = false;
  // a projection's 1x1 qconv reading the kept block input itself (Int8Shortcut::codes_pass)
  bool reads_kept = false;
  // QConv on a tiny map (small_map_gemm): per input shape [N, H, W] the dense
  // input-to-output matrix prepacked for onednn::qlinear_pointwise (rows (a, b, co), per-row
  // weight scale and bias repeated per output position)
  struct Gemm {
    torch::Tensor packed, w_scale, w_zp, bias;
    int64_t ho = 0, wo = 0;
  };
  bool gemm_ok = false;   // groups 1 and small_map_gemm: a tiny map runs as a GEMM
  std::mutex pack_mutex;  // guards gemms and packs
  std::list<std::pair<std::vector<int64_t>, std::shared_ptr<const Gemm>>> gemms;  // most recently used first
  // QConv: the s8 weights, and per input shape their qconv_prepack for that shape (prepacked for
  // no shape, oneDNN may choose another blocking at run time and reorder the weights on every call
  // with its reference reorder: 2/3 of the RM ResNet-50's time at 224x224)
  torch::Tensor weight_s8;
  std::list<std::pair<std::vector<int64_t>, torch::Tensor>> packs;  // most recently used first
  // QConv on the direct oneDNN path (DeployOptions::onednn_direct): one primitive per input shape
  bool direct_ok = false;
  std::list<std::pair<std::vector<int64_t>, std::shared_ptr<const detail::U8Primitive>>> direct;
  std::map<std::vector<int64_t>, bool> direct_choice;  // big convs: input shape -> the direct path measured faster
};


/// The tiny-map GEMM of a QConv step for input `x` (u8 channels-last), or null where the map is
/// not tiny (H*W*Ho*Wo > 2*k*k, as in the float runtime) or the conv is grouped.
std::shared_ptr<const Int8Step::Gemm> gemm_for(Int8Step& st, const torch::Tensor& x) {
  if (!st.gemm_ok) return nullptr;
  const auto& s = st.spec;
  const int64_t n = x.size(0), h = x.size(2), w = x.size(3);
  const int64_t ho = (h + 2 * s.padding - s.kernel) / s.stride + 1, wo = (w + 2 * s.padding - s.kernel) / s.stride + 1;
  if (ho <= 0 || wo <= 0 || !detail::tiny_map(h, w, ho, wo, s.kernel)) return nullptr;
  const std::vector<int64_t> key = {n, h, w};
  std::lock_guard<std::mutex> lock(st.pack_mutex);
  if (auto* cached = detail::lru_find(st.gemms, key)) return *cached;
  static const auto prepack = onednn_op("onednn::qlinear_prepack");
  auto g = std::make_shared<Int8Step::Gemm>();
  g->ho = ho;
  g->wo = wo;
  const auto t = detail::conv_as_matrix(st.weight_s8, h, w, s.stride, s.padding).contiguous();
  g->packed = call(prepack, {t, std::vector<int64_t>{n, t.size(1)}});
  g->w_scale = st.w_scale.repeat({ho * wo}).contiguous();
  g->w_zp = torch::zeros({t.size(0)}, torch::kLong);
  g->bias = st.bias.repeat({ho * wo}).contiguous();
  detail::lru_put(st.gemms, key, g, 8);
  return g;
}

/// What a step does, for profiles.
std::string step_name(const Int8Step& st, bool as_gemm) {
  const auto& s = st.spec;
  switch (st.kind) {
    case Int8Step::QConv:
      return fmt::format("qconv {}x{} s{} {}->{}{}{}{}{}{}", s.kernel, s.kernel, s.stride, s.in_channels, s.out_channels,
                         s.groups > 1 ? fmt::format(" g{}", s.groups) : "", st.fused_relu ? " + relu" : "",
                         st.float_out ? " -> float32" : "", as_gemm ? " (as one INT8 GEMM)" : "",
                         st.adds_shortcut ? fmt::format(" + the shortcut from layer {} ({} added in the conv)",
                                                        st.shortcut->a, st.shortcut->identity ? "its codes" : "its projection")
                         : st.reads_kept ? fmt::format(" (the shortcut's projection, of the kept input of layer {})", st.shortcut->a)
                         : st.on_aux                ? " (the shortcut's projection)"
                         : st.save_input          ? fmt::format(" (its {} Dirac copies of the input kept as a shortcut)",
                                                                st.shortcut->copies)
                         : st.shortcut && !st.float_out ? " (Dirac copies skipped)"
                                                  : "");
    case Int8Step::U8Relu: return "u8 relu";
    case Int8Step::U8Clamp: return "u8 per-channel clamp";
    case Int8Step::U8MaxPool: return fmt::format("u8 maxpool {}x{} s{}", s.kernel, s.kernel, s.stride);
    case Int8Step::Dequantize: return "dequantize";
    case Int8Step::DequantizeMean: return "global average pool of the u8 codes, dequantized";
    case Int8Step::ShortcutCodes:
      return fmt::format("the shortcut's {} copies of the input of layer {} (stride {}, per-channel tables)",
                         st.shortcut->xs.size(), st.shortcut->a, st.shortcut->stride);
    case Int8Step::AddShortcut:
      return fmt::format("+ the shortcut from layer {} ({}), quantize{}", st.shortcut->a,
                         st.shortcut->identity ? "per-channel tables of its codes" : "projected",
                         st.fused_relu ? " + relu" : "");
    case Int8Step::Float:
      return "float32 " + s.describe() + (st.requant ? " + quantize" : "");
  }
  return "?";
}

/// The qconv weights of a QConv step packed for input `x`'s shape (packed on first use, cached).
torch::Tensor packed_for(Int8Step& st, const torch::Tensor& x) {
  const auto key = x.sizes().vec();
  std::lock_guard<std::mutex> lock(st.pack_mutex);
  if (auto* cached = detail::lru_find(st.packs, key)) return *cached;
  static const auto prepack = onednn_op("onednn::qconv_prepack");
  const auto& s = st.spec;
  auto packed = call(prepack, {st.weight_s8, st.w_scale, st.x_scale, st.x_zp, pair(s.stride), pair(s.padding), pair(1),
                               s.groups, key});
  detail::lru_put(st.packs, key, packed, 4);
  return packed;
}

torch::Tensor packed_for(Int8Step& st, const torch::Tensor& x);

/// A QConv step on LibTorch's operator (onednn::qconv2d_pointwise) with its weights packed for x.
/// (float_out: float32 out, no activation, whatever the step's flags say)
torch::Tensor libtorch_qconv(Int8Step& st, const torch::Tensor& x_in, bool float_out = false) {
  static const auto qconv = onednn_op("onednn::qconv2d_pointwise");
  const auto x = x_in.contiguous(torch::MemoryFormat::ChannelsLast);
  const bool f = float_out || st.float_out;
  return call(qconv, {x, st.x_scale, st.x_zp, packed_for(st, x), st.w_scale, st.w_zp, st.bias, pair(st.spec.stride),
                      pair(st.spec.padding), pair(1), st.spec.groups, f ? 1.0 : st.out_scale,
                      f ? int64_t{0} : st.out_zp, f ? c10::IValue(torch::kFloat) : c10::IValue(),
                      std::string(st.fused_relu && !float_out ? "relu" : "none"), c10::List<std::optional<at::Scalar>>(),
                      std::string("")});
}

/// Whether LibTorch's operator runs QConv `st` faster than the direct primitive `prim` on inputs
/// of `sizes` (random codes; best of 2 after a warm-up each): asked once per big conv (>= 50M MACs
/// a call) and input shape, where oneDNN 2.6's INT8 kernels can lose to LibTorch's oneDNN 3.
bool libtorch_qconv_faster(Int8Step& st, const detail::U8Primitive& prim, const std::vector<int64_t>& sizes) {
  const auto x = torch::randint(0, 256, sizes, torch::kByte).contiguous(torch::MemoryFormat::ChannelsLast);
  const double direct = detail::best_ms([&] { prim.run(x); });
  const double ops = detail::best_ms([&] { libtorch_qconv(st, x); });
  return ops < direct;
}

/// The direct oneDNN primitive of a QConv step for input `x`'s shape (made on first use, cached),
/// or null where the step does not take the direct path (or LibTorch's operator measured faster
/// for this shape: decided once, kept for the executor's life).
std::shared_ptr<const detail::U8Primitive> direct_for(Int8Step& st, const torch::Tensor& x) {
  if (!st.direct_ok) return nullptr;
  // RMNET_INT8_FUSED_ADD=0: a merge conv that adds its shortcut runs as where oneDNN cannot make it
  // (LibTorch's operator to float32, then the shortcut's table or term): a diagnostic switch
  if (st.adds_shortcut) {
    const char* off = std::getenv("RMNET_INT8_FUSED_ADD");
    if (off && std::string(off) == "0") return nullptr;
  }
  const auto key = x.sizes().vec();
  {
    std::lock_guard<std::mutex> lock(st.pack_mutex);
    if (auto* cached = detail::lru_find(st.direct, key)) return *cached;
    if (const auto it = st.direct_choice.find(key); it != st.direct_choice.end() && !it->second) return nullptr;
  }
  const auto& s = st.spec;
  const int64_t ho = (key[2] + 2 * s.padding - s.kernel) / s.stride + 1, wo = (key[3] + 2 * s.padding - s.kernel) / s.stride + 1;
  const int64_t macs = key[0] * ho * wo * s.out_channels * (s.in_channels / s.groups) * s.kernel * s.kernel;
  detail::QConvParams p;
  p.weight_s8 = st.weight_s8;
  p.w_scale = st.w_scale;
  p.bias = st.bias;
  p.x_scale = st.x_scale;
  p.x_zp = st.x_zp;
  p.out_scale = st.out_scale;
  p.out_zp = st.out_zp;
  p.stride = st.spec.stride;
  p.padding = st.spec.padding;
  p.groups = st.spec.groups;
  p.relu = st.fused_relu;
  p.float_out = st.float_out;
  if (st.adds_shortcut && st.shortcut->identity) {
    p.add_factor = st.shortcut->add_factor;
    p.add_zp = st.shortcut->add_zp;
    p.bias = st.bias + st.shortcut->add_bias;  // the constant terms (dead reserves)
  } else if (st.adds_shortcut) {
    p.add_float = true;
  }
  auto prim = detail::make_dnnl_qconv(p, key);
  if (!prim) {  // not expressible on the direct path (a zero scale): LibTorch's operator, for good
    std::lock_guard<std::mutex> lock(st.pack_mutex);
    st.direct_ok = false;
    return nullptr;
  }
  if (macs >= detail::kTimedConvMacs && !st.adds_shortcut) {  // decided once per shape (timed outside the lock)
    bool known = false;
    {
      std::lock_guard<std::mutex> lock(st.pack_mutex);
      known = st.direct_choice.count(key) > 0;  // and true: a false one returned above
    }
    if (!known) {
      const bool faster = libtorch_qconv_faster(st, *prim, key);
      std::lock_guard<std::mutex> lock(st.pack_mutex);
      if (!st.direct_choice.emplace(key, !faster).first->second) return nullptr;  // a concurrent first decision wins
    }
  }
  std::lock_guard<std::mutex> lock(st.pack_mutex);
  if (auto* cached = detail::lru_find(st.direct, key)) return *cached;
  detail::lru_put(st.direct, key, prim, 4);
  return prim;
}

/// The direct oneDNN max-pool of a U8MaxPool step for input `x`'s shape (made on first use,
/// cached), or null where the step does not take the direct path or oneDNN cannot express it.
std::shared_ptr<const detail::U8Primitive> pool_for(Int8Step& st, const torch::Tensor& x) {
  if (!st.direct_ok) return nullptr;
  const auto key = x.sizes().vec();
  std::lock_guard<std::mutex> lock(st.pack_mutex);
  if (auto* cached = detail::lru_find(st.direct, key)) return *cached;
  auto p = detail::make_dnnl_u8_maxpool(st.spec.kernel, st.spec.stride, st.spec.padding, key);
  if (p) detail::lru_put(st.direct, key, p, 4);
  return p;
}

/// A float32 Linear step's weight packed for batch `n` (mkldnn::_reorder_linear_weight, cached in
/// the step's packs): the float head's GEMM through mkldnn::_linear_pointwise, 1.6-2.2x at::linear's
/// speed at batches 1-32 on the reference machine.
torch::Tensor linear_packed_for(Int8Step& st, int64_t n) {
  const std::vector<int64_t> key = {n};
  std::lock_guard<std::mutex> lock(st.pack_mutex);
  if (auto* cached = detail::lru_find(st.packs, key)) return *cached;
  static const auto reorder = onednn_op("mkldnn::_reorder_linear_weight");
  auto packed = call(reorder, {st.tensors.at("weight").to(torch::kFloat).contiguous(), n});
  detail::lru_put(st.packs, key, packed, 4);
  return packed;
}

/// Dirac shortcuts: per conv layer of a block, the block and the conv's place in it (index into its
/// convs; -1 for the merge B).
using ShortcutBlocks = std::map<size_t, std::pair<std::shared_ptr<const detail::Int8Shortcut>, int>>;

/// Builds the INT8 executor's steps for a quantized network.
class Int8PlanBuilder {
 public:
  using Step = Int8Step;
  Int8PlanBuilder(const QuantizedNetImpl& net, bool small_map_gemm, bool direct)
      : net(net), plan(net.plan()), n(net.size()), small_map_gemm(small_map_gemm), direct(direct) {
    qlinear_available = c10::Dispatcher::singleton().findSchema({"onednn::qlinear_pointwise", ""}).has_value() &&
                        c10::Dispatcher::singleton().findSchema({"onednn::qlinear_prepack", ""}).has_value();
  }

  /// The steps of the chain, with the shortcuts of `in_block` (none: every channel computed).
  std::vector<std::shared_ptr<Step>> build(const ShortcutBlocks& in_block) {
    steps_.clear();
    cur_s = net.input_scale();
    cur_zp = net.input_zero_point();
    for (size_t i = 0; i < n; ++i) {
      const size_t i0 = i, before = steps_.size();
      auto mark = c10::make_scope_exit([&] {  // the layers [i0, i] of the steps this iteration made
        for (size_t k = before; k < steps_.size(); ++k) {
          steps_[k]->first = i0;
          steps_[k]->last = i;
        }
      });
      const auto& s = net.spec(i);
      if (i == plan.head) {
        auto st = std::make_shared<Step>();
        st->kind = Step::Dequantize;
        st->x_scale = cur_s;
        st->x_zp = cur_zp;
        steps_.push_back(st);
        if (s.kind == LayerKind::AvgPool) {
          // the head's global average pool on the codes: s * (mean(q) - zp) is the mean of the
          // dequantized values (up to float rounding), without a float32 copy of the whole map
          st->kind = Step::DequantizeMean;
          st->spec = s;
          continue;
        }
      }
      if (i >= plan.head) {
        auto st = std::make_shared<Step>();
        st->kind = Step::Float;
        st->spec = s;
        st->tensors = cpu_tensors(i);
        steps_.push_back(st);
        continue;
      }
      switch (s.kind) {
        case LayerKind::Conv:
          i = add_conv(i, in_block);
          break;
        case LayerKind::ReLU: {
          auto r = std::make_shared<Step>();
          r->kind = Step::U8Relu;
          r->out_zp = cur_zp;
          steps_.push_back(r);
          break;
        }
        case LayerKind::Clamp:
          if (auto c = u8_clamp(net.tensor(i, "min"), net.tensor(i, "max"), cur_s, cur_zp, false)) steps_.push_back(c);
          break;
        case LayerKind::MaxPool: {
          auto m = std::make_shared<Step>();
          m->kind = Step::U8MaxPool;
          m->spec = s;
          m->direct_ok = direct;
          steps_.push_back(m);
          break;
        }
        case LayerKind::PReLU:
        case LayerKind::SE: {
          auto f = std::make_shared<Step>();
          f->kind = Step::Float;  // dequantize, float32 layer, quantize
          f->spec = s;
          f->tensors = cpu_tensors(i);
          f->x_scale = cur_s;
          f->x_zp = cur_zp;
          f->requant = true;
          f->out_scale = net.out_scale(i);
          f->out_zp = net.out_zero_point(i);
          cur_s = f->out_scale;
          cur_zp = f->out_zp;
          steps_.push_back(f);
          break;
        }
        default:
          TORCH_CHECK(false, "INT8 runtime: unexpected layer ", i, " (", s.describe(), ")");
      }
    }
    if (plan.head == n) {  // no head: dequantize the last activation
      auto st = std::make_shared<Step>();
      st->first = st->last = n - 1;
      st->kind = Step::Dequantize;
      st->x_scale = cur_s;
      st->x_zp = cur_zp;
      steps_.push_back(st);
    }
    return std::exchange(steps_, {});
  }

 private:
  std::map<std::string, torch::Tensor> cpu_tensors(size_t i) const {
    auto m = net.layer(i).tensors();
    for (auto& [k, v] : m) v = v.detach().to(torch::kCPU).clone();
    return m;
  }
  /// The u8 clamp of per-channel float bounds [lo, hi] under (scale, zp); nullptr if a no-op.
  static std::shared_ptr<Step> u8_clamp(const torch::Tensor& lo, const torch::Tensor& hi, double s, int64_t zp,
                                        bool after_relu) {
    auto st = std::make_shared<Step>();
    st->kind = Step::U8Clamp;
    st->qlo = quantize_u8(lo.to(torch::kCPU, torch::kFloat), s, zp).view({1, -1, 1, 1});
    st->qhi = quantize_u8(hi.to(torch::kCPU, torch::kFloat), s, zp).view({1, -1, 1, 1});
    const int64_t floor = after_relu ? zp : 0;
    const bool noop = st->qlo.le(floor).all().item<bool>() && st->qhi.eq(255).all().item<bool>();
    return noop ? nullptr : st;
  }
  /// A projection shortcut's 1x1 qconv (float32 out, beside the branch on the aux flow, B's copy-column
  /// weights): of the copies' codes (ShortcutCodes, stride 1), or with `reads_kept` of the kept block
  /// input itself at the block's stride. Its float32 output is divided by `unit` (1: float units; B's
  /// output scale: B's output code units, for B to add as it is).
  std::shared_ptr<Step> projection_step(const std::shared_ptr<const detail::Int8Shortcut>& sc, bool reads_kept,
                                        double unit) const {
    auto p = std::make_shared<Step>();
    p->kind = Step::QConv;
    p->on_aux = true;
    p->reads_kept = reads_kept;
    p->shortcut = sc;
    const auto& w = reads_kept ? sc->kept_weight_s8 : sc->weight_s8;
    const int64_t out = w.size(0);
    p->spec = LayerSpec::conv(w.size(1), out, 1, reads_kept ? sc->stride : 1, 0);
    p->weight_s8 = w;
    p->w_scale = unit == 1.0 ? sc->w_scale : (sc->w_scale.to(torch::kDouble) / unit).to(torch::kFloat).contiguous();
    p->w_zp = torch::zeros({out}, torch::kLong);
    p->bias = reads_kept ? (sc->kept_bias.to(torch::kDouble) / unit).to(torch::kFloat).contiguous()
                         : torch::zeros({out}, torch::kFloat);
    p->x_scale = sc->code_scale;
    p->x_zp = sc->code_zp;
    p->float_out = true;
    p->gemm_ok = small_map_gemm && qlinear_available;
    p->direct_ok = direct;
    return p;
  }

  /// The steps of conv layer i and its activation run (up to the run's quantization point, which
  /// it returns): a QConv with fused ReLU where it can, float32 runs where a PReLU needs them, and in
  /// a Dirac shortcut block the sliced convs and the shortcut's steps.
  size_t add_conv(size_t i, const ShortcutBlocks& in_block) {
    const auto& s = net.spec(i);
    const size_t k = plan.point_of(i);  // last layer of the conv's activation run
    const bool has_prelu = plan.run_has_fallback(i);
    auto st = std::make_shared<Step>();
    st->kind = Step::QConv;
    st->spec = s;
    auto t = cpu_tensors(i);
    st->w_scale = t.at("weight_scale").to(torch::kFloat).contiguous();
    st->w_zp = torch::zeros({s.out_channels}, torch::kLong);
    st->bias = t.at("bias").to(torch::kFloat).contiguous();
    st->x_scale = cur_s;
    st->x_zp = cur_zp;
    st->weight_s8 = t.at("weight").contiguous();  // packed per input shape at the first forward of it
    st->gemm_ok = small_map_gemm && s.groups == 1 && qlinear_available;
    st->direct_ok = direct;
    st->out_scale = net.out_scale(k);
    st->out_zp = net.out_zero_point(k);
    cur_s = st->out_scale;
    cur_zp = st->out_zp;
    // in a Dirac shortcut block: A and the Ms compute their branch rows (and the Ms their branch
    // columns), B its branch columns in float32, the shortcut's term added after it
    std::shared_ptr<const detail::Int8Shortcut> sc;
    torch::Tensor rows;  // the kept rows, where sliced: the run's clamp bounds follow
    int place = 0;
    if (const auto it = in_block.find(i); it != in_block.end()) {
      sc = it->second.first;
      place = it->second.second;
      st->shortcut = sc;
      if (place >= 0) {
        rows = detail::index_of(sc->rows[place]);
        st->weight_s8 = st->weight_s8.index_select(0, rows);
        st->w_scale = st->w_scale.index_select(0, rows).contiguous();
        st->w_zp = torch::zeros({rows.size(0)}, torch::kLong);
        st->bias = st->bias.index_select(0, rows).contiguous();
        st->spec.out_channels = rows.size(0);
        if (s.groups > 1) {  // a grouped M: its kept rows are whole groups, reading whole groups
          const int64_t og = s.out_channels / s.groups, ig = s.in_channels / s.groups;
          st->spec.groups = rows.size(0) / og;
          st->spec.in_channels = st->spec.groups * ig;
        } else if (place > 0) {
          const auto cols = detail::index_of(sc->rows[place - 1]);
          st->weight_s8 = st->weight_s8.index_select(1, cols);
          st->spec.in_channels = cols.size(0);
        }
        st->weight_s8 = st->weight_s8.contiguous();
        st->save_input = place == 0;
      } else {
        const auto cols = detail::index_of(sc->b_cols);
        st->weight_s8 = st->weight_s8.index_select(1, cols).contiguous();
        st->spec.in_channels = cols.size(0);
        st->float_out = true;
      }
    }
    const auto bound = [&](size_t j, const char* name) {
      const auto& t = net.tensor(j, name);
      return rows.defined() ? t.index_select(0, rows) : t;
    };
    // a PReLU run whose kept rows all have slope 0 is a ReLU (the RM MobileNetV2 with ReLU:
    // slope 1 on the copies, 0 on the branch)
    bool float_run = has_prelu;
    if (has_prelu && rows.defined()) {
      bool relu_only = true;
      for (size_t j = i + 1; j <= k; ++j) {
        const auto kj = net.spec(j).kind;
        if (kj == LayerKind::PReLU) {
          relu_only = relu_only && bound(j, "weight").eq(0).all().item<bool>();
        } else if (kj != LayerKind::ReLU) {
          relu_only = false;
        }
      }
      float_run = !relu_only;
    }
    if (float_run) {
      // conv -> float32, the run in float32, then quantize at the point
      st->float_out = true;
      steps_.push_back(st);
      for (size_t j = i + 1; j <= k; ++j) {
        auto f = std::make_shared<Step>();
        f->kind = Step::Float;
        f->spec = net.spec(j);
        f->tensors = cpu_tensors(j);
        if (rows.defined()) {  // the kept rows' slopes / bounds
          for (auto& [name, t] : f->tensors) t = t.index_select(0, rows).contiguous();
          f->spec.out_channels = rows.size(0);
        }
        f->requant = j == k;
        f->out_scale = cur_s;
        f->out_zp = cur_zp;
        steps_.push_back(f);
      }
    } else {
      const auto& first = i + 1 <= k ? net.spec(i + 1) : s;
      if (i + 1 <= k && (first.kind == LayerKind::ReLU || first.kind == LayerKind::PReLU)) st->fused_relu = true;
      if (i + 1 <= k && first.kind == LayerKind::Clamp && bound(i + 1, "min").ge(0).all().item<bool>())
        st->fused_relu = true;
      bool relu_done = st->fused_relu;
      const bool b_adds = sc && place < 0 && (sc->identity ? sc->add_factor.defined() : sc->codes_pass) && direct &&
                          (st->w_scale > 0).all().item<bool>() && st->x_scale > 0 && st->out_scale > 0;
      if (b_adds) {
        if (!sc->identity)  // the projection: a 1x1 qconv of the kept input, in B's output code units
          steps_.push_back(projection_step(sc, true, st->out_scale));
        st->float_out = false;  // B's conv adds the shortcut and quantizes itself (ReLU fused)
        st->adds_shortcut = true;
        st->gemm_ok = false;
        steps_.push_back(st);
      } else if (sc && place < 0) {
        if (!sc->identity) {  // the projection: the copies' codes, then their 1x1 qconv, beside the branch
          auto codes = std::make_shared<Step>();
          codes->kind = Step::ShortcutCodes;
          codes->shortcut = sc;
          steps_.push_back(codes);
          steps_.push_back(projection_step(sc, false, 1.0));
        }
        auto add = std::make_shared<Step>();
        add->kind = Step::AddShortcut;
        add->shortcut = sc;
        add->out_scale = st->out_scale;
        add->out_zp = st->out_zp;
        add->fused_relu = st->fused_relu;
        st->fused_relu = false;  // B's float32 output is the branch alone
        steps_.push_back(st);
        steps_.push_back(add);
      } else {
        steps_.push_back(st);
      }
      for (size_t j = i + 1; j <= k; ++j) {
        const auto& sj = net.spec(j);
        if (sj.kind == LayerKind::ReLU || sj.kind == LayerKind::PReLU) {  // a PReLU here has slope 0
          if (j == i + 1 && relu_done) continue;
          auto r = std::make_shared<Step>();
          r->kind = Step::U8Relu;
          r->out_zp = cur_zp;
          steps_.push_back(r);
          relu_done = true;
        } else {  // Clamp
          if (auto c = u8_clamp(bound(j, "min"), bound(j, "max"), cur_s, cur_zp, relu_done)) steps_.push_back(c);
        }
      }
    }
    return k;
  }

  const QuantizedNetImpl& net;
  const QuantPlan& plan;
  const size_t n;
  const bool small_map_gemm, direct;
  bool qlinear_available = false;
  double cur_s = 1.0;
  int64_t cur_zp = 0;
  std::vector<std::shared_ptr<Step>> steps_;
};

/// The INT8 executor behind a DeployedNet made from a quantized network.
class Int8Executor final : public detail::Executor {
 public:
  using Step = Int8Step;
  Int8Executor(const QuantizedNetImpl& net, bool small_map_gemm, bool direct, bool shortcuts, bool timed, bool tiling,
               bool tiling_timed);
  torch::Tensor run(const torch::Tensor& x, std::vector<StepTiming>* timings) override;
  std::string plan() const override;
  std::vector<std::string> fallbacks() const override { return fallbacks_; }
  int64_t packed_gemms() const override;

 private:
  using Plan = std::vector<std::shared_ptr<Step>>;
  /// The input quantized, steps [0, cut) one image at a time (cut 0: none), the rest on the batch.
  torch::Tensor run_plan(const Plan& steps, const torch::Tensor& x, size_t cut, std::vector<StepTiming>* timings);
  /// Steps [begin, end) on `flow` (u8 before the head), no shortcut live at `begin` or `end`.
  void run_range(const Plan& steps, torch::Tensor& flow, size_t begin, size_t end, std::vector<StepTiming>* timings);
  /// Batch tiling's cut for `steps` on `input` (DeployOptions::batch_tiling; as the float runtime's:
  /// src/deploy/dnnl.cpp, make_schedule), 0 for none.
  size_t choose_cut(const Plan& steps, const torch::Tensor& input);
  std::vector<std::shared_ptr<Step>> steps_;
  // with timed shortcuts: the plan computing every channel, and per input shape whether it measured
  // faster than steps_ (at a few channels and tiny maps the shortcut's extra steps can cost more
  // than the arithmetic they save: the 16-64 channel resnet8 at 28x28)
  std::vector<std::shared_ptr<Step>> every_;
  std::mutex choice_mutex_;
  struct Choice {
    bool every = false;  // every_ measured faster than steps_
    size_t cut = 0;      // batch tiling: steps before it one image at a time
  };
  std::map<std::vector<int64_t>, Choice> choices_;  // per input shape
  bool tiling_ = false, tiling_timed_ = true;
  std::vector<std::string> fallbacks_;
  double in_scale_ = 1.0;
  int64_t in_zp_ = 0;
  bool direct_ = false;  // QConvs through oneDNN's own API (src/deploy/dnnl.cpp)
  bool shortcuts_on_ = false;
  size_t shortcuts_ = 0;  // Dirac shortcuts found (find_int8_shortcuts)
};

Int8Executor::Int8Executor(const QuantizedNetImpl& net, bool small_map_gemm, bool direct, bool shortcuts, bool timed,
                           bool tiling, bool tiling_timed)
    : tiling_(tiling), tiling_timed_(tiling_timed), direct_(direct), shortcuts_on_(shortcuts) {
  in_scale_ = net.input_scale();
  in_zp_ = net.input_zero_point();
  fallbacks_ = net.fallbacks();
  ShortcutBlocks blocks;
  if (shortcuts) {
    for (const auto& sc : detail::find_int8_shortcuts(net)) {
      for (size_t t = 0; t < sc->convs.size(); ++t) blocks[sc->convs[t]] = {sc, static_cast<int>(t)};
      blocks[sc->b] = {sc, -1};
      ++shortcuts_;
    }
  }
  Int8PlanBuilder builder(net, small_map_gemm, direct);
  if (!blocks.empty() && timed) every_ = builder.build(ShortcutBlocks());
  steps_ = builder.build(blocks);
}

int64_t Int8Executor::packed_gemms() const {
  int64_t n = 0;
  for (const auto* plan : {&steps_, &every_})
    for (const auto& st : *plan) {
      std::lock_guard<std::mutex> lock(st->pack_mutex);
      n += static_cast<int64_t>(st->gemms.size());
    }
  return n;
}

std::string Int8Executor::plan() const {
  std::string out = direct_ ? "INT8 convolutions and max-pools through oneDNN " + onednn_direct_version() +
                                  " (primitives made once per input shape)\n"
                            : std::string();
  out += fmt::format("{} INT8 Dirac shortcut{}{}\n", shortcuts_, shortcuts_ == 1 ? "" : "s",
                     shortcuts_on_ ? "" : " (off)");
  if (!every_.empty())
    out += "(timed against computing every channel at the first forward of each input shape; the faster "
           "runs: the steps below, or every channel as convolutions)\n";
  for (const auto& st : steps_)
    out += fmt::format("[{}-{}] {}\n", st->first, st->last, step_name(*st, false));
  return out;
}

torch::Tensor Int8Executor::run(const torch::Tensor& input, std::vector<StepTiming>* timings) {
  const bool tiling = tiling_ && input.size(0) > 1;
  if (every_.empty() && !tiling) return run_plan(steps_, input, 0, timings);
  const auto key = input.sizes().vec();
  std::optional<Choice> choice;
  {
    std::lock_guard<std::mutex> lock(choice_mutex_);
    if (const auto it = choices_.find(key); it != choices_.end()) choice = it->second;
  }
  if (!choice) {  // decided once per shape
    Choice c;
    if (!every_.empty()) {  // best of 2 after a warm-up each
      const double with = detail::best_ms([&] { run_plan(steps_, input, 0, nullptr); });
      const double without = detail::best_ms([&] { run_plan(every_, input, 0, nullptr); });
      c.every = without < with;
    }
    if (tiling) c.cut = choose_cut(c.every ? every_ : steps_, input);
    std::lock_guard<std::mutex> lock(choice_mutex_);
    choice = choices_.emplace(key, c).first->second;
  }
  return run_plan(choice->every ? every_ : steps_, input, choice->cut, timings);
}

size_t Int8Executor::choose_cut(const Plan& steps, const torch::Tensor& input) {
  // cuts: before a step on maps where no shortcut is live (a block input kept, a projection's codes)
  std::vector<size_t> cuts;
  bool live = false;
  for (size_t k = 0; k < steps.size(); ++k) {
    const auto& st = *steps[k];
    if (st.kind == Step::Dequantize || st.kind == Step::DequantizeMean || st.kind == Step::Float) {
      if (k > 0 && !live) cuts.push_back(k);
      break;
    }
    if (k > 0 && !live) cuts.push_back(k);
    if (st.save_input) live = true;
    if (st.kind == Step::AddShortcut || st.adds_shortcut) live = false;
  }
  if (cuts.empty()) return 0;
  if (!tiling_timed_) return cuts.back();
  const auto t_whole = detail::average_profile([&](std::vector<StepTiming>* t) { run_plan(steps, input, 0, t); }, 1, 3);
  const auto candidates = detail::tiling_candidates(cuts, [&](size_t k) {
    if (k == 0) return int64_t{0};
    const auto& o = t_whole[k - 1].output_shape;  // step k's input: u8 codes before the head
    int64_t bytes = 1;
    for (size_t d = 1; d < o.size(); ++d) bytes *= o[d];
    return o.size() == 4 ? bytes : int64_t{0};
  });
  if (candidates.empty()) return 0;
  const size_t end = candidates.back();
  const auto t_tiled = detail::average_profile([&](std::vector<StepTiming>* t) { run_plan(steps, input, end, t); }, 1, 3);
  const auto before = [](const std::vector<StepTiming>& t, size_t cut) {
    double ms = 0;
    for (size_t k = 0; k < cut && k < t.size(); ++k) ms += t[k].ms;
    return ms;
  };
  const size_t cut = detail::best_tiling_cut(
      candidates, [&](size_t c) { return before(t_whole, c); }, [&](size_t c) { return before(t_tiled, c); },
      fmt::format("INT8 batch tiling {}", fmt::join(input.sizes(), "x")));
  if (cut == 0) return 0;
  const double w = detail::best_ms([&] { run_plan(steps, input, 0, nullptr); });
  const double t = detail::best_ms([&] { run_plan(steps, input, cut, nullptr); });
  if (detail::debug_tiling())
    fmt::print(stderr, "INT8 batch tiling {}: cut {} whole network {:.3f} ms, tiled {:.3f} ms\n",
               fmt::join(input.sizes(), "x"), cut, w, t);
  return t < 0.97 * w ? cut : 0;
}

torch::Tensor Int8Executor::run_plan(const Plan& steps, const torch::Tensor& input, size_t cut,
                                     std::vector<StepTiming>* timings) {
  // the input: checked, float32 on the CPU (DeployedNetImpl::check_input)
  auto flow = quantize_u8(input.contiguous(torch::MemoryFormat::ChannelsLast), in_scale_, in_zp_);
  if (cut > 0)
    flow = detail::run_per_image(flow, [&](torch::Tensor& f, std::vector<StepTiming>* t) { run_range(steps, f, 0, cut, t); },
                                 timings);
  run_range(steps, flow, cut, steps.size(), timings);
  return flow;
}

void Int8Executor::run_range(const Plan& steps, torch::Tensor& flow, size_t begin, size_t end,
                             std::vector<StepTiming>* timings) {
  static const auto qlinear = onednn_op("onednn::qlinear_pointwise");
  torch::Tensor kept, aux;  // a shortcut block's input; its projection's codes and term
  for (size_t k = begin; k < end; ++k) {
    const auto& sp = steps[k];
    const auto& st = *sp;
    const auto t0 = timings ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point();
    bool as_gemm = false;
    if (st.save_input) kept = flow;
    if (st.reads_kept) aux = kept;
    torch::Tensor& x = st.on_aux ? aux : flow;  // what the step reads and writes
    switch (st.kind) {
      case Step::ShortcutCodes: aux = detail::int8_shortcut_codes(*st.shortcut, kept); break;
      case Step::AddShortcut:
        x = detail::add_int8_shortcut(*st.shortcut, x, st.shortcut->identity ? kept : aux, st.out_scale, st.out_zp,
                                      st.fused_relu);
        kept = aux = torch::Tensor();
        break;
      case Step::QConv:
        if (st.adds_shortcut) {
          if (const auto p = direct_for(*sp, x)) {
            x = p->run_add(x, st.shortcut->identity ? kept : aux);
          } else {  // oneDNN could not make the fused conv: B in float32, then the shortcut's table / term
            const auto& sc = *st.shortcut;
            x = detail::add_int8_shortcut(sc, libtorch_qconv(*sp, x, true), sc.identity ? kept : aux * st.out_scale,
                                          st.out_scale, st.out_zp, st.fused_relu);
          }
          kept = aux = torch::Tensor();
          break;
        }
        if (auto g = gemm_for(*sp, x)) {
          as_gemm = true;  // the whole map as one row per image: [N, H*W*Cin] x T^T
          const int64_t n = x.size(0);
          const auto rows = x.contiguous(torch::MemoryFormat::ChannelsLast).permute({0, 2, 3, 1}).reshape({n, -1});
          x = call(qlinear, {rows, st.x_scale, st.x_zp, g->packed, g->w_scale, g->w_zp, g->bias,
                             st.float_out ? 1.0 : st.out_scale, st.float_out ? int64_t{0} : st.out_zp,
                             st.float_out ? c10::IValue(torch::kFloat) : c10::IValue(),
                             std::string(st.fused_relu ? "relu" : "none"), c10::List<std::optional<at::Scalar>>(),
                             std::string("")})
                  .view({n, g->ho, g->wo, st.spec.out_channels})
                  .permute({0, 3, 1, 2});  // channels-last [N, Cout, Ho, Wo], no copy
          break;
        }
        if (auto p = direct_for(*sp, x)) {
          x = p->run(x);
          break;
        }
        x = libtorch_qconv(*sp, x);
        break;
      case Step::U8Relu: x = torch::clamp_min(x, st.out_zp); break;
      case Step::U8Clamp: x = at::clamp(x, st.qlo, st.qhi); break;  // one pass (minimum(maximum) took two)
      case Step::U8MaxPool:
        if (auto p = pool_for(*sp, x)) {
          x = p->run(x);
        } else {
          x = u8_max_pool(x, st.spec);
        }
        break;
      case Step::Dequantize: x = dequantize_u8(x, st.x_scale, st.x_zp); break;
      case Step::DequantizeMean:
        {  // the map as [N, H*W, C] rows (channels-last: no copy), summed over the rows
          const int64_t n = x.size(0), c = x.size(1), hw = x.size(2) * x.size(3);
          x = x.contiguous(torch::MemoryFormat::ChannelsLast).permute({0, 2, 3, 1}).reshape({n, hw, c});
          x = at::sum(x, {1}, false, torch::kFloat)
                  .div_(static_cast<double>(hw))
                  .sub_(static_cast<double>(st.x_zp))
                  .mul_(st.x_scale)
                  .view({n, c, 1, 1});
        }
        break;
      case Step::Float:
        if (x.scalar_type() == torch::kByte) x = dequantize_u8(x, st.x_scale, st.x_zp);
        // a big Linear on LibTorch's packed oneDNN GEMM; a small one (the Fashion-MNIST nets' 64x10)
        // through at::linear, whose call costs 6 us against the packed operator's 22 (batch 32)
        if (st.spec.kind == LayerKind::Linear && x.dim() == 2 && x.scalar_type() == torch::kFloat &&
            st.spec.in_channels * st.spec.out_channels >= (int64_t{1} << 17)) {
          static const auto linear = onednn_op("mkldnn::_linear_pointwise");
          const auto b = st.tensors.find("bias");
          x = call(linear, {x.contiguous(), linear_packed_for(*sp, x.size(0)),
                            b != st.tensors.end() ? c10::IValue(b->second.to(torch::kFloat)) : c10::IValue(),
                            std::string("none"), c10::List<std::optional<at::Scalar>>(), c10::IValue()});
        } else {
          x = quant_float_layer(st.spec, st.tensors, x);
        }
        if (st.requant) x = quantize_u8(x, st.out_scale, st.out_zp).contiguous(torch::MemoryFormat::ChannelsLast);
        break;
    }
    if (timings) {
      const torch::Tensor& x = st.kind == Step::ShortcutCodes ? aux : st.on_aux ? aux : flow;
      const int64_t macs = st.kind == Step::QConv
                               ? x.numel() * (st.spec.in_channels / st.spec.groups) * st.spec.kernel * st.spec.kernel
                               : 0;
      timings->push_back(detail::step_timing(step_name(st, as_gemm), st.first, st.last, t0, macs, x));
    }
  }
}

}  // namespace

namespace detail {
std::shared_ptr<Executor> make_int8_executor(const QuantizedNetImpl& net, const DeployOptions& options) {
  TORCH_CHECK(int8_runtime_available(),
              "the INT8 runtime needs LibTorch's oneDNN INT8 operators (onednn::qconv2d_pointwise), which this build "
              "of LibTorch does not register");
  TORCH_CHECK(options.device().is_cpu(), "the INT8 runtime runs on the CPU (asked for ", options.device(), ")");
  return std::make_shared<Int8Executor>(net, options.small_map_gemm(),
                                        options.onednn_direct() && onednn_direct_available(), options.dirac_shortcuts(),
                                        options.dirac_shortcuts_timed(), options.batch_tiling(),
                                        options.batch_tiling_timed());
}
}  // namespace detail

Int8NetImpl::Int8NetImpl(const QuantizedNetImpl& net, const DeployOptions& options) : DeployedNetImpl(net, options) {}

Int8NetImpl::Int8NetImpl(const QuantizedNetImpl& net, int64_t buffer_cache_mb, bool small_map_gemm)
    : DeployedNetImpl(net, DeployOptions().buffer_cache_mb(buffer_cache_mb).small_map_gemm(small_map_gemm)) {}

}  // namespace rmnet
