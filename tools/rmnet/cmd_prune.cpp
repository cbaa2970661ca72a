// rmnet prune: network slimming of a plain network (BN kept) by |gamma| threshold or global ratio,
// or the residual baseline (in-block channels of a residual model only). A thin layer over
// rmnet/prune/slim.h; prints parameters, MACs and measured images/s before and after.
#include <filesystem>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "commands.h"
#include "rmnet/bench/bench.h"
#include "rmnet/convert/rm.h"
#include "rmnet/io/model_file.h"
#include "rmnet/models/profile.h"
#include "rmnet/prune/slim.h"

namespace rmnet::cli {
namespace {

struct PruneCliOptions {
  std::string model, out, json;
  double threshold = -1.0, ratio = -1.0;
  bool keep_one = false, residual_baseline = false, verbose = false;
  int64_t bench_iters = 10, bench_batch = 64, input_size = 0;
};

void run_prune(const PruneCliOptions& o) {
  ModelPtr model;
  try {
    model = load_model(o.model);
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, "--model '", o.model, "': ", e.what_without_backtrace());
  }
  model->eval();
  PruneOptions po;
  po.threshold(o.threshold).ratio(o.ratio).keep_one(o.keep_one);
  PruneResult r;
  int64_t res_before = 0, res_after = 0;
  if (o.residual_baseline) {
    auto rr = prune_residual(*model, po);
    r = std::move(rr.plain);
    res_before = rr.residual_params_before;
    res_after = rr.residual_params_after;
  } else {
    TORCH_CHECK(dynamic_cast<const PlainNetImpl*>(model.get()), "--model '", o.model, "' is a residual ", model->options().arch(),
                " model: prune its plain form (rmnet convert --keep-bn) or pass --residual-baseline");
    try {
      r = prune(*model, po);
    } catch (const c10::Error& e) {
      TORCH_CHECK(false, "--model '", o.model, "': ", e.what_without_backtrace());
    }
  }
  if (o.verbose)
    for (const auto& n : r.report.notes) say(n);
  say(r.report.to_string());
  if (o.residual_baseline)
    say(fmt::format("residual network: {} -> {} parameters ({:.1f}% removed); result in plain form: {} -> {}",
                    res_before, res_after, 100.0 * (1.0 - double(res_after) / double(res_before)),
                    r.report.params_before, r.report.params_after));

  const int64_t size = o.input_size > 0 ? o.input_size : bench_input_size(*model);
  const int64_t cin = model->options().in_channels();
  ModelPtr before = model;
  if (o.residual_baseline) before = reserve_merge(*model, DownsampleMode::Type2, false).ptr();
  nlohmann::json js = {{"model", o.model}, {"out", o.out}, {"input_size", size},
                       {"threshold", r.report.threshold}, {"channels_total", r.report.channels_total},
                       {"channels_removed", r.report.channels_removed},
                       {"params_before", r.report.params_before}, {"params_after", r.report.params_after},
                       {"params_ratio_removed", r.report.params_ratio_removed()}};
  if (o.residual_baseline) {
    js["residual_params_before"] = res_before;
    js["residual_params_after"] = res_after;
  }
  const int64_t f0 = count_flops(*before, cin, size), f1 = count_flops(*r.net, cin, size);
  js["flops_before"] = f0;
  js["flops_after"] = f1;
  say(fmt::format("MACs per image at {}x{}: {} -> {} ({:.1f}% removed)", size, size, format_count(double(f0)),
                  format_count(double(f1)), 100.0 * (1.0 - double(f1) / double(f0))));
  if (o.bench_iters > 0) {
    BenchOptions bo;
    bo.batch(o.bench_batch).input_size(size).warmup(std::max<int64_t>(1, o.bench_iters / 2)).iters(o.bench_iters);
    auto b0 = benchmark(before, "before", bo), b1 = benchmark(r.net.ptr(), "after", bo);
    js["images_per_second_before"] = b0.images_per_second;
    js["images_per_second_after"] = b1.images_per_second;
    say(fmt::format("images/s (CPU, {} runtime, batch {}, {} timed forwards, {} threads): {:.1f} -> {:.1f} ({:.2f}x)",
                    b1.runtime, o.bench_batch, o.bench_iters, b1.threads, b0.images_per_second, b1.images_per_second,
                    b1.images_per_second / b0.images_per_second));
  }
  save_model(*r.net, o.out);
  if (!o.json.empty()) write_file_atomic(o.json, js.dump(2) + "\n");
  say(fmt::format("wrote {}", o.out));
}

}  // namespace

Command setup_prune(CLI::App& app) {
  auto* cmd = app.add_subcommand("prune", "Network slimming: remove channels with small BN scales (|gamma|)");
  auto o = std::make_shared<PruneCliOptions>();
  cmd->add_option("--model", o->model, "Plain network with BatchNorms kept (rmnet convert --keep-bn)")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--out", o->out, "Pruned model file (written atomically)")->required();
  auto* th = cmd->add_option("--threshold", o->threshold, "Remove channels with |gamma| below this")
                 ->check(CLI::Range(0.0, 1e30));
  auto* ra = cmd->add_option("--ratio", o->ratio, "Remove this fraction of all prunable channels, in [0, 1)")
                 ->check([](const std::string& s) -> std::string {
                   try {
                     const double v = std::stod(s);
                     if (v >= 0.0 && v < 1.0) return "";
                   } catch (...) {
                   }
                   return "--ratio must be a number in [0, 1) (got '" + s + "')";
                 });
  th->excludes(ra);
  cmd->add_flag("--keep-one", o->keep_one,
                "Where the selection would empty a layer, keep its most important channel instead of failing");
  cmd->add_flag("--residual-baseline", o->residual_baseline,
                "--model is a residual network: prune only channels inside blocks (the paper's baseline); the "
                "result is written in plain form");
  cmd->add_option("--bench-iters", o->bench_iters, "Timed forwards for images/s before/after (0: skip)")
      ->check(CLI::Range(0, 100000));
  cmd->add_option("--bench-batch", o->bench_batch, "Batch size for the timing")->check(CLI::Range(1, 4096));
  cmd->add_option("--input-size", o->input_size, "Input size for MACs and timing (default: the model's)")
      ->check(CLI::Range(0, 4096));
  cmd->add_option("--json", o->json, "Also write the numbers to this JSON file");
  cmd->add_flag("-v,--verbose", o->verbose, "List the layers that are not prunable and why");
  cmd->callback([th, ra] {
    if (th->count() + ra->count() != 1) throw CLI::RequiredError("exactly one of --threshold or --ratio");
  });
  return {cmd, [o] { run_prune(*o); }};
}

}  // namespace rmnet::cli
