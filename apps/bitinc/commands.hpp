// The subcommands of the bitinc CLI. Each takes the arguments after its own
// name and returns the process exit status; errors propagate as exceptions
// (bitinc::Error: bad input, exit 1; cli::UsageError: bad usage, exit 2).
#pragma once

namespace bitinc::cli {

int run_inspect(int argc, char** argv);
int run_accuracy(int argc, char** argv);
int run_sensitivity(int argc, char** argv);
int run_bench(int argc, char** argv);
int run_pack(int argc, char** argv);
int run_keygen(int argc, char** argv);
int run_unpack(int argc, char** argv);
int run_verify(int argc, char** argv);
int run_serve(int argc, char** argv);
int run_fetch(int argc, char** argv);
int run_run(int argc, char** argv);
int run_eval(int argc, char** argv);

}  // namespace bitinc::cli
