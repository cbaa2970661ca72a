#include <iostream>

#include <fmt/format.h>
#include <torch/torch.h>

#include "commands.h"
#include "rmnet/io/model_file.h"
#include "rmnet/models/plain.h"
#include "rmnet/models/registry.h"

namespace rmnet::cli {

struct InfoOptions {
  ArchFlags arch;
  std::string model;
  int64_t input_size = 0;
};

static void run_info(const InfoOptions& o) {
  ModelPtr model = o.model.empty() ? create_model(o.arch.to_options()) : load_model(o.model);
  const auto& opt = model->options();
  say(fmt::format("{}: family {}, {} classes, {} input channels", o.model.empty() ? opt.arch() : o.model,
                  model->family(), opt.num_classes(), opt.in_channels()));
  for (const auto& [k, v] : model->metadata()) say(fmt::format("  {}: {}", k, v));
  if (auto* plain = dynamic_cast<PlainNetImpl*>(model.get())) {
    std::vector<int64_t> shape;
    if (o.input_size > 0) shape = {1, opt.in_channels(), o.input_size, o.input_size};
    std::cout << plain->summary(shape);
  } else {
    std::cout << *model << "\n";
  }
  say(fmt::format("parameters: {}", count_parameters(*model)));
}

Command setup_info(CLI::App& app) {
  auto* cmd = app.add_subcommand("info", "Show a model's structure and parameter count");
  auto o = std::make_shared<InfoOptions>();
  auto* arch = add_arch_flags(*cmd, o->arch);
  auto* model = cmd->add_option("--model", o->model, "Model file")->check(CLI::ExistingFile);
  arch->excludes(model);
  cmd->add_option("--input-size", o->input_size, "Show output shapes for this input size (plain models)")
      ->check(CLI::Range(1, 8192));
  cmd->callback([arch, model] {
    if (arch->count() == 0 && model->count() == 0) throw CLI::RequiredError("--arch or --model");
  });
  return {cmd, [o] { run_info(*o); }};
}

}  // namespace rmnet::cli
