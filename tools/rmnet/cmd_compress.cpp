// rmnet compress: convert -> prune (N rounds, each fine-tuned with the unpruned network as teacher)
// -> optional INT8 -> evaluation -> DIR/report.json + DIR/accuracy_vs_speed.png. A thin layer over
// rmnet/compress/compress.h.

#include <fmt/format.h>
#include <torch/torch.h>

#include "commands.h"
#include "rmnet/compress/compress.h"
#include "rmnet/data/datasets.h"
#include "rmnet/deploy/runtime.h"
#include "rmnet/io/model_file.h"

namespace rmnet::cli {
namespace {

struct CompressCliOptions {
  std::string model, out, dataset = "fashion-mnist", data, importance = "contribution", grouping = "stream",
              group_reduction = "mean";
  std::string runtime = "auto";
  double target_latency = -1.0, target_speedup = -1.0, target_macs = -1.0, max_layer_ratio = 1.0;
  int64_t batch = 32, image_size = 0, max_train_samples = 0, round_to = 1;
  bool no_reconstruct = false, no_distill = false, per_cost = false, no_shortcuts = false;
  CompressOptions compress = CompressOptions();
};

/// The library's option names as compress's flags.
std::string with_flags(const std::string& message) {
  return with_flag_names(message, {
      {"target_macs", "--target-macs"}, {"target_latency_ms", "--target-latency"},
      {"target_speedup", "--target-speedup"}, {"finetune_epochs", "--finetune-epochs"},
      {"rounds", "--rounds"}, {"calibration_images", "--calib-images"},
  });
}

void run_compress(CompressCliOptions o) {
  ModelPtr model = load_model_flag("--model", o.model);
  model->eval();
  DatasetPtr train = open_dataset_flags(o.dataset, o.data, true), test = open_dataset_flags(o.dataset, o.data, false);
  if (o.max_train_samples > 0) train = std::make_shared<Subset>(train, static_cast<size_t>(o.max_train_samples));
  auto& c = o.compress;
  c.target_macs(o.target_macs).target_latency_ms(o.target_latency).target_speedup(o.target_speedup).out(o.out);
  c.bench_batch(o.batch).distill(!o.no_distill).keep_shortcuts(!o.no_shortcuts);
  auto& po = c.prune();
  po.importance(prune_importance_from_string(o.importance)).grouping(prune_grouping_from_string(o.grouping));
  po.group_reduction(prune_group_reduction_from_string(o.group_reduction));
  po.reconstruct(!o.no_reconstruct).per_cost(o.per_cost).round_to(o.round_to).max_layer_ratio(o.max_layer_ratio).keep_one(true);
  po.latency(LatencyOptions().batch(o.batch).runtime(runtime_from_string(o.runtime)));
  auto& fo = c.finetune();
  const int64_t image_size = image_size_flag(o.image_size, model.get());
  fo.train_transform(train_transform(o.dataset, image_size)).test_transform(eval_transform(o.dataset, image_size));
  c.log([](const std::string& line) { say(line); });
  CompressResult r;
  try {
    r = compress(*model, train, test, c);
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, "--model '", o.model, "': ", with_flags(e.what_without_backtrace()));
  }
  say(fmt::format("{:<10} {:>8} {:>11} {:>10} {:>12} {:>14} {:>10}", "step", "top-1", "images/s", "runtime", "MACs",
                  "executed MACs", "params"));
  for (const auto& s : r.steps)
    say(fmt::format("{:<10} {:>7.2f}% {:>11.0f} {:>10} {:>12} {:>14} {:>10}", s.name, 100 * s.top1, s.images_per_second,
                    s.runtime, s.macs, s.executed_macs, s.params));
}

}  // namespace

Command setup_compress(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "compress", "Convert, prune to a target in rounds with distilled fine-tuning, optionally INT8; report and plot");
  auto o = std::make_shared<CompressCliOptions>();
  auto& c = o->compress;
  auto& f = c.finetune();
  f.train().schedule().lr(0.01);  // fine-tuning, not training from scratch
  f.train().schedule().kind("cosine");
  f.workers(2);
  cmd->add_option("--model", o->model, "Trained model (residual, or a plain network with BatchNorms kept)")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--out", o->out, "Output folder (must not exist; written whole at the end)")->required();
  cmd->add_option("--dataset", o->dataset, "Data set (fine-tuning, calibration, evaluation)")
      ->check(CLI::IsMember(dataset_names()));
  cmd->add_option("--data", o->data, "Data folder (default for fashion-mnist: Debian's package)");
  auto* tl = cmd->add_option("--target-latency", o->target_latency,
                             "Final latency of a forward of --batch images in ms, measured on this machine")
                 ->check(CLI::PositiveNumber);
  auto* ts = cmd->add_option("--target-speedup", o->target_speedup,
                             "Final latency = the converted network's (on the runtime) / this")
                 ->check(CLI::Range(1.0, 1e6));
  auto* tm = cmd->add_option("--target-macs", o->target_macs,
                             "Final MACs per image = this fraction of the trained model's (the residual network's)")
                 ->check(CLI::Range(1e-6, 1.0));
  cmd->add_option("--finetune-epochs", c.finetune_epochs(), "Fine-tuning epochs after each pruning round")
      ->check(CLI::Range(int64_t{0}, int64_t{100000}));
  cmd->add_option("--rounds", c.rounds(), "Prune -> fine-tune rounds (the target is approached geometrically)")
      ->check(CLI::Range(int64_t{1}, int64_t{100}));
  cmd->add_flag("--int8", c.int8(), "Quantize the last round's network to INT8 (calibrated on training images)");
  cmd->add_option("--batch", o->batch, "Images per forward for latency targets and images/s")
      ->check(CLI::Range(int64_t{1}, int64_t{65536}));
  cmd->add_option("--runtime", o->runtime, "Runtime the plain networks are timed on (auto: onednn on the CPU)")
      ->check(CLI::IsMember({"auto", "onednn", "torchscript", "eager"}));
  cmd->add_option("--importance", o->importance,
                  "Channel ranking: contribution (default), gamma or measured (on the calibration images)")
      ->check(CLI::IsMember({"gamma", "contribution", "measured"}));
  cmd->add_option("--grouping", o->grouping, "stream (default): stream channels go together; none: every channel alone")
      ->check(CLI::IsMember({"stream", "none"}));
  cmd->add_option("--group-reduction", o->group_reduction,
                  "A stream channel's score: the mean (default) or the sum of its plain channels' importances")
      ->check(CLI::IsMember({"sum", "mean"}));
  cmd->add_flag("--no-shortcuts", o->no_shortcuts,
                "Count, refit and fine-tune the RM blocks' reserved channels as convolutions (by default they stay "
                "Dirac copies the runtime runs as shortcuts, and --target-macs counts executed MACs)");
  cmd->add_flag("--per-cost", o->per_cost, "Rank by importance per MAC saved instead of importance alone");
  cmd->add_flag("--no-reconstruct", o->no_reconstruct,
                "Do not refit the layers after pruned ones by least squares on calibration images (on by default)");
  cmd->add_option("--round-to", o->round_to, "Pruned layers keep a multiple of this many channels")
      ->check(CLI::Range(1, 4096));
  cmd->add_option("--max-layer-ratio", o->max_layer_ratio, "No layer loses more than this fraction of its channels")
      ->check(CLI::Range(1e-6, 1.0));
  cmd->add_option("--calib-images", c.calibration_images(), "Calibration images for the reconstruction and --int8")
      ->check(CLI::Range(int64_t{1}, int64_t{10000000}));
  cmd->add_flag("--no-distill", o->no_distill, "Fine-tune on the labels only (no teacher)");
  cmd->add_option("--distill-weight", f.train().distill_weight(), "Weight of the distillation term, in [0, 1]")
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--distill-temperature", f.train().distill_temperature(), "Distillation temperature")
      ->check(CLI::Range(1e-3, 1e3));
  cmd->add_option("--batch-size", f.batch_size(), "Fine-tuning batch size")->check(CLI::Range(1, 65536));
  add_optimizer_flags(*cmd, f.train());
  cmd->add_option("--workers", f.workers(), "Data loader threads")->check(CLI::Range(0, 64));
  cmd->add_option("--seed", f.seed(), "Seed of the fine-tuning data order");
  cmd->add_option("--image-size", o->image_size, kImageSizeHelp)->check(CLI::Range(8, 4096));
  cmd->add_option("--max-train-samples", o->max_train_samples, "Fine-tune on the first N training images (0 = all)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 40));
  cmd->add_option("--bench-iters", c.bench_iters(), "Timed forwards per images/s figure")
      ->check(CLI::Range(int64_t{1}, int64_t{100000}));
  cmd->callback([tl, ts, tm] {
    if (tl->count() + ts->count() + tm->count() != 1)
      throw CLI::RequiredError("exactly one of --target-latency, --target-speedup or --target-macs");
  });
  return {cmd, [o] { run_compress(*o); }};
}

}  // namespace rmnet::cli
