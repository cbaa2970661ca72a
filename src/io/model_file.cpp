#include "rmnet/io/model_file.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "rmnet/models/plain.h"
#include "rmnet/models/registry.h"
#include "rmnet/quant/qnet.h"
#include "layer_json.h"

namespace rmnet {
namespace {

using json = nlohmann::json;
using detail::layer_from_json;
using detail::layer_to_json;
constexpr const char* kFormat = "rmnet-model";
constexpr int kVersion = 1;

json options_to_json(const ModelOptions& o) {
  return {{"arch", o.arch()},
          {"num_classes", o.num_classes()},
          {"in_channels", o.in_channels()},
          {"width_mult", o.width_mult()},
          {"relu6", o.relu6()},
          {"zero_init_residual", o.zero_init_residual()},
          {"track_block_stats", o.track_block_stats()},
          {"shortcut_scale", o.shortcut_scale()}};
}

ModelOptions options_from_json(const json& j) {
  ModelOptions o(j.at("arch").get<std::string>());
  o.num_classes(j.value("num_classes", int64_t{1000}));
  o.in_channels(j.value("in_channels", int64_t{3}));
  o.width_mult(j.value("width_mult", 1.0));
  o.relu6(j.value("relu6", true));
  o.zero_init_residual(j.value("zero_init_residual", false));
  o.track_block_stats(j.value("track_block_stats", false));
  o.shortcut_scale(j.value("shortcut_scale", false));
  return o;
}

std::string read_file(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  TORCH_CHECK(fs::exists(path, ec), "no such file");
  TORCH_CHECK(!fs::is_directory(path, ec), "it is a directory, not a model file");
  std::ifstream in(path, std::ios::binary);
  TORCH_CHECK(in, "cannot open it: ", std::strerror(errno));
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  TORCH_CHECK(!in.bad(), "read error: ", std::strerror(errno));
  return bytes;
}

ModelPtr load_model_bytes(const std::string& bytes) {
  TORCH_CHECK(!bytes.empty(), "the file is empty");
  c10::IValue root;
  try {
    root = torch::pickle_load(std::vector<char>(bytes.begin(), bytes.end()));
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, "not an rmnet model file (not a readable torch archive: ",
                e.what_without_backtrace(), ")");
  }
  TORCH_CHECK(root.isGenericDict(), "not an rmnet model file (the archive holds a ", root.tagKind(),
              ", not a dict)");
  auto dict = root.toGenericDict();
  TORCH_CHECK(dict.contains("rmnet") && dict.at("rmnet").isString(),
              "not an rmnet model file (no 'rmnet' header; a PyTorch state_dict needs an import step)");
  TORCH_CHECK(dict.contains("state") && dict.at("state").isGenericDict(), "the 'state' dict is missing");
  json header;
  try {
    header = json::parse(dict.at("rmnet").toStringRef());
  } catch (const json::exception& e) {
    TORCH_CHECK(false, "corrupt header: ", e.what());
  }
  TORCH_CHECK(header.value("format", "") == kFormat, "not an rmnet model file (format '",
              header.value("format", ""), "')");
  TORCH_CHECK(header.value("version", 0) <= kVersion, "written by a newer rmnet (file version ",
              header.value("version", 0), ", this build reads up to ", kVersion, ")");

  ModelPtr model;
  try {
    const auto options = options_from_json(header.at("options"));
    if (header.at("family") == "plain" || header.at("family") == "quantized") {
      std::vector<LayerSpec> layers;
      for (const auto& l : header.at("layers")) layers.push_back(layer_from_json(l));
      if (header.at("family") == "quantized")
        model = std::make_shared<QuantizedNetImpl>(std::move(layers), options);
      else
        model = std::make_shared<PlainNetImpl>(std::move(layers), options);
    } else {
      model = create_model(options);
    }
    const json metadata = header.value("metadata", json::object());
    for (const auto& [k, v] : metadata.items()) model->metadata()[k] = v.get<std::string>();
  } catch (const json::exception& e) {
    TORCH_CHECK(false, "corrupt header: ", e.what());
  }

  // Tensors: every parameter and buffer of the model must be in the file with its shape.
  std::map<std::string, at::Tensor> state;
  for (const auto& kv : dict.at("state").toGenericDict()) {
    TORCH_CHECK(kv.value().isTensor(), "state entry '", kv.key().toStringRef(), "' is not a tensor");
    state[kv.key().toStringRef()] = kv.value().toTensor();
  }
  for (const auto& [k, t] : state)
    if (t.is_floating_point()) {
      model->to(t.scalar_type());
      break;
    }
  torch::NoGradGuard no_grad;
  auto copy_in = [&](const std::string& key, torch::Tensor& dst) {
    auto it = state.find(key);
    TORCH_CHECK(it != state.end(), "missing tensor '", key, "' (expected shape ", dst.sizes(), ")");
    TORCH_CHECK(it->second.sizes() == dst.sizes(), "tensor '", key, "' has shape ", it->second.sizes(),
                " in the file, but the model expects ", dst.sizes());
    dst.copy_(it->second);
    state.erase(it);
  };
  for (auto& p : model->named_parameters(true)) copy_in(p.key(), p.value());
  for (auto& b : model->named_buffers(true)) copy_in(b.key(), b.value());
  TORCH_CHECK(state.empty(), "unexpected tensor '", state.begin()->first, "' (shape ",
              state.begin()->second.sizes(), ") not in a ", header.at("options").value("arch", "?"), " model");
  return model;
}

}  // namespace

void write_file_atomic(const std::string& path, const std::string& bytes) {
  namespace fs = std::filesystem;
  const fs::path target(path);
  const fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  std::error_code ec;
  TORCH_CHECK(fs::is_directory(dir, ec), "cannot write '", path, "': folder '", dir.string(), "' does not exist");
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    TORCH_CHECK(out, "cannot write '", path, "': ", std::strerror(errno));
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.flush();
    if (!out) {
      std::remove(tmp.c_str());
      TORCH_CHECK(false, "cannot write '", path, "': ", std::strerror(errno));
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    std::remove(tmp.c_str());
    TORCH_CHECK(false, "cannot write '", path, "': ", why);
  }
}

std::string serialize_model(const ModelImpl& model) {
  json header = {{"format", kFormat},
                 {"version", kVersion},
                 {"family", model.family()},
                 {"options", options_to_json(model.options())},
                 {"metadata", model.metadata()}};
  if (auto* p = dynamic_cast<const PlainNetImpl*>(&model)) {
    header["layers"] = json::array();
    for (const auto& s : p->specs()) header["layers"].push_back(layer_to_json(s));
  }
  if (auto* q = dynamic_cast<const QuantizedNetImpl*>(&model)) {
    header["layers"] = json::array();
    for (const auto& s : q->specs()) header["layers"].push_back(layer_to_json(s));
  }
  c10::Dict<std::string, at::Tensor> state;
  for (const auto& p : model.named_parameters(true)) state.insert(p.key(), p.value().detach().cpu().contiguous());
  for (const auto& b : model.named_buffers(true)) state.insert(b.key(), b.value().detach().cpu().contiguous());
  c10::impl::GenericDict root(c10::StringType::get(), c10::AnyType::get());
  root.insert("rmnet", header.dump());
  root.insert("state", state);
  const auto bytes = torch::pickle_save(root);
  return std::string(bytes.begin(), bytes.end());
}

void save_model(const ModelImpl& model, const std::string& path) { write_file_atomic(path, serialize_model(model)); }

ModelPtr deserialize_model(const std::string& bytes, const std::string& name) {
  try {
    return load_model_bytes(bytes);
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, "model file '", name, "': ", e.what_without_backtrace());
  }
}

ModelPtr load_model(const std::string& path) {
  std::string bytes;
  try {
    bytes = read_file(path);
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, "model file '", path, "': ", e.what_without_backtrace());
  }
  return deserialize_model(bytes, path);
}

}  // namespace rmnet
