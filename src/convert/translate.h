#pragma once
// Internal: pass 1 of the conversion (reserve + merge) is one translator per model family, each
// appending the family's layers to a Chain. `translator_for` is the one table keyed by family
// (ModelImpl::family()); adding a family is one translate_<family>.cpp file and one line there.
#include <string>

#include "rmnet/ir/chain.h"
#include "rmnet/convert/rm.h"
#include "rmnet/models/mobilenet.h"
#include "rmnet/models/repvgg.h"
#include "rmnet/models/resnet.h"

namespace rmnet::detail {

using ir::BNParams;
using ir::Chain;
using ir::ChainLayer;
using ir::to_f64;
using ir::to_work;
using ir::work_options;

/// What a translator may be asked to vary.
struct TranslateOptions {
  DownsampleMode downsample = DownsampleMode::Type2;
  bool grouped_reserve = true;
};

/// Appends the plain form (BN kept) of `model` to `ch`.
using Translator = void (*)(const ModelImpl& model, const TranslateOptions& options, Chain& ch);

/// The translator of a family; throws naming the family when there is none.
Translator translator_for(const std::string& family);
/// Whether `family` has a translator (convert() accepts it).
bool has_translator(const std::string& family);

// One per family (translate_<family>.cpp).
void resnet_to_chain(const ModelImpl& model, const TranslateOptions& options, Chain& ch);
void mobilenet_v2_to_chain(const ModelImpl& model, const TranslateOptions& options, Chain& ch);
void mobilenet_v1_to_chain(const ModelImpl& model, const TranslateOptions& options, Chain& ch);
void repvgg_to_chain(const ModelImpl& model, const TranslateOptions& options, Chain& ch);
void rmnet_to_chain(const ModelImpl& model, const TranslateOptions& options, Chain& ch);
void preact_to_chain(const ModelImpl& model, const TranslateOptions& options, Chain& ch);
void plain_to_chain(const ModelImpl& model, const TranslateOptions& options, Chain& ch);

// Blocks that more than one family is built from.
/// A Bottleneck (ResNet, RMNet stages); `grouped`: reserve convs as grouped convs where exact.
void bottleneck_to_chain(const BottleneckImpl& b, DownsampleMode mode, bool grouped, Chain& ch);
/// A RepVGG block re-parameterised into one 3x3 conv (RepVGG, the RMNet stem).
void repvgg_block_to_chain(const RepVGGBlockImpl& b, Chain& ch);
/// Conv, BN, ReLU/ReLU6 (MobileNetV2's stem and last layer, MobileNetV1's layers).
void conv_bn_act_to_chain(const ConvBNActImpl& seq, bool relu6, Chain& ch);

}  // namespace rmnet::detail
