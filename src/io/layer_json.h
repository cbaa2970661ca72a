#pragma once
// Internal: a plain network's layer specs as JSON, shared by the model file and the .pth export's
// chain description (one format for both).
#include <algorithm>
#include <limits>
#include <type_traits>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "rmnet/ir/traits.h"
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
  for (const auto& f : ir::traits(s.kind).json)
    std::visit([&](auto member) { j[f.key] = s.*member; }, f.member);
  return j;
}

inline LayerSpec layer_from_json(const json& j) {
  LayerSpec s;
  s.kind = layer_kind_from_string(j.at("type").get<std::string>());
  for (const auto& f : ir::traits(s.kind).json) {
    std::visit(
        [&](auto member) {
          using T = std::remove_reference_t<decltype(s.*member)>;
          if constexpr (std::is_same_v<T, int64_t>)
            s.*member = int_at(j, f.key);
          else
            s.*member = j.at(f.key).get<T>();
        },
        f.member);
  }
  return s;
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
  for (const auto& s : layers)
    for (const auto& t : ir::traits(s.kind).tensors(s)) {
      int64_t numel = 1;
      for (auto d : t.shape) numel = mul(numel, d);
      n = add(n, numel);
    }
  return n;
}

}  // namespace rmnet::detail
