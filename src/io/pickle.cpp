// The torch.save format around the pickle (see pickle.h): the one storage-type table and the zip
// archive layer (records data.pkl and data/<key>, read and written). The pickle machines are in
// pickle_read.cpp (unpickle_state_dict) and pickle_write.cpp (pickle_state_dict).
#include "pickle.h"

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <tuple>

#include <caffe2/serialize/inline_container.h>
#include <torch/torch.h>

namespace rmnet::detail {
namespace {

// ---- the one storage-type table ------------------------------------------------------------------

struct StorageType {
  const char* name;
  torch::ScalarType dtype;
};
constexpr StorageType kStorageTypes[] = {
    {"FloatStorage", torch::kFloat}, {"DoubleStorage", torch::kDouble},     {"HalfStorage", torch::kHalf},
    {"BFloat16Storage", torch::kBFloat16}, {"LongStorage", torch::kLong}, {"IntStorage", torch::kInt},
    {"ShortStorage", torch::kShort}, {"CharStorage", torch::kChar},         {"ByteStorage", torch::kByte},
    {"BoolStorage", torch::kBool}};

/// A record's bytes, refused before allocation if its stated size cannot be (see header).
std::tuple<at::DataPtr, size_t> record(caffe2::serialize::PyTorchStreamReader& zip, const std::string& name,
                                      size_t archive_size) {
  TORCH_CHECK(zip.hasRecord(name), "the archive holds no record '", name, "'");
  const size_t stated = zip.getRecordSize(name);
  TORCH_CHECK(stated <= archive_size, "record '", name, "' states ", stated, " bytes in an archive of ",
              archive_size, " bytes");
  return zip.getRecord(name);
}

}  // namespace

torch::ScalarType storage_dtype(const std::string& name) {
  for (const auto& s : kStorageTypes)
    if (name == s.name) return s.dtype;
  TORCH_CHECK(false, "unsupported storage type torch.", name);
}

const char* storage_name(torch::ScalarType dtype) {
  for (const auto& s : kStorageTypes)
    if (dtype == s.dtype) return s.name;
  TORCH_CHECK(false, "cannot store tensors of type ", dtype, " in a state_dict file");
}

void check_archive_pickles(caffe2::serialize::PyTorchStreamReader& zip, size_t archive_size,
                           const std::string& what) {
  for (const auto& name : zip.getAllRecords()) {
    if (name.size() < 4 || name.compare(name.size() - 4, 4, ".pkl") != 0) continue;
    auto [ptr, size] = record(zip, name, archive_size);
    check_pickle_for_libtorch(std::string_view(static_cast<const char*>(ptr.get()), size), what + " (" + name + ")");
  }
}

bool is_torchscript_archive(caffe2::serialize::PyTorchStreamReader& zip) {
  return zip.hasRecord("constants.pkl") || zip.hasRecord("code/__torch__.py");
}

StateDict read_state_dict_archive(caffe2::serialize::PyTorchStreamReader& zip, size_t archive_size) {
  TORCH_CHECK(!is_torchscript_archive(zip), "a TorchScript archive, not a state_dict");
  TORCH_CHECK(zip.hasRecord("data.pkl"), "the archive holds no data.pkl");
  auto [ptr, size] = record(zip, "data.pkl", archive_size);
  const std::string_view pickle(static_cast<const char*>(ptr.get()), size);
  return unpickle_state_dict(pickle, [&](const std::string& key, torch::ScalarType dtype, int64_t numel) {
    const std::string name = "data/" + key;
    auto [data, bytes] = record(zip, name, archive_size);
    const size_t elem = c10::elementSize(dtype);
    TORCH_CHECK(static_cast<uint64_t>(numel) <= bytes / elem, "tensor data record '", name, "' has ", bytes,
                " bytes, ", numel, " elements of ", elem, " bytes expected");
    auto t = torch::empty({numel}, torch::TensorOptions().dtype(dtype));
    if (numel > 0) std::memcpy(t.data_ptr(), data.get(), static_cast<size_t>(numel) * elem);
    return t;
  });
}

std::string write_state_dict_archive(const StateDict& items) {
  const auto pk = pickle_state_dict(items);
  std::string bytes;
  caffe2::serialize::PyTorchStreamWriter w([&](const void* d, size_t n) {
    bytes.append(static_cast<const char*>(d), n);
    return n;
  });
  w.writeRecord("data.pkl", pk.pickle.data(), pk.pickle.size());
  w.writeRecord("byteorder", "little", 6);
  for (size_t i = 0; i < pk.storages.size(); ++i) {
    const auto& t = pk.storages[i];
    w.writeRecord("data/" + std::to_string(i), t.data_ptr(), t.numel() * t.element_size());
  }
  w.writeEndOfFile();
  return bytes;
}

}  // namespace rmnet::detail
