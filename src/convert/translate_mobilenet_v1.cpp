// MobileNetV1 is plain already: its conv-BN-activation layers are copied as they are.
#include "rm_parts.h"
#include "translate.h"

namespace rmnet::detail {

void mobilenet_v1_to_chain(const ModelImpl& model, const TranslateOptions&, Chain& ch) {
  const auto& m = model_as<MobileNetV1Impl>(model, "MobileNetV1");
  for (const auto& f : *m.features)
    conv_bn_act_to_chain(*dynamic_cast<ConvBNActImpl*>(f.ptr().get()), m.options().relu6(), ch);
  head_to_chain(*m.classifier, ch);
}

}  // namespace rmnet::detail
