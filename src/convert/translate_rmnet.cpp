// RMNet (the paper's zoo) to a plain chain: a RepVGG-block stem, then grouped Bottlenecks whose
// reserve adds whole groups (so the reserve convs are always grouped, whatever the options say).
#include "rm_parts.h"
#include "rmnet/models/rmnet_family.h"
#include "translate.h"

namespace rmnet::detail {

void rmnet_to_chain(const ModelImpl& model, const TranslateOptions& options, Chain& ch) {
  const auto& m = model_as<RMNetImpl>(model, "RMNet");
  for (const auto& blk : *m.layer0) repvgg_block_to_chain(*blk.ptr()->as<RepVGGBlockImpl>(), ch);
  for (const auto& stage : m.stages)
    for (const auto& blk : *stage)
      bottleneck_to_chain(*blk.ptr()->as<BottleneckImpl>(), options.downsample, /*grouped=*/true, ch);
  head_to_chain(*m.fc, ch);
}

}  // namespace rmnet::detail
