//! The codec of every generated client and server: prost encoding with small buffers.
//!
//! tonic's default codec reserves an 8 KiB encode buffer and an 8 KiB decode buffer for every
//! call, for the life of the call. A collector holds one long-lived `Reporting.Connect` stream
//! per agent, so that is 16 KiB per agent whatever the messages weigh; our messages are
//! usually a few hundred bytes. These buffers start at [`BUFFER_SIZE`] and grow as a message
//! needs (up to the size caps set on each service), so only memory is saved, not capability.
//! Measured with `commscan-loadgen` (BENCHMARKS.md, "Collector at scale").

use std::marker::PhantomData;
use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Initial size of a call's encode and decode buffers.
pub const BUFFER_SIZE: usize = 1024;
/// Encoded bytes after which a streaming encoder yields (tonic's default).
pub const YIELD_THRESHOLD: usize = 32 * 1024;

/// Prost encoding with [`BUFFER_SIZE`] buffers.
#[derive(Debug, Clone)]
pub struct CompactCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for CompactCodec<T, U> {
    fn default() -> Self {
        CompactCodec(PhantomData)
    }
}

fn settings() -> BufferSettings {
    BufferSettings::new(BUFFER_SIZE, YIELD_THRESHOLD)
}

impl<T, U> Codec for CompactCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(settings())
    }
}
