#include <fmt/format.h>
#include <torch/torch.h>

#include "commands.h"
#include "rmnet/convert/rm.h"
#include "rmnet/io/model_file.h"
#include "rmnet/io/onnx_qdq.h"

namespace rmnet::cli {
namespace {

struct ExportCliOptions {
  std::string model;
  ExportFlags exports;
};

void run_export(const ExportCliOptions& o) {
  TORCH_CHECK(!o.exports.onnx.empty() || !o.exports.torchscript.empty() || !o.exports.pth.empty(),
              "nothing to export: give --onnx, --torchscript and/or --pth");
  auto model = load_model(o.model);
  if (auto q = std::dynamic_pointer_cast<QuantizedNetImpl>(model)) {  // QDQ ONNX only
    TORCH_CHECK(o.exports.torchscript.empty() && o.exports.pth.empty(), "'", o.model,
                "' is a quantized network: it exports to ONNX (QDQ) only, not --torchscript / --pth");
    export_onnx_qdq(*q, o.exports.onnx);
    say("wrote " + o.exports.onnx + " (QDQ ONNX, opset 13)");
    return;
  }
  PlainNet plain = std::dynamic_pointer_cast<PlainNetImpl>(model);
  if (!plain) {  // a residual model: convert it (deploy form, verified) first
    auto r = convert(*model);
    say(fmt::format("{} is a {} model: converted to a plain network ({})", o.model, model->options().arch(),
                    r.report.to_string()));
    TORCH_CHECK(r.report.passed, "the conversion of '", o.model, "' is not equivalent; nothing written");
    plain = r.net;
  }
  write_exports(*plain, o.exports);
}

}  // namespace

Command setup_export(CLI::App& app) {
  auto* cmd = app.add_subcommand("export", "Export a model (converted first if residual) to ONNX / TorchScript / PyTorch");
  auto o = std::make_shared<ExportCliOptions>();
  cmd->add_option("--model", o->model, "Model file")->required()->check(CLI::ExistingFile);
  add_export_flags(*cmd, o->exports);
  return {cmd, [o] { run_export(*o); }};
}

}  // namespace rmnet::cli
