#include "rmnet/bench/bench.h"

#include <algorithm>
#include <chrono>
#include <fstream>

#include <ATen/autocast_mode.h>
#include <c10/core/CachingDeviceAllocator.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/cuda.h>
#include <torch/torch.h>
#include <torch/version.h>

#include "rmnet/convert/verify.h"
#include "rmnet/models/plain.h"
#include "rmnet/models/profile.h"

namespace rmnet {
namespace {

/// Autocast on one device type for the guard's lifetime (LibTorch has no RAII form).
class AutocastGuard {
 public:
  AutocastGuard(at::DeviceType type, torch::ScalarType dtype, bool enable) : type_(type), enable_(enable) {
    if (!enable_) return;
    prev_enabled_ = at::autocast::is_autocast_enabled(type_);
    prev_dtype_ = at::autocast::get_autocast_dtype(type_);
    at::autocast::set_autocast_enabled(type_, true);
    at::autocast::set_autocast_dtype(type_, dtype);
    at::autocast::increment_nesting();
  }
  ~AutocastGuard() {
    if (!enable_) return;
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_autocast_enabled(type_, prev_enabled_);
    at::autocast::set_autocast_dtype(type_, prev_dtype_);
  }

 private:
  at::DeviceType type_;
  bool enable_;
  bool prev_enabled_ = false;
  torch::ScalarType prev_dtype_ = torch::kFloat;
};

void sync(const torch::Device& d) {
  if (d.is_cuda()) torch::cuda::synchronize(d.has_index() ? d.index() : -1);
}

/// Linux: the process's peak resident set in bytes (VmHWM), 0 if unknown.
int64_t peak_rss() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
  return 0;
}

void reset_peak_rss() {
  std::ofstream f("/proc/self/clear_refs");
  if (f) f << "5";  // resets VmHWM to the current RSS (Linux >= 4.0); harmless where refused
}

double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const double pos = q * static_cast<double>(v.size() - 1);
  const auto lo = static_cast<size_t>(pos);
  const auto hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (pos - static_cast<double>(lo));
}

std::string dtype_name(torch::ScalarType t) {
  switch (t) {
    case torch::kFloat: return "fp32";
    case torch::kBFloat16: return "bf16";
    case torch::kHalf: return "fp16";
    case torch::kDouble: return "fp64";
    default: return c10::toString(t);
  }
}

std::string cpu_name() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("model name", 0) == 0) {
      auto p = line.find(':');
      return p == std::string::npos ? line : line.substr(p + 2);
    }
  return "unknown";
}

}  // namespace

int64_t bench_input_size(const ModelImpl& model) { return default_input_size(model) <= 32 ? 32 : 224; }

BenchResult benchmark(const ModelPtr& model, const std::string& name, const BenchOptions& o,
                      const BenchProgress& progress) {
  TORCH_CHECK(model, "benchmark: no model");
  TORCH_CHECK(o.batch() > 0, "benchmark: batch must be positive (got ", o.batch(), ")");
  TORCH_CHECK(o.iters() > 0, "benchmark: iters must be positive (got ", o.iters(), ")");
  TORCH_CHECK(o.warmup() >= 0, "benchmark: warmup must be >= 0 (got ", o.warmup(), ")");
  auto dt = o.dtype();
  TORCH_CHECK(dt == torch::kFloat || dt == torch::kBFloat16 || dt == torch::kHalf,
              "benchmark: dtype must be fp32, bf16 or fp16 (got ", dt, ")");
  if (o.device().is_cuda()) TORCH_CHECK(torch::cuda::is_available(), "benchmark: device cuda, but CUDA is not available");

  BenchResult r;
  r.input_size = o.input_size() > 0 ? o.input_size() : bench_input_size(*model);
  if (o.auto_precision()) {
    r.precision = choose_precision(
        model, [&] { return synthetic_check_images(*model, r.input_size, o.check_images()).to(o.device()); },
        o.deploy());
    dt = r.precision->dtype;
  }
  r.name = name;
  r.arch = model->options().arch();
  r.family = model->family();
  r.device = o.device().str();
  r.dtype = dtype_name(dt);
  r.batch = o.batch();
  r.warmup = o.warmup();
  r.iters = o.iters();
  r.threads = at::get_num_threads();
  const int64_t channels = model->options().in_channels();
  {
    model->to(torch::kCPU);
    auto cost = profile_model(*model, channels, r.input_size);
    r.params = cost.params;
    r.flops = cost.flops;
  }

  auto runner = prepare_inference(model, o.runtime(), DeployOptions(o.deploy()).dtype(dt));
  auto* deployed_net = as_deployed(*runner);
  const bool deployed = deployed_net != nullptr;
  r.runtime = runtime_name(*runner);
  if (!deployed && o.channels_last()) {
    torch::NoGradGuard g;
    for (auto& p : runner->parameters())
      if (p.dim() == 4) p.set_data(p.contiguous(torch::MemoryFormat::ChannelsLast));
  }
  runner->eval();

  auto x = torch::randn({o.batch(), channels, r.input_size, r.input_size}, torch::TensorOptions().device(o.device()));
  if (o.channels_last()) x = x.contiguous(torch::MemoryFormat::ChannelsLast);
  const bool autocast = !deployed && dt != torch::kFloat;
  c10::DeviceAllocator* cuda_alloc = nullptr;
  if (o.device().is_cuda()) {
    cuda_alloc = c10::getDeviceAllocator(c10::DeviceType::CUDA);
    sync(o.device());
    cuda_alloc->resetPeakStats(o.device().has_index() ? o.device().index() : 0);
  } else {
    reset_peak_rss();
  }

  std::vector<double> ms;
  double total = 0.0;
  {
    c10::InferenceMode inference;
    AutocastGuard ac(o.device().type(), dt, autocast);
    for (int64_t i = 0; i < o.warmup(); ++i) {
      runner->forward(x);
      if (progress) progress("warmup", i + 1, o.warmup());
    }
    sync(o.device());
    for (int64_t i = 0; i < o.iters(); ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      auto y = runner->forward(x);
      sync(o.device());
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      TORCH_CHECK(y.size(0) == o.batch(), "benchmark: '", name, "' returned ", y.size(0), " rows for a batch of ",
                  o.batch());
      ms.push_back(1e3 * s);
      total += s;
      if (progress) progress("timed", i + 1, o.iters());
    }
  }
  r.images_per_second = static_cast<double>(o.batch() * o.iters()) / std::max(total, 1e-12);
  r.latency_p50_ms = percentile(ms, 0.5);
  r.latency_p90_ms = percentile(ms, 0.9);
  r.latency_mean_ms = 1e3 * total / static_cast<double>(o.iters());
  r.gflops_per_second = static_cast<double>(r.flops) * r.images_per_second / 1e9;
  if (o.profile() && deployed_net) r.steps = deployed_net->profile(x, 1, std::max<int64_t>(o.iters() / 2, 1));
  if (cuda_alloc) {
    const auto stats = cuda_alloc->getDeviceStats(o.device().has_index() ? o.device().index() : 0);
    r.peak_memory_bytes = stats.allocated_bytes[0].peak;  // StatType::AGGREGATE
    r.peak_memory_kind = "cuda_allocated";
  } else {
    r.peak_memory_bytes = peak_rss();
    r.peak_memory_kind = "cpu_rss";
  }
  return r;
}

std::string bench_json(const std::vector<BenchResult>& results, const BenchOptions& o) {
  nlohmann::json j;
  j["format"] = "rmnet-bench";
  j["version"] = 1;
  j["options"] = {{"batch", o.batch()},      {"input_size", o.input_size()}, {"warmup", o.warmup()},
                  {"iters", o.iters()},      {"device", o.device().str()},   {"dtype", o.auto_precision() ? "auto" : dtype_name(o.dtype())},
                  {"channels_last", o.channels_last()}, {"runtime", to_string(o.runtime())},
                  {"shortcuts", !o.deploy().dirac_shortcuts() ? "off" : o.deploy().dirac_shortcuts_timed() ? "auto" : "on"}};
  j["machine"] = {{"cpu", cpu_name()},
                  {"threads", at::get_num_threads()},
                  {"libtorch", TORCH_VERSION},
                  {"cuda_available", torch::cuda::is_available()}};
  j["models"] = nlohmann::json::array();
  for (const auto& r : results) {
    j["models"].push_back({{"name", r.name},
                           {"arch", r.arch},
                           {"family", r.family},
                           {"runtime", r.runtime},
                           {"device", r.device},
                           {"dtype", r.dtype},
                           {"batch", r.batch},
                           {"input_size", r.input_size},
                           {"warmup", r.warmup},
                           {"iters", r.iters},
                           {"threads", r.threads},
                           {"images_per_second", r.images_per_second},
                           {"ratio_to_first", results.front().images_per_second > 0
                                                  ? r.images_per_second / results.front().images_per_second
                                                  : 0.0},
                           {"latency_p50_ms", r.latency_p50_ms},
                           {"latency_p90_ms", r.latency_p90_ms},
                           {"latency_mean_ms", r.latency_mean_ms},
                           {"params", r.params},
                           {"flops", r.flops},
                           {"flops_unit", "MACs per image"},
                           {"gflops_per_second", r.gflops_per_second},
                           {"peak_memory_bytes", r.peak_memory_bytes},
                           {"peak_memory_kind", r.peak_memory_kind}});
    if (r.precision) j["models"].back()["dtype_choice"] = nlohmann::json::parse(r.precision->to_json());
    if (!r.steps.empty()) {
      auto steps = nlohmann::json::array();
      for (const auto& t : r.steps)
        steps.push_back({{"name", t.name},
                         {"layers", {t.first_layer, t.last_layer}},
                         {"ms", t.ms},
                         {"macs", t.macs},
                         {"output_shape", t.output_shape}});
      j["models"].back()["steps"] = steps;
    }
  }
  return j.dump(2) + "\n";
}

std::string bench_table(const std::vector<BenchResult>& results) {
  std::string s = fmt::format("{:<28} {:>7} {:>7} {:>11} {:>7} {:>9} {:>9} {:>9} {:>10} {:>8} {:>9}\n", "model",
                              "runtime", "size", "images/s", "ratio", "p50 ms", "p90 ms", "params", "MACs/img",
                              "GMAC/s", "peak MB");
  for (const auto& r : results) {
    const double ratio = results.front().images_per_second > 0 ? r.images_per_second / results.front().images_per_second : 0.0;
    std::string name = r.name.size() > 28 ? "..." + r.name.substr(r.name.size() - 25) : r.name;
    s += fmt::format("{:<28} {:>7} {:>7} {:>11.1f} {:>6.2f}x {:>9.2f} {:>9.2f} {:>9} {:>10} {:>8.1f} {:>9.0f}\n", name,
                     r.runtime, fmt::format("{}x{}", r.input_size, r.input_size), r.images_per_second, ratio,
                     r.latency_p50_ms, r.latency_p90_ms, format_count(static_cast<double>(r.params), 2),
                     format_count(static_cast<double>(r.flops), 2), r.gflops_per_second,
                     static_cast<double>(r.peak_memory_bytes) / (1024.0 * 1024.0));
  }
  return s;
}

double measure_conv_peak(torch::ScalarType dtype) {
  double best = 0.0;
  for (int64_t c : {64, 128, 256}) {
    PlainNet net(std::vector<LayerSpec>{LayerSpec::conv(c, c, 3, 1, 1), LayerSpec::relu()}, ModelOptions("plain").in_channels(c));
    auto d = deploy(*net, DeployOptions().dtype(dtype).runtime(Runtime::OneDNN));
    auto x = torch::randn({32, c, 16, 16}).contiguous(torch::MemoryFormat::ChannelsLast).to(dtype);
    const double macs = 32.0 * 16 * 16 * c * c * 9;
    torch::NoGradGuard g;
    for (int i = 0; i < 2; ++i) d->forward(x);
    const int iters = c == 256 ? 5 : 10;
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < iters; ++i) d->forward(x);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, macs * iters / s / 1e9);
  }
  return best;
}

std::string profile_table(const BenchResult& r, double peak) {
  double total = 0.0;
  for (const auto& t : r.steps) total += t.ms;
  std::string s = fmt::format("{:>9} {:<52} {:>9} {:>6} {:>10} {:>8}{}\n", "layers", "step", "ms", "share", "MMACs",
                              "GMAC/s", peak > 0 ? "  of peak" : "");
  for (const auto& t : r.steps) {
    const double gmacs = t.ms > 0 ? static_cast<double>(t.macs) / (t.ms * 1e6) : 0.0;
    std::string name = t.name.size() > 52 ? t.name.substr(0, 49) + "..." : t.name;
    s += fmt::format("{:>9} {:<52} {:>9.3f} {:>5.1f}% {:>10.1f} {:>8.1f}{}\n",
                     t.first_layer == t.last_layer ? fmt::format("{}", t.first_layer)
                                                   : fmt::format("{}-{}", t.first_layer, t.last_layer),
                     name, t.ms, total > 0 ? 100.0 * t.ms / total : 0.0, static_cast<double>(t.macs) / 1e6,
                     t.macs > 0 ? gmacs : 0.0,
                     peak > 0 && t.macs > 0 ? fmt::format("  {:>6.1f}%", 100.0 * gmacs / peak) : "");
  }
  int64_t macs = 0;
  for (const auto& t : r.steps) macs += t.macs;
  s += fmt::format("{:>9} {:<52} {:>9.3f} {:>5.1f}% {:>10.1f} {:>8.1f}\n", "", "total (sum of steps)", total, 100.0,
                   static_cast<double>(macs) / 1e6, total > 0 ? static_cast<double>(macs) / (total * 1e6) : 0.0);
  return s;
}

}  // namespace rmnet
