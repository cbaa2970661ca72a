#include "rmnet/models/provenance.h"

#include <fmt/format.h>
#include <torch/torch.h>

namespace rmnet {

namespace {
constexpr std::pair<ChannelRole, const char*> kRoleNames[] = {
    {ChannelRole::Layer, "layer"},
    {ChannelRole::Branch, "branch"},
    {ChannelRole::Reserved, "reserved"},
    {ChannelRole::Merged, "merged"},
};

/// Appends a run, joining it to the last one when it continues it.
void append(std::vector<ChannelRun>& runs, const ChannelRun& r) {
  if (r.count == 0) return;
  if (!runs.empty()) {
    auto& last = runs.back();
    if (last.role == r.role && last.module == r.module && last.first + last.count == r.first) {
      last.count += r.count;
      return;
    }
  }
  runs.push_back(r);
}
}  // namespace

std::string to_string(ChannelRole role) {
  for (const auto& [r, name] : kRoleNames)
    if (r == role) return name;
  return "?";
}

ChannelRole channel_role_from_string(const std::string& name) {
  for (const auto& [r, n] : kRoleNames)
    if (name == n) return r;
  TORCH_CHECK(false, "unknown channel role '", name, "' (expected layer, branch, reserved or merged)");
}

LayerOrigin LayerOrigin::of(ChannelRole role, std::string module, int64_t channels, int64_t first) {
  TORCH_CHECK(channels >= 0 && first >= 0, "a channel run needs a non-negative count and first channel (got ",
              channels, ", ", first, ")");
  LayerOrigin o;
  append(o.runs, ChannelRun{role, std::move(module), first, channels});
  return o;
}

int64_t LayerOrigin::channels() const {
  int64_t n = 0;
  for (const auto& r : runs) n += r.count;
  return n;
}

std::pair<const ChannelRun*, int64_t> LayerOrigin::at(int64_t c) const {
  TORCH_CHECK(c >= 0, "channel index must be non-negative (got ", c, ")");
  int64_t offset = 0;
  for (const auto& r : runs) {
    if (c < offset + r.count) return {&r, r.first + (c - offset)};
    offset += r.count;
  }
  TORCH_CHECK(false, "channel ", c, " is outside the ", offset, " channels this origin describes");
}

LayerOrigin LayerOrigin::select(const std::vector<int64_t>& keep) const {
  if (!known()) return {};
  LayerOrigin o;
  for (auto c : keep) {
    auto [run, src] = at(c);
    append(o.runs, ChannelRun{run->role, run->module, src, 1});
  }
  return o;
}

LayerOrigin LayerOrigin::operator+(const LayerOrigin& next) const {
  if (!known() || !next.known()) return {};
  LayerOrigin o = *this;
  for (const auto& r : next.runs) append(o.runs, r);
  return o;
}

std::string LayerOrigin::describe() const {
  if (!known()) return "unknown";
  std::string s;
  for (const auto& r : runs)
    s += fmt::format("{}{} {}[{}:{}]", s.empty() ? "" : " + ", to_string(r.role), r.module, r.first, r.first + r.count);
  return s;
}

}  // namespace rmnet
