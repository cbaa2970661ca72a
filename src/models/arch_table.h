#pragma once
// A family's fixed architecture table (name -> config) and the three lookups every family offers:
// config by name (error naming the family), membership, names in table order.
#include <string>
#include <utility>
#include <vector>

#include <c10/util/Exception.h>

namespace rmnet::detail {

template <class Config>
class ArchTable {
 public:
  struct Entry {
    const char* name;
    Config config;
  };
  /// `what` names the family in errors ("ResNet architecture").
  ArchTable(const char* what, std::vector<Entry> entries) : what_(what), entries_(std::move(entries)) {}

  const Config& at(const std::string& arch) const {
    for (const auto& e : entries_)
      if (arch == e.name) return e.config;
    TORCH_CHECK(false, "unknown ", what_, " '", arch, "'");
  }
  bool contains(const std::string& arch) const {
    for (const auto& e : entries_)
      if (arch == e.name) return true;
    return false;
  }
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& e : entries_) out.emplace_back(e.name);
    return out;
  }

 private:
  const char* what_;
  std::vector<Entry> entries_;
};

}  // namespace rmnet::detail
