// Everything about packages: the format (manifest.hpp), building them
// (pack.hpp), assembling models from units (assembler.hpp) and reading them
// from a directory (package_reader.hpp). Kept for callers that include it;
// new code includes what it uses, or an audience's header (device.hpp,
// producer.hpp, lab.hpp).
#pragma once

#include "bitinc/assembler.hpp"
#include "bitinc/manifest.hpp"
#include "bitinc/pack.hpp"
#include "bitinc/package_reader.hpp"
