/* The C API of bitinc's device side: the push decoder of
 * include/bitinc/decoder.hpp behind opaque handles, for Swift, Kotlin/JNI,
 * C# or Rust. Every function returns BITINC_OK (0) or a negative
 * bitinc_status; bitinc_status_string() names each, and
 * bitinc_decoder_last_error() gives the message of a decoder's last error.
 * Strings and arrays a function hands out stay valid until the next call on
 * the same decoder; buffers it allocates are freed with bitinc_free(). */
#ifndef BITINC_H
#define BITINC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum bitinc_status {
    BITINC_OK = 0,
    BITINC_ERROR_INVALID_ARGUMENT = -1, /* a null pointer, an unknown option */
    BITINC_ERROR_INVALID_DATA = -2,     /* bytes that fail their checks */
    BITINC_ERROR_NOT_READY = -3,        /* e.g. a snapshot before the first rung */
    BITINC_ERROR_UNAVAILABLE = -4,      /* given up bytes the model cannot do without */
    BITINC_ERROR_OUT_OF_MEMORY = -5,
    BITINC_ERROR_INTERNAL = -6,
    BITINC_ERROR_UNTRUSTED = -7,   /* the verify_manifest callback refused the package */
    BITINC_ERROR_IO = -8,          /* a file could not be read or written */
    BITINC_ERROR_UNSUPPORTED = -9, /* well-formed, but beyond this build: a newer format, a
                                      weight type */
    BITINC_ERROR_NETWORK = -10,    /* a request failed */
    BITINC_ERROR_CANCELLED = -11
} bitinc_status;

/* "ok", "invalid argument", ...; never NULL. */
const char* bitinc_status_string(int status);
/* The library's version, e.g. "0.1.0". */
const char* bitinc_version(void);
void bitinc_free(void* pointer);

typedef enum bitinc_event_kind {
    BITINC_EVENT_NEED_INPUT = 1, /* push the `wanted` ranges */
    BITINC_EVENT_MANIFEST_READY = 2,
    BITINC_EVENT_TOPOLOGY_READY = 3,
    BITINC_EVENT_UNIT_DAMAGED = 4, /* push wanted[0] again, or give it up */
    BITINC_EVENT_RUNG_READY = 5,   /* a snapshot is worth taking */
    BITINC_EVENT_ACCURACY_POINT_READY = 6,
    BITINC_EVENT_DEGRADED = 7,
    BITINC_EVENT_DONE = 8
} bitinc_event_kind;

/* Bytes [begin, end) of a package file; end 0: the whole file. */
typedef struct bitinc_range {
    const char* file;
    uint64_t begin;
    uint64_t end;
} bitinc_range;

typedef struct bitinc_event {
    int kind; /* a bitinc_event_kind */
    size_t rung;
    int bits;
    size_t wanted_count;
    const bitinc_range* wanted;
    const char* message; /* "" when there is none */
} bitinc_event;

/* Signed packages (docs/format.md §8): called with the bytes of manifest.json
 * and of manifest.json.sig before the decoder reads the manifest; return 0 to
 * accept the package, anything else to refuse it. */
typedef int (*bitinc_verify_manifest_fn)(void* context, const uint8_t* manifest,
                                         size_t manifest_size, const uint8_t* signature,
                                         size_t signature_size);

typedef struct bitinc_decoder_options {
    int direct;               /* nonzero: the direct rung alone */
    int until_bits;           /* 0: the last rung */
    int until_accuracy_point; /* nonzero: stop at the package's accuracy point */
    /* NULL: no signature wanted. Otherwise the decoder also asks for
     * manifest.json.sig (bitinc_decoder_push_signature) and accepts the
     * manifest only if this returns 0 (else BITINC_ERROR_UNTRUSTED). */
    bitinc_verify_manifest_fn verify_manifest;
    void* verify_context; /* passed to verify_manifest */
} bitinc_decoder_options;

typedef struct bitinc_decoder bitinc_decoder;

/* `options` may be NULL (the whole ladder). */
int bitinc_decoder_create(const bitinc_decoder_options* options, bitinc_decoder** decoder);
void bitinc_decoder_destroy(bitinc_decoder* decoder);
int bitinc_decoder_push_manifest(bitinc_decoder* decoder, const uint8_t* bytes, size_t size);
/* The whole manifest.json.sig, when verify_manifest is set. */
int bitinc_decoder_push_signature(bitinc_decoder* decoder, const uint8_t* bytes, size_t size);
int bitinc_decoder_push(bitinc_decoder* decoder, const char* file, uint64_t offset,
                        const uint8_t* bytes, size_t size);
int bitinc_decoder_give_up(bitinc_decoder* decoder, const char* file, uint64_t begin, uint64_t end);
int bitinc_decoder_next_event(bitinc_decoder* decoder, bitinc_event* event);
/* A byte source of the app's own (its HTTP stack, cache or files), for
 * bitinc_decoder_run: hands bytes [begin, end) of package file `file` (end 0:
 * the whole file) to the decoder with bitinc_decoder_push_manifest,
 * bitinc_decoder_push_signature or bitinc_decoder_push, in any chunking,
 * and returns BITINC_OK; or a negative status when they cannot be had. */
typedef int (*bitinc_read_fn)(void* context, bitinc_decoder* decoder, const char* file,
                              uint64_t begin, uint64_t end);
/* Sees every event but NEED_INPUT, e.g. to take a snapshot at RUNG_READY;
 * returning nonzero stops the run (BITINC_ERROR_CANCELLED). */
typedef int (*bitinc_event_fn)(void* context, bitinc_decoder* decoder, const bitinc_event* event);
/* Drives the decoder to DONE with `read`, one wanted range at a time: a
 * unit that arrives damaged, or a range a read leaves unfilled, is read
 * again up to `attempts` times; then, like a range `read` fails, it is
 * given up (a refinement degrades; the manifest or a base rung fails the
 * run with the status). `on_event` may be NULL. */
int bitinc_decoder_run(bitinc_decoder* decoder, bitinc_read_fn read, bitinc_event_fn on_event,
                       void* context, int attempts);
/* The model as it stands, as the bytes of an ONNX file (bitinc_free them). */
int bitinc_decoder_snapshot_onnx(bitinc_decoder* decoder, uint8_t** bytes, size_t* size);
const char* bitinc_decoder_last_error(const bitinc_decoder* decoder);

#ifdef __cplusplus
}
#endif

#endif /* BITINC_H */
