//! The input readers of the `popo` binary's subcommands, as a library so that tests and the
//! fuzzers (`fuzz/`) reach them without the command line. The subcommands themselves live in
//! the binary (`src/cmd/`).

pub mod input;
