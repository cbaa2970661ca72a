// rmnet bench: inference speed of one or more models, side by side (the paper's protocol).
#include <chrono>
#include <filesystem>
#include <map>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "commands.h"
#include "progress.h"
#include "rmnet/bench/bench.h"
#include "rmnet/convert/rm.h"
#include "rmnet/io/model_file.h"
#include "rmnet/models/registry.h"

namespace rmnet::cli {
namespace {

struct BenchCliOptions {
  std::vector<std::string> archs, models;
  std::vector<std::pair<bool, std::string>> order;  // (is_arch, value) in command-line order
  int64_t num_classes = 1000, in_channels = 3;
  int64_t batch = 128, input_size = 0, warmup = 50, iters = 50, buffer_cache_mb = 1024, check_images = 256;
  std::string device = "cpu", dtype = "fp32", runtime = "auto", shortcuts = "auto", json;
  bool channels_last = false, convert = false, profile = false;
};

torch::ScalarType parse_dtype(const std::string& s) {
  if (s == "fp32") return torch::kFloat;
  if (s == "bf16") return torch::kBFloat16;
  if (s == "fp16") return torch::kHalf;
  TORCH_CHECK(false, "--dtype: expected fp32, bf16 or fp16 (got '", s, "')");
}

void run_bench(const BenchCliOptions& o) {
  BenchOptions bo;
  const bool auto_dtype = o.dtype == "auto";
  bo.batch(o.batch).input_size(o.input_size).warmup(o.warmup).iters(o.iters);
  bo.dtype(auto_dtype ? torch::kFloat : parse_dtype(o.dtype)).auto_precision(auto_dtype).check_images(o.check_images);
  bo.channels_last(o.channels_last).runtime(runtime_from_string(o.runtime)).profile(o.profile);
  bo.buffer_cache_mb(o.buffer_cache_mb);
  // Dirac shortcuts: the runtimes' default (auto: on, the INT8 executor timing them against every
  // channel per input shape), always (on), or every channel a convolution (off)
  if (o.shortcuts != "auto") {
    auto d = bo.deploy();
    d.dirac_shortcuts(o.shortcuts == "on").dirac_shortcuts_timed(false);
    bo.deploy(d);
  }
  bo.device(torch::Device(o.device == "cuda" ? torch::kCUDA : torch::kCPU));
  TORCH_CHECK(!bo.device().is_cuda() || torch::cuda::is_available(), "--device cuda: CUDA is not available here");

  // models in command-line order; each residual one followed by its RM-converted form with --convert
  std::vector<std::pair<std::string, ModelPtr>> models;
  for (const auto& [is_arch, v] : o.order) {
    ModelPtr m;
    if (is_arch)
      m = create_model(ModelOptions(v).num_classes(o.num_classes).in_channels(o.in_channels).track_block_stats(o.convert));
    else
      m = load_model(v);
    m->eval();
    const std::string label = is_arch ? v : std::filesystem::path(v).filename().string();
    models.emplace_back(label, m);
    if (o.convert && !dynamic_cast<const PlainNetImpl*>(m.get())) {
      auto r = convert(*m, ConvertOptions());
      TORCH_CHECK(r.report.passed, "--convert: the conversion of '", label, "' is not equivalent (",
                  r.report.to_string(), ")");
      models.emplace_back(label + " (RM)", r.net.ptr());
    }
  }
  TORCH_CHECK(!models.empty(), "give at least one --arch or --model");

  say(fmt::format("protocol: batch {}, {} warm-up + {} timed forwards, {} threads, {} {}{}", o.batch, o.warmup, o.iters,
                  at::get_num_threads(), o.device, o.dtype, o.channels_last ? ", channels-last" : ""));
  std::vector<BenchResult> results;
  for (const auto& [label, m] : models) {
    Progress bar(label);
    const auto t0 = std::chrono::steady_clock::now();
    auto r = benchmark(m, label, bo, [&](const std::string& phase, int64_t done, int64_t total) {
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      // warm-up and timed forwards as one bar
      const bool timed = phase == "timed";
      bar.update(static_cast<size_t>((timed ? o.warmup : 0) + done), static_cast<size_t>(o.warmup + o.iters), phase, s);
    });
    bar.finish();
    if (r.precision) say(fmt::format("{}: --dtype auto chose {}", label, r.precision->reason));
    say(fmt::format("{}: {} runtime, {:.1f} images/s, p50 {:.2f} ms, p90 {:.2f} ms per batch of {}", label, r.runtime,
                    r.images_per_second, r.latency_p50_ms, r.latency_p90_ms, r.batch));
    results.push_back(std::move(r));
  }
  std::cout << "\n" << bench_table(results) << std::flush;
  // the measured conv peak per dtype that ran (--dtype auto: each model's own)
  std::map<std::string, double> peaks;
  const auto peak_of = [&](const std::string& dtype) {
    auto it = peaks.find(dtype);
    if (it != peaks.end()) return it->second;
    const auto dt = parse_dtype(dtype);
    const double p = bo.device().is_cpu() && onednn_available(DeployOptions().dtype(dt)) ? measure_conv_peak(dt) : 0.0;
    if (p > 0) say(fmt::format("measured conv peak ({} threads, {}): {:.1f} GMAC/s", at::get_num_threads(), dtype, p));
    return peaks[dtype] = p;
  };
  if (o.profile) {
    peak_of(auto_dtype ? "fp32" : o.dtype);
    for (const auto& r : results) {
      if (r.steps.empty()) {
        say(r.name + ": no per-step profile (the " + r.runtime + " runtime is not a deployed chain)");
        continue;
      }
      std::cout << "\n" << r.name << " (" << r.runtime << " runtime), ms per forward of " << r.batch << " images:\n"
                << profile_table(r, r.runtime == "int8" ? 0.0 : peak_of(r.dtype)) << std::flush;  // INT8: no float peak
    }
  }
  say("MACs: multiply-accumulates of conv and linear layers per image; GMAC/s achieved; peak MB: " +
      results.front().peak_memory_kind);
  if (!o.json.empty()) {
    auto j = nlohmann::json::parse(bench_json(results, bo));
    const auto first = peaks.find(auto_dtype ? "fp32" : o.dtype);
    if (first != peaks.end() && first->second > 0) j["machine"]["conv_peak_gmacs"] = first->second;
    if (peaks.size() > 1)
      for (const auto& [dt, p] : peaks) j["machine"]["conv_peak_gmacs_by_dtype"][dt] = p;
    write_file_atomic(o.json, j.dump(2) + "\n");
    say("wrote " + o.json);
  }
}

}  // namespace

Command setup_bench(CLI::App& app) {
  auto* cmd = app.add_subcommand("bench", "Inference speed of models side by side (images/s, latency, FLOPs, memory)");
  auto o = std::make_shared<BenchCliOptions>();
  auto* arch = cmd->add_option("--arch", o->archs, "Architecture to time, random weights (repeatable)")
                   ->check(arch_validator())
                   ->expected(1)
                   ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  auto* model = cmd->add_option("--model", o->models, "Model file to time (repeatable)")
                    ->check(CLI::ExistingFile)
                    ->expected(1)
                    ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  cmd->add_option("--num-classes", o->num_classes, "Classes of --arch models")->check(CLI::Range(1, 1000000));
  cmd->add_option("--in-channels", o->in_channels, "Input channels of --arch models")->check(CLI::Range(1, 4096));
  cmd->add_flag("--convert", o->convert, "Also time the RM-converted (deploy form) network of each residual model");
  cmd->add_option("--batch", o->batch, "Images per forward (the paper: 128)")->check(CLI::Range(1, 65536));
  cmd->add_option("--input-size", o->input_size, "Square input size (0 = 32 for CIFAR-style, 224 for ImageNet-style)")
      ->check(CLI::Range(0, 4096));
  cmd->add_option("--warmup", o->warmup, "Untimed forwards first")->check(CLI::Range(0, 100000));
  cmd->add_option("--iters", o->iters, "Timed forwards")->check(CLI::Range(1, 100000));
  cmd->add_option("--device", o->device, "cpu or cuda (CUDA timing is synchronised)")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  cmd->add_option("--dtype", o->dtype,
                  "fp32, bf16, fp16 (autocast for eager models, cast weights for deployed; onednn: fp32, bf16) or auto "
                  "(per model: bf16 where the CPU runs it natively and top-1 agrees with fp32 on --check-images "
                  "synthetic images >= 99.9%, else fp32)")
      ->check(CLI::IsMember({"fp32", "bf16", "fp16", "auto"}));
  cmd->add_option("--check-images", o->check_images, "--dtype auto: synthetic images to check bf16 against fp32 on")
      ->check(CLI::Range(1, 100000));
  cmd->add_flag("--channels-last", o->channels_last, "Channels-last inputs (and weights of eager models)");
  cmd->add_option("--runtime", o->runtime,
                  "auto (onednn for plain networks on the CPU, torchscript on CUDA, int8 for quantized networks, eager for residual "
                  "models), onednn, torchscript (old name: deploy), cudagraph (--device cuda), int8 or eager")
      ->check(CLI::IsMember(runtime_names()));
  cmd->add_option("--shortcuts", o->shortcuts,
                  "Dirac shortcuts of RM blocks (onednn direct path and int8 runtime): auto (on; the int8 runtime "
                  "times them against computing every channel and runs the faster), on (always), off (every channel "
                  "a convolution)")
      ->check(CLI::IsMember({"auto", "on", "off"}));
  cmd->add_flag("--profile", o->profile,
                "Also time every step of deployed networks and print where the time goes (with the measured conv peak)");
  cmd->add_option("--buffer-cache-mb", o->buffer_cache_mb,
                  "Deployed and INT8 networks: keep activation buffers between forwards, up to this many MiB (0: allocate "
                  "afresh every forward)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 30));
  cmd->add_option("--json", o->json, "Write the results as JSON (images_per_second per model)");
  cmd->callback([cmd, arch, model, o] {
    if (arch->count() + model->count() == 0) throw CLI::RequiredError("--arch or --model");
    o->order.clear();
    size_t ia = 0, im = 0;
    for (auto* opt : cmd->parse_order()) {
      if (opt == arch && ia < o->archs.size()) o->order.emplace_back(true, o->archs[ia++]);
      if (opt == model && im < o->models.size()) o->order.emplace_back(false, o->models[im++]);
    }
    while (ia < o->archs.size()) o->order.emplace_back(true, o->archs[ia++]);  // e.g. from --config
    while (im < o->models.size()) o->order.emplace_back(false, o->models[im++]);
  });
  return {cmd, [o] { run_bench(*o); }};
}

}  // namespace rmnet::cli
