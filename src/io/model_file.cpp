#include "rmnet/io/model_file.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

#include <caffe2/serialize/inline_container.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "rmnet/io/state_dict.h"
#include "rmnet/models/plain.h"
#include "rmnet/models/registry.h"
#include "rmnet/quant/qnet.h"
#include "layer_json.h"
#include "pickle.h"

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
  o.num_classes(detail::int_or(j, "num_classes", 1000));
  o.in_channels(detail::int_or(j, "in_channels", 3));
  o.width_mult(j.value("width_mult", 1.0));
  o.relu6(j.value("relu6", true));
  o.zero_init_residual(j.value("zero_init_residual", false));
  o.track_block_stats(j.value("track_block_stats", false));
  o.shortcut_scale(j.value("shortcut_scale", false));
  // Bounds against forged headers (a model is built, hence allocated, before its tensors are read).
  TORCH_CHECK(o.num_classes() >= 1 && o.num_classes() <= (1 << 20), "num_classes ", o.num_classes(),
              " is not in [1, 2^20]");
  TORCH_CHECK(o.in_channels() >= 1 && o.in_channels() <= 4096, "in_channels ", o.in_channels(),
              " is not in [1, 4096]");
  TORCH_CHECK(o.width_mult() > 0 && o.width_mult() <= 16, "width_mult ", o.width_mult(), " is not in (0, 16]");
  return o;
}

// Provenance (models/provenance.h): per layer, a list of [role, module, first, count] runs
// ([] = unknown); absent in files written before it existed, which load with none.
json provenance_to_json(const std::vector<LayerOrigin>& origins) {
  json j = json::array();
  for (const auto& o : origins) {
    json runs = json::array();
    for (const auto& r : o.runs) runs.push_back({to_string(r.role), r.module, r.first, r.count});
    j.push_back(std::move(runs));
  }
  return j;
}

std::vector<LayerOrigin> provenance_from_json(const json& j) {
  std::vector<LayerOrigin> origins;
  for (const auto& layer : j) {
    LayerOrigin o;
    for (const auto& r : layer)
      o.runs.push_back({channel_role_from_string(r.at(0).get<std::string>()), r.at(1).get<std::string>(),
                        r.at(2).get<int64_t>(), r.at(3).get<int64_t>()});
    origins.push_back(std::move(o));
  }
  return origins;
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
  {
    // torch::pickle_load reads the zip through a reader that does not check its reads
    // (torch::jit::VectorReader): a corrupt central directory makes it read past the buffer (found
    // by fuzz_model_file). The stream reader checks them: open the archive with it first.
    std::istringstream in(bytes);
    std::unique_ptr<caffe2::serialize::PyTorchStreamReader> probe;
    try {
      probe = std::make_unique<caffe2::serialize::PyTorchStreamReader>(&in);
    } catch (const c10::Error& e) {
      TORCH_CHECK(false, "not an rmnet model file (not a readable torch archive: ", e.what_without_backtrace(), ")");
    }
    // and LibTorch's unpickler trusts the pickle's lengths and memo indices: walk it first
    detail::check_archive_pickles(*probe, bytes.size(), "model archive");
  }
  try {
    root = torch::pickle_load(std::vector<char>(bytes.begin(), bytes.end()));
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, "not an rmnet model file (not a readable torch archive: ",
                e.what_without_backtrace(), ")");
  } catch (const std::exception& e) {
    // LibTorch's type parser answers a bad restore_type_tag string (found by fuzz_model_file) with
    // a torch::jit::ErrorReport, which is not a c10::Error: the reader's contract is one error type.
    TORCH_CHECK(false, "not an rmnet model file (not a readable torch archive: ", e.what(), ")");
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
  TORCH_CHECK(detail::int_or(header, "version", 0) <= kVersion, "written by a newer rmnet (file version ",
              header.value("version", 0), ", this build reads up to ", kVersion, ")");

  // Tensors: every parameter and buffer of the model must be in the file with its shape.
  StateDict state;
  int64_t file_numel = 0;
  for (const auto& kv : dict.at("state").toGenericDict()) {
    TORCH_CHECK(kv.key().isString(), "a state key is not a string");
    TORCH_CHECK(kv.value().isTensor(), "state entry '", kv.key().toStringRef(), "' is not a tensor");
    state.emplace_back(kv.key().toStringRef(), kv.value().toTensor());
    file_numel += state.back().second.numel();
  }
  ModelPtr model;
  try {
    const auto options = options_from_json(header.at("options"));
    if (header.at("family") == "plain" || header.at("family") == "quantized") {
      std::vector<LayerSpec> layers;
      for (const auto& l : header.at("layers")) layers.push_back(layer_from_json(l));
      // A plain network's size is in its header: check the file can hold it before allocating.
      const auto needed = detail::layers_numel(layers);
      TORCH_CHECK(needed <= file_numel, "the header describes layers of at least ", needed,
                  " tensor elements, but the file holds ", file_numel);
      if (header.at("family") == "quantized") {
        model = std::make_shared<QuantizedNetImpl>(std::move(layers), options);
      } else {
        auto net = std::make_shared<PlainNetImpl>(std::move(layers), options);
        if (header.contains("provenance")) net->set_provenance(provenance_from_json(header.at("provenance")));
        model = net;
      }
    } else {
      model = create_model(options);
    }
    const json metadata = header.value("metadata", json::object());
    for (const auto& [k, v] : metadata.items()) model->metadata()[k] = v.get<std::string>();
  } catch (const json::exception& e) {
    TORCH_CHECK(false, "corrupt header: ", e.what());
  }

  for (const auto& [k, t] : state)
    if (t.is_floating_point()) {
      model->to(t.scalar_type());
      break;
    }
  load_state_dict(*model, state);
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
    if (!p->provenance().empty()) header["provenance"] = provenance_to_json(p->provenance());
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
