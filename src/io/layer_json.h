#pragma once
// Internal: a plain network's layer specs as JSON, shared by the model file and the .pth export's
// chain description (one format for both).
#include <nlohmann/json.hpp>

#include "rmnet/models/plain.h"

namespace rmnet::detail {

using json = nlohmann::json;

inline json layer_to_json(const LayerSpec& s) {
  json j = {{"type", to_string(s.kind)}};
  switch (s.kind) {
    case LayerKind::Conv:
      j.update({{"in", s.in_channels}, {"out", s.out_channels}, {"kernel", s.kernel}, {"stride", s.stride},
                {"padding", s.padding}, {"groups", s.groups}, {"bias", s.bias}});
      break;
    case LayerKind::Linear:
      j.update({{"in", s.in_channels}, {"out", s.out_channels}, {"bias", s.bias}});
      break;
    case LayerKind::BatchNorm:
      j.update({{"channels", s.out_channels}, {"eps", s.eps}, {"momentum", s.momentum}});
      break;
    case LayerKind::PReLU:
    case LayerKind::Clamp:
      j["channels"] = s.out_channels;
      break;
    case LayerKind::MaxPool:
      j.update({{"kernel", s.kernel}, {"stride", s.stride}, {"padding", s.padding}});
      break;
    case LayerKind::SE:
      j.update({{"channels", s.out_channels}, {"scaled", s.scaled}, {"hidden", s.hidden}});
      break;
    default:
      break;
  }
  return j;
}

inline LayerSpec layer_from_json(const json& j) {
  const auto kind = layer_kind_from_string(j.at("type").get<std::string>());
  switch (kind) {
    case LayerKind::Conv:
      return LayerSpec::conv(j.at("in"), j.at("out"), j.at("kernel"), j.at("stride"), j.at("padding"),
                             j.at("groups"), j.at("bias"));
    case LayerKind::Linear:
      return LayerSpec::linear(j.at("in"), j.at("out"), j.at("bias"));
    case LayerKind::BatchNorm:
      return LayerSpec::batchnorm(j.at("channels"), j.at("eps"), j.at("momentum"));
    case LayerKind::PReLU:
      return LayerSpec::prelu(j.at("channels"));
    case LayerKind::Clamp:
      return LayerSpec::clamp(j.at("channels"));
    case LayerKind::MaxPool:
      return LayerSpec::maxpool(j.at("kernel"), j.at("stride"), j.at("padding"));
    case LayerKind::AvgPool:
      return LayerSpec::avgpool();
    case LayerKind::Flatten:
      return LayerSpec::flatten();
    case LayerKind::ReLU:
      return LayerSpec::relu();
    case LayerKind::SE:
      return LayerSpec::se(j.at("channels"), j.at("scaled"), j.at("hidden"));
  }
  TORCH_CHECK(false, "unreachable");
}

}  // namespace rmnet::detail
