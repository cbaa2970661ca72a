// The torch.save format around the pickle (see pickle.h): the one storage-type table and the zip
// archive layer (records data.pkl and data/<key>, read and written). The pickle machines are in
// pickle_read.cpp (unpickle_state_dict) and pickle_write.cpp (pickle_state_dict).
#include "pickle.h"

#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

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

/// LibTorch's archive reader makes each storage of the persistent id ('storage', torch.<T>Storage, key,
/// device, numel) hold numel elements but reads only the record <prefix><key> into it, whatever its size:
/// a short record would be read past its end. Walks the pickle (after check_pickle_for_libtorch),
/// resolving the memo, and checks every persistent id against its record; a persistent id of another
/// form is refused (LibTorch writes only this one).
void check_storage_records(std::string_view p, caffe2::serialize::PyTorchStreamReader& zip, const std::string& prefix,
                           const std::string& what) {
  struct Val {
    char kind = 'o';  // 's' string, 'g' global ("module name"), 'i' integer, 't' tuple, 'o' other
    std::string s;
    int64_t n = 0;
    std::vector<Val> items;
  };
  std::map<uint64_t, Val> memo;
  std::vector<Val> window;  // the values pushed since the last MARK
  Val last;                 // the value the last op pushed
  size_t i = 0;
  const auto fail = [&](const std::string& why) { TORCH_CHECK(false, what, ": ", why); };
  const auto need = [&](uint64_t n) {
    if (n > p.size() - i) fail("corrupt pickle at byte " + std::to_string(i));
  };
  const auto uint_le = [&](size_t n) {
    need(n);
    uint64_t v = 0;
    for (size_t k = 0; k < n; ++k) v |= static_cast<uint64_t>(static_cast<uint8_t>(p[i + k])) << (8 * k);
    i += n;
    return v;
  };
  const auto bytes = [&](size_t width) {
    const uint64_t n = uint_le(width);
    need(n);
    std::string v(p.substr(i, static_cast<size_t>(n)));
    i += static_cast<size_t>(n);
    return v;
  };
  const auto line = [&] {
    const size_t nl = p.find('\n', i);
    if (nl == std::string_view::npos) fail("corrupt pickle at byte " + std::to_string(i));
    std::string v(p.substr(i, nl - i));
    i = nl + 1;
    return v;
  };
  const auto push = [&](Val v) {
    last = v;
    window.push_back(std::move(v));
  };
  const auto str = [&](std::string v) { Val x; x.kind = 's'; x.s = std::move(v); push(std::move(x)); };
  const auto num = [&](int64_t v) { Val x; x.kind = 'i'; x.n = v; push(std::move(x)); };
  while (i < p.size()) {
    const uint8_t op = static_cast<uint8_t>(p[i++]);
    switch (op) {
      case '.': return;
      case '(': window.clear(); last = Val(); break;
      case 't': {
        Val x;
        x.kind = 't';
        x.items = std::move(window);
        window.clear();
        push(std::move(x));
        break;
      }
      case 'Q': {  // BINPERSID: the tuple just built
        const auto& t = last;
        const bool form = t.kind == 't' && t.items.size() == 5 && t.items[0].kind == 's' && t.items[0].s == "storage" &&
                          t.items[1].kind == 'g' && t.items[2].kind == 's' && t.items[3].kind == 's' &&
                          t.items[4].kind == 'i' && t.items[4].n >= 0;
        if (!form) fail("a persistent id that is not a ('storage', type, key, device, numel) tuple");
        const std::string& g = t.items[1].s;
        TORCH_CHECK(g.rfind("torch ", 0) == 0, what, ": unsupported storage type ", g);
        const auto elem = static_cast<uint64_t>(c10::elementSize(storage_dtype(g.substr(6))));
        const auto numel = static_cast<uint64_t>(t.items[4].n);
        if (numel > 0) {
          const std::string name = prefix + t.items[2].s;
          TORCH_CHECK(zip.hasRecord(name), what, ": no record '", name, "' for a storage");
          const uint64_t size = zip.getRecordSize(name);
          TORCH_CHECK(numel <= size / elem, what, ": storage record '", name, "' has ", size, " bytes, ", numel,
                      " elements of ", elem, " bytes stated");
        }
        window.clear();
        push(Val());
        break;
      }
      case 'h': { auto it = memo.find(uint_le(1)); push(it == memo.end() ? Val() : it->second); break; }
      case 'j': { auto it = memo.find(uint_le(4)); push(it == memo.end() ? Val() : it->second); break; }
      case 'q': memo[uint_le(1)] = last; break;
      case 'r': memo[uint_le(4)] = last; break;
      case 0x94: memo[memo.size()] = last; break;
      case 'X': str(bytes(4)); break;
      case 0x8c: str(bytes(1)); break;
      case 0x8d: str(bytes(8)); break;
      case 'K': num(static_cast<int64_t>(uint_le(1))); break;
      case 'M': num(static_cast<int64_t>(uint_le(2))); break;
      case 'J': num(static_cast<int64_t>(static_cast<int32_t>(uint_le(4)))); break;
      case 'c': {
        auto m = line();
        auto n = line();
        Val x;
        x.kind = 'g';
        x.s = m + " " + n;
        push(std::move(x));
        break;
      }
      // everything else: its argument skipped, an opaque value
      case 0x80: uint_le(1); break;  // PROTO
      case 'G': case 0x95: uint_le(8); push(Val()); break;
      case 'U': case 'C': case 0x8a: bytes(1); push(Val()); break;
      case 'T': case 'B': case 0x8b: bytes(4); push(Val()); break;
      case 0x8e: case 0x96: bytes(8); push(Val()); break;
      case 'I': case 'L': case 'F': case 'S': case 'V': case 'P': case 'g': line(); push(Val()); break;
      case 'p': line(); break;
      case 'i': line(); line(); push(Val()); break;
      default: push(Val()); break;  // no argument (check_pickle_for_libtorch refused unknown opcodes)
    }
  }
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
    const std::string_view pickle(static_cast<const char*>(ptr.get()), size);
    check_pickle_for_libtorch(pickle, what + " (" + name + ")");
    // the storages LibTorch reads: data.pkl's from <folder>data/<key>, constants.pkl's from <folder>.data/<key>
    const auto slash = name.rfind('/');
    const std::string folder = slash == std::string::npos ? "" : name.substr(0, slash + 1);
    const std::string base = name.substr(folder.size());
    if (base == "data.pkl" || base == "constants.pkl")
      check_storage_records(pickle, zip, folder + (base == "data.pkl" ? "data/" : ".data/"), what + " (" + name + ")");
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
