//! The gRPC codec of every `orca.v1` service: prost encoding, with one change. A message the
//! protobuf decoder refuses (a string that is not UTF-8, a truncated field) is the sender's
//! error, so it is INVALID_ARGUMENT naming the message and field, where tonic's own codec
//! says INTERNAL. Set in `build.rs` with `codec_path`, so no server layer has to recognise
//! tonic's error text.

use std::marker::PhantomData;

use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::ProstEncoder;

/// Prost encoding; undecodable input is INVALID_ARGUMENT.
#[derive(Debug, Clone)]
pub struct OrcaCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for OrcaCodec<T, U> {
    fn default() -> Self {
        OrcaCodec(PhantomData)
    }
}

impl<T, U> Codec for OrcaCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = OrcaDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        OrcaDecoder(PhantomData)
    }
}

/// Decodes one message; see the module documentation.
#[derive(Debug, Clone)]
pub struct OrcaDecoder<U>(PhantomData<U>);

impl<U: Message + Default> Decoder for OrcaDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf).map(Some).map_err(|e| Status::invalid_argument(format!("undecodable request: {e}")))
    }
}
