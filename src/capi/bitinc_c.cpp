// The C API (include/bitinc/bitinc.h) over PackageDecoder: exceptions become
// status codes at this boundary, and nothing C++ crosses it.
#include "bitinc/bitinc.h"

#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "bitinc/decoder.hpp"
#include "bitinc/error.hpp"
#include "bitinc/version.hpp"

struct bitinc_decoder {
    bitinc::PackageDecoder decoder;
    std::string last_error;
    // What the last event hands out, kept until the next call.
    bitinc::DecoderEvent event;
    std::vector<bitinc_range> ranges;
};

namespace {

// The C status of an Error's code.
int status_of(bitinc::ErrorCode code) {
    using Code = bitinc::ErrorCode;
    switch (code) {
        case Code::invalid_argument:
            return BITINC_ERROR_INVALID_ARGUMENT;
        case Code::corrupt_data:
            return BITINC_ERROR_INVALID_DATA;
        case Code::io:
            return BITINC_ERROR_IO;
        case Code::network:
            return BITINC_ERROR_NETWORK;
        case Code::unsupported:
            return BITINC_ERROR_UNSUPPORTED;
        case Code::cancelled:
            return BITINC_ERROR_CANCELLED;
        case Code::out_of_memory:
            return BITINC_ERROR_OUT_OF_MEMORY;
        case Code::untrusted:
            return BITINC_ERROR_UNTRUSTED;
        case Code::not_ready:
            return BITINC_ERROR_NOT_READY;
        case Code::unavailable:
            return BITINC_ERROR_UNAVAILABLE;
        case Code::internal:
            return BITINC_ERROR_INTERNAL;
    }
    return BITINC_ERROR_INTERNAL;
}

// Runs `work`, turning what it throws into a status and the decoder's last
// error message.
template <typename Work>
int guarded(bitinc_decoder* handle, Work work) {
    try {
        work();
        return BITINC_OK;
    } catch (const std::bad_alloc&) {
        if (handle) handle->last_error = "out of memory";
        return BITINC_ERROR_OUT_OF_MEMORY;
    } catch (const bitinc::Error& error) {
        if (handle) handle->last_error = error.what();
        return status_of(error.code());
    } catch (const std::exception& error) {
        if (handle) handle->last_error = error.what();
        return BITINC_ERROR_INTERNAL;
    } catch (...) {
        if (handle) handle->last_error = "unknown exception";
        return BITINC_ERROR_INTERNAL;
    }
}

int event_kind(bitinc::DecoderEvent::Kind kind) {
    using Kind = bitinc::DecoderEvent::Kind;
    switch (kind) {
        case Kind::need_input:
            return BITINC_EVENT_NEED_INPUT;
        case Kind::manifest_ready:
            return BITINC_EVENT_MANIFEST_READY;
        case Kind::topology_ready:
            return BITINC_EVENT_TOPOLOGY_READY;
        case Kind::unit_damaged:
            return BITINC_EVENT_UNIT_DAMAGED;
        case Kind::rung_ready:
            return BITINC_EVENT_RUNG_READY;
        case Kind::accuracy_point_ready:
            return BITINC_EVENT_ACCURACY_POINT_READY;
        case Kind::degraded:
            return BITINC_EVENT_DEGRADED;
        case Kind::done:
            return BITINC_EVENT_DONE;
    }
    return 0;
}

}  // namespace

extern "C" {

const char* bitinc_status_string(int status) {
    switch (status) {
        case BITINC_OK:
            return "ok";
        case BITINC_ERROR_INVALID_ARGUMENT:
            return "invalid argument";
        case BITINC_ERROR_INVALID_DATA:
            return "invalid data";
        case BITINC_ERROR_NOT_READY:
            return "not ready";
        case BITINC_ERROR_UNAVAILABLE:
            return "unavailable";
        case BITINC_ERROR_OUT_OF_MEMORY:
            return "out of memory";
        case BITINC_ERROR_INTERNAL:
            return "internal error";
        case BITINC_ERROR_UNTRUSTED:
            return "untrusted package";
        case BITINC_ERROR_IO:
            return "input/output error";
        case BITINC_ERROR_UNSUPPORTED:
            return "unsupported";
        case BITINC_ERROR_NETWORK:
            return "network error";
        case BITINC_ERROR_CANCELLED:
            return "cancelled";
        default:
            return "unknown status";
    }
}

const char* bitinc_version(void) {
    return bitinc::version().data();
}

void bitinc_free(void* pointer) {
    std::free(pointer);
}

int bitinc_decoder_create(const bitinc_decoder_options* options, bitinc_decoder** decoder) {
    if (decoder == nullptr) return BITINC_ERROR_INVALID_ARGUMENT;
    *decoder = nullptr;
    bitinc::DecoderOptions settings;
    if (options != nullptr) {
        if (options->until_bits < 0 || options->until_bits > 32)
            return BITINC_ERROR_INVALID_ARGUMENT;
        settings.direct = options->direct != 0;
        settings.until_bits = options->until_bits;
        settings.until_accuracy_point = options->until_accuracy_point != 0;
        if (const bitinc_verify_manifest_fn verify = options->verify_manifest) {
            void* const context = options->verify_context;
            settings.verify_manifest = [verify, context](std::string_view manifest,
                                                         std::string_view signature) {
                const auto bytes = [](std::string_view text) {
                    return reinterpret_cast<const uint8_t*>(text.data());
                };
                if (verify(context, bytes(manifest), manifest.size(), bytes(signature),
                           signature.size()) != 0)
                    throw bitinc::Error(bitinc::ErrorCode::untrusted,
                                        "manifest.json: refused by the app's signature check");
            };
        }
    }
    // Ownership crosses to C here, and comes back in bitinc_decoder_destroy.
    return guarded(nullptr, [&] {
        *decoder = std::make_unique<bitinc_decoder>(
                       bitinc_decoder{bitinc::PackageDecoder(settings), {}, {}, {}})
                       .release();
    });
}

void bitinc_decoder_destroy(bitinc_decoder* decoder) {
    const std::unique_ptr<bitinc_decoder> owned(decoder);
}

int bitinc_decoder_push_manifest(bitinc_decoder* decoder, const uint8_t* bytes, size_t size) {
    if (decoder == nullptr || (bytes == nullptr && size > 0)) return BITINC_ERROR_INVALID_ARGUMENT;
    return guarded(decoder, [&] { decoder->decoder.push_manifest({bytes, size}); });
}

int bitinc_decoder_push_signature(bitinc_decoder* decoder, const uint8_t* bytes, size_t size) {
    if (decoder == nullptr || (bytes == nullptr && size > 0)) return BITINC_ERROR_INVALID_ARGUMENT;
    return guarded(decoder, [&] { decoder->decoder.push_signature({bytes, size}); });
}

int bitinc_decoder_push(bitinc_decoder* decoder, const char* file, uint64_t offset,
                        const uint8_t* bytes, size_t size) {
    if (decoder == nullptr || file == nullptr || (bytes == nullptr && size > 0))
        return BITINC_ERROR_INVALID_ARGUMENT;
    return guarded(decoder, [&] { decoder->decoder.push(file, offset, {bytes, size}); });
}

int bitinc_decoder_give_up(bitinc_decoder* decoder, const char* file, uint64_t begin,
                           uint64_t end) {
    if (decoder == nullptr || file == nullptr) return BITINC_ERROR_INVALID_ARGUMENT;
    return guarded(decoder, [&] { decoder->decoder.give_up({file, begin, end}); });
}

int bitinc_decoder_next_event(bitinc_decoder* decoder, bitinc_event* event) {
    if (decoder == nullptr || event == nullptr) return BITINC_ERROR_INVALID_ARGUMENT;
    return guarded(decoder, [&] {
        decoder->event = decoder->decoder.next_event();
        decoder->ranges.clear();
        for (const bitinc::ByteRange& range : decoder->event.wanted)
            decoder->ranges.push_back({range.file.c_str(), range.begin, range.end});
        event->kind = event_kind(decoder->event.kind);
        event->rung = decoder->event.rung;
        event->bits = decoder->event.bits;
        event->wanted_count = decoder->ranges.size();
        event->wanted = decoder->ranges.empty() ? nullptr : decoder->ranges.data();
        event->message = decoder->event.message.c_str();
    });
}

int bitinc_decoder_run(bitinc_decoder* decoder, bitinc_read_fn read, bitinc_event_fn on_event,
                       void* context, int attempts) {
    if (decoder == nullptr || read == nullptr || attempts < 0) return BITINC_ERROR_INVALID_ARGUMENT;
    // How often each range was asked for (a damaged unit, or bytes a read
    // left out): past `attempts` it is given up.
    std::map<std::pair<std::string, uint64_t>, int> asked;
    for (;;) {
        bitinc_event event;
        int status = bitinc_decoder_next_event(decoder, &event);
        if (status != BITINC_OK) return status;
        if (event.kind != BITINC_EVENT_NEED_INPUT) {
            if (on_event != nullptr && on_event(context, decoder, &event) != 0) {
                decoder->last_error = "stopped by the app's event callback";
                return BITINC_ERROR_CANCELLED;
            }
            if (event.kind == BITINC_EVENT_DONE) return BITINC_OK;
            continue;
        }
        if (event.wanted_count == 0) {
            decoder->last_error = "the decoder wants nothing and is not done";
            return BITINC_ERROR_INTERNAL;
        }
        // Copied: the event's strings live until the next call on the decoder.
        const std::string file = event.wanted[0].file;
        const uint64_t begin = event.wanted[0].begin;
        const uint64_t end = event.wanted[0].end;
        const bool whole_file = end == 0;  // the manifest or its signature
        status = ++asked[{file, begin}] > attempts + 1
                     ? BITINC_ERROR_UNAVAILABLE
                     : read(context, decoder, file.c_str(), begin, end);
        if (status == BITINC_OK) continue;
        if (whole_file) {
            decoder->last_error = file + ": cannot be had (" + bitinc_status_string(status) + ")";
            return status;
        }
        status = bitinc_decoder_give_up(decoder, file.c_str(), begin, end);
        if (status != BITINC_OK) return status;
    }
}

int bitinc_decoder_snapshot_onnx(bitinc_decoder* decoder, uint8_t** bytes, size_t* size) {
    if (decoder == nullptr || bytes == nullptr || size == nullptr)
        return BITINC_ERROR_INVALID_ARGUMENT;
    *bytes = nullptr;
    *size = 0;
    if (!decoder->decoder.has_model()) {
        decoder->last_error = "no model yet: the first rung has not arrived whole";
        return BITINC_ERROR_NOT_READY;
    }
    return guarded(decoder, [&] {
        const std::string onnx = bitinc::serialize_onnx(decoder->decoder.snapshot());
        void* copy = std::malloc(onnx.size() == 0 ? 1 : onnx.size());
        if (copy == nullptr) throw std::bad_alloc();
        std::memcpy(copy, onnx.data(), onnx.size());
        *bytes = static_cast<uint8_t*>(copy);
        *size = onnx.size();
    });
}

const char* bitinc_decoder_last_error(const bitinc_decoder* decoder) {
    return decoder == nullptr ? "no decoder" : decoder->last_error.c_str();
}

}  // extern "C"
