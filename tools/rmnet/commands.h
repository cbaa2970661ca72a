#pragma once
// The rmnet CLI: one file per subcommand, each with setup_<name>(CLI::App&) that declares the
// subcommand and its options and returns it with the function to run once parsing succeeded.
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <CLI/CLI.hpp>

#include "rmnet/data/dataset.h"
#include "rmnet/models/model.h"
#include "rmnet/models/plain.h"
#include "rmnet/train/trainer.h"

namespace rmnet::cli {

/// A declared subcommand and what runs when it was given.
struct Command {
  CLI::App* app = nullptr;
  std::function<void()> run;
};

Command setup_list(CLI::App& app);
Command setup_info(CLI::App& app);
Command setup_init(CLI::App& app);
Command setup_convert(CLI::App& app);
Command setup_train(CLI::App& app);
Command setup_eval(CLI::App& app);
Command setup_export(CLI::App& app);
Command setup_bench(CLI::App& app);
Command setup_prune(CLI::App& app);
Command setup_quantize(CLI::App& app);
Command setup_compress(CLI::App& app);

/// Model-construction flags shared by info and init.
struct ArchFlags {
  std::string arch;
  int64_t num_classes = 1000;
  int64_t in_channels = 3;
  double width_mult = 1.0;
  bool relu = false;
  bool track_stats = false;
  ModelOptions to_options() const;
};
/// Validates an architecture name against the registry (message names the bad value).
CLI::Validator arch_validator();
/// Adds --arch (validated against the registry), --num-classes, --in-channels, --width-mult,
/// --relu and --track-stats to a subcommand.
CLI::Option* add_arch_flags(CLI::App& cmd, ArchFlags& flags);

/// The optimizer and learning-rate schedule flags (--lr, --momentum, --nesterov, --weight-decay,
/// --no-decay-bn-bias, --sparsity, --label-smoothing, --schedule, --milestones, --step-size,
/// --gamma, --warmup-epochs) into TrainOptions: train's, and any command that trains.
void add_optimizer_flags(CLI::App& cmd, TrainOptions& options);

/// Export flags shared by convert and export: --onnx FILE, --torchscript FILE, --pth FILE.
struct ExportFlags {
  std::string onnx, torchscript, pth;
};
void add_export_flags(CLI::App& cmd, ExportFlags& flags);
/// Writes the exports the flags ask for (each atomically) and says what was written.
void write_exports(const PlainNetImpl& net, const ExportFlags& flags);

/// Thrown by a command that must end the program with a given status after a clean unwind
/// (e.g. 130 after Ctrl-C, once the checkpoint is written).
struct ExitRequest {
  int code;
};

/// --device cpu|cuda|cuda:INDEX; "cuda" alone means cuda:`default_index` (LOCAL_RANK under
/// data parallelism). Errors name the flag and what is available.
torch::Device parse_device(const std::string& name, int default_index = 0);

/// open_dataset (data/datasets.h) with its errors prefixed by the flags (--dataset, --data).
DatasetPtr open_dataset_flags(const std::string& name, const std::string& dir, bool train);
/// --image-size's value: the flag where given (> 0), else the side `model` was trained at (its
/// preprocess metadata's crop), else 0 (the data set's default: datasets.h, image_size_for).
int64_t image_size_flag(int64_t flag, const ModelImpl* model);
/// --image-size's help text (the same on every command).
inline constexpr const char* kImageSizeHelp =
    "Image side: folder data sets crop to it (default 224); the others are resized to it (default: their own side, "
    "28 or 32). Default with a --model: the side it was trained at (its preprocess metadata)";
/// load_model with its errors prefixed by the flag that named the file (e.g. "--model 'x': ...").
ModelPtr load_model_flag(const std::string& flag, const std::string& path);
/// The library names options; the CLI user knows them as flags: each (library name, flag) pair's
/// name in `message` becomes the flag.
std::string with_flag_names(std::string message, const std::vector<std::pair<const char*, const char*>>& names);

/// Prints a line to stdout, flushed (progress-style messages).
void say(const std::string& line);

}  // namespace rmnet::cli
