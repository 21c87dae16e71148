#![forbid(unsafe_code)]

/// mimalloc: a run allocates many small, short-lived values (records, outputs, JSON trees),
/// where it is measurably faster than glibc's allocator (README, Performance).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    nanovm::cli::main()
}
