// cli.hpp — command-line parsing of the `dring` program (CLI11).
#pragma once

#include <string>
#include <variant>

#include "commands.hpp"

namespace dring::cli {

using Command = std::variant<RunOptions, GenerateOptions, VerifyOptions, SummarizeOptions>;

struct Parsed {
  Command command;
  int exit_code = -1;  // >= 0: stop now with this code (help was printed, or the line was bad)
  std::string message; // what to print: help text (exit 0) or the one-line error
};

Parsed parse(int argc, char** argv);

}  // namespace dring::cli
