// The family -> translator table of pass 1, and the translator of a network that is plain already.
#include "translate.h"

#include <map>


#include "rm_parts.h"

namespace rmnet::detail {

namespace {

const std::map<std::string, Translator>& translators() {
  static const std::map<std::string, Translator> table = {
      {"resnet", resnet_to_chain},       {"mobilenet_v2", mobilenet_v2_to_chain},
      {"mobilenet_v1", mobilenet_v1_to_chain}, {"repvgg", repvgg_to_chain},
      {"rmnet", rmnet_to_chain},         {"preact_resnet", preact_to_chain},
      {"plain", plain_to_chain},
  };
  return table;
}

}  // namespace

Translator translator_for(const std::string& family) {
  const auto& table = translators();
  auto it = table.find(family);
  TORCH_CHECK(it != table.end(), "cannot convert a model of family '", family, "'");
  return it->second;
}

bool has_translator(const std::string& family) { return translators().count(family) > 0; }

/// A plain network is read as it is.
void plain_to_chain(const ModelImpl& model, const TranslateOptions&, Chain& ch) {
  ch = Chain::from(model_as<PlainNetImpl>(model, "PlainNet"));
}

}  // namespace rmnet::detail
