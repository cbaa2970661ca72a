#include <fmt/format.h>
#include <torch/torch.h>

#include "commands.h"
#include "rmnet/io/model_file.h"
#include "rmnet/models/registry.h"

namespace rmnet::cli {

struct InitOptions {
  ArchFlags arch;
  uint64_t seed = 0;
  bool random_bn = false;
  std::string out;
};

static void run_init(const InitOptions& o) {
  torch::manual_seed(o.seed);
  auto model = create_model(o.arch.to_options());
  if (o.random_bn) randomize_batchnorm(*model, o.seed);
  save_model(*model, o.out);
  say(fmt::format("wrote {} ({}, {} parameters, seed {}{})", o.out, o.arch.arch, count_parameters(*model), o.seed,
                  o.random_bn ? ", random BN statistics" : ""));
}

Command setup_init(CLI::App& app) {
  auto* cmd = app.add_subcommand("init", "Write a randomly initialised model file");
  auto o = std::make_shared<InitOptions>();
  add_arch_flags(*cmd, o->arch)->required();
  cmd->add_option("--seed", o->seed, "Random seed");
  cmd->add_flag("--random-bn", o->random_bn,
                "Randomise BatchNorm statistics and affine parameters (as if trained; for trying conversion)");
  cmd->add_option("--out", o->out, "Output model file")->required();
  return {cmd, [o] { run_init(*o); }};
}

}  // namespace rmnet::cli
