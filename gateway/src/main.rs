//! The `strata` binary: everything happens in [`strata_gateway::cli`].

/// mimalloc instead of glibc's malloc: a cached hit allocates a few small
/// buffers per request, and glibc's allocator showed as ~10% of the edge's
/// CPU in a profile.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    strata_gateway::cli::main()
}
