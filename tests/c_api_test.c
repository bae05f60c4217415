/* A C program that uses nothing but include/bitinc/bitinc.h: it decodes a
 * package from a directory, answering the decoder's requests from the
 * files in pieces of 1000 bytes, and checks that the model it ends with is
 * the expected ONNX file byte for byte (an exact rung gives back the source);
 * then once more through bitinc_decoder_run with a byte source of its own.
 *
 * usage: c_api_test PACKAGE_DIR EXPECTED.onnx */
#include <bitinc/bitinc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static unsigned char* read_file(const char* path, size_t* size) {
    FILE* file = fopen(path, "rb");
    if (file == NULL) return NULL;
    fseek(file, 0, SEEK_END);
    const long length = ftell(file);
    fseek(file, 0, SEEK_SET);
    unsigned char* bytes = malloc(length > 0 ? (size_t)length : 1);
    if (bytes != NULL && fread(bytes, 1, (size_t)length, file) != (size_t)length) {
        free(bytes);
        bytes = NULL;
    }
    fclose(file);
    *size = (size_t)length;
    return bytes;
}

/* A stand-in for an app's signature check (the crypto is tested in C++):
 * it accepts the signature "trusted" and counts its calls. */
static int verify_calls = 0;
static int accept_trusted(void* context, const uint8_t* manifest, size_t manifest_size,
                          const uint8_t* signature, size_t signature_size) {
    (void)context;
    (void)manifest;
    ++verify_calls;
    return manifest_size > 0 && signature_size == 7 && memcmp(signature, "trusted", 7) == 0 ? 0 : 1;
}

/* The app's own byte source for bitinc_decoder_run: files of a directory,
 * pushed in pieces of 700 bytes. */
struct directory_source {
    const char* directory;
    int reads;
};
static int read_from_directory(void* context, bitinc_decoder* decoder, const char* file,
                               uint64_t begin, uint64_t end) {
    struct directory_source* source = context;
    ++source->reads;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", source->directory, file);
    size_t size = 0;
    unsigned char* bytes = read_file(path, &size);
    if (bytes == NULL) return BITINC_ERROR_IO;
    int status = BITINC_OK;
    if (end == 0) {
        status = strcmp(file, "manifest.json") == 0
                     ? bitinc_decoder_push_manifest(decoder, bytes, size)
                     : bitinc_decoder_push_signature(decoder, bytes, size);
    } else {
        if (end > size) end = size;
        for (uint64_t at = begin; at < end && status == BITINC_OK; at += 700) {
            const uint64_t piece = end - at < 700 ? end - at : 700;
            status = bitinc_decoder_push(decoder, file, at, bytes + at, piece);
        }
    }
    free(bytes);
    return status;
}
static int count_rungs(void* context, bitinc_decoder* decoder, const bitinc_event* event) {
    (void)decoder;
    if (event->kind == BITINC_EVENT_RUNG_READY) ++*(int*)context;
    return 0;
}
struct counted_source {
    struct directory_source files;
    int rungs;
};
static int counted_read(void* context, bitinc_decoder* decoder, const char* file, uint64_t begin,
                        uint64_t end) {
    return read_from_directory(&((struct counted_source*)context)->files, decoder, file, begin,
                               end);
}
static int counted_event(void* context, bitinc_decoder* decoder, const bitinc_event* event) {
    return count_rungs(&((struct counted_source*)context)->rungs, decoder, event);
}

static int fail(const char* what, int status, const bitinc_decoder* decoder) {
    fprintf(stderr, "c_api_test: %s: %s (%s)\n", what, bitinc_status_string(status),
            decoder ? bitinc_decoder_last_error(decoder) : "");
    return 1;
}

int main(int argc, char** argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: c_api_test PACKAGE_DIR EXPECTED.onnx\n");
        return 2;
    }
    printf("bitinc %s\n", bitinc_version());
    if (strcmp(bitinc_status_string(BITINC_ERROR_UNAVAILABLE), "unavailable") != 0) return 1;
    if (bitinc_decoder_create(NULL, NULL) != BITINC_ERROR_INVALID_ARGUMENT) return 1;

    bitinc_decoder* decoder = NULL;
    int status = bitinc_decoder_create(NULL, &decoder);
    if (status != BITINC_OK) return fail("create", status, NULL);
    uint8_t* early = NULL;
    size_t early_size = 0;
    if (bitinc_decoder_snapshot_onnx(decoder, &early, &early_size) != BITINC_ERROR_NOT_READY)
        return fail("a snapshot before any rung", BITINC_ERROR_INTERNAL, decoder);
    if (bitinc_decoder_push_manifest(decoder, (const uint8_t*)"{}", 2) != BITINC_ERROR_INVALID_DATA)
        return fail("a bad manifest", BITINC_ERROR_INTERNAL, decoder);

    /* Signed packages: the decoder wants the signature too, and reads the
     * manifest only once the app's check accepts it. */
    {
        char manifest_path[4096];
        snprintf(manifest_path, sizeof manifest_path, "%s/manifest.json", argv[1]);
        size_t manifest_size = 0;
        unsigned char* manifest = read_file(manifest_path, &manifest_size);
        if (manifest == NULL) return fail(manifest_path, BITINC_ERROR_UNAVAILABLE, NULL);
        bitinc_decoder_options options = {0, 0, 0, accept_trusted, NULL};
        for (int trusted = 0; trusted < 2; ++trusted) {
            bitinc_decoder* checked = NULL;
            status = bitinc_decoder_create(&options, &checked);
            if (status != BITINC_OK) return fail("create with a check", status, NULL);
            bitinc_event event;
            status = bitinc_decoder_next_event(checked, &event);
            if (status != BITINC_OK || event.wanted_count != 2 ||
                strcmp(event.wanted[1].file, "manifest.json.sig") != 0)
                return fail("the signature wanted", BITINC_ERROR_INTERNAL, checked);
            status = bitinc_decoder_push_manifest(checked, manifest, manifest_size);
            if (status != BITINC_OK) return fail("manifest before signature", status, checked);
            const char* signature = trusted ? "trusted" : "forged!";
            status = bitinc_decoder_push_signature(checked, (const uint8_t*)signature, 7);
            if (status != (trusted ? BITINC_OK : BITINC_ERROR_UNTRUSTED))
                return fail(trusted ? "a trusted package" : "an untrusted package", status,
                            checked);
            status = bitinc_decoder_next_event(checked, &event);
            if (status != BITINC_OK ||
                (event.kind == BITINC_EVENT_MANIFEST_READY) != (trusted == 1))
                return fail("the manifest read only when trusted", BITINC_ERROR_INTERNAL, checked);
            bitinc_decoder_destroy(checked);
        }
        free(manifest);
        if (verify_calls != 2) return fail("two checks", BITINC_ERROR_INTERNAL, NULL);
        if (strcmp(bitinc_status_string(BITINC_ERROR_UNTRUSTED), "untrusted package") != 0)
            return 1;
    }

    int rungs = 0;
    for (int step = 0; step < 100000; ++step) {
        bitinc_event event;
        status = bitinc_decoder_next_event(decoder, &event);
        if (status != BITINC_OK) return fail("next_event", status, decoder);
        if (event.kind == BITINC_EVENT_DONE) break;
        if (event.kind == BITINC_EVENT_RUNG_READY) ++rungs;
        if (event.kind == BITINC_EVENT_UNIT_DAMAGED || event.kind == BITINC_EVENT_DEGRADED)
            return fail(event.message, BITINC_ERROR_INVALID_DATA, decoder);
        if (event.kind != BITINC_EVENT_NEED_INPUT) continue;
        /* Copied: the ranges live until the next call on the decoder. */
        size_t count = event.wanted_count;
        bitinc_range* wanted = malloc(count * sizeof *wanted);
        char(*names)[256] = malloc(count * sizeof *names);
        for (size_t i = 0; i < count; ++i) {
            wanted[i] = event.wanted[i];
            snprintf(names[i], sizeof names[i], "%s", event.wanted[i].file);
            wanted[i].file = names[i];
        }
        for (size_t i = 0; i < count; ++i) {
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", argv[1], wanted[i].file);
            size_t size = 0;
            unsigned char* bytes = read_file(path, &size);
            if (bytes == NULL) return fail(path, BITINC_ERROR_UNAVAILABLE, decoder);
            if (strcmp(wanted[i].file, "manifest.json") == 0) {
                status = bitinc_decoder_push_manifest(decoder, bytes, size);
            } else {
                const uint64_t end = wanted[i].end < size ? wanted[i].end : size;
                for (uint64_t at = wanted[i].begin; at < end && status == BITINC_OK; at += 1000) {
                    const uint64_t piece = end - at < 1000 ? end - at : 1000;
                    status = bitinc_decoder_push(decoder, wanted[i].file, at, bytes + at, piece);
                }
            }
            free(bytes);
            if (status != BITINC_OK) return fail("push", status, decoder);
        }
        free(wanted);
        free(names);
    }
    /* The same package through bitinc_decoder_run and the app's own source;
     * a source that cannot read the files fails the run with its status. */
    {
        struct counted_source source = {{argv[1], 0}, 0};
        bitinc_decoder* run = NULL;
        status = bitinc_decoder_create(NULL, &run);
        if (status != BITINC_OK) return fail("create for run", status, NULL);
        if (bitinc_decoder_run(run, NULL, NULL, NULL, 1) != BITINC_ERROR_INVALID_ARGUMENT)
            return fail("run without a source", BITINC_ERROR_INTERNAL, run);
        status = bitinc_decoder_run(run, counted_read, counted_event, &source, 2);
        if (status != BITINC_OK) return fail("run", status, run);
        if (source.rungs != rungs || source.files.reads < 3)
            return fail("run's rungs and reads", BITINC_ERROR_INTERNAL, run);
        uint8_t* run_model = NULL;
        size_t run_size = 0;
        status = bitinc_decoder_snapshot_onnx(run, &run_model, &run_size);
        if (status != BITINC_OK) return fail("run's snapshot", status, run);
        uint8_t* pushed_model = NULL;
        size_t pushed_size = 0;
        status = bitinc_decoder_snapshot_onnx(decoder, &pushed_model, &pushed_size);
        if (status != BITINC_OK || run_size != pushed_size ||
            memcmp(run_model, pushed_model, run_size) != 0)
            return fail("run's model", BITINC_ERROR_INTERNAL, run);
        bitinc_free(run_model);
        bitinc_free(pushed_model);
        bitinc_decoder_destroy(run);

        struct counted_source nowhere = {{"/nonexistent-bitinc-package", 0}, 0};
        status = bitinc_decoder_create(NULL, &run);
        if (status != BITINC_OK) return fail("create for run", status, NULL);
        if (bitinc_decoder_run(run, counted_read, counted_event, &nowhere, 2) != BITINC_ERROR_IO)
            return fail("a source with no files", BITINC_ERROR_INTERNAL, run);
        bitinc_decoder_destroy(run);
    }

    uint8_t* model = NULL;
    size_t model_size = 0;
    status = bitinc_decoder_snapshot_onnx(decoder, &model, &model_size);
    if (status != BITINC_OK) return fail("snapshot", status, decoder);
    size_t expected_size = 0;
    unsigned char* expected = read_file(argv[2], &expected_size);
    const int same =
        expected != NULL && expected_size == model_size && memcmp(expected, model, model_size) == 0;
    printf("%d rungs, model of %zu bytes, %s the expected file\n", rungs, model_size,
           same ? "equal to" : "DIFFERENT from");
    free(expected);
    bitinc_free(model);
    bitinc_decoder_destroy(decoder);
    return same && rungs >= 2 ? 0 : 1;
}
