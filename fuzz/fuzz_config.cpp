// The TOML configuration of `rmnet --config FILE`: CLI11's config reader (header-only, so it is
// compiled and instrumented here) on an app shaped like rmnet's (main options, subcommand sections
// with string, integer, float, flag and list options and range checks, as in configs/*.toml).
#include <CLI/CLI.hpp>

#include "fuzz_common.h"

RMNET_FUZZ_INIT

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  rmnet::fuzz::with_file(rmnet::fuzz::view(data, size), ".toml", [](const std::string& path) {
    CLI::App app{"rmnet"};
    app.require_subcommand(1);
    app.fallthrough();
    app.set_config("--config", "");
    int threads = 0;
    app.add_option("--threads", threads)->check(CLI::Range(0, 4096));
    auto* train = app.add_subcommand("train");
    std::string arch, dataset, out, schedule;
    int64_t epochs = 1, batch = 1;
    double lr = 0.1, wd = 0;
    bool amp = false;
    std::vector<int64_t> milestones;
    train->add_option("--arch", arch);
    train->add_option("--dataset", dataset)->check(CLI::IsMember({"cifar10", "cifar100", "fashion-mnist"}));
    train->add_option("--out", out);
    train->add_option("--schedule", schedule);
    train->add_option("--epochs", epochs)->check(CLI::Range(int64_t{1}, int64_t{100000}));
    train->add_option("--batch-size", batch)->check(CLI::PositiveNumber);
    train->add_option("--lr", lr);
    train->add_option("--weight-decay", wd)->check(CLI::NonNegativeNumber);
    train->add_option("--milestones", milestones);
    train->add_flag("--amp", amp);
    auto* convert = app.add_subcommand("convert");
    std::string fusion;
    double tolerance = 1e-4;
    bool keep_bn = false;
    convert->add_option("--pointwise-fusion", fusion)->check(CLI::IsMember({"never", "always", "auto"}));
    convert->add_option("--tolerance", tolerance);
    convert->add_flag("--keep-bn", keep_bn);
    for (const char* sub : {"train", "convert"}) {
      std::vector<std::string> args = {"rmnet", "--config", path, sub};
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      try {
        app.clear();
        app.parse(static_cast<int>(argv.size()), argv.data());
      } catch (const CLI::Error&) {  // CLI11's answer to bad input: a parse error with a message
      }
    }
  });
  return 0;
}
