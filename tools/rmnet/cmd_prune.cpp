// rmnet prune: network slimming of a plain network (BN kept) by importance threshold, global or
// per-layer ratio, or a MACs/parameter target, or the residual baseline (in-block channels of a
// residual model only). A thin layer over rmnet/prune/slim.h and residual_baseline.h; prints
// parameters, MACs and measured images/s before and after.
#include <filesystem>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "commands.h"
#include "rmnet/bench/bench.h"
#include "rmnet/convert/rm.h"
#include "rmnet/data/datasets.h"
#include "rmnet/deploy/runtime.h"
#include "rmnet/io/model_file.h"
#include "rmnet/models/profile.h"
#include "rmnet/prune/residual_baseline.h"
#include "rmnet/prune/slim.h"
#include "rmnet/quant/quantize.h"

namespace rmnet::cli {
namespace {

struct PruneCliOptions {
  std::string model, out, json, scope = "global", importance = "contribution", grouping = "none",
              group_reduction = "mean";
  double threshold = -1.0, ratio = -1.0, target_macs = -1.0, target_params = -1.0, max_layer_ratio = 1.0;
  double target_latency = -1.0, target_speedup = -1.0;
  int64_t batch = 32;
  std::string runtime = "auto";
  int64_t round_to = 1;
  bool keep_one = false, residual_baseline = false, verbose = false, no_fold = false, reconstruct = false,
       keep_dirac = false;
  bool per_cost = false, executed_macs = false;
  std::string calib_dataset, data;
  int64_t calib_images = 256, image_size = 0, seed = 0, reconstruct_positions = 32;
  int64_t bench_iters = 10, bench_batch = 64, input_size = 0;
};

/// The library's option names as prune's flags.
std::string with_flags(const std::string& message) {
  return with_flag_names(message, {
      {"target_macs", "--target-macs"},       {"target_params", "--target-params"},
      {"target_latency_ms", "--target-latency"}, {"target_speedup", "--target-speedup"},
      {"max_layer_ratio", "--max-layer-ratio"}, {"round_to", "--round-to"},
      {"keep_one", "--keep-one"},             {"input_size", "--input-size"},
      {"ConvertOptions::keep_bn", "rmnet convert --keep-bn"}, {"prune_residual", "--residual-baseline"},
      {"scope 'layer'", "--scope layer"},     {"reconstruct_positions", "--reconstruct-positions"},
      {"reconstruct needs calibration images", "--reconstruct needs --calib-dataset"},
      {"executed_macs with reconstruct needs reconstruct_keep_dirac", "--executed-macs with --reconstruct needs --keep-dirac"},
  });
}

void run_prune(const PruneCliOptions& o) {
  ModelPtr model = load_model_flag("--model", o.model);
  model->eval();
  PruneOptions po;
  po.threshold(o.threshold).ratio(o.ratio).target_macs(o.target_macs).target_params(o.target_params);
  po.scope(prune_scope_from_string(o.scope)).max_layer_ratio(o.max_layer_ratio).round_to(o.round_to);
  po.importance(prune_importance_from_string(o.importance)).fold_removed(!o.no_fold).keep_one(o.keep_one);
  po.input_size(o.input_size).grouping(prune_grouping_from_string(o.grouping)).per_cost(o.per_cost);
  po.group_reduction(prune_group_reduction_from_string(o.group_reduction));
  const bool plain_model = dynamic_cast<const PlainNetImpl*>(model.get()) != nullptr;
  TORCH_CHECK(o.residual_baseline || plain_model, "--model '", o.model, "' is a residual ", model->options().arch(),
              " model: prune its plain form (rmnet convert --keep-bn) or pass --residual-baseline");
  po.target_latency_ms(o.target_latency).target_speedup(o.target_speedup);
  po.latency(LatencyOptions().batch(o.batch).runtime(runtime_from_string(o.runtime)).input_size(o.input_size));
  po.reconstruct(o.reconstruct).reconstruct_positions(o.reconstruct_positions).reconstruct_seed(o.seed);
  po.reconstruct_keep_dirac(o.keep_dirac).executed_macs(o.executed_macs);
  TORCH_CHECK(!o.reconstruct || !o.calib_dataset.empty(), "--reconstruct needs calibration images: --calib-dataset NAME");
  TORCH_CHECK(!o.keep_dirac || o.reconstruct, "--keep-dirac applies to --reconstruct");
  TORCH_CHECK(!o.executed_macs || !o.reconstruct || o.keep_dirac, "--executed-macs with --reconstruct needs "
              "--keep-dirac: a free refit moves the Dirac copies, and the runtime then computes them as convolutions");
  const bool measured = prune_importance_from_string(o.importance) == PruneImportance::Measured;
  TORCH_CHECK(!measured || !o.calib_dataset.empty(), "--importance measured needs calibration images: --calib-dataset NAME");
  torch::Tensor calibration;
  if (o.reconstruct || measured) {
    auto train = open_dataset_flags(o.calib_dataset, o.data, true);
    TORCH_CHECK(train->size() > 0, "--calib-dataset '", o.calib_dataset, "' is empty");
    TORCH_CHECK(train->channels() == model->options().in_channels(), "--model '", o.model, "' takes ",
                model->options().in_channels(), " input channels, --calib-dataset '", o.calib_dataset, "' has ",
                train->channels());
    calibration = calibration_images(*train, eval_transform(o.calib_dataset, image_size_flag(o.image_size, model.get())), o.calib_images,
                                     static_cast<uint64_t>(o.seed));
  }
  PruneResult r;
  int64_t res_before = 0, res_after = 0;
  try {
    if (o.residual_baseline) {
      auto rr = prune_residual(*model, po, calibration);
      r = std::move(rr.plain);
      res_before = rr.residual_params_before;
      res_after = rr.residual_params_after;
    } else {
      r = prune(*model, po, calibration);
    }
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, "--model '", o.model, "': ", with_flags(e.what_without_backtrace()));
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
                       {"criterion", r.net->metadata().at("prune_criterion")},
                       {"importance", o.importance}, {"grouping", o.grouping}, {"group_reduction", o.group_reduction},
                       {"stream_groups", r.report.stream_groups}, {"per_cost", o.per_cost},
                       {"fold_removed", !o.no_fold},
                       {"reconstructed", r.report.reconstructed},
                       {"batch", o.batch},
                       {"latency_target_ms", r.report.latency_target_ms},
                       {"latency_before_ms", r.report.latency_before_ms},
                       {"latency_after_ms", r.report.latency_after_ms},
                       {"latency_estimate_ms", r.report.latency_estimate_ms},
                       {"latency_rounds", r.report.latency_rounds},
                       {"reconstruction_error_before", r.report.reconstruction_error_before},
                       {"reconstruction_error_after", r.report.reconstruction_error_after},
                       {"threshold", r.report.threshold}, {"channels_total", r.report.channels_total},
                       {"channels_removed", r.report.channels_removed}, {"removed_by_role", r.report.removed_by_role},
                       {"folded", r.report.folded}, {"folds_at_border", r.report.folds_at_border},
                       {"params_before", r.report.params_before}, {"params_after", r.report.params_after},
                       {"params_ratio_removed", r.report.params_ratio_removed()},
                       {"executed_macs", o.executed_macs},
                       {"executed_macs_before", r.report.executed_macs_before},
                       {"executed_macs_after", r.report.executed_macs_after},
                       {"shortcuts_before", r.report.shortcuts_before},
                       {"shortcuts_after", r.report.shortcuts_after}};
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
    js["runtime"] = b1.runtime;
    say(fmt::format("images/s (CPU, {} runtime, batch {}, {} timed forwards, {} threads): {:.1f} -> {:.1f} ({:.2f}x)",
                    b1.runtime, o.bench_batch, o.bench_iters, b1.threads, b0.images_per_second, b1.images_per_second,
                    b1.images_per_second / b0.images_per_second));
  }
  save_model(*r.net, o.out);
  if (!o.json.empty()) write_file_atomic(o.json, js.dump(2) + "\n");
  say(fmt::format("wrote {}", o.out));
}

CLI::Validator fraction(const std::string& flag, bool zero_ok, bool one_ok) {
  return CLI::Validator(
      [=](const std::string& s) -> std::string {
        try {
          const double v = std::stod(s);
          if ((zero_ok ? v >= 0.0 : v > 0.0) && (one_ok ? v <= 1.0 : v < 1.0)) return "";
        } catch (...) {
        }
        return fmt::format("{} must be a number in {}0, 1{} (got '{}')", flag, zero_ok ? "[" : "(", one_ok ? "]" : ")", s);
      },
      zero_ok ? (one_ok ? "[0, 1]" : "[0, 1)") : (one_ok ? "(0, 1]" : "(0, 1)"));
}

}  // namespace

Command setup_prune(CLI::App& app) {
  auto* cmd = app.add_subcommand("prune", "Network slimming: remove the channels of least importance");
  auto o = std::make_shared<PruneCliOptions>();
  cmd->add_option("--model", o->model, "Plain network with BatchNorms kept (rmnet convert --keep-bn)")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--out", o->out, "Pruned model file (written atomically)")->required();
  auto* th = cmd->add_option("--threshold", o->threshold, "Remove channels with importance below this")
                 ->check(CLI::Range(0.0, 1e30));
  auto* ra = cmd->add_option("--ratio", o->ratio, "Remove this fraction of the prunable channels, in [0, 1)")
                 ->check(fraction("--ratio", true, false));
  auto* tm = cmd->add_option("--target-macs", o->target_macs,
                             "Prune until the MACs per image are at most this fraction of the original's, in (0, 1]")
                 ->check(fraction("--target-macs", false, true));
  auto* tp = cmd->add_option("--target-params", o->target_params,
                             "Prune until the parameters are at most this fraction of the original's, in (0, 1]")
                 ->check(fraction("--target-params", false, true));
  auto* tl = cmd->add_option("--target-latency", o->target_latency,
                             "Prune until one forward of a --batch takes at most this many ms on the --runtime, "
                             "measured on this machine (a per-layer latency table guides the selection)")
                 ->check(CLI::PositiveNumber);
  auto* ts = cmd->add_option("--target-speedup", o->target_speedup,
                             "Prune until the measured latency is the original's divided by this (>= 1)")
                 ->check(CLI::Range(1.0, 1e6));
  cmd->add_option("--batch", o->batch, "Images per forward for --target-latency/--target-speedup")
      ->check(CLI::Range(int64_t{1}, int64_t{65536}));
  cmd->add_option("--runtime", o->runtime, "Runtime the latency is measured on (auto: onednn on the CPU)")
      ->check(CLI::IsMember({"auto", "onednn", "torchscript", "eager"}));
  cmd->add_option("--scope", o->scope, "--ratio over all channels at once (global) or of every layer (layer)")
      ->check(CLI::IsMember({"global", "layer"}));
  cmd->add_option("--max-layer-ratio", o->max_layer_ratio, "No layer loses more than this fraction of its channels")
      ->check(fraction("--max-layer-ratio", false, true));
  cmd->add_option("--round-to", o->round_to, "Pruned layers keep a multiple of this many channels (e.g. 8, 16)")
      ->check(CLI::Range(1, 4096));
  cmd->add_option("--importance", o->importance,
                  "Channel ranking: contribution (|gamma| x consumer weight norm, default), gamma (|gamma|) or "
                  "measured (the consumer output change measured on --calib-dataset images)")
      ->check(CLI::IsMember({"gamma", "contribution", "measured"}));
  cmd->add_option("--grouping", o->grouping,
                  "stream: the plain channels carrying one residual-stream channel are ranked and removed together "
                  "(targets); none (default): every channel on its own")
      ->check(CLI::IsMember({"stream", "none"}));
  cmd->add_option("--group-reduction", o->group_reduction,
                  "With --grouping stream: a stream channel's score is the mean (default) or the sum of its plain "
                  "channels' importances")
      ->check(CLI::IsMember({"sum", "mean"}));
  cmd->add_flag("--executed-macs", o->executed_macs,
                "--target-macs and --per-cost count MACs as the onednn runtime executes them: the reserved channels of "
                "an RM block kept whole are a shortcut (free), a projection a 1x1 conv; the fraction is of the "
                "original's executed MACs (a converted ResNet's: the residual network's). Best with --grouping stream");
  cmd->add_flag("--per-cost", o->per_cost,
                "Targets: rank by importance per MAC (parameter) saved instead of importance alone");
  cmd->add_flag("--no-fold", o->no_fold,
                "Do not fold the constant a removed channel leaves behind into the next layer (for comparison)");
  cmd->add_flag("--reconstruct", o->reconstruct,
                "Refit the consumers (next conv / linear) of the pruned layers and of every layer after them by least "
                "squares so that each reproduces the original network's output on calibration images (needs "
                "--calib-dataset)");
  cmd->add_flag("--keep-dirac", o->keep_dirac,
                "--reconstruct leaves the reserved channels' Dirac copies and the merge convs' shortcut columns as "
                "they are (the onednn runtime then still runs them as shortcuts) and refits the rest");
  cmd->add_option("--calib-dataset", o->calib_dataset, "Calibration data set for --reconstruct and --importance measured (its training split)")
      ->check(CLI::IsMember(dataset_names()));
  cmd->add_option("--data", o->data, "Data set folder (optional for fashion-mnist)");
  cmd->add_option("--calib-images", o->calib_images, "Calibration images for --reconstruct and --importance measured (a seeded random choice)")
      ->check(CLI::Range(int64_t{1}, int64_t{10000000}));
  cmd->add_option("--reconstruct-positions", o->reconstruct_positions,
                  "Output positions sampled per image and layer for --reconstruct")
      ->check(CLI::Range(int64_t{1}, int64_t{1000000}));
  cmd->add_option("--image-size", o->image_size, kImageSizeHelp)->check(CLI::Range(8, 4096));
  cmd->add_option("--seed", o->seed, "Seed of the calibration image choice and the sampled positions");
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
  cmd->callback([th, ra, tm, tp, tl, ts] {
    if (th->count() + ra->count() + tm->count() + tp->count() + tl->count() + ts->count() != 1)
      throw CLI::RequiredError(
          "exactly one of --threshold, --ratio, --target-macs, --target-params, --target-latency or --target-speedup");
  });
  return {cmd, [o] { run_prune(*o); }};
}

}  // namespace rmnet::cli
