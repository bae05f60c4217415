// Datasets beyond IDX (.npy tensors, folders of images, generated inputs)
// and the label-free metrics (agreement with a reference model).
#include <gtest/gtest.h>

#include <bitinc/bitinc.hpp>

#include <cmath>
#include <cstring>
#include <fstream>

#include "eval/npy_reader.hpp"
#include "onnx_builder.hpp"
#include "test_support.hpp"

namespace bitinc {
namespace {

using eval::NpyType;
using eval::parse_npy;

// A .npy file as numpy writes it: version `major`, the header padded with
// spaces to a multiple of 64 bytes and ended by a newline.
std::string npy_bytes(const std::string& descr, const std::string& shape, const std::string& data,
                      int major = 1, bool fortran = false) {
    std::string header = "{'descr': '" + descr +
                         "', 'fortran_order': " + (fortran ? "True" : "False") +
                         ", 'shape': " + shape + ", }";
    const std::size_t prefix = major == 1 ? 10 : 12;
    while ((prefix + header.size() + 1) % 64 != 0) header += ' ';
    header += '\n';
    std::string bytes = "\x93NUMPY";
    bytes += char(major);
    bytes += char(0);
    const std::size_t length = header.size();
    bytes += char(length & 0xff);
    bytes += char((length >> 8) & 0xff);
    if (major != 1) bytes += std::string(2, '\0');
    return bytes + header + data;
}

template <typename T>
std::string raw(const std::vector<T>& values) {
    return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
}

eval::NpyArray parse(const std::string& bytes) {
    return parse_npy(std::span(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()),
                     "test.npy");
}

void expect_error(const std::string& bytes, const std::string& fragment) {
    try {
        parse(bytes);
        ADD_FAILURE() << "accepted; expected an error with '" << fragment << "'";
    } catch (const Error& error) {
        const std::string message = error.what();
        EXPECT_NE(message.find(fragment), std::string::npos) << message;
        EXPECT_NE(message.find("test.npy"), std::string::npos) << message;
        EXPECT_EQ(message.find('\n'), std::string::npos) << message;
    }
}

TEST(Npy, ReadsEveryTypeInEveryVersion) {
    const std::vector<float> floats{1.5f, -2.0f, 3.25f, 0.0f, 7.0f, 8.0f};
    for (const int major : {1, 2, 3}) {
        const auto array = parse(npy_bytes("<f4", "(2, 3)", raw(floats), major));
        EXPECT_EQ(array.type, NpyType::float32);
        EXPECT_EQ(array.shape, (std::vector<std::uint64_t>{2, 3}));
        EXPECT_EQ(array.as_floats(), floats);
    }
    const auto bytes = parse(npy_bytes("|u1", "(4,)", std::string("\x00\x01\xfe\xff", 4)));
    EXPECT_EQ(bytes.as_floats(), (std::vector<float>{0, 1, 254, 255}));
    const auto wide = parse(npy_bytes("<i8", "(3,)", raw(std::vector<std::int64_t>{0, 9, -1})));
    EXPECT_EQ(wide.as_integers(), (std::vector<std::int64_t>{0, 9, -1}));
    const auto narrow = parse(npy_bytes("<i4", "(2,)", raw(std::vector<std::int32_t>{5, 3})));
    EXPECT_EQ(narrow.as_integers(), (std::vector<std::int64_t>{5, 3}));
    // A scalar, an empty array, keys in another order and double quotes.
    EXPECT_TRUE(parse(npy_bytes("<f4", "()", raw(std::vector<float>{1.0f}))).shape.empty());
    EXPECT_EQ(parse(npy_bytes("<f4", "(0, 4)", "")).element_count(), 0u);
    std::string reordered = "{\"shape\": (1,), \"fortran_order\": False, \"descr\": \"<f4\"}\n";
    std::string file = "\x93NUMPY\x01";
    file += '\0';
    file += char(reordered.size());
    file += '\0';
    EXPECT_EQ(parse(file + reordered + raw(std::vector<float>{2.0f})).as_floats()[0], 2.0f);
}

TEST(Npy, RefusesWhatItDoesNotReadWithOneLine) {
    const std::string four = raw(std::vector<float>{1, 2, 3, 4});
    expect_error("", "not a .npy file");
    expect_error("\x93NUMPZ\x01", "not a .npy file");
    expect_error(npy_bytes("<f4", "(4,)", four, 4), "version 4");
    expect_error(npy_bytes("<f4", "(2, 2)", four, 1, true), "Fortran order");
    expect_error(npy_bytes(">f4", "(4,)", four), "big-endian");
    expect_error(npy_bytes("<f8", "(2,)", four), "'<f8' is not supported");
    expect_error(npy_bytes("<f4", "(5,)", four), "truncated");
    expect_error(npy_bytes("<f4", "(3,)", four), "header promises 12");
    expect_error(npy_bytes("<f4", "(2000000000, 2000000000)", four), "exceed");
    expect_error(npy_bytes("<f4", "(4000000000,)", four), "dimension out of range");
    expect_error(npy_bytes("<f4", "(99999999999999,)", four), "too large");
    expect_error(npy_bytes("<f4", "(1, 1, 1, 1, 1, 1, 1, 1, 1)", four), "dimensions");
    expect_error(npy_bytes("<f4", "(a,)", four), "malformed .npy header");
    expect_error(npy_bytes("<f4", "(4,", four), "malformed .npy header");
    expect_error(npy_bytes("<f4", "(4,)", four).substr(0, 30), "truncated .npy header");
    std::string no_shape = "{'descr': '<f4', 'fortran_order': False}\n";
    std::string file = "\x93NUMPY\x01";
    file += '\0';
    file += char(no_shape.size());
    file += '\0';
    expect_error(file + no_shape, "needs the keys");
}

class Datasets : public ::testing::Test {
  protected:
    std::filesystem::path write(const std::string& name, const std::string& bytes) {
        const auto path = directory_.path() / name;
        std::filesystem::create_directories(path.parent_path());
        std::ofstream(path, std::ios::binary) << bytes;
        return path;
    }
    testing::TemporaryDirectory directory_;
};

InputSpec grey_spec(std::int64_t size) {
    InputSpec spec;
    spec.input_name = "x";
    spec.channels = 1;
    spec.height = size;
    spec.width = size;
    spec.mean = {0.5f};
    spec.std = {0.5f};
    return spec;
}

TEST_F(Datasets, NpyInputsAndLabels) {
    const std::vector<float> values{1, 2, 3, 4, 5, 6};
    const auto inputs = write("x.npy", npy_bytes("<f4", "(3, 2)", raw(values)));
    const auto labels =
        write("y.npy", npy_bytes("<i8", "(3,)", raw(std::vector<std::int64_t>{2, 0, 1})));
    const auto set = read_npy_inputs(inputs, labels, std::nullopt);
    ASSERT_EQ(set->count(), 3u);
    ASSERT_TRUE(set->has_labels());
    EXPECT_EQ(set->label(0), 2);
    const FloatArray batch = set->batch(1, 2);
    EXPECT_EQ(batch.shape, (std::vector<std::int64_t>{2, 2}));
    EXPECT_EQ(batch.values, (std::vector<float>{3, 4, 5, 6}));
    EXPECT_FALSE(read_npy_inputs(inputs, std::nullopt, std::nullopt)->has_labels());

    // uint8 pixels get the model's preprocessing: (p / 255 - 0.5) / 0.5.
    const auto pixels =
        write("p.npy", npy_bytes("|u1", "(1, 1, 1, 2)", std::string("\x00\xff", 2)));
    EXPECT_EQ(read_npy_inputs(pixels, std::nullopt, grey_spec(1))->batch(0, 1).values,
              (std::vector<float>{-1.0f, 1.0f}));

    const auto check = [&](const std::function<void()>& action, const std::string& fragment) {
        try {
            action();
            ADD_FAILURE() << "no error; expected '" << fragment << "'";
        } catch (const Error& error) {
            EXPECT_NE(std::string(error.what()).find(fragment), std::string::npos) << error.what();
        }
    };
    const auto two_labels =
        write("y2.npy", npy_bytes("<i4", "(2,)", raw(std::vector<std::int32_t>{1, 1})));
    check([&] { read_npy_inputs(inputs, two_labels, std::nullopt); }, "2 labels for 3 inputs");
    const auto negative =
        write("yn.npy", npy_bytes("<i4", "(3,)", raw(std::vector<std::int32_t>{1, -4, 1})));
    check([&] { read_npy_inputs(inputs, negative, std::nullopt); }, "negative");
    check([&] { read_npy_inputs(inputs, inputs, std::nullopt); }, "not float32");
    check([&] { read_npy_inputs(pixels, std::nullopt, std::nullopt); },
          "uint8 inputs are image pixels");
    const auto flat = write("flat.npy", npy_bytes("<f4", "(6,)", raw(values)));
    check([&] { read_npy_inputs(flat, std::nullopt, std::nullopt); }, "shaped (N, ...)");
    check([&] { read_npy_inputs(directory_.path() / "none.npy", std::nullopt, std::nullopt); },
          "no such file");
}

// A binary PGM, which OpenCV reads without any codec library.
std::string pgm(std::size_t width, std::size_t height, std::uint8_t value) {
    return "P5\n" + std::to_string(width) + " " + std::to_string(height) + "\n255\n" +
           std::string(width * height, char(value));
}

TEST_F(Datasets, ImageFolderClassesInSortedOrderResized) {
    write("images/cat/b.pgm", pgm(8, 8, 255));
    write("images/cat/a.pgm", pgm(4, 6, 0));
    write("images/ant/only.pgm", pgm(2, 2, 255));
    std::filesystem::create_directories(directory_.path() / "images" / "bee");
    const auto set = read_image_folder(directory_.path() / "images", grey_spec(4));
    ASSERT_EQ(set->count(), 3u);
    EXPECT_EQ(set->label(0), 0);  // ant
    EXPECT_EQ(set->label(1), 2);  // cat (after ant and the empty bee)
    EXPECT_EQ(set->label(2), 2);
    const FloatArray batch = set->batch(0, 3);
    EXPECT_EQ(batch.shape, (std::vector<std::int64_t>{3, 1, 4, 4}));
    for (std::size_t i = 0; i < 16; ++i) {
        EXPECT_FLOAT_EQ(batch.values[i], 1.0f);        // ant: white, resized up
        EXPECT_FLOAT_EQ(batch.values[16 + i], -1.0f);  // cat/a: black
        EXPECT_FLOAT_EQ(batch.values[32 + i], 1.0f);   // cat/b: white, resized down
    }
    // Grey images feed a 3-channel model in every channel.
    InputSpec colour = grey_spec(2);
    colour.channels = 3;
    EXPECT_EQ(read_image_folder(directory_.path() / "images", colour)->batch(0, 1).values,
              std::vector<float>(12, 1.0f));

    write("images/cat/notes.txt", "not an image");
    const auto broken = read_image_folder(directory_.path() / "images", grey_spec(4));
    EXPECT_THROW(broken->batch(0, 4), Error);
    try {
        broken->batch(1, 1);  // cat/a.pgm, then cat/b.pgm, then cat/notes.txt
        broken->batch(3, 1);
        ADD_FAILURE() << "read a text file as an image";
    } catch (const Error& error) {
        EXPECT_NE(std::string(error.what()).find("notes.txt: not an image"), std::string::npos)
            << error.what();
    }
    std::filesystem::create_directories(directory_.path() / "flat");
    write("flat/a.pgm", pgm(2, 2, 1));
    EXPECT_THROW(read_image_folder(directory_.path() / "flat", grey_spec(4)), Error);
}

// OpenCV decodes colour as BGR; the model gets RGB, channel 0 red.
TEST_F(Datasets, ColourImagesReachTheModelAsRgb) {
    std::string red = "P6\n2 2\n255\n";
    for (int i = 0; i < 4; ++i) red += std::string("\xff\x00\x00", 3);
    write("colour/red/a.ppm", red);
    InputSpec spec = grey_spec(2);
    spec.channels = 3;
    const FloatArray batch = read_image_folder(directory_.path() / "colour", spec)->batch(0, 1);
    ASSERT_EQ(batch.values.size(), 12u);
    for (std::size_t i = 0; i < 4; ++i) {
        EXPECT_FLOAT_EQ(batch.values[i], 1.0f);       // red
        EXPECT_FLOAT_EQ(batch.values[4 + i], -1.0f);  // green
        EXPECT_FLOAT_EQ(batch.values[8 + i], -1.0f);  // blue
    }
    // A grey model gets the colour image's luminance.
    const FloatArray grey =
        read_image_folder(directory_.path() / "colour", grey_spec(2))->batch(0, 1);
    EXPECT_NEAR(grey.values[0], (76.0f / 255.0f - 0.5f) / 0.5f, 0.02f);
}

TEST(GeneratedInputs, DeterministicWhateverTheBatching) {
    const auto set = make_generated_inputs({3, 8, 8}, 10);
    const FloatArray whole = set->batch(0, 10);
    EXPECT_EQ(whole.shape, (std::vector<std::int64_t>{10, 3, 8, 8}));
    const FloatArray part = set->batch(4, 3);
    EXPECT_TRUE(std::equal(part.values.begin(), part.values.end(), whole.values.begin() + 4 * 192));
    EXPECT_EQ(make_generated_inputs({3, 8, 8}, 10)->batch(0, 10).values, whole.values);
    EXPECT_NE(make_generated_inputs({3, 8, 8}, 10, 2)->batch(0, 10).values, whole.values);
    double sum = 0, squares = 0;
    for (const float value : whole.values) {
        sum += value;
        squares += double(value) * value;
    }
    const double mean = sum / double(whole.values.size());
    EXPECT_NEAR(mean, 0.0, 0.1);
    EXPECT_NEAR(squares / double(whole.values.size()) - mean * mean, 1.0, 0.1);
    EXPECT_FALSE(set->has_labels());
    EXPECT_THROW(make_generated_inputs({3, -1, 8}, 10), Error);
}

TEST(InputShape, Parses) {
    EXPECT_EQ(parse_input_shape("input:1x3x224x224"),
              (std::pair<std::string, std::vector<std::int64_t>>{"input", {1, 3, 224, 224}}));
    EXPECT_EQ(parse_input_shape("a:b:7").first, "a:b");
    for (const char* bad : {"input", ":1x3", "x:", "x:1x", "x:0x3", "x:1xx3", "x:-1", "x:1e3"}) {
        EXPECT_THROW(parse_input_shape(bad), Error) << bad;
    }
}

TEST(InputShape, FillsOpenDimensions) {
    testing::OnnxBuilder builder;
    builder.input("x", {-1, 3, -1, -1}).output("y", {-1, 3, -1, -1});
    builder.node("Relu", {"x"}, {"y"});
    const Model model = parse_onnx(builder.bytes(), "open.onnx");
    try {
        model_input_shape(model, "open.onnx", {});
        ADD_FAILURE() << "open dimensions accepted";
    } catch (const Error& error) {
        EXPECT_NE(std::string(error.what()).find("--input-shape x:"), std::string::npos)
            << error.what();
    }
    EXPECT_EQ(model_input_shape(model, "open.onnx", {{"x", {2, 3, 5, 7}}}),
              (std::vector<std::int64_t>{2, 3, 5, 7}));
    EXPECT_THROW(model_input_shape(model, "open.onnx", {{"x", {2, 4, 5, 7}}}), Error);
    EXPECT_THROW(model_input_shape(model, "open.onnx", {{"x", {3, 5, 7}}}), Error);
    EXPECT_THROW(model_input_shape(model, "open.onnx", {{"z", {1, 3, 5, 7}}}), Error);
}

TEST(OpenDataset, RefusesModelsOfSeveralInputs) {
    testing::OnnxBuilder builder;
    builder.input("a", {1, 4}).input("b", {1, 4}).output("y", {1, 4});
    builder.node("Add", {"a", "b"}, {"y"});
    const Model model = parse_onnx(builder.bytes(), "two.onnx");
    DatasetRequest request;
    request.dataset = "random";
    try {
        open_dataset(request, model, "two.onnx", std::nullopt);
        ADD_FAILURE() << "two inputs accepted";
    } catch (const Error& error) {
        EXPECT_NE(std::string(error.what()).find("2 inputs (a, b)"), std::string::npos)
            << error.what();
    }
}

// An engine that returns its input scaled and shifted: outputs are known.
class AffineEngine final : public Engine {
  public:
    AffineEngine(float scale, float shift) : scale_(scale), shift_(shift) {}
    std::string_view name() const override { return "affine"; }
    FloatArray run(const FloatArray& batch) override {
        FloatArray output = batch;
        for (float& value : output.values) value = value * scale_ + shift_;
        return output;
    }

  private:
    float scale_, shift_;
};

TEST_F(Datasets, MetricsAgainstLabelsAndAReference) {
    // Three inputs of three scores; argmaxes 2, 0, 1; labels 2, 0, 0.
    const std::vector<float> values{0, 1, 5, 9, 1, 1, 0, 3, 2};
    const auto inputs = write("x.npy", npy_bytes("<f4", "(3, 3)", raw(values)));
    const auto labels =
        write("y.npy", npy_bytes("<i8", "(3,)", raw(std::vector<std::int64_t>{2, 0, 0})));
    const auto set = read_npy_inputs(inputs, labels, std::nullopt);
    AffineEngine same(1.0f, 0.0f);
    InputMetricsOptions options;
    options.batch_size = 2;
    const InputMetrics alone = measure_inputs(same, nullptr, *set, options);
    EXPECT_EQ(alone.inputs, 3u);
    EXPECT_EQ(alone.correct, 2u);
    EXPECT_FALSE(alone.compared);

    AffineEngine reference(1.0f, 0.0f);
    const InputMetrics identical = measure_inputs(same, &reference, *set, options);
    EXPECT_EQ(identical.agreeing, 3u);
    EXPECT_TRUE(std::isinf(identical.snr_db()));

    // A shift of 1 everywhere: argmax unchanged; noise energy 9, signal
    // energy the sum of squares (122).
    AffineEngine shifted(1.0f, 1.0f);
    const InputMetrics noisy = measure_inputs(shifted, &reference, *set, options);
    EXPECT_EQ(noisy.agreeing, 3u);
    EXPECT_EQ(noisy.correct, 2u);
    EXPECT_NEAR(noisy.snr_db(), 10.0 * std::log10(122.0 / 9.0), 1e-9);
    // Negated outputs: argmax moves to the minimum for every input.
    AffineEngine negated(-1.0f, 0.0f);
    EXPECT_EQ(measure_inputs(negated, &reference, *set, options).agreeing, 0u);
    options.limit = 1;
    EXPECT_EQ(measure_inputs(same, &reference, *set, options).inputs, 1u);
}

// eval's scenario on a labelled dataset: top-1 as `accuracy` measures it,
// and the float model's own outputs replayed for the SNR.
TEST_F(Datasets, DatasetScenarioMeasuresTopOneAndSnr) {
    const Model model = read_onnx_file(testing::source_dir() / "models" / "small-cnn.onnx");
    const ImageSet images = load_fashion_mnist(default_fashion_mnist_dir, Split::test);
    const InputSpec spec = read_input_spec(model, "small-cnn");
    const FloatArray batch = make_input_batch(spec, images, 0, 120);
    const auto inputs = write("x.npy", npy_bytes("<f4", "(120, 1, 28, 28)", raw(batch.values)));
    std::vector<std::int64_t> labels(images.labels.begin(), images.labels.begin() + 120);
    const auto label_file = write("y.npy", npy_bytes("<i8", "(120,)", raw(labels)));

    EngineOptions engine_options;
    engine_options.threads = 1;
    const auto engine = create_opencv_engine(model, "small-cnn", engine_options);
    AccuracyOptions accuracy_options;
    accuracy_options.limit = 120;
    const double expected =
        measure_accuracy(*engine, spec, images, accuracy_options).top1_percent();

    const auto scenario = make_dataset_scenario(read_npy_inputs(inputs, label_file, std::nullopt),
                                                model, 0, 32, engine_options);
    EXPECT_EQ(scenario->metric_name(), "top1_accuracy_percent");
    const Performance float_performance = scenario->performance(model, "test");
    EXPECT_EQ(float_performance.value, expected);
    EXPECT_TRUE(std::isinf(float_performance.output_snr_db));
    // Twice in a row: the replay starts over.
    EXPECT_EQ(scenario->performance(model, "test").value, expected);
    Model perturbed = model;
    for (float& value : perturbed.weights.front().values) value *= 1.01f;
    const Performance changed = scenario->performance(perturbed, "test");
    EXPECT_GT(changed.output_snr_db, 10.0);
    EXPECT_LT(changed.output_snr_db, 80.0);
}

}  // namespace
}  // namespace bitinc
