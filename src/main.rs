#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    nanovm::cli::main()
}
