//! The `strata` binary: everything happens in [`strata_gateway::cli`].

fn main() -> std::process::ExitCode {
    strata_gateway::cli::main()
}
