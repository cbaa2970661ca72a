// PyTorch export of a plain network: a torch.save state_dict file (the pickle module writes it)
// plus the chain's JSON description.
#include <algorithm>
#include <fstream>
#include <iterator>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "layer_json.h"
#include "pickle.h"
#include "rmnet/io/export.h"
#include "rmnet/io/model_file.h"
#include "rmnet/io/state_dict.h"

namespace rmnet {

std::string chain_json(const PlainNetImpl& net) {
  nlohmann::json j = {{"format", "rmnet-chain"},
                      {"version", 1},
                      {"in_channels", net.options().in_channels()},
                      {"num_classes", net.options().num_classes()},
                      {"layers", nlohmann::json::array()}};
  for (const auto& s : net.specs()) j["layers"].push_back(detail::layer_to_json(s));
  return j.dump(2) + "\n";
}

std::shared_ptr<PlainNetImpl> plain_from_chain_json(const std::string& text, const std::string& source,
                                                   int64_t max_numel) {
  try {
    const auto j = nlohmann::json::parse(text);
    TORCH_CHECK(j.is_object() && j.value("format", "") == "rmnet-chain", "not an rmnet chain description (format '",
                j.is_object() ? j.value("format", "") : "", "')");
    TORCH_CHECK(detail::int_or(j, "version", 0) == 1, "chain version ", j.value("version", nlohmann::json()), " is not 1");
    std::vector<LayerSpec> layers;
    for (const auto& l : j.at("layers")) layers.push_back(detail::layer_from_json(l));
    const auto numel = detail::layers_numel(layers);
    TORCH_CHECK(numel <= max_numel, "the layers hold at least ", numel, " tensor elements, more than ", max_numel);
    ModelOptions options("plain");
    options.in_channels(detail::int_at(j, "in_channels")).num_classes(detail::int_at(j, "num_classes"));
    TORCH_CHECK(options.in_channels() >= 1, "in_channels ", options.in_channels(), " is not positive");
    return std::make_shared<PlainNetImpl>(std::move(layers), options);
  } catch (const nlohmann::json::exception& e) {
    TORCH_CHECK(false, source, ": ", e.what());
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, source, ": ", e.what_without_backtrace());
  }
}

std::shared_ptr<PlainNetImpl> import_pth(const std::string& path) {
  const auto state = read_state_dict(path);
  int64_t numel = 0;
  for (const auto& [k, t] : state) numel += t.numel();
  const std::string json_path = path + ".json";
  std::ifstream in(json_path, std::ios::binary);
  TORCH_CHECK(in, "chain description '", json_path, "': cannot open it");
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto net = plain_from_chain_json(text, "chain description '" + json_path + "'", numel);
  for (const auto& [k, t] : state)
    if (t.is_floating_point()) {
      net->to(t.scalar_type());
      break;
    }
  load_state_dict(*net, state, "weights file '" + path + "'");
  return net;
}

void export_pth(const PlainNetImpl& net, const std::string& path) {
  StateDict items;
  for (const auto& p : net.named_parameters(true)) items.emplace_back(p.key(), p.value());
  for (const auto& b : net.named_buffers(true)) items.emplace_back(b.key(), b.value());
  // Sequential order: by layer index, then the module's own order
  std::stable_sort(items.begin(), items.end(), [](const auto& a, const auto& b) {
    return std::stoll(a.first.substr(0, a.first.find('.'))) < std::stoll(b.first.substr(0, b.first.find('.')));
  });
  const auto bytes = detail::write_state_dict_archive(items);
  write_file_atomic(path, bytes);
  write_file_atomic(path + ".json", chain_json(net));
}

}  // namespace rmnet
