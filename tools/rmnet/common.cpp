#include <iostream>
#include <regex>

#include <torch/cuda.h>

#include "commands.h"
#include "rmnet/data/preprocess.h"
#include "rmnet/data/datasets.h"
#include "rmnet/io/export.h"
#include "rmnet/io/model_file.h"
#include "rmnet/models/registry.h"

namespace rmnet::cli {

ModelOptions ArchFlags::to_options() const {
  ModelOptions o(arch);
  o.num_classes(num_classes).in_channels(in_channels).width_mult(width_mult).relu6(!relu);
  o.track_block_stats(track_stats);
  return o;
}

CLI::Validator arch_validator() {
  return CLI::Validator(
      [](const std::string& name) {
        return is_model_name(name) ? std::string() : "unknown architecture '" + name + "' (see `rmnet list`)";
      },
      "ARCH");
}

CLI::Option* add_arch_flags(CLI::App& cmd, ArchFlags& f) {
  auto* arch = cmd.add_option("--arch", f.arch, "Architecture name (see `rmnet list`)")->check(arch_validator());
  cmd.add_option("--num-classes", f.num_classes, "Number of classes")->check(CLI::Range(1, 1000000));
  cmd.add_option("--in-channels", f.in_channels, "Input image channels")->check(CLI::Range(1, 4096));
  cmd.add_option("--width-mult", f.width_mult, "Width multiplier (MobileNetV2)")->check(CLI::Range(0.01, 16.0));
  cmd.add_flag("--relu", f.relu, "MobileNetV2 with ReLU instead of ReLU6");
  cmd.add_flag("--track-stats", f.track_stats, "Blocks track input/output statistics (for conversion)");
  return arch;
}

void add_optimizer_flags(CLI::App& cmd, TrainOptions& t) {
  cmd.add_option("--lr", t.schedule().lr(), "Peak learning rate")->check(CLI::Range(0.0, 100.0));
  cmd.add_option("--momentum", t.momentum(), "SGD momentum")->check(CLI::Range(0.0, 1.0));
  cmd.add_flag("--nesterov", t.nesterov(), "Nesterov momentum");
  cmd.add_option("--weight-decay,--wd", t.weight_decay(), "Weight decay")->check(CLI::Range(0.0, 1.0));
  cmd.add_flag("--no-decay-bn-bias", t.no_decay_bn_bias(), "No weight decay on BN parameters and biases");
  cmd.add_option("--sparsity", t.sparsity(),
                  "Network slimming: L1 penalty lambda on BN scales (and shortcut scales), e.g. 1e-4")
      ->check(CLI::Range(0.0, 1.0));
  cmd.add_option("--label-smoothing", t.label_smoothing(), "Label smoothing")->check(CLI::Range(0.0, 0.99));
  cmd.add_option("--schedule", t.schedule().kind(), "LR schedule")->check(CLI::IsMember({"constant", "step", "multistep", "cosine"}));
  cmd.add_option("--milestones", t.schedule().milestones(), "multistep: epochs where lr *= gamma");
  cmd.add_option("--step-size", t.schedule().step_size(), "step: epochs between lr *= gamma")->check(CLI::Range(1, 100000));
  cmd.add_option("--gamma", t.schedule().gamma(), "step/multistep factor")->check(CLI::Range(0.0, 1.0));
  cmd.add_option("--warmup-epochs", t.schedule().warmup_epochs(), "Linear warm-up epochs")->check(CLI::Range(0.0, 1000.0));
}

void add_export_flags(CLI::App& cmd, ExportFlags& f) {
  cmd.add_option("--onnx", f.onnx, "Also write ONNX (opset 13)");
  cmd.add_option("--torchscript", f.torchscript, "Also write a TorchScript module (torch.jit.load-able)");
  cmd.add_option("--pth", f.pth, "Also write a PyTorch state_dict (+ FILE.json describing the chain)");
}

void write_exports(const PlainNetImpl& net, const ExportFlags& f) {
  if (!f.onnx.empty()) {
    export_onnx(net, f.onnx);
    say("wrote " + f.onnx + " (ONNX, opset 13)");
  }
  if (!f.torchscript.empty()) {
    export_torchscript(net, f.torchscript);
    say("wrote " + f.torchscript + " (TorchScript)");
  }
  if (!f.pth.empty()) {
    export_pth(net, f.pth);
    say("wrote " + f.pth + " and " + f.pth + ".json (state_dict of a torch.nn.Sequential)");
  }
}

torch::Device parse_device(const std::string& name, int default_index) {
  torch::Device d(torch::kCPU);
  try {
    d = torch::Device(name);
  } catch (const std::exception&) {
    TORCH_CHECK(false, "--device '", name, "' is not cpu, cuda or cuda:INDEX");
  }
  TORCH_CHECK(d.is_cpu() || d.is_cuda(), "--device '", name, "' is not cpu, cuda or cuda:INDEX");
  if (d.is_cuda()) {
    TORCH_CHECK(torch::cuda::is_available(), "--device ", name,
                ": no CUDA device is available on this machine (use --device cpu)");
    if (!d.has_index()) d = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(default_index));
    TORCH_CHECK(d.index() < static_cast<int>(torch::cuda::device_count()), "--device ", name, ": cuda:", d.index(),
                " does not exist (", torch::cuda::device_count(), " CUDA devices)");
  }
  return d;
}

int64_t image_size_flag(int64_t flag, const ModelImpl* model) {
  if (flag > 0) return flag;
  if (model)
    if (const auto p = Preprocess::from_metadata(model->metadata())) return p->crop;
  return 0;
}

DatasetPtr open_dataset_flags(const std::string& name, const std::string& dir, bool train) {
  try {
    return open_dataset(name, dir, train);
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, "--dataset ", name, dir.empty() ? " (no --data DIR)" : " --data " + dir, ": ",
                e.what_without_backtrace());
  }
}

ModelPtr load_model_flag(const std::string& flag, const std::string& path) {
  try {
    return load_model(path);
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, flag, " '", path, "': ", e.what_without_backtrace());
  }
}

std::string with_flag_names(std::string message, const std::vector<std::pair<const char*, const char*>>& names) {
  for (const auto& [name, flag] : names) message = std::regex_replace(message, std::regex(name), flag);
  return message;
}

void say(const std::string& line) { std::cout << line << std::endl; }

}  // namespace rmnet::cli
