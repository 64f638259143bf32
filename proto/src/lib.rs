//! The commscan wire contract, package `commscan.v1`.
//!
//! The `.proto` files under `proto/commscan/v1/` are the source of truth and document every
//! message and field; this crate only compiles them (with `protox`, no system `protoc`) and
//! re-exports the generated types, clients and servers. Other crates convert between these
//! wire types and the domain types of `commscan-core` at their edges, so nothing but the
//! gRPC adapters depends on generated code. Domain rules (text limits, canonical forms, the state
//! digest) live in `commscan-core`, never here.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

/// Version 1 of the contract.
pub mod v1 {
    tonic::include_proto!("commscan.v1");
}

/// The encoded `FileDescriptorSet` of the contract, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/commscan_descriptor.bin"));

pub mod codec;
pub mod convert;
