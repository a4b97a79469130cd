//! `primetime`: parse the command line, run, exit with its status.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(primetime::cli::main());
}
