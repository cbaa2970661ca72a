#include <iostream>

#include "commands.h"
#include "rmnet/io/export.h"
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

void say(const std::string& line) { std::cout << line << std::endl; }

}  // namespace rmnet::cli
