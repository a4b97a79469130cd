//! Compiles `proto/primetime/v1/*.proto` with protox (pure Rust, no system
//! `protoc`) and generates the prost types into `OUT_DIR`.

use std::error::Error;

const PROTO_ROOT: &str = "../../proto";
const FILES: [&str; 4] = [
    "primetime/v1/events.proto",
    "primetime/v1/prices.proto",
    "primetime/v1/log.proto",
    "primetime/v1/cell_stats.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    let fds = protox::compile(FILES, [PROTO_ROOT])?;
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}
