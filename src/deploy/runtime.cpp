#include "rmnet/deploy/runtime.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <tuple>

#include <ATen/Config.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include "buffer_cache.h"
#include "executors.h"
#include "rmnet/deploy/int8.h"
#include "rmnet/quant/qnet.h"

namespace rmnet {

Runtime runtime_from_string(const std::string& s) {
  if (s == "auto") return Runtime::Auto;
  if (s == "eager") return Runtime::Eager;
  if (s == "torchscript" || s == "deploy") return Runtime::TorchScript;
  if (s == "onednn") return Runtime::OneDNN;
  if (s == "int8") return Runtime::Int8;
  if (s == "cudagraph") return Runtime::CudaGraph;
  TORCH_CHECK(false, "unknown runtime '", s, "' (expected auto, onednn, torchscript, cudagraph, eager or int8)");
}

std::string to_string(Runtime r) {
  switch (r) {
    case Runtime::Auto: return "auto";
    case Runtime::Eager: return "eager";
    case Runtime::TorchScript: return "torchscript";
    case Runtime::OneDNN: return "onednn";
    case Runtime::Int8: return "int8";
    case Runtime::CudaGraph: return "cudagraph";
  }
  return "?";
}

std::vector<std::string> runtime_names() {
  return {"auto", "onednn", "torchscript", "cudagraph", "eager", "int8", "deploy"};
}

bool onednn_available(const DeployOptions& o, std::string* why) {
  auto no = [&](std::string reason) {
    if (why) *why = std::move(reason);
    return false;
  };
  if (!o.device().is_cpu()) return no("the onednn runtime runs on the CPU only (device " + o.device().str() + ")");
  if (o.dtype() != torch::kFloat && o.dtype() != torch::kBFloat16)
    return no(std::string("the onednn runtime computes in float32 or bfloat16 (dtype ") + c10::toString(o.dtype()) +
              ")");
  if (!AT_MKLDNN_ENABLED()) return no("this LibTorch was built without oneDNN");
  if (o.dtype() == torch::kBFloat16 && !at::globalContext().hasMKLDNN())
    return no("oneDNN is not available at run time");
  return true;
}

DeployedNetImpl::DeployedNetImpl(const PlainNetImpl& net, DeployOptions options)
    : ModelImpl(net.options()), deploy_(std::move(options)) {
  init_options();
  metadata_ = net.metadata();
  source_params_ = count_parameters(net);
  std::string why;
  switch (deploy_.runtime()) {
    case Runtime::Auto:
      runtime_ = onednn_available(deploy_) ? Runtime::OneDNN : Runtime::TorchScript;
      break;
    case Runtime::OneDNN:
      TORCH_CHECK(onednn_available(deploy_, &why), "deploy: ", why,
                  "; use the torchscript runtime for this device or dtype");
      runtime_ = Runtime::OneDNN;
      break;
    case Runtime::TorchScript:
      runtime_ = Runtime::TorchScript;
      break;
    case Runtime::CudaGraph:
      TORCH_CHECK(cuda_graph_available(deploy_, &why), "deploy: ", why);
      runtime_ = Runtime::CudaGraph;
      break;
    case Runtime::Eager:
      TORCH_CHECK(false, "deploy: the eager runtime is the model itself, not a deployed network (use prepare_inference)");
    case Runtime::Int8:
      TORCH_CHECK(false, "deploy: the int8 runtime runs quantized networks (quantize this float network first; "
                         "prepare_inference gives a quantized network the int8 runtime)");
  }
  exec_ = runtime_ == Runtime::OneDNN
              ? (deploy_.onednn_direct() && onednn_direct_available() &&
                         (deploy_.dtype() == torch::kFloat || detail::dnnl_native_bf16())
                     ? detail::make_dnnl_executor(net, deploy_)
                     : detail::make_onednn_executor(net, deploy_))
          : runtime_ == Runtime::CudaGraph ? detail::make_cuda_graph_executor(net, deploy_)
                                           : detail::make_torchscript_executor(net, deploy_);
  make_buffer_cache();
}

DeployedNetImpl::DeployedNetImpl(const QuantizedNetImpl& net, DeployOptions options)
    : ModelImpl(net.options()), deploy_(std::move(options)) {
  TORCH_CHECK(deploy_.runtime() == Runtime::Auto || deploy_.runtime() == Runtime::Int8, "deploy: '",
              net.options().arch(), "' is a quantized network: it runs on the int8 runtime, not ",
              to_string(deploy_.runtime()));
  deploy_.dtype(torch::kFloat).runtime(Runtime::Int8);  // float32 images, quantized by the executor
  init_options();
  metadata_ = net.metadata();
  source_params_ = count_parameters(net);
  runtime_ = Runtime::Int8;
  exec_ = detail::make_int8_executor(net, deploy_);
  make_buffer_cache();
}

void DeployedNetImpl::make_buffer_cache() {
  if (deploy_.device().is_cpu() && deploy_.buffer_cache_mb() > 0)
    buffers_ = detail::BufferCache::make(static_cast<size_t>(deploy_.buffer_cache_mb()) << 20);
}

void DeployedNetImpl::init_options() {
  const auto dt = deploy_.dtype();
  TORCH_CHECK(dt == torch::kFloat || dt == torch::kBFloat16 || dt == torch::kHalf || dt == torch::kDouble,
              "deploy: unsupported dtype ", dt, " (expected float32, bfloat16, float16 or float64)");
  TORCH_CHECK(deploy_.packed_shapes() >= 1, "deploy: packed_shapes must be >= 1 (got ", deploy_.packed_shapes(), ")");
  TORCH_CHECK(deploy_.buffer_cache_mb() >= 0, "deploy: buffer_cache_mb must be >= 0 (got ", deploy_.buffer_cache_mb(),
              ")");
}

std::shared_ptr<ModelImpl> DeployedNetImpl::make_like() const {
  TORCH_CHECK(false, "a deployed network (runtime ", to_string(runtime_), ") cannot be cloned: its weights are the ",
              "executor's constants; deploy its source network again");
}

BufferCacheStats DeployedNetImpl::buffer_cache_stats() const { return buffers_ ? buffers_->stats() : BufferCacheStats{}; }

torch::Tensor DeployedNetImpl::check_input(const torch::Tensor& x) const {
  const int64_t c = options().in_channels();
  TORCH_CHECK(x.defined(), "deployed network: no input (expected a float tensor [N, ", c, ", H, W])");
  TORCH_CHECK(x.dim() == 4, "deployed network: expected an input of shape [N, ", c, ", H, W], got ", x.dim(),
              "-d input ", x.sizes());
  TORCH_CHECK(x.size(1) == c, "deployed network: expected an input of shape [N, ", c, ", H, W] (", c,
              " channels), got ", x.sizes());
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), "deployed network: expected a floating-point input [N, ", c,
              ", H, W], got dtype ", x.scalar_type(), " (convert images to float and normalise them first)");
  TORCH_CHECK(x.size(0) > 0 && x.size(2) > 0 && x.size(3) > 0, "deployed network: empty input ", x.sizes());
  return x.to(deploy_.device(), deploy_.dtype());
}

torch::Tensor DeployedNetImpl::forward(torch::Tensor x) {
  torch::NoGradGuard no_grad;
  detail::BufferCacheScope buffers(buffers_.get());  // this forward's activations reuse the last one's
  auto y = exec_->run(check_input(x), nullptr);
  return y.scalar_type() == torch::kDouble ? y : y.to(torch::kFloat);
}

torch::jit::Module& DeployedNetImpl::module() {
  auto* m = detail::torchscript_module(*exec_);
  TORCH_CHECK(m, "DeployedNet::module(): this network runs on the ", to_string(runtime_),
              " runtime, which has no TorchScript module (deploy it with runtime torchscript)");
  return *m;
}

std::string DeployedNetImpl::graph() const { return exec_->plan(); }

std::vector<StepTiming> DeployedNetImpl::profile(const torch::Tensor& x, int64_t warmup, int64_t iters) {
  torch::NoGradGuard no_grad;
  detail::BufferCacheScope buffers(buffers_.get());
  auto in = check_input(x);
  return detail::average_profile([&](std::vector<StepTiming>* t) { exec_->run(in, t); }, warmup, iters);
}

namespace detail {

std::vector<StepTiming> average_profile(const std::function<void(std::vector<StepTiming>*)>& run, int64_t warmup,
                                        int64_t iters) {
  TORCH_CHECK(iters > 0, "profile: iters must be positive (got ", iters, ")");
  TORCH_CHECK(warmup >= 0, "profile: warmup must be >= 0 (got ", warmup, ")");
  for (int64_t i = 0; i < warmup; ++i) run(nullptr);
  std::vector<StepTiming> sum;
  for (int64_t i = 0; i < iters; ++i) {
    std::vector<StepTiming> t;
    run(&t);
    if (sum.empty()) {
      sum = std::move(t);
    } else {
      TORCH_INTERNAL_ASSERT(t.size() == sum.size());
      for (size_t k = 0; k < t.size(); ++k) sum[k].ms += t[k].ms;
    }
  }
  for (auto& s : sum) s.ms /= static_cast<double>(iters);
  return sum;
}

torch::Tensor run_per_image(const torch::Tensor& x,
                            const std::function<void(torch::Tensor&, std::vector<StepTiming>*)>& run,
                            std::vector<StepTiming>* timings) {
  const int64_t n = x.size(0);
  torch::Tensor out;
  std::vector<StepTiming> sum, one;
  for (int64_t i = 0; i < n; ++i) {
    torch::Tensor y = x.narrow(0, i, 1);  // channels-last: one image after another, a view
    one.clear();
    run(y, timings ? &one : nullptr);
    if (!out.defined())
      out = at::empty({n, y.size(1), y.size(2), y.size(3)}, y.options().memory_format(torch::MemoryFormat::ChannelsLast));
    out.narrow(0, i, 1).copy_(y);
    if (!timings) continue;
    if (sum.empty()) {
      sum = std::move(one);
    } else {
      for (size_t k = 0; k < sum.size(); ++k) {
        sum[k].ms += one[k].ms;
        sum[k].macs += one[k].macs;
      }
    }
  }
  for (auto& t : sum) {
    t.name += " (the batch 1 image at a time)";
    if (!t.output_shape.empty()) t.output_shape[0] = n;
    timings->push_back(std::move(t));
  }
  return out;
}

std::vector<size_t> tiling_candidates(const std::vector<size_t>& cuts, const std::function<int64_t(size_t)>& input_bytes) {
  if (cuts.empty()) return {};
  size_t last_big = 0;
  bool any_big = false;
  for (size_t k = 0; k < cuts.back(); ++k)
    if (input_bytes(k) >= kTileBytes) std::tie(last_big, any_big) = std::make_pair(k, true);
  std::vector<size_t> candidates;
  if (!any_big) return candidates;
  for (const size_t c : cuts) {
    candidates.push_back(c);
    if (c > last_big) break;
  }
  return candidates;
}

size_t best_tiling_cut(const std::vector<size_t>& candidates, const std::function<double(size_t)>& whole_ms,
                       const std::function<double(size_t)>& tiled_ms, const std::string& what) {
  double best = 0;
  size_t cut = 0;
  for (const size_t c : candidates) {
    const double w = whole_ms(c), t = tiled_ms(c);
    if (w - t > best) std::tie(best, cut) = std::make_pair(w - t, c);
    if (debug_tiling()) fmt::print(stderr, "{}: cut {} whole {:.3f} ms tiled {:.3f} ms\n", what, c, w, t);
  }
  return cut;
}

StepTiming step_timing(std::string name, size_t first, size_t last, std::chrono::steady_clock::time_point t0,
                       int64_t macs, const torch::Tensor& out) {
  StepTiming t;
  t.name = std::move(name);
  t.first_layer = first;
  t.last_layer = last;
  t.ms = 1e3 * std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  t.macs = macs;
  t.output_shape = out.sizes().vec();
  return t;
}

}  // namespace detail

DeployedNet deploy(const PlainNetImpl& net, const DeployOptions& options) { return DeployedNet(net, options); }

DeployedNet deploy(const QuantizedNetImpl& net, const DeployOptions& options) {
  return DeployedNet(std::make_shared<DeployedNetImpl>(net, options));
}

DeployedNetImpl* as_deployed(ModelImpl& prepared) { return dynamic_cast<DeployedNetImpl*>(&prepared); }
const DeployedNetImpl* as_deployed(const ModelImpl& prepared) { return dynamic_cast<const DeployedNetImpl*>(&prepared); }

ModelPtr prepare_inference(const ModelPtr& model, Runtime runtime, const DeployOptions& options) {
  TORCH_CHECK(model, "prepare_inference: no model");
  if (as_deployed(*model)) return model;  // already prepared
  if (auto* q = dynamic_cast<QuantizedNetImpl*>(model.get())) {  // INT8 (deploy/int8.h)
    TORCH_CHECK(runtime == Runtime::Auto || runtime == Runtime::Int8 || runtime == Runtime::Eager, "'",
                model->options().arch(), "' is a quantized network: run it with the int8 runtime (or eager, its "
                "float reference), not ", to_string(runtime));
    if (runtime == Runtime::Eager) {
      model->eval();
      return model;
    }
    auto o = options;
    o.runtime(Runtime::Int8);
    return std::make_shared<Int8NetImpl>(*q, o);
  }
  TORCH_CHECK(runtime != Runtime::Int8, "the int8 runtime runs quantized networks only; quantize '",
              model->options().arch(), "' first (rmnet quantize)");
  auto* plain = dynamic_cast<PlainNetImpl*>(model.get());
  if (runtime == Runtime::OneDNN || runtime == Runtime::TorchScript || runtime == Runtime::CudaGraph)
    TORCH_CHECK(plain, "the ", to_string(runtime), " runtime runs plain networks only; '", model->options().arch(),
                "' is a residual model (convert it first, or use the eager runtime)");
  if (plain && runtime != Runtime::Eager) {
    auto o = options;
    o.runtime(runtime);
    return deploy(*plain, o).ptr();
  }
  model->to(options.device());
  model->eval();
  return model;
}

std::string runtime_name(const ModelImpl& prepared) {
  if (const auto* d = as_deployed(prepared)) return to_string(d->runtime());
  return "eager";
}

}  // namespace rmnet
