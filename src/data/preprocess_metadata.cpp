// The metadata half of Preprocess: in rmnet::core (io/torchvision.cpp writes it; infer/ reads it),
// without OpenCV. The image half, Preprocess::apply, is preprocess.cpp in rmnet::data.
#include <sstream>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include "rmnet/core.h"
#include "rmnet/data/preprocess.h"

namespace rmnet {
namespace {
std::vector<double> parse_list(const std::string& s, const std::string& key) {
  std::vector<double> v;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    try {
      v.push_back(std::stod(item));
    } catch (const std::exception&) {
      TORCH_CHECK(false, "metadata '", key, "' is not a comma-separated list of numbers: '", s, "'");
    }
  }
  return v;
}
}  // namespace

std::optional<Preprocess> Preprocess::from_metadata(const std::map<std::string, std::string>& m) {
  auto get = [&](const std::string& k) -> const std::string* {
    auto it = m.find("preprocess." + k);
    return it == m.end() ? nullptr : &it->second;
  };
  const auto crop = metadata_int(m, "preprocess.crop");
  if (!crop) return std::nullopt;
  Preprocess p;
  p.crop = *crop;
  p.resize = metadata_int(m, "preprocess.resize").value_or(p.crop);
  TORCH_CHECK(p.crop > 0 && p.resize > 0, "metadata 'preprocess.crop' and 'preprocess.resize' must be positive (got ",
              p.crop, " and ", p.resize, ")");
  if (get("mean")) p.mean = parse_list(*get("mean"), "preprocess.mean");
  if (get("std")) p.std = parse_list(*get("std"), "preprocess.std");
  return p;
}

void Preprocess::to_metadata(std::map<std::string, std::string>& m) const {
  m["preprocess.resize"] = std::to_string(resize);
  m["preprocess.crop"] = std::to_string(crop);
  m["preprocess.mean"] = fmt::format("{}", fmt::join(mean, ","));
  m["preprocess.std"] = fmt::format("{}", fmt::join(std, ","));
}

}  // namespace rmnet
