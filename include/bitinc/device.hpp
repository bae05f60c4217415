// The device's headers: everything the decode component (bitinc::decode)
// implements — the package format, the push decoder, assembling and
// reading packages, models and errors. Nothing here needs HTTP, OpenCV,
// zstd or OpenSSL. A device that also uses bitinc's fetcher adds
// bitinc/net.hpp and bitinc/trust.hpp (fetch component); one that uses
// bitinc's engine, bitinc/engine.hpp and bitinc/progressive.hpp (runtime).
// C and other languages: bitinc/bitinc.h.
#pragma once

#include "bitinc/assembler.hpp"
#include "bitinc/codec.hpp"
#include "bitinc/decoder.hpp"
#include "bitinc/error.hpp"
#include "bitinc/ladder.hpp"
#include "bitinc/manifest.hpp"
#include "bitinc/model.hpp"
#include "bitinc/package_reader.hpp"
#include "bitinc/version.hpp"
