//! Compiles the contract with `protox` (pure Rust, no system `protoc`) and feeds the
//! descriptor set to `tonic-prost-build`. The encoded descriptor set is also written out so
//! the collector can serve gRPC reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/commscan/v1/common.proto",
        "proto/commscan/v1/enrollment.proto",
        "proto/commscan/v1/reporting.proto",
        "proto/commscan/v1/query.proto",
        "proto/commscan/v1/admin.proto",
        "proto/commscan/v1/federation.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("commscan_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // `Reporting.Connect` would clash with the generated `connect` constructor; clients
        // are built from a configured `Channel` anyway.
        .build_transport(false)
        // Small per-call buffers: one long-lived stream per agent (see src/codec.rs).
        .codec_path("crate::codec::CompactCodec")
        .compile_fds(fds)?;
    Ok(())
}
