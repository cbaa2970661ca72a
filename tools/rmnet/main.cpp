// rmnet: residual-free networks from the command line. A thin layer over librmnet.
#include <iostream>
#include <vector>

#include "commands.h"
#include "rmnet/core.h"

int main(int argc, char** argv) {
  CLI::App app{"rmnet: turn residual networks into equivalent plain networks (RM operation)"};
  app.require_subcommand(1);
  app.fallthrough();
  app.set_version_flag("--version", rmnet::version());
  app.set_config("--config", "", "Read options from a TOML file (a [subcommand] section per subcommand)");
  int threads = 0;
  app.add_option("--threads", threads, "Intra-op threads (0 = OMP_NUM_THREADS if set, else all cores)")->check(CLI::Range(0, 4096));

  const std::vector<rmnet::cli::Command> commands = {
      rmnet::cli::setup_list(app),
      rmnet::cli::setup_info(app),
      rmnet::cli::setup_init(app),
      rmnet::cli::setup_convert(app),
      rmnet::cli::setup_train(app),
      rmnet::cli::setup_eval(app),
      rmnet::cli::setup_export(app),
      rmnet::cli::setup_bench(app),
      rmnet::cli::setup_prune(app),
      rmnet::cli::setup_quantize(app),
      rmnet::cli::setup_compress(app),
  };

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    rmnet::set_threads(threads);
    for (const auto& c : commands)
      if (c.app->parsed()) c.run();
  } catch (const rmnet::cli::ExitRequest& e) {
    return e.code;
  } catch (const std::exception& e) {
    std::cerr << "rmnet: error: " << rmnet::error_message(e) << std::endl;
    return 1;
  }
  return 0;
}
