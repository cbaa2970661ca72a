#include <iostream>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include "commands.h"
#include "rmnet/convert/verify.h"
#include "rmnet/io/model_file.h"
#include "rmnet/models/profile.h"
#include "rmnet/models/plain.h"
#include "rmnet/models/registry.h"
#include "rmnet/quant/qnet.h"

namespace rmnet::cli {

struct InfoOptions {
  ArchFlags arch;
  std::string model;
  int64_t input_size = 0;
  bool layers = true;
};

static void run_info(const InfoOptions& o) {
  ModelPtr model = o.model.empty() ? create_model(o.arch.to_options()) : load_model(o.model);
  const auto& opt = model->options();
  say(fmt::format("{}: family {}, {} classes, {} input channels", o.model.empty() ? opt.arch() : o.model,
                  model->family(), opt.num_classes(), opt.in_channels()));
  for (const auto& [k, v] : model->metadata()) say(fmt::format("  {}: {}", k, v));
  const int64_t size = o.input_size > 0 ? o.input_size : default_input_size(*model);
  auto* plain = dynamic_cast<PlainNetImpl*>(model.get());
  auto* quantized = dynamic_cast<QuantizedNetImpl*>(model.get());
  if (o.layers) {
    if (quantized)
      std::cout << quantized->summary();  // per layer: int8 / u8 / float32 fallback / head, scales
    else if (plain)
      std::cout << plain->summary({1, opt.in_channels(), size, size});  // params and MACs per layer
    else
      std::cout << *model << "\n";
  }
  // Parameters and MACs of every conv / linear call of one forward at the given input size.
  const auto cost = profile_model(*model, opt.in_channels(), size);
  if (quantized && !o.layers) {
    const auto fb = quantized->fallbacks();
    say(fb.empty() ? "float32 fallbacks: none" : "float32 fallbacks: " + model->metadata().at("quant.fallbacks"));
  }
  if (o.layers && !plain && !quantized) {
    std::cout << fmt::format("\n{:<40} {:<7} {:>20} {:>12} {:>14}\n", "layer", "kind", "output", "params", "MACs");
    for (const auto& l : cost.layers)
      std::cout << fmt::format("{:<40} {:<7} {:>20} {:>12} {:>14}\n", l.name, l.kind,
                               fmt::format("[{}]", fmt::join(l.out_shape, ", ")), l.params, l.flops);
  }
  say(fmt::format("parameters: {} ({}), MACs per image at {}x{}: {} ({})", cost.params, format_count(cost.params),
                  size, size, cost.flops, format_count(cost.flops)));
}

Command setup_info(CLI::App& app) {
  auto* cmd = app.add_subcommand("info", "Show a model's structure, parameters and MACs (per layer and in total)");
  auto o = std::make_shared<InfoOptions>();
  auto* arch = add_arch_flags(*cmd, o->arch);
  auto* model = cmd->add_option("--model", o->model, "Model file")->check(CLI::ExistingFile);
  arch->excludes(model);
  cmd->add_option("--input-size", o->input_size,
                  "Input size for output shapes and MACs (default: 32 for CIFAR-style models, else 64)")
      ->check(CLI::Range(1, 8192));
  cmd->add_flag("!--no-layers", o->layers, "Totals only (no per-layer listing)");
  cmd->callback([arch, model] {
    if (arch->count() == 0 && model->count() == 0) throw CLI::RequiredError("--arch or --model");
  });
  return {cmd, [o] { run_info(*o); }};
}

}  // namespace rmnet::cli
