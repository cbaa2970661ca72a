// TorchScript export of a plain network: each layer's tensors registered on a torch::jit::Module
// and a forward `define`d as a chain of torch.* calls (also the deploy runtime's source).
#include <cmath>
#include <sstream>

#include <fmt/format.h>
#include <torch/torch.h>

#include "rmnet/io/export.h"
#include "rmnet/ir/traits.h"
#include "rmnet/io/model_file.h"

namespace rmnet {
torch::jit::Module to_torchscript(const PlainNetImpl& net) {
  torch::jit::Module m("__torch__.rmnet.PlainNet");
  std::ostringstream src;
  src << "def forward(self, x):\n";
  auto reg = [&](const std::string& name, const torch::Tensor& t, bool param) {
    if (param)
      m.register_parameter(name, t.detach().clone(), false);
    else
      m.register_buffer(name, t.detach().clone());
  };
  for (size_t i = 0; i < net.size(); ++i) {
    const auto& s = net.spec(i);
    ir::traits(s.kind).torchscript(s, ir::module_tensors(*net.layer(i)), reg, src, "l" + std::to_string(i) + "_");
  }
  src << "    return x\n";
  m.define(src.str());
  m.eval();
  return m;
}

void export_torchscript(const PlainNetImpl& net, const std::string& path) {
  auto m = to_torchscript(net);
  std::ostringstream os;
  m.save(os);
  write_file_atomic(path, os.str());
}

}  // namespace rmnet
