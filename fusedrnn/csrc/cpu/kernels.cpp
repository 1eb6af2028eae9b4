// The CPU kernels for the processor at hand: the widest instruction set of isa.h that it
// supports, chosen at the first call. The environment variable FUSEDRNN_CPU_ISA names one
// set to use instead (the tests run each set so), never one the CPU lacks.
#include <c10/util/Exception.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "isa.h"

namespace fusedrnn::cpu {
namespace {

struct InstructionSet {
  std::string name;
  const Kernels* kernels;
  bool supported;
};

// Widest first.
std::vector<InstructionSet> instruction_sets() {
  std::vector<InstructionSet> sets;
#if FUSEDRNN_CPU_WIDE_ISAS
  __builtin_cpu_init();
  const bool avx2_fma = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  sets.push_back({"avx512", &avx512::kernels,
                  avx2_fma && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
                      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl")});
  sets.push_back({"avx2", &avx2::kernels, avx2_fma});
#endif
  sets.push_back({"baseline", &baseline::kernels, true});
  return sets;
}

InstructionSet choose() {
  const char* requested = std::getenv("FUSEDRNN_CPU_ISA");
  std::string names;
  for (const InstructionSet& set : instruction_sets()) {
    if (requested == nullptr && set.supported) return set;
    if (requested != nullptr && set.name == requested) {
      TORCH_CHECK_VALUE(set.supported, "FUSEDRNN_CPU_ISA=", requested, ": this CPU does not support it");
      return set;
    }
    names += (names.empty() ? "" : ", ") + set.name;
  }
  TORCH_CHECK_VALUE(false, "FUSEDRNN_CPU_ISA must be one of ", names, " (or unset), got '", requested, "'");
}

// A failed choice (a bad FUSEDRNN_CPU_ISA) throws out of the initialiser and is retried,
// so every call raises it.
const InstructionSet& chosen() {
  static const InstructionSet set = choose();
  return set;
}

}  // namespace

const Kernels& kernels() { return *chosen().kernels; }

std::string instruction_set() { return chosen().name; }

}  // namespace fusedrnn::cpu
