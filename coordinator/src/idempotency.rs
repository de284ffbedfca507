//! Idempotency keys of CreateJob and AddTasks (`request_id`). A caller that timed out may
//! repeat a write: the same key returns the first call's answer and changes nothing, and the
//! same key with another request is refused. The key is scoped to the caller (its token's
//! name with `--auth-file`; empty without), the method and the job; the key and the first
//! answer are committed in the same transaction as the write, so a committed write is never
//! done twice, even across a restart. Keys are kept at least [`RETENTION_MS`].

use orca_proto::contract::limits;
use prost::Message;
use sha2::{Digest, Sha256};

use crate::error::{Error, invalid};
use crate::store::RequestKey;

/// How long a key is kept at least.
pub const RETENTION_MS: u64 = 24 * 3_600 * 1_000;
/// How often keys past the retention are pruned.
pub const PRUNE_EVERY_MS: u64 = 3_600 * 1_000;

/// A request's key and the digest of the rest of the request.
#[derive(Clone, Debug)]
pub struct Idem {
    pub key: RequestKey,
    pub digest: Vec<u8>,
}

/// The key of a request, if it has one: `request_id` taken out of `msg`, which is then
/// hashed whole (so any other difference in the request changes the digest).
pub fn take<M: Message>(
    msg: &mut M,
    request_id: impl FnOnce(&mut M) -> &mut String,
    method: &'static str,
    job_id: &str,
    caller: &str,
) -> Result<Option<Idem>, Error> {
    let id = std::mem::take(request_id(msg));
    if id.is_empty() {
        return Ok(None);
    }
    orca_proto::contract::text(&id, limits::MAX_ID_BYTES).map_err(|v| invalid("request_id", v))?;
    let digest = Sha256::digest(msg.encode_to_vec()).to_vec();
    let key = RequestKey { caller: caller.to_string(), method, job_id: job_id.to_string(), request_id: id };
    Ok(Some(Idem { key, digest }))
}

/// The stored answer if the digest matches; a refusal naming the key if not.
pub fn replay(idem: &Idem, stored_digest: &[u8], response: Vec<u8>) -> Result<Vec<u8>, Error> {
    if stored_digest != idem.digest.as_slice() {
        let id = &idem.key.request_id;
        return Err(invalid(
            "request_id",
            format!("{id:?} was already used for a different {} request", idem.key.method),
        ));
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use orca_proto::pb;

    fn req(description: &str, key: &str) -> pb::CreateJobRequest {
        pb::CreateJobRequest { description: description.into(), request_id: key.into(), ..Default::default() }
    }

    #[test]
    fn the_key_is_taken_out_and_the_rest_hashed() {
        let mut a = req("same", "k1");
        let ia = take(&mut a, |r| &mut r.request_id, "CreateJob", "", "").unwrap().unwrap();
        assert!(a.request_id.is_empty());
        let mut b = req("same", "k2");
        let ib = take(&mut b, |r| &mut r.request_id, "CreateJob", "", "").unwrap().unwrap();
        assert_eq!(ia.digest, ib.digest, "the key itself is not part of the digest");
        let mut c = req("other", "k1");
        let ic = take(&mut c, |r| &mut r.request_id, "CreateJob", "", "").unwrap().unwrap();
        assert_ne!(ia.digest, ic.digest);
        assert_eq!(replay(&ia, &ia.digest, vec![1]).unwrap(), vec![1]);
        let e = replay(&ic, &ia.digest, vec![1]).unwrap_err();
        assert!(e.to_string().starts_with("request_id: \"k1\" was already used"), "{e}");
    }

    #[test]
    fn no_key_no_idempotency_and_long_keys_are_refused() {
        let mut a = req("x", "");
        assert!(take(&mut a, |r| &mut r.request_id, "CreateJob", "", "").unwrap().is_none());
        let mut b = req("x", &"k".repeat(limits::MAX_ID_BYTES + 1));
        assert!(
            take(&mut b, |r| &mut r.request_id, "CreateJob", "", "").unwrap_err().to_string().starts_with("request_id")
        );
    }
}
