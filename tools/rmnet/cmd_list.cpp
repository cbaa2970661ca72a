#include <fmt/format.h>

#include "commands.h"
#include "rmnet/models/registry.h"

namespace rmnet::cli {

Command setup_list(CLI::App& app) {
  auto* cmd = app.add_subcommand("list", "List the model architectures");
  auto verbose = std::make_shared<bool>(false);
  cmd->add_flag("-v,--verbose", *verbose, "Describe each architecture");
  return {cmd, [verbose] {
    for (const auto& name : model_names())
      say(*verbose ? fmt::format("{:<20} {}", name, model_description(name)) : name);
  }};
}

}  // namespace rmnet::cli
