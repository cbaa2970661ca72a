// ONNX export of a plain network, written with the protobuf encoder of onnx_encode.h (no protobuf
// dependency). The QDQ export of a quantized network is in onnx_qdq.cpp.
#include <string>
#include <vector>

#include <fmt/format.h>
#include <torch/torch.h>

#include "onnx_encode.h"
#include "rmnet/core.h"
#include "rmnet/io/export.h"
#include "rmnet/io/model_file.h"

namespace rmnet {
using detail::Graph;

std::string to_onnx(const PlainNetImpl& net) {
  Graph gr;
  detail::GraphSink sink(gr);
  std::string x = "input";
  const size_t last = net.size() - 1;
  for (size_t i = 0; i < net.size(); ++i) {
    const auto& s = net.spec(i);
    x = ir::traits(s.kind).onnx(s, ir::module_tensors(*net.layer(i)), sink, fmt::format("l{}.", i), x,
                                i == last ? "logits" : "");
  }
  gr.g.bytes(2, "rmnet_plain");
  return gr.model_bytes(net.options().in_channels(), net.options().num_classes());
}

void export_onnx(const PlainNetImpl& net, const std::string& path) {
  TORCH_CHECK(net.size() > 0 && net.spec(net.size() - 1).kind == LayerKind::Linear,
              "ONNX export expects a classifier chain ending in a Linear layer");
  write_file_atomic(path, to_onnx(net));
}

}  // namespace rmnet
