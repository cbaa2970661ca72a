#include <chrono>

#include <fmt/format.h>
#include <torch/torch.h>

#include "commands.h"
#include "rmnet/bench/bench.h"
#include "rmnet/convert/rm.h"
#include "rmnet/io/model_file.h"
#include "rmnet/io/torchvision.h"

namespace rmnet::cli {

struct ConvertCliOptions {
  std::string model, out, torchvision, weights;
  int64_t num_classes = 0;
  bool keep_bn = false;
  int downsample = 2;
  std::string fuse_pointwise = "auto";
  bool dense_reserve = false;
  int64_t verify_size = 0;
  int64_t cost_size = 0;
  double tolerance = 0.0;
  ExportFlags exports;
};

static void run_convert(const ConvertCliOptions& o) {
  auto model = o.torchvision.empty() ? load_model(o.model) : import_torchvision(o.torchvision, o.weights, o.num_classes);
  const std::string source = o.torchvision.empty() ? o.model : o.weights;
  ConvertOptions co;
  co.keep_bn(o.keep_bn)
      .downsample(o.downsample == 1 ? DownsampleMode::Type1 : DownsampleMode::Type2)
      .fuse_pointwise(pointwise_fusion_from_string(o.fuse_pointwise))
      .grouped_reserve(!o.dense_reserve);
  co.verify_options(VerifyOptions().input_size(o.verify_size).tolerance(o.tolerance));
  co.cost_input_size(o.cost_size > 0 ? o.cost_size : bench_input_size(*model));
  const auto t0 = std::chrono::steady_clock::now();
  auto result = convert(*model, co);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  say(fmt::format("{} ({}) -> plain network, {} layers, BN {}; {} -> {} parameters; {:.2f} s",
                  source, model->options().arch(), result.net->size(), o.keep_bn ? "kept" : "fused",
                  count_parameters(*model), count_parameters(*result.net), secs));
  std::string timing;
  for (const auto& p : result.passes) timing += fmt::format("{}{} {:.3f} s", timing.empty() ? "" : ", ", p.name, p.seconds);
  say("passes: " + timing);
  say("verification: " + result.report.to_string());
  if (result.cost_input_size > 0) {
    const auto &b = result.cost_before, &a = result.cost_after;
    say(fmt::format("cost at {}x{} (MACs of conv+linear per image): {}MACs -> {}MACs ({:.2f}x), params {} -> {}",
                    result.cost_input_size, result.cost_input_size, format_count(static_cast<double>(b.flops)),
                    format_count(static_cast<double>(a.flops)),
                    b.flops > 0 ? static_cast<double>(a.flops) / static_cast<double>(b.flops) : 0.0,
                    format_count(static_cast<double>(b.params)), format_count(static_cast<double>(a.params))));
  }
  TORCH_CHECK(result.report.passed, "the converted network is not equivalent to '", source,
              "' (relative error ", result.report.max_rel_error, " > ", result.report.tolerance, "); '", o.out,
              "' not written");
  save_model(*result.net, o.out);
  say("wrote " + o.out);
  write_exports(*result.net, o.exports);
}

Command setup_convert(CLI::App& app) {
  auto* cmd = app.add_subcommand("convert", "RM-convert a residual model into an equivalent plain network");
  auto o = std::make_shared<ConvertCliOptions>();
  auto* model = cmd->add_option("--model", o->model, "Input model file")->check(CLI::ExistingFile);
  auto* tv = cmd->add_option("--torchvision", o->torchvision,
                             "Import a torchvision model: resnet18/34/50/101/152 or mobilenet_v2 (with --weights)")
                 ->check(CLI::IsMember({"resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "mobilenet_v2"}));
  auto* weights = cmd->add_option("--weights", o->weights,
                                  "torch.save(model.state_dict()) file or TorchScript archive (with --torchvision)")
                      ->check(CLI::ExistingFile);
  cmd->add_option("--num-classes", o->num_classes, "Classes of the torchvision model (0 = from the weights)")
      ->check(CLI::Range(int64_t{0}, int64_t{1000000}));
  model->excludes(tv)->excludes(weights);
  tv->needs(weights);
  weights->needs(tv);
  cmd->callback([model, tv] {
    if (model->count() + tv->count() == 0) throw CLI::RequiredError("--model or --torchvision");
  });
  cmd->add_option("--out", o->out, "Output model file (written only if equivalent)")->required();
  cmd->add_flag("--keep-bn", o->keep_bn, "Keep BatchNorm layers (for fine-tuning and pruning)");
  cmd->add_option("--downsample", o->downsample, "Downsample block conversion: 1 or 2 (paper Fig. 2)")
      ->check(CLI::IsMember({1, 2}));
  cmd->add_option("--fuse-pointwise", o->fuse_pointwise,
                  "Fuse adjacent 1x1 convs (paper Eq. 4): auto (only where cheaper), always, never")
      ->check(CLI::IsMember({"auto", "always", "never"}));
  cmd->add_flag("--dense-reserve", o->dense_reserve, "Make reserve convs dense instead of grouped");
  cmd->add_option("--verify-size", o->verify_size, "Input size for the equivalence check (0 = model default)")
      ->check(CLI::Range(0, 4096));
  cmd->add_option("--cost-size", o->cost_size,
                  "Input size for the reported MACs before/after (0 = 32 CIFAR-style, 224 ImageNet-style)")
      ->check(CLI::Range(0, 4096));
  cmd->add_option("--tolerance", o->tolerance, "Allowed relative error (0 = 1e-4 float32, 1e-10 float64)")
      ->check(CLI::Range(0.0, 1.0));
  add_export_flags(*cmd, o->exports);
  return {cmd, [o] { run_convert(*o); }};
}

}  // namespace rmnet::cli
