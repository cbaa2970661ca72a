#include "rmnet/train/checkpoint.h"

#include <filesystem>
#include <sstream>

#include <caffe2/serialize/inline_container.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "rmnet/io/model_file.h"
#include "rmnet/io/state_dict.h"

namespace rmnet {

void save_checkpoint(const std::string& path, const ModelImpl& model, const torch::optim::SGD& optimizer,
                     const TrainState& state, double best_top1, const std::string& config) {
  nlohmann::json header = {{"format", "rmnet-checkpoint"},
                           {"version", 1},
                           {"epoch", state.epoch},
                           {"global_step", state.global_step},
                           {"batch_in_epoch", state.batch_in_epoch},
                           {"best_top1", best_top1},
                           {"config", config}};
  torch::serialize::OutputArchive ar;
  ar.write("rmnet_checkpoint", c10::IValue(header.dump()));
  const std::string bytes = serialize_model(model);
  auto blob = torch::empty({static_cast<int64_t>(bytes.size())}, torch::kUInt8);
  std::memcpy(blob.data_ptr<uint8_t>(), bytes.data(), bytes.size());
  ar.write("model_file", blob);
  torch::serialize::OutputArchive opt;
  optimizer.save(opt);
  ar.write("optimizer", opt);
  ar.write("cpu_rng_state", at::detail::getDefaultCPUGenerator().get_state());
  std::ostringstream os;
  ar.save_to(os);
  write_file_atomic(path, os.str());
}

namespace {
torch::serialize::InputArchive open_checkpoint(const std::string& path) {
  TORCH_CHECK(std::filesystem::is_regular_file(path), "checkpoint '", path, "': no such file");
  torch::serialize::InputArchive ar;
  try {
    // LibTorch's unpickler trusts the pickles' lengths and memo indices: walk them first
    check_torch_archive(path, "checkpoint archive");
    ar.load_from(path);
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, "checkpoint '", path, "': not a readable checkpoint (", e.what_without_backtrace(), ")");
  } catch (const std::exception& e) {  // the TorchScript importer's type parser: torch::jit::ErrorReport
    TORCH_CHECK(false, "checkpoint '", path, "': not a readable checkpoint (", e.what(), ")");
  }
  return ar;
}
}  // namespace

static Checkpoint load_checkpoint_archive(const std::string& path);

Checkpoint load_checkpoint(const std::string& path) {
  // LibTorch's archive reader answers some corrupt files with std exceptions (e.g. out_of_range
  // from a map lookup), not c10::Error: every failure becomes an error naming the file.
  try {
    return load_checkpoint_archive(path);
  } catch (const c10::Error&) {
    throw;
  } catch (const std::exception& e) {
    TORCH_CHECK(false, "checkpoint '", path, "': not a readable checkpoint (", e.what(), ")");
  }
}

static Checkpoint load_checkpoint_archive(const std::string& path) {
  auto ar = open_checkpoint(path);
  c10::IValue hv;
  TORCH_CHECK(ar.try_read("rmnet_checkpoint", hv) && hv.isString(), "checkpoint '", path,
              "': not an rmnet checkpoint (no header)");
  Checkpoint c;
  try {
    const auto header = nlohmann::json::parse(hv.toStringRef());
    TORCH_CHECK(header.at("epoch").is_number_integer() && header.at("global_step").is_number_integer() &&
                    (!header.contains("batch_in_epoch") || header.at("batch_in_epoch").is_number_integer()),
                "checkpoint '", path, "': corrupt header (epoch/step are not integers)");
    c.state.epoch = header.at("epoch").get<int64_t>();
    c.state.global_step = header.at("global_step").get<int64_t>();
    c.state.batch_in_epoch = header.value("batch_in_epoch", int64_t{0});
    c.best_top1 = header.value("best_top1", 0.0);
    c.config = header.value("config", "");
  } catch (const nlohmann::json::exception& e) {
    TORCH_CHECK(false, "checkpoint '", path, "': corrupt header (", e.what(), ")");
  }
  torch::Tensor blob;
  TORCH_CHECK(ar.try_read("model_file", blob) && blob.defined() && blob.dim() == 1 &&
                  blob.scalar_type() == torch::kUInt8,
              "checkpoint '", path, "': no model (a 1-D uint8 tensor 'model_file' was expected)");
  blob = blob.contiguous();
  c.model = deserialize_model(std::string(reinterpret_cast<const char*>(blob.data_ptr<uint8_t>()), blob.numel()),
                              path);
  torch::Tensor rng;
  if (ar.try_read("cpu_rng_state", rng)) {
    auto gen = at::detail::getDefaultCPUGenerator();
    try {
      gen.set_state(rng);
    } catch (const c10::Error& e) {
      TORCH_CHECK(false, "checkpoint '", path, "': unusable RNG state (", e.what_without_backtrace(), ")");
    }
  }
  return c;
}

void load_optimizer_state(const std::string& path, torch::optim::SGD& optimizer) {
  auto ar = open_checkpoint(path);
  torch::serialize::InputArchive opt;
  ar.read("optimizer", opt);
  optimizer.load(opt);
  // The state was read on the CPU: momentum buffers go next to their parameters, in their layout.
  for (auto& g : optimizer.param_groups())
    for (auto& p : g.params()) {
      auto it = optimizer.state().find(p.unsafeGetTensorImpl());
      if (it == optimizer.state().end()) continue;
      auto& st = static_cast<torch::optim::SGDParamState&>(*it->second);
      if (st.momentum_buffer().defined())
        st.momentum_buffer(st.momentum_buffer().to(p.device()).contiguous(p.suggest_memory_format()));
    }
}

}  // namespace rmnet
