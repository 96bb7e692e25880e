//! Entry point: everything lives in the library so tests drive the same code.

fn main() -> std::process::ExitCode {
    sentinel_remedy::cli::main()
}
