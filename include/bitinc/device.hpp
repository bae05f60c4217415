// The device's headers: everything the decode component (bitinc::decode)
// implements — the package format, the push decoder, a ProgressiveModel
// over the app's ByteSource and engine factory, assembling and reading
// packages, models and errors — and the declarations of bitinc's fetcher
// (bitinc/fetch.hpp: fetch_package, make_package_source, and the
// FetchOptions a ProgressiveModel takes). Nothing the decode component
// implements needs HTTP, OpenCV, zstd or OpenSSL: the fetcher (with
// signatures, bitinc/trust.hpp) is the fetch component, its OpenCV engine
// and ProgressiveModel's URL constructor the runtime component. C and
// other languages: bitinc/bitinc.h.
#pragma once

#include "bitinc/assembler.hpp"
#include "bitinc/byte_source.hpp"
#include "bitinc/codec.hpp"
#include "bitinc/decoder.hpp"
#include "bitinc/error.hpp"
#include "bitinc/fetch.hpp"
#include "bitinc/ladder.hpp"
#include "bitinc/manifest.hpp"
#include "bitinc/model.hpp"
#include "bitinc/package_reader.hpp"
#include "bitinc/progressive.hpp"
#include "bitinc/version.hpp"
