#include "rmnet/io/state_dict.h"

#include <filesystem>
#include <map>
#include <memory>

#include <caffe2/serialize/inline_container.h>
#include <torch/script.h>
#include <torch/torch.h>

#include "pickle.h"

namespace rmnet {
namespace {

StateDict read_archive(const std::string& path) {
  std::unique_ptr<caffe2::serialize::PyTorchStreamReader> zip;
  try {
    zip = std::make_unique<caffe2::serialize::PyTorchStreamReader>(path);
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, "not a torch.save zip archive (", e.what_without_backtrace(), ")");
  }
  if (detail::is_torchscript_archive(*zip)) {
    detail::check_archive_pickles(*zip, std::filesystem::file_size(path), "TorchScript archive");
    torch::jit::Module m;
    try {
      m = torch::jit::load(path);
    } catch (const c10::Error&) {
      throw;
    } catch (const std::exception& e) {
      // the TorchScript importer's parsers (type tags, code) throw torch::jit::ErrorReport
      TORCH_CHECK(false, "unreadable TorchScript archive (", e.what(), ")");
    }
    StateDict sd;
    for (const auto& p : m.named_parameters(true)) sd.emplace_back(p.name, p.value.detach());
    for (const auto& b : m.named_buffers(true)) sd.emplace_back(b.name, b.value.detach());
    return sd;
  }
  return detail::read_state_dict_archive(*zip, std::filesystem::file_size(path));
}

}  // namespace

void check_torch_archive(const std::string& path, const std::string& what) {
  caffe2::serialize::PyTorchStreamReader zip(path);
  detail::check_archive_pickles(zip, std::filesystem::file_size(path), what);
}

StateDict read_state_dict(const std::string& path) {
  TORCH_CHECK(std::filesystem::is_regular_file(path), "weights file '", path, "': no such file");
  try {
    return read_archive(path);
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, "weights file '", path, "': ", e.what_without_backtrace());
  }
}

void load_state_dict(ModelImpl& model, const StateDict& state, const std::string& source) {
  const std::string where = source.empty() ? "" : source + ": ";
  std::map<std::string, torch::Tensor> remaining;
  for (const auto& [k, t] : state) {
    TORCH_CHECK(remaining.emplace(k, t).second, where, "tensor '", k, "' appears twice");
  }
  torch::NoGradGuard no_grad;
  auto copy_in = [&](const std::string& key, torch::Tensor& dst) {
    auto it = remaining.find(key);
    TORCH_CHECK(it != remaining.end(), where, "missing tensor '", key, "' (expected shape ", dst.sizes(), ")");
    TORCH_CHECK(it->second.sizes() == dst.sizes(), where, "tensor '", key, "' has shape ", it->second.sizes(),
                " in the file, but the ", model.options().arch(), " model expects ", dst.sizes());
    dst.copy_(it->second);
    remaining.erase(it);
  };
  for (auto& p : model.named_parameters(true)) copy_in(p.key(), p.value());
  for (auto& b : model.named_buffers(true)) copy_in(b.key(), b.value());
  TORCH_CHECK(remaining.empty(), where, "unexpected tensor '", remaining.begin()->first, "' (shape ",
              remaining.begin()->second.sizes(), ") not in a ", model.options().arch(), " model");
}

}  // namespace rmnet
