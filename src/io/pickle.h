#pragma once
// Internal: the torch.save state_dict format, read and written by rmnet itself (one module, one
// storage-type table; pickle_read.cpp the reader, pickle_write.cpp the writer, pickle.cpp the
// storage-type table and the zip archive layer). A state_dict file is a zip archive
// (PyTorchStreamReader/Writer) holding data.pkl, a protocol-2 pickle of an OrderedDict whose
// tensors are persistent ids naming storages, and one record data/<key> per storage.
//
// The reader interprets only the opcodes and globals a state_dict uses (no code is executed) and
// treats its input as hostile: every read is bounds-checked, every count is checked against the
// bytes that back it, and a malformed pickle is a c10::Error, never undefined behaviour.
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include <torch/types.h>

#include "rmnet/io/state_dict.h"

namespace caffe2::serialize {
class PyTorchStreamReader;
}

namespace rmnet::detail {

/// torch.<name> storage class -> dtype ("FloatStorage" -> kFloat). Throws for an unknown name.
torch::ScalarType storage_dtype(const std::string& name);
/// dtype -> storage class name (kFloat -> "FloatStorage"). Throws for a dtype without one.
const char* storage_name(torch::ScalarType dtype);

/// Gives the storage `key` (a 1-D tensor of `numel` elements of `dtype`); throws if it cannot.
using StorageLoader = std::function<torch::Tensor(const std::string& key, torch::ScalarType dtype, int64_t numel)>;

/// Interprets a pickle of a dict of tensors (protocol 2..4 opcodes; globals OrderedDict/dict,
/// _rebuild_tensor(_v2), _rebuild_parameter(_with_state), torch.*Storage). Every tensor view is
/// checked to lie inside its storage. Throws c10::Error for anything else.
StateDict unpickle_state_dict(std::string_view pickle, const StorageLoader& load);

/// The pickle of an OrderedDict of `items` the way torch.save writes it, plus the storages (one
/// per tensor, contiguous CPU copies) to store as records data/0, data/1, ...
struct PickledStateDict {
  std::string pickle;
  std::vector<torch::Tensor> storages;
};
PickledStateDict pickle_state_dict(const StateDict& items);

/// The state_dict in an opened torch.save archive of `archive_size` bytes. Records whose stated
/// size exceeds the archive's are refused (torch.save stores records uncompressed) before any
/// memory is allocated for them. A TorchScript archive is refused here (read_state_dict hands
/// those to torch::jit::load).
StateDict read_state_dict_archive(caffe2::serialize::PyTorchStreamReader& zip, size_t archive_size);

/// LibTorch's own unpickler (torch::pickle_load, torch::jit::load) trusts the lengths and memo
/// indices in a pickle: a crafted file makes it reserve gigabytes (found by fuzz_model_file and
/// fuzz_checkpoint). Before a pickle is handed to it, this walks every opcode and refuses (a
/// c10::Error naming `what`) a length that runs past the end, a memo index beyond the entries
/// stored so far, an opcode LibTorch does not read, or a missing STOP. Reads nothing out of bounds.
void check_pickle_for_libtorch(std::string_view pickle, const std::string& what);

/// check_pickle_for_libtorch on every *.pkl record of an archive of `archive_size` bytes.
void check_archive_pickles(caffe2::serialize::PyTorchStreamReader& zip, size_t archive_size,
                           const std::string& what);

/// True for a TorchScript archive (constants.pkl or code/).
bool is_torchscript_archive(caffe2::serialize::PyTorchStreamReader& zip);

/// The bytes of a torch.save archive of `items` (what torch.save(state_dict) writes).
std::string write_state_dict_archive(const StateDict& items);

}  // namespace rmnet::detail
