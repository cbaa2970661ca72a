#pragma once
// Internal: a plain network's layer specs as JSON, shared by the model file and the .pth export's
// chain description (one format for both).
#include <algorithm>
#include <limits>
#include <vector>

#include <nlohmann/json.hpp>

#include "rmnet/models/plain.h"

namespace rmnet::detail {

using json = nlohmann::json;

/// An integer field, checked to be one (nlohmann's conversion of a non-integer number to int64 is
/// undefined behaviour when it is out of range: found by fuzz_chain_json).
inline int64_t int_at(const json& j, const char* key) {
  const auto& v = j.at(key);
  TORCH_CHECK(v.is_number_integer(), "'", key, "' is not an integer (got ", v.dump(), ")");
  return v.get<int64_t>();
}
inline int64_t int_or(const json& j, const char* key, int64_t fallback) {
  return j.is_object() && j.contains(key) ? int_at(j, key) : fallback;
}

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
      return LayerSpec::conv(int_at(j, "in"), int_at(j, "out"), int_at(j, "kernel"), int_at(j, "stride"),
                             int_at(j, "padding"), int_at(j, "groups"), j.at("bias").get<bool>());
    case LayerKind::Linear:
      return LayerSpec::linear(int_at(j, "in"), int_at(j, "out"), j.at("bias").get<bool>());
    case LayerKind::BatchNorm:
      return LayerSpec::batchnorm(int_at(j, "channels"), j.at("eps").get<double>(), j.at("momentum").get<double>());
    case LayerKind::PReLU:
      return LayerSpec::prelu(int_at(j, "channels"));
    case LayerKind::Clamp:
      return LayerSpec::clamp(int_at(j, "channels"));
    case LayerKind::MaxPool:
      return LayerSpec::maxpool(int_at(j, "kernel"), int_at(j, "stride"), int_at(j, "padding"));
    case LayerKind::AvgPool:
      return LayerSpec::avgpool();
    case LayerKind::Flatten:
      return LayerSpec::flatten();
    case LayerKind::ReLU:
      return LayerSpec::relu();
    case LayerKind::SE:
      return LayerSpec::se(int_at(j, "channels"), int_at(j, "scaled"), int_at(j, "hidden"));
  }
  TORCH_CHECK(false, "unreachable");
}

/// A lower bound of the number of tensor elements (parameters and buffers) the layers hold, saturating at
/// INT64_MAX; readers compare it with the data they actually have before building a network from
/// a description they did not write, so a forged header cannot make them allocate without bound.
inline int64_t layers_numel(const std::vector<LayerSpec>& layers) {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  auto mul = [](int64_t a, int64_t b) -> int64_t {
    if (a <= 0 || b <= 0) return 0;
    return a > kMax / b ? kMax : a * b;
  };
  auto add = [](int64_t a, int64_t b) -> int64_t { return a > kMax - b ? kMax : a + b; };
  int64_t n = 0;
  for (const auto& s : layers) {
    switch (s.kind) {
      case LayerKind::Conv:
        n = add(n, mul(mul(s.out_channels, s.groups >= 1 ? s.in_channels / s.groups : 0), mul(s.kernel, s.kernel)));
        n = add(n, s.bias ? std::max<int64_t>(s.out_channels, 0) : 0);
        break;
      case LayerKind::Linear:
        n = add(n, add(mul(s.out_channels, s.in_channels), s.bias ? std::max<int64_t>(s.out_channels, 0) : 0));
        break;
      case LayerKind::BatchNorm:
        n = add(n, mul(4, s.out_channels));  // weight, bias, running mean/var (+ a scalar count)
        break;
      case LayerKind::PReLU:
        n = add(n, std::max<int64_t>(s.out_channels, 0));
        break;
      case LayerKind::Clamp:
        n = add(n, mul(2, s.out_channels));
        break;
      case LayerKind::SE:
        n = add(n, add(mul(2, mul(s.hidden, s.scaled)), add(s.hidden, s.scaled)));
        break;
      default:
        break;
    }
  }
  return n;
}

}  // namespace rmnet::detail
